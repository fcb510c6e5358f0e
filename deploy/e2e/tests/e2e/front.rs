//! Media files and the verifier's public check through nginx.

use std::time::{Duration, Instant};

use softphone_testkit::{BASE, poll_until, request};

use crate::{PASSWORD, USER, assert_no_secrets, logout, stack};

const MEDIA: &str = "/pbxcore/softphone/recordings";

#[test]
fn recordings_need_a_valid_access_token() {
    let (d, nginx) = stack("media", "http://127.0.0.1:9/");
    let audio = b"ID3\x03\x00fake mp3 bytes";
    std::fs::write(nginx.recordings.join("call-1.mp3"), audio).unwrap();
    std::fs::write(nginx.recordings.join("shell.php"), b"<?php echo 1;").unwrap();
    let (access, refresh) = d.tokens(USER, PASSWORD);
    let get = |path: &str, headers: &[(&str, &str)]| request(nginx.addr, "GET", path, headers, b"");
    let bearer = format!("Bearer {access}");

    let r = get(
        &format!("{MEDIA}/call-1.mp3"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, audio);
    assert_eq!(r.header("Content-Type"), Some("audio/mpeg"));
    assert_eq!(r.header("Cache-Control"), Some("private, max-age=3600"));
    let r = get(&format!("{MEDIA}/call-1.mp3?token={access}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, audio);

    assert_eq!(get(&format!("{MEDIA}/call-1.mp3"), &[]).status, 401);
    assert_eq!(
        get(&format!("{MEDIA}/call-1.mp3?token=invalid_token"), &[]).status,
        401
    );
    assert_eq!(
        get(&format!("{MEDIA}/call-1.mp3?token={refresh}"), &[]).status,
        403
    );
    // Scripts are never run or sent; missing files are 404 only to valid tokens.
    assert_eq!(
        get(&format!("{MEDIA}/shell.php?token={access}"), &[]).status,
        403
    );
    assert_eq!(
        get(&format!("{MEDIA}/missing.mp3?token={access}"), &[]).status,
        404
    );
    assert_eq!(get(&format!("{MEDIA}/missing.mp3"), &[]).status, 401);
    let r = get(
        &format!("{MEDIA}/../../../../etc/passwd?token={access}"),
        &[],
    );
    assert!(!r.text().contains("root:"), "traversal");

    // 30 extra headers on the way in: nginx passes only the token to the verifier.
    let extra: Vec<(String, String)> = (0..30)
        .map(|i| (format!("X-Extra-{i}"), "1".into()))
        .collect();
    let mut headers: Vec<(&str, &str)> = extra
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(get(&format!("{MEDIA}/call-1.mp3"), &headers).status, 401);
    headers.push(("Authorization", &bearer));
    assert_eq!(get(&format!("{MEDIA}/call-1.mp3"), &headers).status, 200);
    assert_eq!(
        get(&format!("{BASE}/check-media-access"), &headers).status,
        200
    );
    let profile = get(&format!("{BASE}/profile"), &headers);
    assert_eq!(profile.status, 200, "{}", profile.text());

    // After logout: refused at once.
    logout(&nginx, &access);
    assert_eq!(
        get(&format!("{MEDIA}/call-1.mp3?token={access}"), &[]).status,
        401
    );
    assert_eq!(
        get(
            &format!("{MEDIA}/call-1.mp3"),
            &[("Authorization", &bearer)]
        )
        .status,
        401
    );
    assert_eq!(
        get(&format!("{BASE}/check-media-access?token={access}"), &[]).status,
        401
    );
    assert_no_secrets(&d, &nginx, &[&access, &refresh]);
}

#[test]
fn the_api_through_nginx_keeps_the_contract() {
    let (d, nginx) = stack("api-front", "http://127.0.0.1:9/");
    let r = request(nginx.addr, "GET", &format!("{BASE}/nope"), &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "Not found");
    let r = request(nginx.addr, "GET", &format!("{BASE}/auth/login"), &[], b"");
    assert_eq!(r.status, 405);
    // nginx passes the client's address; the security log records it.
    let r = request(
        nginx.addr,
        "POST",
        &format!("{BASE}/auth/login"),
        &[("Content-Type", "application/json")],
        br#"{"username":"201","password":"wrong"}"#,
    );
    assert_eq!(r.status, 401);
    let log = std::fs::read_to_string(d.security_log()).unwrap();
    assert!(
        log.contains("[AUTH_FAILED] Failed login attempt for user: 201 | From: 127.0.0.1"),
        "{log}"
    );
    let r = request(
        nginx.addr,
        "GET",
        &format!("{BASE}/check-media-access"),
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="softphone""#)
    );
    assert_no_secrets(&d, &nginx, &[]);
}

/// With the verifier down, token-carrying URLs fail closed (5xx, never the file)
/// and nginx's error log, which prints request lines, still gets no token.
#[test]
fn a_verifier_outage_fails_closed_and_leaks_no_token() {
    let (mut d, nginx) = stack("outage", "http://127.0.0.1:9/");
    std::fs::write(nginx.recordings.join("call-2.mp3"), b"audio").unwrap();
    let (access, _) = d.tokens(USER, PASSWORD);
    assert_eq!(
        request(
            nginx.addr,
            "GET",
            &format!("{MEDIA}/call-2.mp3?token={access}"),
            &[],
            b""
        )
        .status,
        200
    );
    let verifier = d.verifier_child();
    verifier.kill().unwrap();
    verifier.wait().unwrap();

    for path in [
        format!("{MEDIA}/call-2.mp3?token={access}"),
        format!("{BASE}/check-media-access?token={access}"),
        format!("{BASE}/sub/users-state?authorization={access}"),
        format!("/pbxcore/softphone/ws?token={access}"),
    ] {
        let r = request(nginx.addr, "GET", &path, &[], b"");
        assert!(r.status >= 500, "{path}: {}", r.status);
        assert!(!r.text().contains("audio"));
    }
    let errors = nginx.error_log();
    assert!(
        !errors.contains(&access) && !errors.contains("eyJ"),
        "{errors}"
    );
    assert!(!nginx.access_log().contains("eyJ"));
}

/// Recordings are served from nginx's open-file cache: a new file at once (a
/// missing one is never remembered), a replaced or deleted one within the 5 s
/// the site promises.
#[test]
fn recordings_change_within_seconds_despite_the_file_cache() {
    let (d, nginx) = stack("media-cache", "http://127.0.0.1:9/");
    let (access, _) = d.tokens(USER, PASSWORD);
    let url = format!("{MEDIA}/call-9.mp3?token={access}");
    let get = || request(nginx.addr, "GET", &url, &[], b"");
    let path = nginx.recordings.join("call-9.mp3");
    assert_eq!(get().status, 404);
    std::fs::write(&path, b"first take").unwrap();
    let r = get();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"first take"[..]));

    // Replaced the way recorders do it: written aside, renamed over.
    let aside = nginx.recordings.join(".call-9.tmp");
    std::fs::write(&aside, b"second take").unwrap();
    std::fs::rename(&aside, &path).unwrap();
    let replaced = Instant::now();
    let fresh = poll_until(Duration::from_secs(7), || get().body == b"second take");
    assert!(fresh.is_some(), "the replaced recording is still served");
    let seen = replaced.elapsed();

    std::fs::remove_file(&path).unwrap();
    let deleted = Instant::now();
    let gone = poll_until(Duration::from_secs(7), || get().status == 404);
    assert!(gone.is_some(), "the deleted recording is still served");
    let gone = deleted.elapsed();
    eprintln!("replacement served after {seen:?}, deletion after {gone:?}");
    assert!(seen <= Duration::from_secs(6), "{seen:?}");
    assert!(gone <= Duration::from_secs(6), "{gone:?}");
}
