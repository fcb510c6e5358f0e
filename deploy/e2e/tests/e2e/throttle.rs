//! Login throttling through nginx, with clients on their own loopback addresses
//! (127.0.1.x: nginx passes each one to the issuer in `X-Real-IP`): a guessing
//! attack from 24 addresses cannot lock out the real user, a flood of other
//! usernames resets nobody's counters, every throttled address reaches fail2ban,
//! and SIGHUP keeps the throttle.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use softphone_testkit::http::{Conn, Response, settled};
use softphone_testkit::nginx::Nginx;
use softphone_testkit::{BASE, Daemons, Options, TestDir, eventually};

use crate::{PASSWORD, USER};

fn login_path() -> String {
    format!("{BASE}/auth/login")
}

fn body(username: &str, password: &str) -> Vec<u8> {
    format!(r#"{{"username":"{username}","password":"{password}"}}"#).into_bytes()
}

/// One login through nginx from `source`, settled (see `http::settled`).
fn login_from(nginx: SocketAddr, source: &str, username: &str, password: &str) -> u16 {
    settled(|| login_once(nginx, source, username, password)).status
}

/// One login through nginx from `source`, on a fresh connection.
fn login_once(nginx: SocketAddr, source: &str, username: &str, password: &str) -> Response {
    let source: IpAddr = source.parse().unwrap();
    let mut conn = Conn::open_from(nginx, source).unwrap();
    conn.request(
        "POST",
        &login_path(),
        &[("Content-Type", "application/json")],
        &body(username, password),
    )
    .unwrap()
}

/// The addresses the shipped fail2ban filter takes from `log` with the
/// `AUTH_RATE_LIMITED` expression, as `fail2ban-regex` reports them.
fn rate_limited_hosts(log: &Path) -> BTreeSet<String> {
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fail2ban/filter.d/softphone-backend.conf");
    let out = Command::new("fail2ban-regex")
        .arg("-v")
        .arg(log)
        .arg(&filter)
        .output()
        .unwrap_or_else(|e| {
            panic!("fail2ban-regex is not installed ({e}): deploy/test.sh installs fail2ban")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // "|   2) [24] ^\[AUTH_RATE_LIMITED\] …" then one "|      <host>  <date>" per hit.
    let mut hosts = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("|   ") && line.contains(") [") {
            inside = line.contains("AUTH_RATE_LIMITED");
        } else if inside && let Some(hit) = line.strip_prefix("|      ") {
            hosts.insert(hit.split_whitespace().next().unwrap_or_default().to_owned());
        } else if line.starts_with('`') {
            inside = false;
        }
    }
    hosts
}

#[test]
fn a_guessing_attack_from_24_addresses_never_locks_out_the_known_user() {
    let (d, nginx) = crate::stack("throttle-24", "http://127.0.0.1:9/");
    let config = d.config();
    let home = "127.0.1.200";
    // The real user has logged in from home before. On a loaded machine that
    // login may first be told to come back (a 503, logged like a 429 by
    // design), so the log is judged from here on: the attack's lines only.
    assert_eq!(login_from(nginx.addr, home, USER, PASSWORD), 200);
    let attack_starts = std::fs::metadata(d.security_log()).map_or(0, |m| m.len());

    let attackers: Vec<String> = (1..=24).map(|i| format!("127.0.1.{i}")).collect();
    let stop = AtomicBool::new(false);
    let checked = AtomicU64::new(0); // 401: a password check granted
    let refused = AtomicU64::new(0); // 429
    let other = AtomicU64::new(0);
    let started = Instant::now();
    let attack = Duration::from_secs(25);
    let mut real = Vec::new();
    std::thread::scope(|scope| {
        for source in &attackers {
            let (stop, checked, refused, other) = (&stop, &checked, &refused, &other);
            let addr = nginx.addr;
            scope.spawn(move || {
                let source: IpAddr = source.parse().unwrap();
                let mut conn = None;
                let mut guess = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Keep-alive, reconnecting whenever nginx closes (it does
                    // every 1 000 requests); Retry-After is ignored.
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => conn.insert(Conn::open_from(addr, source).unwrap()),
                    };
                    guess += 1;
                    let sent = c.request(
                        "POST",
                        &login_path(),
                        &[("Content-Type", "application/json")],
                        &body(USER, &format!("guess-{guess}")),
                    );
                    match sent.map(|r| r.status) {
                        Ok(401) => checked.fetch_add(1, Ordering::Relaxed),
                        // 503: its check waited too long for a hashing
                        // thread and never ran (a refusal like a 429).
                        Ok(429 | 503) => refused.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => other.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            conn = None;
                            continue;
                        }
                    };
                    std::thread::sleep(Duration::from_millis(40));
                }
            });
        }
        // The real user, every 2.5 s from home, during the whole attack and
        // at least 8 times: on a loaded machine (the suite runs tests in
        // parallel) one login's hash can take seconds, and the attack then
        // lasts until the eighth is done.
        std::thread::sleep(Duration::from_millis(500));
        while started.elapsed() < attack || real.len() < 8 {
            let t = Instant::now();
            let status = login_once(nginx.addr, home, USER, PASSWORD).status;
            real.push((status, t.elapsed()));
            std::thread::sleep(Duration::from_millis(2500));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs();
    let (checked, refused, other) = (
        checked.into_inner(),
        refused.into_inner(),
        other.into_inner(),
    );
    let succeeded = real.iter().filter(|(s, _)| *s == 200).count();
    let slowest = real.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "24-address attack, {elapsed} s: real user {succeeded} of {} logins succeeded \
         (slowest {slowest:?}); attackers: {checked} password checks, {refused} refused, \
         {other} other",
        real.len()
    );
    assert!(real.len() >= 8);
    assert_eq!(succeeded, real.len(), "the real user was refused: {real:?}");
    assert_eq!(other, 0);
    // The shared budget: the ceiling at once, then one per interval.
    let bound =
        i64::from(config.login_user_ceiling) + elapsed as i64 / config.login_user_interval + 1;
    assert!(
        checked as i64 <= bound,
        "{checked} checks granted, bound {bound}"
    );
    assert!(
        refused > 1000,
        "the attackers kept hammering: {refused} refusals"
    );

    // Every attacker address reaches fail2ban, in lines of the shipped filter's
    // format, at most one per address and minute (the attack spans at most two).
    let log = std::fs::read(d.security_log()).unwrap();
    let attack_log = d.data_dir().join("attack.log");
    std::fs::write(&attack_log, &log[attack_starts as usize..]).unwrap();
    let hosts = rate_limited_hosts(&attack_log);
    for a in &attackers {
        assert!(
            hosts.contains(a),
            "{a} is not in the security log: {hosts:?}"
        );
    }
    assert!(!hosts.contains(home));
    let log = std::fs::read_to_string(&attack_log).unwrap();
    let lines = log.matches("[AUTH_RATE_LIMITED]").count();
    eprintln!("security log: {lines} AUTH_RATE_LIMITED lines for {refused} refusals");
    assert!(lines <= 2 * attackers.len(), "{lines} lines");
    d.assert_logs_clean(&[PASSWORD]);
}

#[test]
fn a_flood_of_other_usernames_resets_nobody() {
    // One failure fills a lane, so 20 throttled lanes cost 20 hashes.
    let d = Daemons::start_with(
        "throttle-flood",
        Options::default().with("SOFTPHONE_LOGIN_MAX_FAILURES", "1"),
    );
    d.add_user(USER, PASSWORD);
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");
    let home = "127.0.1.200";
    let guesser = "127.0.1.1";
    assert_eq!(login_from(nginx.addr, home, USER, PASSWORD), 200);
    let targets: Vec<String> = (0..20).map(|i| format!("target-{i}")).collect();
    for t in &targets {
        assert_eq!(login_from(nginx.addr, guesser, t, "wrong"), 401);
        assert_eq!(login_from(nginx.addr, guesser, t, "wrong"), 429);
    }

    // More distinct names than today's throttle held (100 000 pairs). A flood
    // that waits for its password checks is 10 per second; one that keeps the
    // hashing queue full gets most answers at once (503), which is what an
    // attacker does. It goes to the issuer directly, with an X-Real-IP per
    // name as nginx would send: 100 000 connections through nginx would run out
    // of loopback ports, and the throttle is the issuer's.
    let names = 101_000u64;
    let next = AtomicU64::new(0);
    let real = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        // More connections than the 256 logins the issuer lets wait.
        for _ in 0..320 {
            let next = &next;
            let issuer = d.issuer;
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || {
                    let mut conn: Option<Conn> = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= names {
                            break;
                        }
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => {
                                let mut c = Conn::open(issuer).unwrap();
                                // Give up on a queued check: it still runs.
                                c.stream()
                                    .set_read_timeout(Some(Duration::from_secs(2)))
                                    .unwrap();
                                conn.insert(c)
                            }
                        };
                        let ip = format!("10.9.{}.{}", i / 256 % 256, i % 256);
                        let sent = c.request(
                            "POST",
                            &login_path(),
                            &[("Content-Type", "application/json"), ("X-Real-IP", &ip)],
                            &body(&format!("flood-{i}"), "wrong"),
                        );
                        if sent.is_err() {
                            conn = None;
                        }
                    }
                })
                .unwrap();
        }
        // The known user, during the flood: the queue for unknown addresses is
        // full, its own is not.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(3));
            let t = Instant::now();
            let status = login_once(nginx.addr, home, USER, PASSWORD).status;
            real.lock().unwrap().push((status, t.elapsed()));
        }
    });
    eprintln!(
        "flood of {names} names in {:?}; the known user during it: {:?}",
        started.elapsed(),
        real.lock().unwrap()
    );
    assert!(real.into_inner().unwrap().iter().all(|(s, _)| *s == 200));
    for t in &targets {
        assert_eq!(
            login_from(nginx.addr, guesser, t, "wrong"),
            429,
            "the flood reset {t}'s counter"
        );
    }
    assert_eq!(login_from(nginx.addr, home, USER, PASSWORD), 200);
}

#[test]
fn sighup_keeps_the_throttle_and_applies_new_limits() {
    let etc = TestDir::new("throttle-hup-etc");
    let file = etc.path().join("softphone.toml");
    std::fs::write(&file, "login_max_failures = 3\n").unwrap();
    let mut d = Daemons::start_with(
        "throttle-hup",
        Options::default().with("SOFTPHONE_CONFIG", file.to_str().unwrap()),
    );
    d.add_user(USER, PASSWORD);
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");
    let guesser = "127.0.1.7";
    for _ in 0..3 {
        assert_eq!(login_from(nginx.addr, guesser, USER, "wrong"), 401);
    }
    assert_eq!(login_from(nginx.addr, guesser, USER, "wrong"), 429);

    // What logrotate does daily, here with a raised limit.
    std::fs::write(&file, "login_max_failures = 4\n").unwrap();
    let pid = d.issuer_child().id();
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let stderr = d.stderr_file("issuer");
    eventually(Duration::from_secs(10), "the issuer reloads", || {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .contains("SIGHUP: config and key reloaded")
    });

    // The three failures are still counted: one more under the new limit.
    assert_eq!(login_from(nginx.addr, guesser, USER, "wrong"), 401);
    assert_eq!(login_from(nginx.addr, guesser, USER, "wrong"), 429);
    assert_eq!(login_from(nginx.addr, guesser, USER, PASSWORD), 429);
    assert_eq!(login_from(nginx.addr, "127.0.1.8", USER, PASSWORD), 200);
}
