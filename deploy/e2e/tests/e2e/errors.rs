//! Every failure nginx itself answers on the API, media, WebSocket and
//! subscriber paths is the contract's JSON error, and a dead or stalled daemon
//! is a JSON 503 with `Retry-After` within 3 s.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use softphone_testkit::nginx::Nginx;
use softphone_testkit::{BASE, Response, eventually, request, send_raw};

use crate::{PASSWORD, USER, stack};

const MEDIA: &str = "/pbxcore/softphone/recordings";
const WS: &str = "/pbxcore/softphone/ws";

/// The contract's error body, with the given status and message.
fn assert_json_error(what: &str, r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json"),
        "{what}: {}",
        r.text()
    );
    let body = r.json();
    assert_eq!(body["success"], false, "{what}");
    assert_eq!(body["error"], message, "{what}");
    let timestamp = body["timestamp"].as_i64().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - timestamp).abs() <= 5,
        "{what}: timestamp {timestamp}"
    );
}

/// The verifier's challenges (RFC 6750 §3.1: no error code without a token).
const NO_TOKEN: &str = r#"Bearer realm="softphone""#;
const INVALID_TOKEN: &str = r#"Bearer realm="softphone", error="invalid_token""#;

/// A refused token check: the JSON 401 with the verifier's `challenge`.
fn assert_unauthorized(what: &str, r: &Response, challenge: &str) {
    assert_json_error(what, r, 401, "Invalid or missing token");
    assert_eq!(r.header("WWW-Authenticate"), Some(challenge), "{what}");
}

fn get(nginx: &Nginx, path: &str, headers: &[(&str, &str)]) -> Response {
    request(nginx.addr, "GET", path, headers, b"")
}

/// A WebSocket upgrade request.
fn upgrade(addr: SocketAddr, query: &str) -> Response {
    let head = format!(
        "GET {WS}{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    send_raw(addr, head.as_bytes()).unwrap()
}

#[test]
fn every_failure_of_the_front_is_the_json_error_format() {
    let (d, nginx) = stack("errors", "http://127.0.0.1:9/");
    std::fs::write(nginx.recordings.join("call-1.mp3"), b"audio").unwrap();
    std::fs::write(nginx.recordings.join("shell.php"), b"<?php").unwrap();
    let (access, refresh) = d.tokens(USER, PASSWORD);
    let bearer = format!("Bearer {access}");

    // Requests that reach no location, or break nginx's limits.
    let r = send_raw(nginx.addr, b"GARBAGE\r\n\r\n").unwrap();
    assert_json_error("bad request line", &r, 400, "Bad request");
    let big = "x".repeat(40 * 1024);
    let r = get(&nginx, &format!("{BASE}/health"), &[("X-Big", &big)]);
    assert_json_error("oversized header", &r, 400, "Request header too large");
    let r = get(&nginx, &format!("{BASE}/{}", "a".repeat(16 * 1024)), &[]);
    assert_json_error("oversized URI", &r, 414, "Request URI too long");
    let r = get(&nginx, "/nothing-here", &[]);
    assert_json_error("unknown path", &r, 404, "Not found");

    // The API: a login body over 16 KiB is the contract's 400.
    let body = format!(
        r#"{{"username":"201","password":"{}"}}"#,
        "p".repeat(17 * 1024)
    );
    let r = request(
        nginx.addr,
        "POST",
        &format!("{BASE}/auth/login"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_json_error(
        "oversized login body",
        &r,
        400,
        "Invalid credentials provided",
    );
    let r = get(&nginx, &format!("{BASE}/auth/login"), &[]);
    assert_json_error("wrong method", &r, 405, "Method not allowed");
    // The verifier's public check: its 401/403 with the JSON body and its
    // challenge.
    let r = get(&nginx, &format!("{BASE}/check-media-access"), &[]);
    assert_unauthorized("check without token", &r, NO_TOKEN);
    let r = get(&nginx, &format!("{BASE}/check-media-access?token=bad"), &[]);
    assert_unauthorized("check with a bad token", &r, INVALID_TOKEN);
    let r = get(
        &nginx,
        &format!("{BASE}/check-media-access?token={refresh}"),
        &[],
    );
    assert_json_error("check with a refresh token", &r, 403, "Invalid token type");
    let r = get(
        &nginx,
        &format!("{BASE}/check-media-access?token={access}"),
        &[],
    );
    assert_eq!(r.status, 200);

    // Media.
    let r = get(&nginx, &format!("{MEDIA}/call-1.mp3"), &[]);
    assert_unauthorized("media without token", &r, NO_TOKEN);
    let r = get(&nginx, &format!("{MEDIA}/call-1.mp3?token={refresh}"), &[]);
    assert_json_error("media with a refresh token", &r, 403, "Invalid token type");
    let r = get(
        &nginx,
        &format!("{MEDIA}/missing.mp3"),
        &[("Authorization", &bearer)],
    );
    assert_json_error("missing recording", &r, 404, "Not found");
    let r = get(&nginx, &format!("{MEDIA}/shell.php?token={access}"), &[]);
    assert_json_error("script", &r, 403, "Forbidden");
    let r = request(
        nginx.addr,
        "POST",
        &format!("{MEDIA}/call-1.mp3"),
        &[("Authorization", &bearer)],
        b"x",
    );
    assert_json_error("media POST", &r, 405, "Method not allowed");

    // WebSocket.
    let r = upgrade(nginx.addr, "");
    assert_json_error("ws without token", &r, 401, "Invalid or missing token");
    let r = upgrade(nginx.addr, &format!("?token={refresh}"));
    assert_json_error("ws with a refresh token", &r, 403, "Invalid token type");
    // Asterisk (here: nothing on port 9) unreachable.
    let r = upgrade(nginx.addr, &format!("?token={access}"));
    assert_json_error(
        "ws upstream down",
        &r,
        503,
        "Service temporarily unavailable. Please try again later",
    );
    assert!(r.header("Retry-After").is_some());

    // Subscribers and publishers.
    let r = get(&nginx, &format!("{BASE}/sub/users-state"), &[]);
    assert_json_error("sub without token", &r, 401, "Invalid or missing token");
    let r = get(
        &nginx,
        &format!("{BASE}/sub/users-state?authorization={refresh}"),
        &[],
    );
    assert_json_error("sub with a refresh token", &r, 403, "Invalid token type");
    let out = Command::new("curl")
        .args(["-sS", "--interface", "127.0.0.2", "-X", "POST", "-d", "{}"])
        .arg(format!("http://{}{BASE}/pub/users-state", nginx.addr))
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "publisher refusal is JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(body["error"], "Forbidden");
}

/// The daemons dead: every path that needs one is a JSON 503 with
/// `Retry-After`, at once.
#[test]
fn dead_daemons_are_a_json_503() {
    let (mut d, nginx) = stack("errors-dead", "http://127.0.0.1:9/");
    std::fs::write(nginx.recordings.join("call-1.mp3"), b"audio").unwrap();
    let (access, _) = d.tokens(USER, PASSWORD);
    let verifier = d.verifier_child();
    verifier.kill().unwrap();
    verifier.wait().unwrap();
    for path in guarded_paths(&access) {
        let started = Instant::now();
        let r = get(&nginx, &path, &[]);
        assert_unavailable(&path, &r, started);
    }
    d.kill_issuer();
    for path in issuer_paths() {
        let started = Instant::now();
        let r = get(
            &nginx,
            &path,
            &[("Authorization", &format!("Bearer {access}"))],
        );
        assert_unavailable(&path, &r, started);
    }
}

/// A stalled daemon (SIGSTOP: alive, answering nothing) is a JSON 503 with
/// `Retry-After` within 3 s, never nginx's 60 s wait; it serves again once it
/// runs.
#[test]
fn stalled_daemons_are_a_json_503_within_3_seconds() {
    let (d, nginx) = stack("errors-stalled", "http://127.0.0.1:9/");
    std::fs::write(nginx.recordings.join("call-1.mp3"), b"audio").unwrap();
    let (access, _) = d.tokens(USER, PASSWORD);
    let (issuer, verifier) = d.pids();

    signal("STOP", verifier);
    let mut slowest = Duration::ZERO;
    for path in guarded_paths(&access) {
        let started = Instant::now();
        let r = get(&nginx, &path, &[]);
        slowest = slowest.max(assert_unavailable(&path, &r, started));
    }
    signal("CONT", verifier);
    eprintln!("stalled verifier: slowest 503 after {slowest:?}");
    let r = get(&nginx, &format!("{MEDIA}/call-1.mp3?token={access}"), &[]);
    assert_eq!(r.status, 200, "the verifier serves again");

    signal("STOP", issuer);
    let mut slowest = Duration::ZERO;
    for path in issuer_paths() {
        let started = Instant::now();
        let r = get(
            &nginx,
            &path,
            &[("Authorization", &format!("Bearer {access}"))],
        );
        slowest = slowest.max(assert_unavailable(&path, &r, started));
    }
    let started = Instant::now();
    let r = request(
        nginx.addr,
        "POST",
        &format!("{BASE}/auth/login"),
        &[("Content-Type", "application/json")],
        format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#).as_bytes(),
    );
    slowest = slowest.max(assert_unavailable("login", &r, started));
    signal("CONT", issuer);
    eprintln!("stalled issuer: slowest 503 after {slowest:?}");
    let r = get(&nginx, &format!("{BASE}/health"), &[]);
    assert_eq!(r.status, 200, "the issuer serves again");
    drop(d);
}

fn guarded_paths(access: &str) -> Vec<String> {
    vec![
        format!("{MEDIA}/call-1.mp3?token={access}"),
        format!("{BASE}/check-media-access?token={access}"),
        format!("{BASE}/sub/users-state?authorization={access}"),
        format!("{WS}?token={access}"),
    ]
}

fn issuer_paths() -> Vec<String> {
    vec![format!("{BASE}/health"), format!("{BASE}/profile")]
}

/// A JSON 503 with `Retry-After` within 3 s of `started`; returns how long.
fn assert_unavailable(what: &str, r: &Response, started: Instant) -> Duration {
    let took = started.elapsed();
    assert_json_error(
        what,
        r,
        503,
        "Service temporarily unavailable. Please try again later",
    );
    assert_eq!(r.header("Retry-After"), Some("5"), "{what}");
    assert!(
        took < Duration::from_secs(3),
        "{what}: answered after {took:?}"
    );
    took
}

fn signal(name: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
    if name == "STOP" {
        // kill(2) returns once the signal is queued; the kernel stops the
        // other threads only when the thread it woke gets to run, and on a
        // loaded machine a worker thread can answer a request first (a run
        // saw the verifier answer 200 "after" its SIGSTOP). Stalled means
        // every thread stopped.
        eventually(Duration::from_secs(10), "every thread stops", || {
            all_threads_stopped(pid)
        });
    }
}

/// Whether every thread of `pid` is in state `T` (stopped).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the command name's closing parenthesis.
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}
