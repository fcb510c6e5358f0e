//! nchan through nginx: publishers only from this host, subscribers authorized by
//! the verifier on every subscribe.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use softphone_testkit::http::read_head;
use softphone_testkit::{BASE, eventually, lazily, request};

use crate::{PASSWORD, USER, assert_no_secrets, logout, publish, stack};

/// Opens an EventSource subscription; returns the stream after the status line
/// has been checked.
fn event_source(addr: std::net::SocketAddr, channel: &str, token: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let query = if token.is_empty() {
        String::new()
    } else {
        format!("?authorization={token}")
    };
    write!(
        stream,
        "GET {BASE}/sub/{channel}{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut stream);
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, stream)
}

/// Reads from a stream until `needle` shows up.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let seen = RefCell::new(Vec::new());
    let text = || String::from_utf8_lossy(&seen.borrow()).into_owned();
    let mut chunk = [0u8; 4096];
    eventually(
        Duration::from_secs(10),
        lazily(|| format!("{needle:?} arrives; seen so far: {:?}", text())),
        || {
            let all = text();
            if all.contains(needle) {
                return Some(all);
            }
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "stream closed before {needle:?}");
            seen.borrow_mut().extend_from_slice(&chunk[..n]);
            None
        },
    )
}

#[test]
fn subscribers_need_an_access_token_and_get_published_messages() {
    let (d, nginx) = stack("nchan", "http://127.0.0.1:9/");
    let (access, refresh) = d.tokens(USER, PASSWORD);

    // A live subscriber receives what is published from 127.0.0.1.
    let (status, mut live) = event_source(nginx.addr, "presence-201", &access);
    assert_eq!(status, 200);
    assert!(matches!(
        publish(nginx.addr, "presence-201", r#"{"state":"ringing"}"#),
        201 | 202
    ));
    read_until(&mut live, r#"data: {"state":"ringing"}"#);

    // users-state keeps one message: a new subscriber gets the current state at once.
    for state in ["idle", "busy"] {
        publish(
            nginx.addr,
            "users-state",
            &format!(r#"{{"event":"users-state-update","state":"{state}"}}"#),
        );
    }
    let (status, mut fresh) = event_source(nginx.addr, "users-state", &access);
    assert_eq!(status, 200);
    let seen = read_until(&mut fresh, r#""state":"busy""#);
    assert!(!seen.contains(r#""state":"idle""#), "{seen}");

    // No token, a bad one, a refresh token.
    assert_eq!(event_source(nginx.addr, "users-state", "").0, 401);
    assert_eq!(
        event_source(nginx.addr, "users-state", "invalid_token").0,
        401
    );
    assert_eq!(event_source(nginx.addr, "users-state", &refresh).0, 403);
    // Channel names outside [a-z0-9-]{1,64} do not exist.
    assert_eq!(
        request(
            nginx.addr,
            "GET",
            &format!("{BASE}/sub/Users_State?authorization={access}"),
            &[],
            b""
        )
        .status,
        404
    );
    assert_eq!(
        request(
            nginx.addr,
            "GET",
            &format!("{BASE}/sub/{}?authorization={access}", "a".repeat(65)),
            &[],
            b""
        )
        .status,
        404
    );
    assert_eq!(publish(nginx.addr, "bad.channel", "{}"), 404);

    // A publisher from another loopback address is refused.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            "127.0.0.2",
            "-X",
            "POST",
            "-d",
            "{}",
        ])
        .arg(format!("http://{}{BASE}/pub/users-state", nginx.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");

    // After logout, a new subscription with the old token is refused.
    logout(&nginx, &access);
    assert_eq!(event_source(nginx.addr, "users-state", &access).0, 401);
    assert_no_secrets(&d, &nginx, &[&access, &refresh]);
}
