//! systemd's notify protocol: `READY=1` once listening, `WATCHDOG=1` from a task
//! that goes through the store's write path first (so the pings stop while that
//! path is stuck, for no longer than the busy timeout when another process holds
//! the lock), `RELOADING=1` … `READY=1` around SIGHUP, `STOPPING=1` on SIGTERM.

use std::time::{Duration, Instant};

use softphone_testkit::notify::{LATE, NotifySocket, WATCHDOG_USEC};
use softphone_testkit::{Daemons, eventually, signal};

#[test]
fn watchdog_pings_stop_while_the_store_is_stuck() {
    let mut d = Daemons::start("watchdog");
    // Only the issuer talks to this socket: restart it with the variables
    // systemd would set (no WATCHDOG_PID: the pings are then taken from any pid).
    let notify = NotifySocket::bind(d.dir.path());
    d.kill_issuer();
    d.set_env("NOTIFY_SOCKET", notify.path());
    d.set_env("WATCHDOG_USEC", WATCHDOG_USEC);
    d.start_issuer();
    let ready = notify.expect("READY=1", Duration::from_secs(20));
    assert_eq!(ready.text, "READY=1\n");

    let gaps = notify.steady(Duration::from_secs(3));
    eprintln!("issuer: pings every {gaps:?}");

    // Another process holds the database's write lock (an operator's `sqlite3`
    // inside BEGIN IMMEDIATE): the watchdog's round trip waits in SQLite's busy
    // handler, on the connection every login and logout uses. Held for less
    // than the busy timeout (5 s), so the round trip completes once it is let go.
    let hold = Duration::from_secs(4);
    let database = d.database();
    let stall = notify.stall(
        hold,
        || {
            let conn = rusqlite::Connection::open(&database).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn
        },
        |conn| conn.execute_batch("ROLLBACK").unwrap(),
    );
    eprintln!("issuer: store locked for {hold:?}: {stall:?}");
    notify.steady(Duration::from_secs(2));

    // Held past the busy timeout, the lock only slows the pings: the round trip
    // fails (and says so) and the ping goes out, since restarting the issuer
    // would not release another process's lock.
    notify.next_ping(LATE).unwrap();
    let conn = rusqlite::Connection::open(&database).unwrap();
    let locked_at = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Held until the first ping (30 s at most): SQLite's busy handler counts
    // the sleeps it asks for, and on a loaded machine each one overshoots, so
    // giving up takes 5 s or more (a fresh-clone run needed over 7 s, a loaded
    // local run over 10).
    let first = notify.next_ping(Duration::from_secs(30));
    conn.execute_batch("ROLLBACK").unwrap();
    let first = first.map(|at| at - locked_at);
    eprintln!("issuer: store locked until the first ping, after {first:?}");
    assert!(
        first.is_some_and(|first| first >= Duration::from_millis(4500)),
        "a ping should wait for the busy timeout (5 s), then go out: {first:?}"
    );
    let stderr = std::fs::read_to_string(d.stderr_file("issuer")).unwrap();
    assert!(stderr.contains("database is locked"), "{stderr}");
    notify.steady(Duration::from_secs(2));

    let pid = d.issuer_child().id();
    signal(pid, "HUP");
    let reloading = notify.expect("RELOADING=1", Duration::from_secs(10));
    assert!(
        reloading.text.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|usec| usec.parse::<u64>().is_ok_and(|usec| usec > 0))),
        "{reloading:?}"
    );
    notify.expect("READY=1", Duration::from_secs(10));

    signal(pid, "TERM");
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let status = eventually(Duration::from_secs(10), "the issuer exits", || {
        d.issuer_child().try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
}
