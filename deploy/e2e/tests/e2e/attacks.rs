//! The attack suite's forged and mangled tokens through nginx, where apps meet
//! it: media by header and by `?token=`, the public check, and nchan subscribe.
//! Every one is refused (401/403, or nginx's own 4xx for a request line too
//! long), never 2xx, never 5xx; a valid token still gets the file afterwards.

use softphone_testkit::forge::{Forge, forged, non_canonical};
use softphone_testkit::{BASE, request};

use crate::{PASSWORD, USER, assert_no_secrets, stack};

const MEDIA: &str = "/pbxcore/softphone/recordings";

#[test]
fn forged_tokens_are_refused_through_nginx() {
    let (d, nginx) = stack("attacks-nginx", "http://127.0.0.1:9/");
    std::fs::write(nginx.recordings.join("call-1.mp3"), b"ID3 fake").unwrap();
    let (access, _) = d.tokens(USER, PASSWORD);
    let (revoked, _) = d.tokens(USER, PASSWORD);
    let get = |path: &str, headers: &[(&str, &str)]| {
        request(nginx.addr, "GET", path, headers, b"").status
    };
    let forge = Forge::for_session(&d, &access);
    let control = forge.valid();
    assert_eq!(
        get(&format!("{MEDIA}/call-1.mp3?token={control}"), &[]),
        200
    );
    assert_eq!(
        get(&format!("{MEDIA}/call-1.mp3?token={revoked}"), &[]),
        200
    );
    crate::logout(&nginx, &revoked);

    let mut cases = forged(&forge);
    cases.push(("revoked".into(), revoked.clone()));
    cases.push(("revoked, non-canonical".into(), non_canonical(&revoked)));
    let mut tried = 0;
    for (why, token) in &cases {
        let bearer = format!("Bearer {token}");
        for (place, status) in [
            (
                "media header",
                get(
                    &format!("{MEDIA}/call-1.mp3"),
                    &[("Authorization", &bearer)],
                ),
            ),
            (
                "media query",
                get(&format!("{MEDIA}/call-1.mp3?token={token}"), &[]),
            ),
            (
                "check header",
                get(
                    &format!("{BASE}/check-media-access"),
                    &[("Authorization", &bearer)],
                ),
            ),
            (
                "subscribe query",
                get(&format!("{BASE}/sub/users-state?token={token}"), &[]),
            ),
        ] {
            tried += 1;
            // 414/400/494: nginx itself refuses request lines or headers that are
            // too long (the 64 KB token) before anything is asked.
            assert!(
                matches!(status, 401 | 403 | 400 | 414 | 494),
                "{why} at {place}: {status}"
            );
        }
    }
    eprintln!("{tried} forged requests through nginx");
    assert_eq!(
        get(
            &format!("{MEDIA}/call-1.mp3"),
            &[("Authorization", &format!("Bearer {access}"))]
        ),
        200
    );
    assert_no_secrets(&d, &nginx, &[&access, &revoked, &control]);
}
