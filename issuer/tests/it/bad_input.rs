//! Hostile input to the issuer: never a 500, never a crash, never a forged log line.

use std::io::Write;

use softphone_testkit::http::{Conn, settled};
use softphone_testkit::{BASE, Daemons, request};

use crate::{PASSWORD, USER};

fn login_raw(d: &Daemons, body: &[u8]) -> softphone_testkit::Response {
    settled(|| {
        request(
            d.issuer,
            "POST",
            &format!("{BASE}/auth/login"),
            &[("Content-Type", "application/json")],
            body,
        )
    })
}

#[test]
fn hostile_bodies_are_400_and_leave_the_daemon_working() {
    let mut d = Daemons::start("issuer-bad-input");
    d.add_user(USER, PASSWORD);

    // Deeply nested JSON (serde_json stops at depth 128).
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(login_raw(&d, &nested.as_bytes()[..8000]).status, 400);
    let bomb = format!(
        r#"{{"username":{}"x"{},"password":"x"}}"#,
        "[".repeat(3000),
        "]".repeat(3000)
    );
    assert_eq!(login_raw(&d, bomb.as_bytes()).status, 400);

    // A 10 MB body: refused from its Content-Length, before it is read.
    let mut conn = Conn::open(d.issuer).unwrap();
    let head = format!(
        "POST {BASE}/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    conn.send(head.as_bytes()).unwrap();
    let mut writer = conn.stream().try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..160 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let r = conn.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "Invalid credentials provided");
    drop(conn);
    let _ = pusher.join();

    // Chunked body (no Content-Length): read up to the same 8 KiB limit; not JSON.
    let chunked = format!(
        "POST {BASE}/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    assert_eq!(
        softphone_testkit::send_raw(d.issuer, chunked.as_bytes())
            .unwrap()
            .status,
        400
    );

    // Non-UTF-8 body and header bytes.
    assert_eq!(
        login_raw(&d, b"{\"username\":\"\xff\xfe\",\"password\":\"x\"}").status,
        400
    );
    // obs-text bytes in a header reach us (hyper passes them) and are a bad token.
    let mut bytes =
        format!("GET {BASE}/profile HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ").into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\r\n\r\n");
    assert_eq!(
        softphone_testkit::send_raw(d.issuer, &bytes)
            .unwrap()
            .status,
        401
    );

    // SQL-looking, NUL-carrying and very long usernames are just unknown users.
    for username in [
        "201' OR '1'='1",
        "201\\\"; DROP TABLE sessions; --",
        "201\\u0000",
        &"9".repeat(5000),
    ] {
        let body = format!(r#"{{"username":"{username}","password":"x"}}"#);
        let r = login_raw(&d, body.as_bytes());
        assert!(
            r.status == 401 || r.status == 400,
            "{username}: {}",
            r.status
        );
    }
    // The tables are intact and the daemon still serves.
    let (access, _) = d.tokens(USER, PASSWORD);
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
    assert!(
        d.issuer_child().try_wait().unwrap().is_none(),
        "issuer died"
    );
}

#[test]
fn usernames_with_line_breaks_stay_on_one_log_line() {
    let d = Daemons::start("log-injection");
    let body = r#"{"username":"x\r\n[AUTH_SUCCESS] Successful login for user: 201 | From: 8.8.8.8 | Time: 2026-01-01 00:00:00","password":"x"}"#;
    assert_eq!(login_raw(&d, body.as_bytes()).status, 401);
    let log = std::fs::read_to_string(d.security_log()).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.starts_with("[AUTH_FAILED] Failed login attempt for user: x\\x0d\\x0a[AUTH_SUCCESS]"),
        "{log}"
    );
    assert_eq!(log.matches("| From:").count(), 1, "{log}");
    assert!(!log.contains("8.8.8.8 |"), "{log}");
}
