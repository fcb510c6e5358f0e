//! The real daemons under a faked wall clock (libfaketime, Debian `faketime`):
//! a clock at the epoch or far in the future causes no panic, and expiry is
//! exact to the second with the configured leeway at both daemons.
//!
//! Not covered: a clock BEFORE 1970. The issuer's HTTP stack (hyper, through
//! httpdate) panics while formatting the `Date` header then, which drops each
//! connection (the process stays up); our own code treats such a clock as the
//! epoch (`unix_now`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use softphone_testkit::{Daemons, Options, TestDir};

use crate::{PASSWORD, USER};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Daemons (and admin commands) whose wall clock reads the timestamp in `clock`.
/// Only the wall clock is faked: timers keep running on the real monotonic one.
fn under_clock(name: &str, clock: &Path) -> Daemons {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (deploy/test.sh does)"
    );
    let options = Options::default()
        .with("LD_PRELOAD", LIBFAKETIME)
        .with("FAKETIME_TIMESTAMP_FILE", &clock.display().to_string())
        .with("FAKETIME_NO_CACHE", "1")
        .with("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .with("SOFTPHONE_LEEWAY", "30")
        .with("TZ", "UTC");
    Daemons::start_with(name, options)
}

fn set_clock(clock: &Path, spec: &str) {
    std::fs::write(clock, format!("{spec}\n")).unwrap();
}

fn clock_file(dir: &TestDir) -> PathBuf {
    dir.path().join("clock")
}

fn assert_no_panic(d: &Daemons) {
    let logs = d.all_logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn clocks_at_the_ends_of_time_cause_no_panic() {
    let dir = TestDir::new("clock-file");
    let clock = clock_file(&dir);
    // `@` lets the faked clock run on from the given moment.
    for (name, spec) in [
        ("clock-epoch", "@1970-01-01 00:00:01"),
        ("clock-2200", "@2200-01-01 00:00:00"),
        ("clock-9999", "@9999-12-31 22:00:00"),
    ] {
        set_clock(&clock, spec);
        let d = under_clock(name, &clock);
        d.add_user(USER, PASSWORD);
        let (access, refresh) = d.tokens(USER, PASSWORD);
        assert_eq!(d.check(Some(&access)).status, 200, "{spec}");
        assert_eq!(
            d.issuer_get("/profile", Some(&access)).status,
            200,
            "{spec}"
        );
        let r = d.issuer_post("/auth/refresh", Some(&refresh));
        assert_eq!(r.status, 200, "{spec}: {}", r.text());
        assert_eq!(d.login(USER, "wrong").status, 401, "{spec}");
        assert_eq!(
            d.issuer_post("/auth/logout", Some(&access)).status,
            200,
            "{spec}"
        );
        assert_eq!(d.check(Some(&access)).status, 401, "{spec}");
        assert_eq!(d.issuer_get("/health", None).status, 200, "{spec}");
        assert_eq!(d.check(Some("garbage")).status, 401, "{spec}");
        assert_no_panic(&d);
    }
}

#[test]
fn expiry_is_exact_to_the_second_with_leeway_at_both_daemons() {
    let dir = TestDir::new("clock-edge-file");
    let clock = clock_file(&dir);
    // A frozen clock (no `@`): every reading is exactly this second.
    let t0 = 1_900_000_000_i64;
    let at = |t: i64| {
        let stamp = time_string(t);
        set_clock(&clock, &stamp);
        // libfaketime re-reads the file on every call (FAKETIME_NO_CACHE).
        std::thread::sleep(Duration::from_millis(20));
    };
    at(t0);
    let d = under_clock("clock-edge", &clock);
    d.add_user(USER, PASSWORD);
    let (access, _) = d.tokens(USER, PASSWORD);
    // access_ttl 3600 s, leeway 30 s: good through t0 + 3630, refused at + 3631.
    at(t0 + 3630);
    assert_eq!(d.check(Some(&access)).status, 200);
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
    at(t0 + 3631);
    assert_eq!(d.check(Some(&access)).status, 401);
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 401);
    // A clock that goes back (NTP step) makes the token good again, as it was
    // within its lifetime at that time: no state was burnt by the refusal.
    at(t0 + 10);
    assert_eq!(d.check(Some(&access)).status, 200);
    assert_no_panic(&d);
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) for a Unix time, as libfaketime reads it.
fn time_string(t: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
