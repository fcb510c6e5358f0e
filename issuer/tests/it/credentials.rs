//! A session is bound to the credential it was opened with: a change that
//! commits while a login's password check runs wins; a hash re-made at a new
//! cost keeps the sessions; and one session cannot refresh without bound.

use std::time::{Duration, Instant};

use softphone_testkit::{Daemons, Options, run_with_input};

use crate::USER;

/// Password checks at this cost take about a second here: long enough for an
/// admin command to commit in the middle of one.
const SLOW: &str = "6000000";

/// `user disable` or `user passwd` committing while a login's password check
/// runs: the login must not leave a live session behind.
#[test]
fn a_login_checked_before_a_credential_change_opens_no_session() {
    let d = Daemons::start_with(
        "login-race",
        Options::default().with("SOFTPHONE_PBKDF2_ITERATIONS", SLOW),
    );
    for user in ["301", "302"] {
        d.add_user(user, "old-password");
    }
    let started = Instant::now();
    d.tokens("301", "old-password");
    let check_time = started.elapsed();
    assert!(
        check_time > Duration::from_millis(400),
        "a login took {check_time:?}: too fast to race an admin command against"
    );

    // The admin hashes at the floor so that it commits while the daemon's
    // slow check is still running.
    let admin = |args: &[&str], stdin: &str| {
        let mut cmd = d.command("softphone-issuer");
        cmd.env("SOFTPHONE_PBKDF2_ITERATIONS", "600000").args(args);
        let (ok, out) = run_with_input(&mut cmd, stdin);
        assert!(ok, "{args:?}: {out}");
    };
    for (user, change, undo, stdin) in [
        ("301", "disable", "enable", ""),
        ("302", "passwd", "passwd", "new-password\n"),
    ] {
        // A loaded machine can let the admin command finish only after the
        // login answered: then no race was run, and the round is repeated.
        let raced = (0..3).any(|_| {
            let (login, changed_at, answered_at) = std::thread::scope(|s| {
                let login = s.spawn(|| {
                    let r = d.login(user, "old-password");
                    (r, Instant::now())
                });
                std::thread::sleep(check_time / 4);
                admin(&["user", change, user], stdin);
                let changed_at = Instant::now();
                let (r, answered_at) = login.join().unwrap();
                (r, changed_at, answered_at)
            });
            if login.status == 200 {
                // Only acceptable if the change then ended the session.
                let access = login.json_str("access_token");
                assert_eq!(d.check(Some(&access)).status, 401, "user {change}");
            }
            let (_, sessions) = d.admin(&["session", "list"], "");
            assert!(!sessions.contains(user), "user {change}: {sessions}");
            let raced = changed_at < answered_at;
            if raced {
                assert_eq!(login.status, 401, "user {change}: {}", login.text());
            }
            admin(&["user", undo, user], "old-password\n");
            raced
        });
        assert!(
            raced,
            "user {change} never committed during a login's check"
        );
    }
}

/// Raising `pbkdf2_iterations`: a known user's next login re-makes its hash at
/// the new cost, and its open sessions keep refreshing.
#[test]
fn a_raised_hash_cost_is_applied_at_the_next_login() {
    let mut d = Daemons::start("rehash");
    d.add_user(USER, "the-password");
    let (_, refresh) = d.tokens(USER, "the-password");
    let cost = |d: &Daemons| {
        let (_, list) = d.admin(&["user", "list"], "");
        list.lines()
            .find(|l| l.contains(USER))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(cost(&d), "600000");

    d.kill_issuer();
    d.set_env("SOFTPHONE_PBKDF2_ITERATIONS", "650000");
    d.start_issuer();
    assert_eq!(cost(&d), "600000", "nothing changes before a login");
    d.tokens(USER, "the-password");
    assert_eq!(cost(&d), "650000");
    // The session opened under the old hash still refreshes.
    let r = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.login(USER, "wrong").status, 401);
    d.tokens(USER, "the-password");
    d.assert_logs_clean(&["the-password"]);
}

/// A refresh token replayed in a loop gets `BURST` refreshes, then 429 with
/// `Retry-After`; other sessions are not affected, and the refused token works
/// once the bucket refilled.
#[test]
fn one_session_cannot_refresh_without_bound() {
    let d = Daemons::start("refresh-rate");
    d.add_user(USER, "the-password");
    let (_, mut refresh) = d.tokens(USER, "the-password");
    let (_, other) = d.tokens(USER, "the-password");
    let mut granted = 0;
    let refused = loop {
        let r = d.issuer_post("/auth/refresh", Some(&refresh));
        if r.status != 200 {
            break r;
        }
        granted += 1;
        refresh = r.json_str("refresh_token");
        assert!(granted <= 20, "refreshes are not bounded");
    };
    assert_eq!(granted, 10, "the burst");
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.error(),
        "Too many refresh requests. Please try again later"
    );
    let wait: u64 = refused
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=6).contains(&wait), "Retry-After {wait}");
    assert_eq!(d.issuer_post("/auth/refresh", Some(&other)).status, 200);
    std::thread::sleep(Duration::from_secs(wait));
    let r = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A refused login (wrong password, unknown user, malformed) is answered no
/// sooner than `login_failure_delay_ms` after it arrived; a good one is not held.
#[test]
fn refused_logins_are_answered_after_the_failure_delay() {
    let d = Daemons::start_with(
        "login-delay",
        Options::default().with("SOFTPHONE_LOGIN_FAILURE_DELAY_MS", "1500"),
    );
    d.add_user(USER, "the-password");
    for (user, password, status) in [(USER, "wrong", 401), ("nobody", "x", 401), ("", "", 400)] {
        let started = Instant::now();
        assert_eq!(d.login(user, password).status, status, "{user:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "{user:?} answered after {took:?}"
        );
    }
    assert_eq!(d.login(USER, "the-password").status, 200);
}
