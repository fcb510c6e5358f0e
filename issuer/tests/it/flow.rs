//! The seed's flow end to end, and refresh-token rotation.

use softphone_shared::{session_id, unix_now_ms};
use softphone_testkit::Daemons;

use crate::{PASSWORD, USER};

#[test]
fn the_seed_flow_from_login_to_logout() {
    let d = Daemons::start("seed-flow");
    d.add_user(USER, PASSWORD);

    let login = d.login(USER, PASSWORD);
    assert_eq!(login.status, 200);
    let body = login.text();
    // Compact JSON: the seed's sed lines depend on `"access_token":"` with no space.
    assert!(
        body.starts_with(r#"{"success":true,"access_token":""#),
        "{body}"
    );
    assert!(
        body.ends_with(r#","token_type":"Bearer","expires_in":3600}"#),
        "{body}"
    );
    assert_eq!(login.header("Cache-Control"), Some("no-store"));
    let access = login.json_str("access_token");
    let refresh = login.json_str("refresh_token");

    let profile = d.issuer_get("/profile", Some(&access));
    assert_eq!(profile.status, 200);
    assert_eq!(
        profile.text(),
        r#"{"success":true,"user":{"id":1,"username":"201","role":"user"}}"#
    );

    let check = d.check(Some(&access));
    assert_eq!(check.status, 200);
    assert_eq!(check.header("X-Softphone-User-Id"), Some("1"));
    assert_eq!(check.header("X-Softphone-Username"), Some("201"));
    assert_eq!(check.header("X-Softphone-Role"), Some("user"));
    assert!(check.body.is_empty());

    let refreshed = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let access2 = refreshed.json_str("access_token");
    let refresh2 = refreshed.json_str("refresh_token");
    assert_ne!(access2, access);
    assert_ne!(refresh2, refresh);
    assert_eq!(d.issuer_get("/profile", Some(&access2)).status, 200);

    let logout = d.issuer_post("/auth/logout", Some(&access));
    assert_eq!(logout.status, 200);
    assert_eq!(
        logout.text(),
        r#"{"success":true,"message":"Logged out successfully"}"#
    );

    // Logout ends the whole session: every token of it, everywhere, at once.
    let profile = d.issuer_get("/profile", Some(&access));
    assert_eq!(profile.status, 401);
    assert_eq!(profile.error(), "Unauthorized. Token required");
    assert_eq!(d.issuer_get("/profile", Some(&access2)).status, 401);
    for token in [&access, &access2] {
        let check = d.check(Some(token));
        assert_eq!(check.status, 401);
        assert_eq!(
            check.header("WWW-Authenticate"),
            Some(r#"Bearer realm="softphone", error="invalid_token""#)
        );
    }
    for token in [&refresh, &refresh2] {
        let r = d.issuer_post("/auth/refresh", Some(token));
        assert_eq!(r.status, 401);
        assert_eq!(r.error(), "Invalid or missing token");
    }
    let log = std::fs::read_to_string(d.security_log()).unwrap();
    assert!(
        log.contains("[AUTH_SUCCESS] Successful login for user: 201 | From: 127.0.0.1 | Time: "),
        "{log}"
    );
    assert!(
        log.contains("[LOGOUT] User logged out: 201 | From: 127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("[MEDIA_ACCESS_DENIED] Media access denied (revoked) for user: 201"),
        "{log}"
    );
    d.assert_logs_clean(&[PASSWORD, &access, &refresh]);
}

/// A session's id begins with its creation time in milliseconds, so the
/// sessions table (keyed by it) grows at one end; the rest is random.
#[test]
fn session_ids_begin_with_their_creation_time() {
    let d = Daemons::start("sid-time");
    d.add_user(USER, PASSWORD);
    let before = unix_now_ms();
    for _ in 0..3 {
        assert_eq!(d.login(USER, PASSWORD).status, 200);
    }
    let after = unix_now_ms();
    let ids: Vec<_> = d
        .sql_strings("SELECT sid FROM sessions ORDER BY change_seq")
        .iter()
        .map(|sid| session_id::parse(sid).unwrap_or_else(|| panic!("{sid}")))
        .collect();
    assert_eq!(ids.len(), 3);
    let times: Vec<u64> = ids.iter().map(session_id::created_ms).collect();
    assert!(
        before <= times[0] && times[0] <= times[1] && times[1] <= times[2] && times[2] <= after,
        "{before} {times:?} {after}"
    );
    assert_ne!(
        ids[0][session_id::TIME_LEN..],
        ids[1][session_id::TIME_LEN..]
    );
}

#[test]
fn logout_with_the_refresh_token_ends_the_session_too() {
    let d = Daemons::start("logout-refresh");
    d.add_user(USER, PASSWORD);
    let (access, refresh) = d.tokens(USER, PASSWORD);
    assert_eq!(d.issuer_post("/auth/logout", Some(&refresh)).status, 200);
    assert_eq!(d.check(Some(&access)).status, 401);
    // A second logout of an ended session is refused.
    let again = d.issuer_post("/auth/logout", Some(&access));
    assert_eq!(again.status, 401);
    assert_eq!(again.error(), "Unauthorized");
    // Other sessions of the same user are untouched.
    let (other, _) = d.tokens(USER, PASSWORD);
    assert_eq!(d.check(Some(&other)).status, 200);
}

#[test]
fn rotation_keeps_the_old_refresh_token_until_its_successor_is_used_then_reuse_revokes() {
    let d = Daemons::start("rotation");
    d.add_user(USER, PASSWORD);
    let (access, r1) = d.tokens(USER, PASSWORD);

    // The app lost our answer: r1 may be presented again while r2 is unused.
    let first = d.issuer_post("/auth/refresh", Some(&r1));
    assert_eq!(first.status, 200);
    let retry = d.issuer_post("/auth/refresh", Some(&r1));
    assert_eq!(retry.status, 200, "{}", retry.text());
    let r2 = retry.json_str("refresh_token");

    // Using the successor retires r1 ...
    let third = d.issuer_post("/auth/refresh", Some(&r2));
    assert_eq!(third.status, 200);
    let r3 = third.json_str("refresh_token");
    let a3 = third.json_str("access_token");
    assert_eq!(d.check(Some(&a3)).status, 200);

    // ... so r1 coming back is theft: the whole session is revoked.
    let stolen = d.issuer_post("/auth/refresh", Some(&r1));
    assert_eq!(stolen.status, 401);
    assert_eq!(d.issuer_post("/auth/refresh", Some(&r3)).status, 401);
    assert_eq!(d.check(Some(&a3)).status, 401);
    assert_eq!(d.check(Some(&access)).status, 401);
    let log = std::fs::read_to_string(d.security_log()).unwrap();
    assert!(
        log.contains("[REFRESH_REUSE] Refresh token reuse, session revoked for user: 201"),
        "{log}"
    );
}

#[test]
fn revocation_survives_restarts_of_both_daemons() {
    let mut d = Daemons::start("restart");
    d.add_user(USER, PASSWORD);
    let (access, refresh) = d.tokens(USER, PASSWORD);
    let (kept, _) = d.tokens(USER, PASSWORD);
    assert_eq!(d.issuer_post("/auth/logout", Some(&access)).status, 200);
    // kill -9 both, then start again on the same data.
    d.stop();
    d.start_issuer();
    d.start_verifier();
    assert_eq!(d.check(Some(&access)).status, 401);
    assert_eq!(d.issuer_post("/auth/refresh", Some(&refresh)).status, 401);
    assert_eq!(d.check(Some(&kept)).status, 200);
}
