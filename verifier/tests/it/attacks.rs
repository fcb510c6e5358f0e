//! Forged and mangled tokens against the real verifier and issuer: every one ends
//! in 401 or 403, never a 2xx or a 5xx, and the next valid request still works.

use softphone_testkit::forge::{Forge, forged, non_canonical};
use softphone_testkit::{BASE, CHECK, Daemons, request};

use crate::{PASSWORD, USER};

#[test]
fn forged_tokens_never_pass_and_never_break_anything() {
    let d = Daemons::start("attacks");
    d.add_user(USER, PASSWORD);
    let (access, _) = d.tokens(USER, PASSWORD);
    let forge = Forge::for_session(&d, &access);
    // Sanity: the forge makes valid tokens when nothing is wrong.
    let control = forge.valid();
    assert_eq!(d.check(Some(&control)).status, 200);
    // A revoked token, seen (and cached) while it was good, then mangled.
    let (revoked, _) = d.tokens(USER, PASSWORD);
    assert_eq!(d.check(Some(&revoked)).status, 200);
    assert_eq!(d.issuer_post("/auth/logout", Some(&revoked)).status, 200);

    let mut cases = forged(&forge);
    cases.push(("revoked".into(), revoked.clone()));
    cases.push((
        "revoked, non-canonical trailing bits".into(),
        non_canonical(&revoked),
    ));
    for (why, token) in &cases {
        let bearer = format!("Bearer {token}");
        for (place, status) in [
            ("verifier header", d.check(Some(token)).status),
            (
                "verifier query",
                request(
                    d.verifier,
                    "GET",
                    &format!("{CHECK}?authorization={token}"),
                    &[],
                    b"",
                )
                .status,
            ),
            (
                "issuer profile",
                request(
                    d.issuer,
                    "GET",
                    &format!("{BASE}/profile"),
                    &[("Authorization", &bearer)],
                    b"",
                )
                .status,
            ),
            (
                "issuer refresh",
                request(
                    d.issuer,
                    "POST",
                    &format!("{BASE}/auth/refresh"),
                    &[("Authorization", &bearer)],
                    b"",
                )
                .status,
            ),
            (
                "issuer logout",
                request(
                    d.issuer,
                    "POST",
                    &format!("{BASE}/auth/logout"),
                    &[("Authorization", &bearer)],
                    b"",
                )
                .status,
            ),
        ] {
            assert!(
                matches!(status, 400 | 401 | 403 | 431),
                "{why} at {place}: {status}"
            );
        }
    }
    // A megabyte token, then the ones that are fine still are.
    let huge = format!("Bearer {}", "a".repeat(1024 * 1024));
    let r = request(d.verifier, "GET", CHECK, &[("Authorization", &huge)], b"");
    assert_eq!(r.status, 401);
    assert_eq!(d.check(Some(&access)).status, 200);
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
    eprintln!("{} forged tokens tried at 5 places each", cases.len());
    d.assert_logs_clean(&[PASSWORD]);
}
