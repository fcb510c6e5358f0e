//! The verifier's unix-socket listener answers exactly like the TCP one (both
//! run the same connection loop), including its limits.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use softphone_testkit::http::build;
use softphone_testkit::{CHECK, Daemons, Options};

use crate::{PASSWORD, USER};

fn connect(d: &Daemons) -> UnixStream {
    let s = UnixStream::connect(d.config().verifier_socket().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads `n` responses (all bodies here are empty or short JSON with a length).
fn statuses(s: &mut UnixStream, n: usize) -> Vec<u16> {
    let mut seen = Vec::new();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < n {
        let k = s.read(&mut chunk).unwrap();
        assert!(k > 0, "closed after {} answers", got.len());
        seen.extend_from_slice(&chunk[..k]);
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if seen.len() < end + 4 + len {
                break;
            }
            got.push(head[9..12].parse().unwrap());
            seen.drain(..end + 4 + len);
        }
    }
    got
}

#[test]
fn answers_like_tcp_with_the_same_limits() {
    let d = Daemons::start_with(
        "unix",
        Options::default().with("SOFTPHONE_VERIFIER_SOCKET", "{dir}/run/verifier.sock"),
    );
    d.add_user(USER, PASSWORD);
    let (access, refresh) = d.tokens(USER, PASSWORD);

    // A pipeline of mixed requests, answered in order.
    let mut s = connect(&d);
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for (auth, status) in [
        (format!("Bearer {access}"), 200),
        (format!("Bearer {refresh}"), 403),
        ("Bearer invalid_token".to_owned(), 401),
        (String::new(), 401),
    ] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", &auth)]
        };
        bytes.extend(build("GET", CHECK, &headers, b""));
        expected.push(status);
    }
    bytes.extend(build(
        "GET",
        &format!("/auth?authorization={access}"),
        &[],
        b"",
    ));
    expected.push(200);
    bytes.extend(build("GET", "/health", &[], b""));
    expected.push(200);
    bytes.extend(build("GET", "/nope", &[], b""));
    expected.push(404);
    s.write_all(&bytes).unwrap();
    assert_eq!(statuses(&mut s, expected.len()), expected);

    // The identity headers come along.
    let mut s = connect(&d);
    s.write_all(&build(
        "GET",
        CHECK,
        &[("Authorization", &format!("Bearer {access}"))],
        b"",
    ))
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.contains(
            "X-Softphone-User-Id: 1\r\nX-Softphone-Username: 201\r\nX-Softphone-Role: user"
        ),
        "{text}"
    );

    // 30 headers are fine here (up to 32).
    let extra: Vec<(String, String)> = (0..30)
        .map(|i| (format!("X-Extra-{i}"), "1".into()))
        .collect();
    let mut headers: Vec<(&str, &str)> = extra
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let bearer = format!("Bearer {access}");
    headers.push(("Authorization", &bearer));
    let mut s = connect(&d);
    s.write_all(&build("GET", CHECK, &headers, b"")).unwrap();
    assert_eq!(statuses(&mut s, 1), vec![200]);

    // A request with a body is answered, then the connection closes: nothing can
    // ride behind it.
    let mut s = connect(&d);
    let mut smuggle = build("POST", CHECK, &[("Authorization", &bearer)], b"x");
    smuggle.extend(build("GET", CHECK, &[("Authorization", &bearer)], b""));
    s.write_all(&smuggle).unwrap();
    assert_eq!(statuses(&mut s, 1), vec![401]);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));

    // A head that outgrows 16 KiB is refused and the connection closes instead
    // of growing.
    let mut s = connect(&d);
    let _ =
        s.write_all(format!("GET {CHECK} HTTP/1.1\r\nX-Big: {}", "a".repeat(20_000)).as_bytes());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 401 "), "{rest}");
    assert!(rest.ends_with("\r\nConnection: close\r\n\r\n"), "{rest}");

    // And the verifier still answers.
    let mut s = connect(&d);
    s.write_all(&build("GET", CHECK, &[("Authorization", &bearer)], b""))
        .unwrap();
    assert_eq!(statuses(&mut s, 1), vec![200]);
}
