//! A soak (60 s by default, `SOFTPHONE_SOAK_SECS` to change): keep-alive clients
//! ask the verifier about valid, expired, revoked and garbage tokens while other
//! clients log in, refresh, read profiles and log out. Zero false allows, zero
//! wrong refusals of stable sessions, zero 5xx, and the verifier's RSS flat.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use softphone_testkit::forge::expired_copy;
use softphone_testkit::http::{Conn, build};
use softphone_testkit::{CHECK, Daemons};

use crate::{PASSWORD, USER};

#[derive(Default)]
struct Counts {
    checks: AtomicU64,
    false_allows: AtomicU64,
    wrong_denials: AtomicU64,
    server_errors: AtomicU64,
    logins: AtomicU64,
    refreshes: AtomicU64,
    logouts: AtomicU64,
}

/// Access tokens whose logout has answered 200: from then on, 401 everywhere.
type Revoked = Arc<Mutex<Vec<String>>>;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn verifier_client(
    d: &Daemons,
    stable: Vec<String>,
    expired: String,
    revoked: Revoked,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> thread::JoinHandle<()> {
    let addr = d.verifier;
    thread::spawn(move || {
        let mut conn = Conn::open(addr).unwrap();
        let mut n: usize = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            // Paced, not flat out: password checks run at nice 19 and a saturated
            // machine would starve the logins this soak needs alongside.
            if n.is_multiple_of(100) {
                thread::sleep(Duration::from_millis(20));
            }
            // Roughly the bench's mix: mostly valid, some expired, revoked, garbage.
            let (token, should_allow) = match n % 20 {
                0 => (expired.clone(), false),
                1 => (format!("{}x", &stable[0]), false),
                2 => ("eyJhbGciOiJub25lIn0.e30.".to_owned(), false),
                3 | 4 => {
                    let list = revoked.lock().unwrap();
                    match list.get(n / 20 % list.len().max(1)) {
                        Some(t) => (t.clone(), false),
                        None => (stable[n % stable.len()].clone(), true),
                    }
                }
                _ => (stable[n % stable.len()].clone(), true),
            };
            let auth = format!("Bearer {token}");
            conn.send(&build("GET", CHECK, &[("Authorization", &auth)], b""))
                .unwrap();
            let status = conn.read_response().unwrap().status;
            counts.checks.fetch_add(1, Ordering::Relaxed);
            match (status, should_allow) {
                (200, false) => counts.false_allows.fetch_add(1, Ordering::Relaxed),
                (401, false) | (200, true) => 0,
                (s, _) if s >= 500 => counts.server_errors.fetch_add(1, Ordering::Relaxed),
                _ => counts.wrong_denials.fetch_add(1, Ordering::Relaxed),
            };
        }
    })
}

/// Logs in, refreshes, reads the profile and logs out, again and again.
fn session_churn(
    d: &Arc<Daemons>,
    revoked: Revoked,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> thread::JoinHandle<()> {
    let d = Arc::clone(d);
    thread::spawn(move || {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let r = d.login(USER, PASSWORD);
            let status = |s: u16, want: u16| {
                if s >= 500 {
                    counts.server_errors.fetch_add(1, Ordering::Relaxed);
                } else if s != want {
                    counts.wrong_denials.fetch_add(1, Ordering::Relaxed);
                }
            };
            status(r.status, 200);
            if r.status != 200 {
                continue;
            }
            counts.logins.fetch_add(1, Ordering::Relaxed);
            let (access, refresh) = (r.json_str("access_token"), r.json_str("refresh_token"));
            let r = d.issuer_post("/auth/refresh", Some(&refresh));
            status(r.status, 200);
            counts.refreshes.fetch_add(1, Ordering::Relaxed);
            status(d.issuer_get("/profile", Some(&access)).status, 200);
            // Log out with either token, alternately.
            let with = if round.is_multiple_of(2) {
                access.clone()
            } else {
                r.json_str("refresh_token")
            };
            let out = d.issuer_post("/auth/logout", Some(&with));
            status(out.status, 200);
            if out.status == 200 {
                counts.logouts.fetch_add(1, Ordering::Relaxed);
                revoked.lock().unwrap().push(access);
            }
        }
    })
}

#[test]
fn soak_of_mixed_traffic_with_session_churn() {
    let seconds: u64 = std::env::var("SOFTPHONE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let d = Daemons::start("soak");
    d.add_user(USER, PASSWORD);
    let stable: Vec<String> = (0..4).map(|_| d.tokens(USER, PASSWORD).0).collect();
    let expired = expired_copy(&d.key_file(), &stable[0]);
    let (_, verifier_pid) = d.pids();
    let d = Arc::new(d);

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let revoked: Revoked = Arc::default();
    let mut threads: Vec<_> = (0..2)
        .map(|_| {
            verifier_client(
                &d,
                stable.clone(),
                expired.clone(),
                Arc::clone(&revoked),
                Arc::clone(&stop),
                Arc::clone(&counts),
            )
        })
        .collect();
    for _ in 0..2 {
        threads.push(session_churn(
            &d,
            Arc::clone(&revoked),
            Arc::clone(&stop),
            Arc::clone(&counts),
        ));
    }

    // RSS after a warm-up (caches and maps at their working size), then at the end.
    let started = Instant::now();
    let warm_up = Duration::from_secs((seconds / 6).max(1));
    thread::sleep(warm_up);
    let rss_warm = rss_kib(verifier_pid);
    thread::sleep(Duration::from_secs(seconds).saturating_sub(started.elapsed()));
    let rss_end = rss_kib(verifier_pid);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = format!(
        "{} checks, {} logins, {} refreshes, {} logouts; RSS {rss_warm} -> {rss_end} KiB",
        get(&counts.checks),
        get(&counts.logins),
        get(&counts.refreshes),
        get(&counts.logouts)
    );
    eprintln!("soak: {summary}");
    assert_eq!(get(&counts.false_allows), 0, "false allows: {summary}");
    assert_eq!(get(&counts.server_errors), 0, "5xx: {summary}");
    assert_eq!(get(&counts.wrong_denials), 0, "wrong denials: {summary}");
    assert!(get(&counts.logouts) >= seconds / 4, "churn ran: {summary}");
    assert!(get(&counts.checks) >= seconds * 100, "load ran: {summary}");
    // Flat: growth after warm-up under 2 MiB (sessions churned add ~100 bytes each).
    assert!(rss_end <= rss_warm + 2048, "verifier RSS grew: {summary}");
    d.assert_logs_clean(&[PASSWORD]);
}
