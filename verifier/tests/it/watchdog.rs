//! systemd's notify protocol: `READY=1` once serving, `WATCHDOG=1` from a
//! coroutine on the workers that serve nginx (so the pings stop while those
//! are stuck), `RELOADING=1` … `READY=1` around SIGHUP, `STOPPING=1` on SIGTERM.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use softphone_shared::epoch::Epoch;
use softphone_testkit::http::{Conn, build};
use softphone_testkit::notify::{NotifySocket, WATCHDOG_USEC};
use softphone_testkit::{CHECK, Daemons, Options, eventually, signal};

/// The security log as a named pipe whose reader stopped reading (a log
/// shipper that hung): a write to it blocks, as it would on a hung disk.
/// Removed on drop, so no pipe is left where the log sweep looks.
struct LogPipe {
    path: PathBuf,
    /// Held open so that the daemon's open for writing does not wait.
    reader: File,
}

impl LogPipe {
    fn replace(path: &Path) -> LogPipe {
        std::fs::remove_file(path).unwrap();
        let made = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        LogPipe {
            path: path.to_path_buf(),
            reader,
        }
    }

    /// Everything in the pipe now.
    fn read_all(&self) -> String {
        let mut text = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match (&self.reader).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the pipe: {e}"),
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Fills the pipe to the last byte: the next line written to it blocks.
    fn fill(&self) {
        let mut writer = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .unwrap();
        // Pages first, then byte by byte into the last one.
        for chunk in [&[b'.'; 4096][..], b"."] {
            loop {
                match writer.write(chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("filling the pipe: {e}"),
                }
            }
        }
    }
}

impl Drop for LogPipe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn watchdog_pings_stop_while_the_workers_are_stuck() {
    // One worker (the default): with more, the pings stop only once every
    // worker is stuck.
    let mut d = Daemons::start_with(
        "watchdog",
        Options::default().with("SOFTPHONE_VERIFIER_WORKERS", "1"),
    );
    // Only the verifier talks to this socket: restart it with the variables
    // systemd would set (no WATCHDOG_PID: the pings are then taken from any pid).
    let notify = NotifySocket::bind(d.dir.path());
    d.kill_verifier();
    d.set_env("NOTIFY_SOCKET", notify.path());
    d.set_env("WATCHDOG_USEC", WATCHDOG_USEC);
    d.start_verifier();
    let ready = notify.expect("READY=1", Duration::from_secs(20));
    assert_eq!(ready.text, "READY=1\n");

    let gaps = notify.steady(Duration::from_secs(3));
    eprintln!("verifier: pings every {gaps:?}");

    // A lock another process holds on the database does not stop them, even
    // when the doorbell rang and the watchdog's probe reads the database: the
    // verifier only reads, and a WAL database's readers never wait for a writer.
    let holder = rusqlite::Connection::open(d.database()).unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; UPDATE meta SET value = value WHERE key = 'revoke_seq';")
        .unwrap();
    Epoch::open(&d.epoch_file()).unwrap().bump();
    notify.steady(Duration::from_secs(2));
    holder.execute_batch("ROLLBACK").unwrap();
    let stderr = std::fs::read_to_string(d.stderr_file("verifier")).unwrap();
    assert!(!stderr.contains("cannot read revocations"), "{stderr}");

    // What does stop them: the only worker blocked in a write that does not
    // return. SIGHUP (logrotate's) reopens the security log, now the pipe.
    let pipe = LogPipe::replace(&d.security_log());
    let pid = d.verifier_child().id();
    signal(pid, "HUP");
    let reloading = notify.expect("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.text.contains("MONOTONIC_USEC="), "{reloading:?}");
    notify.expect("READY=1", Duration::from_secs(10));
    assert_eq!(d.check(None).status, 401);
    eventually(
        Duration::from_secs(5),
        "the denial's line reaches the pipe",
        || pipe.read_all().contains("[MEDIA_ACCESS_DENIED]"),
    );

    let addr = d.verifier;
    let hold = Duration::from_secs(4);
    let mut released_at = None;
    let mut answer = None;
    let stall = notify.stall(
        hold,
        || {
            pipe.fill();
            // A request without a token: its denial's line blocks the worker.
            let mut conn = Conn::open(addr).unwrap();
            conn.send(&build("GET", CHECK, &[], b"")).unwrap();
            std::thread::spawn(move || {
                let status = conn.read_response().unwrap().status;
                (Instant::now(), status)
            })
        },
        |waiting| {
            released_at = Some(Instant::now());
            pipe.read_all();
            answer = Some(waiting);
        },
    );
    eprintln!("verifier: worker blocked for {hold:?}: {stall:?}");
    let (answered_at, status) = answer.unwrap().join().unwrap();
    assert_eq!(status, 401);
    assert!(
        answered_at > released_at.unwrap(),
        "the request was answered while the worker was meant to be stuck"
    );
    notify.steady(Duration::from_secs(2));

    signal(pid, "TERM");
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let status = eventually(Duration::from_secs(10), "the verifier exits", || {
        d.verifier_child().try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
}
