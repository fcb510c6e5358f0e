//! The WebSocket location: upgraded to a test upstream with a valid token only,
//! and the token is not handed on.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use softphone_testkit::http::read_head;

use crate::{PASSWORD, USER, assert_no_secrets, stack};

/// A one-connection upstream: answers the upgrade with 101, reports the request
/// head, then echoes what it reads.
fn upstream() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/asterisk/ws", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read_exact(&mut byte).is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        let _ = conn.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        let mut buf = [0u8; 1024];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

fn upgrade(addr: std::net::SocketAddr, query: &str) -> (TcpStream, String) {
    upgrade_with(addr, query, "")
}

/// As [`upgrade`], with `extra` header lines (each ending in `\r\n`).
fn upgrade_with(addr: std::net::SocketAddr, query: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /pbxcore/softphone/ws{query} HTTP/1.1\r\nHost: pbx\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n{extra}\r\n"
    )
    .unwrap();
    let head = read_head(&mut stream);
    (stream, head)
}

#[test]
fn websocket_upgrades_reach_the_upstream_only_with_a_token() {
    let (url, seen) = upstream();
    let (d, nginx) = stack("websocket", &url);
    let (access, _) = d.tokens(USER, PASSWORD);

    let (_, head) = upgrade(nginx.addr, "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        seen.recv_timeout(Duration::from_millis(300)).is_err(),
        "upstream was reached without a token"
    );

    let (mut ws, head) = upgrade(nginx.addr, &format!("?token={access}"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let request = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        request.starts_with("GET /asterisk/ws HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.to_ascii_lowercase().contains("upgrade: websocket"),
        "{request}"
    );
    assert!(
        !request.contains(&access),
        "the token was handed on to the upstream"
    );
    ws.write_all(b"frames pass both ways").unwrap();
    let mut echo = [0u8; 21];
    ws.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"frames pass both ways");
    assert_no_secrets(&d, &nginx, &[&access]);
}

/// A token in the `Authorization` header opens the WebSocket too, and Asterisk
/// sees neither the token nor the header (its logs are not ours to keep clean).
#[test]
fn the_upstream_never_sees_the_authorization_header() {
    let (url, seen) = upstream();
    let (d, nginx) = stack("websocket-header", &url);
    let (access, _) = d.tokens(USER, PASSWORD);

    let (_ws, head) = upgrade_with(
        nginx.addr,
        "",
        &format!("Authorization: Bearer {access}\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let request = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "the upstream got an Authorization header:\n{request}"
    );
    assert!(!request.contains(&access), "the token was handed on");
    assert!(!request.contains("eyJ"), "a token was handed on");
    assert_no_secrets(&d, &nginx, &[&access]);
}
