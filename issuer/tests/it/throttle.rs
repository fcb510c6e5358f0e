//! Login throttling through the real daemon.

use softphone_testkit::http::settled;
use softphone_testkit::{BASE, Daemons, request};

use crate::{PASSWORD, USER};

#[test]
fn the_sixth_bad_password_from_one_address_is_throttled_even_if_correct() {
    let d = Daemons::start("throttle");
    d.add_user(USER, PASSWORD);
    for _ in 0..5 {
        assert_eq!(d.login(USER, "wrong").status, 401);
    }
    let limited = d.login(USER, "wrong");
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.error(),
        "Too many login attempts. Please try again later"
    );
    let retry: i64 = limited.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    // The right password is refused too while throttled.
    assert_eq!(d.login(USER, PASSWORD).status, 429);

    // nginx (a loopback peer) passes the client's address in X-Real-IP: another
    // client is not affected by this one's failures.
    let body = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    let other = settled(|| {
        request(
            d.issuer,
            "POST",
            &format!("{BASE}/auth/login"),
            &[
                ("Content-Type", "application/json"),
                ("X-Real-IP", "10.0.0.7"),
            ],
            body.as_bytes(),
        )
    });
    assert_eq!(other.status, 200, "{}", other.text());

    let log = std::fs::read_to_string(d.security_log()).unwrap();
    assert_eq!(
        log.matches("[AUTH_FAILED] Failed login attempt for user: 201 | From: 127.0.0.1")
            .count(),
        5
    );
    assert!(
        log.contains("[AUTH_RATE_LIMITED] Too many login attempts for user: 201 | From: 127.0.0.1")
    );
    assert!(log.contains("[AUTH_SUCCESS] Successful login for user: 201 | From: 10.0.0.7"));
    d.assert_logs_clean(&[PASSWORD]);
}
