//! Sessions per user are bounded: a login beyond `max_sessions_per_user` revokes
//! the user's oldest session, and nginx's media check refuses its token from the
//! very next request.

use softphone_testkit::http::settled;
use softphone_testkit::nginx::Nginx;
use softphone_testkit::{BASE, CHECK, Daemons, Options, request};

use crate::{PASSWORD, USER};

/// Logs in through nginx; returns the access token.
fn login(nginx: &Nginx) -> String {
    let body = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    let r = settled(|| {
        request(
            nginx.addr,
            "POST",
            &format!("{BASE}/auth/login"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    });
    assert_eq!(r.status, 200, "{}", r.text());
    r.json_str("access_token")
}

fn media_check(nginx: &Nginx, access: &str) -> u16 {
    let bearer = format!("Bearer {access}");
    request(nginx.addr, "GET", CHECK, &[("Authorization", &bearer)], b"").status
}

#[test]
fn a_login_beyond_the_cap_ends_the_oldest_session_at_once() {
    let d = Daemons::start_with(
        "session-cap",
        Options::default().with("SOFTPHONE_MAX_SESSIONS_PER_USER", "2"),
    );
    d.add_user(USER, PASSWORD);
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");

    let first = login(&nginx);
    let second = login(&nginx);
    assert_eq!(media_check(&nginx, &first), 200);
    assert_eq!(media_check(&nginx, &second), 200);

    let third = login(&nginx);
    assert_eq!(
        media_check(&nginx, &first),
        401,
        "the oldest session lives on"
    );
    assert_eq!(media_check(&nginx, &second), 200);
    assert_eq!(media_check(&nginx, &third), 200);
    // The issuer agrees.
    assert_eq!(d.issuer_get("/profile", Some(&first)).status, 401);
    assert_eq!(d.issuer_get("/profile", Some(&third)).status, 200);

    // Many more logins keep the count at the cap.
    let mut last = third;
    for _ in 0..5 {
        last = login(&nginx);
    }
    assert_eq!(media_check(&nginx, &last), 200);
    assert_eq!(media_check(&nginx, &second), 401);
    let (ok, listing) = d.admin(&["session", "list"], "");
    assert!(ok, "{listing}");
    let rows = listing
        .lines()
        .filter(|l| l.contains(&format!(" {USER} ")))
        .count();
    assert_eq!(rows, 2, "{listing}");
}
