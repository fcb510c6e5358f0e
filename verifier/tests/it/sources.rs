//! Where the verifier finds the token: query `authorization`, query `token`, the
//! `Authorization` header; `Bearer` in any case or bare; percent-encoded; through
//! `X-Original-URI`. Two different tokens are refused.

use softphone_testkit::{CHECK, request};

use crate::logged_in;

fn status(d: &softphone_testkit::Daemons, target: &str, headers: &[(&str, &str)]) -> u16 {
    request(d.verifier, "GET", target, headers, b"").status
}

#[test]
fn every_source_and_form_is_accepted() {
    let (d, access, refresh) = logged_in("sources");
    let bearer = format!("Bearer {access}");
    let encoded = access.replace('.', "%2E").replace('-', "%2d");
    for (target, headers) in [
        (format!("{CHECK}?authorization={access}"), vec![]),
        (format!("{CHECK}?token={access}"), vec![]),
        (format!("{CHECK}?x=1&token={access}&y=2"), vec![]),
        (format!("{CHECK}?authorization=Bearer%20{access}"), vec![]),
        (format!("{CHECK}?authorization=bearer+{access}"), vec![]),
        (format!("{CHECK}?token={encoded}"), vec![]),
        (CHECK.to_owned(), vec![("Authorization", bearer.clone())]),
        (
            CHECK.to_owned(),
            vec![("Authorization", format!("BEARER {access}"))],
        ),
        (
            CHECK.to_owned(),
            vec![("Authorization", format!("bEaReR {access}"))],
        ),
        (CHECK.to_owned(), vec![("Authorization", access.clone())]),
        // nginx auth_request: the original URI in a header.
        (
            "/auth".to_owned(),
            vec![(
                "X-Original-URI",
                format!("/pbxcore/softphone/recordings/a.mp3?token={access}"),
            )],
        ),
        // nchan: the original query appended to the authorizer's URI.
        (format!("/auth?authorization={access}"), vec![]),
        // The same token in several sources is fine.
        (
            format!("{CHECK}?token={access}"),
            vec![("Authorization", bearer.clone())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(status(&d, &target, &headers), 200, "{target} {headers:?}");
    }
    // A refresh token from any source is 403.
    assert_eq!(
        status(&d, &format!("{CHECK}?authorization={refresh}"), &[]),
        403
    );
    assert_eq!(
        status(
            &d,
            "/auth",
            &[("X-Original-URI", &format!("/x?token={refresh}"))]
        ),
        403
    );
}

#[test]
fn conflicting_or_broken_sources_are_refused() {
    let (d, access, _) = logged_in("conflicts");
    let (other, _) = d.tokens(crate::USER, crate::PASSWORD);
    let auth = |value: String| vec![("Authorization", value)];
    for (target, headers) in [
        (
            format!("{CHECK}?token={access}"),
            auth(format!("Bearer {other}")),
        ),
        (
            format!("{CHECK}?authorization={access}&token={other}"),
            vec![],
        ),
        (format!("{CHECK}?token={access}&token={other}"), vec![]),
        (
            CHECK.to_owned(),
            vec![
                ("Authorization", format!("Bearer {access}")),
                ("Authorization", format!("Bearer {other}")),
            ],
        ),
        (
            format!("/auth?token={access}"),
            vec![("X-Original-URI", format!("/x?token={other}"))],
        ),
        (format!("{CHECK}?token={access}%zz"), vec![]),
        (CHECK.to_owned(), auth(format!("Bearer\t{access}"))),
        (CHECK.to_owned(), auth(format!("Bearer  {access}"))),
        (CHECK.to_owned(), auth(format!("Basic {access}"))),
        (format!("{CHECK}?token={access}x"), vec![]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = request(d.verifier, "GET", &target, &headers, b"");
        assert_eq!(r.status, 401, "{target} {headers:?}");
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some(r#"Bearer realm="softphone", error="invalid_token""#)
        );
    }
    // Both tokens on their own are fine.
    assert_eq!(status(&d, &format!("{CHECK}?token={other}"), &[]), 200);
    assert_eq!(
        status(&d, CHECK, &[("Authorization", &format!("Bearer {access}"))]),
        200
    );
}
