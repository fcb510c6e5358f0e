//! Hostile requests straight into the verifier: never a 5xx, never a crash, and the
//! next valid request still works.

use std::time::Duration;

use softphone_testkit::http::{Conn, build};
use softphone_testkit::{CHECK, Daemons, send_raw};

use crate::logged_in;

/// The verifier answers health and a valid token, and its process is alive.
fn assert_still_serving(d: &mut Daemons, access: &str) {
    assert!(
        d.verifier_child().try_wait().unwrap().is_none(),
        "verifier died"
    );
    assert_eq!(d.check(Some(access)).status, 200);
}

/// Sends `bytes`; a response, if any, must not be a 5xx.
fn no_server_error(d: &Daemons, bytes: &[u8]) -> Option<u16> {
    match send_raw(d.verifier, bytes) {
        Ok(r) => {
            assert!(r.status < 500, "got {}", r.status);
            Some(r.status)
        }
        // Closed without an answer: no 5xx either.
        Err(_) => None,
    }
}

#[test]
fn oversized_and_malformed_heads() {
    let (mut d, access, _) = logged_in("hostile-heads");
    let bearer = format!("Bearer {access}");

    // A 1 MB header value: read, then refused as an unreadable token.
    let huge = "a".repeat(1024 * 1024);
    let status = no_server_error(&d, &build("GET", CHECK, &[("Authorization", &huge)], b""));
    assert_eq!(status, Some(401));

    // 32 headers are read (30 here, Host and Authorization); 40 are refused
    // with a 401 and the connection closes.
    for (extra, status) in [(30, 200), (40, 401)] {
        let many: Vec<(String, String)> = (0..extra)
            .map(|i| (format!("X-Extra-{i}"), "1".to_owned()))
            .collect();
        let mut headers: Vec<(&str, &str)> =
            many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        headers.push(("Authorization", &bearer));
        let got = no_server_error(&d, &build("GET", CHECK, &headers, b""));
        assert_eq!(got, Some(status), "{extra} extra headers");
    }

    // Garbage, negative and duplicated Content-Length: refused, never parsed as a body.
    for values in [
        vec!["abc"],
        vec!["-1"],
        vec!["5", "6"],
        vec!["99999999999999999999999"],
    ] {
        let mut h = vec![("Authorization", bearer.as_str())];
        h.extend(values.iter().map(|v| ("Content-Length", *v)));
        assert_eq!(
            no_server_error(&d, &build("GET", CHECK, &h, b"")),
            Some(401),
            "{values:?}"
        );
    }

    // Non-UTF-8 bytes in a header value and in the target.
    let mut bytes = format!("GET {CHECK} HTTP/1.1\r\nAuthorization: Bearer ").into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\xfd\r\n\r\n");
    assert_eq!(no_server_error(&d, &bytes), Some(401));
    let mut bytes = b"GET /auth?token=\xff\xfe HTTP/1.1\r\n\r\n".to_vec();
    bytes.extend_from_slice(format!("Authorization: {bearer}\r\n\r\n").as_bytes());
    no_server_error(&d, &bytes);
    no_server_error(&d, b"\x00\x01\x02garbage\r\n\r\n");
    no_server_error(&d, b"GET\r\n\r\n");

    assert_still_serving(&mut d, &access);
}

#[test]
fn a_pipeline_of_mixed_requests_is_answered_in_order() {
    let (mut d, access, refresh) = logged_in("pipeline");
    let cases = [
        (format!("Bearer {access}"), 200),
        (format!("Bearer {refresh}"), 403),
        ("Bearer invalid_token".to_owned(), 401),
        (String::new(), 401),
    ];
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..100 {
        let (auth, status) = &cases[i % cases.len()];
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        bytes.extend(build("GET", CHECK, &headers, b""));
        expected.push(*status);
    }
    let mut conn = Conn::open(d.verifier).unwrap();
    conn.send(&bytes).unwrap();
    let got: Vec<u16> = (0..100)
        .map(|_| conn.read_response().unwrap().status)
        .collect();
    assert_eq!(got, expected);

    // A request with a body is answered, then the connection closes: its body
    // is never read as a request (http_attacks.rs has the smuggling cases).
    let mut conn = Conn::open(d.verifier).unwrap();
    let auth = format!("Bearer {access}");
    conn.send(&build("POST", CHECK, &[("Authorization", &auth)], b"hello"))
        .unwrap();
    let r = conn.read_response().unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("Connection"), Some("close"));
    let _ = conn.send(&build("GET", CHECK, &[("Authorization", &auth)], b""));
    assert!(conn.read_response().is_err(), "answered after the close");

    // A head that stops half-way leaves others unaffected.
    let mut stalled = Conn::open(d.verifier).unwrap();
    stalled
        .send(b"GET /auth HTTP/1.1\r\nAuthorization: Bea")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_still_serving(&mut d, &access);
}

#[test]
fn unknown_paths_are_404_and_health_answers() {
    let (d, access, _) = logged_in("verifier-paths");
    let r = softphone_testkit::request(d.verifier, "GET", "/nope", &[], b"");
    assert_eq!(r.status, 404);
    let r = softphone_testkit::request(
        d.verifier,
        "GET",
        &format!("/pbxcore/x?token={access}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
    let r = softphone_testkit::request(d.verifier, "GET", "/health", &[], b"");
    assert_eq!(r.status, 200);
    d.assert_logs_clean(&[crate::PASSWORD, &access]);
}

#[test]
fn five_thousand_idle_connections_do_not_lock_out_valid_clients() {
    let (mut d, access, _) = logged_in("idle-connections");
    let idle: Vec<std::net::TcpStream> = (0..5000)
        .map(|i| {
            std::net::TcpStream::connect(d.verifier)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    // Half of them send half a request head and stall.
    for mut conn in idle.iter().step_by(2) {
        let _ = std::io::Write::write_all(&mut conn, b"GET /auth HTTP/1.1\r\nAuthoriz");
    }
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(d.check(Some(&access)).status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // An idle connection still works when it finally speaks.
    let mut late = &idle[1];
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(
        &mut late,
        &build(
            "GET",
            CHECK,
            &[("Authorization", &format!("Bearer {access}"))],
            b"",
        ),
    )
    .unwrap();
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut late, &mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    drop(idle);
    assert_still_serving(&mut d, &access);
}

/// The epoch file deleted under the running daemons: the verifier notices within
/// a second and asks the database on every request instead, so logouts still
/// take effect at once.
#[test]
fn a_deleted_epoch_file_falls_back_to_asking_the_database() {
    let (d, access, _) = logged_in("epoch-deleted");
    std::fs::remove_file(d.epoch_file()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.check(Some(&access)).status, 200);
    let (second, _) = d.tokens(crate::USER, crate::PASSWORD);
    assert_eq!(d.check(Some(&second)).status, 200);
    assert_eq!(d.issuer_post("/auth/logout", Some(&access)).status, 200);
    assert_eq!(d.check(Some(&access)).status, 401);
    assert_eq!(d.check(Some(&second)).status, 200);
    let stderr = std::fs::read_to_string(d.stderr_file("verifier")).unwrap();
    assert!(
        stderr.contains("checking every request against the database"),
        "{stderr}"
    );
}
