//! No heap allocation per verified request: a counting global allocator around a
//! real verifier (revocation checking on) serving ≥ 10 000 keep-alive requests
//! with a valid token, each counted by the metrics. Its own test binary because
//! the allocator counts the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use softphone_shared::live_keys::LiveKeys;
use softphone_shared::paths::SUBSCRIBE;
use softphone_shared::store::{RevokeReason, Store};
use softphone_shared::unix_now;
use softphone_testkit::counting::{Counting, allocations};
use softphone_testkit::{CHECK, TestDir, eventually, free_port, prom};
use softphone_verifier::listener;
use softphone_verifier::revocations::Revocations;
use softphone_verifier::state::Verifier;

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: u64 = 20_000;

/// The value of the sample `series` (name and labels, as the scrape writes
/// them) in a scrape of the verifier at `addr`; scrapes allocate, so this runs
/// outside the measured loop.
fn scraped(addr: SocketAddr, series: &str) -> u64 {
    prom::value(&prom::scrape(addr), series) as u64
}

fn round_trip(stream: &mut TcpStream, request: &[u8], buf: &mut [u8; 4096]) -> u16 {
    stream.write_all(request).unwrap();
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).unwrap();
        assert!(n > 0, "connection closed");
        len += n;
        // Our answers have empty bodies: a response ends with its head.
        if buf[..len].ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let status = std::str::from_utf8(&buf[9..12]).unwrap();
    status.parse().unwrap()
}

#[test]
fn a_valid_token_costs_no_allocation_per_request() {
    let dir = TestDir::new("alloc");
    let config = softphone_testkit::config(dir.path());
    let (key_path, db_path) = (config.key_file(), config.database());
    let keys = LiveKeys::open(&key_path, "test").unwrap();
    let now = unix_now();
    let mut store = Store::open(&db_path).unwrap();
    for (sid, revoked) in [("live-session", false), ("dead-session", true)] {
        softphone_testkit::insert_session(&mut store, sid, now);
        if revoked {
            store
                .revoke_session(sid, RevokeReason::Logout, now)
                .unwrap();
        }
    }
    let valid = softphone_testkit::access_token(keys.ring().current(), "live-session", now);
    let revoked = softphone_testkit::access_token(keys.ring().current(), "dead-session", now);

    let revocations = Revocations::open(&db_path, now, 30).unwrap();
    assert_eq!(
        revocations.len(),
        2,
        "both sessions known: revocation checking is on"
    );
    let verifier = Arc::new(Verifier::new(keys, 30, revocations, None));
    may::config().set_workers(1).set_stack_size(0x2000);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _server = listener::start_tcp(verifier, addr).unwrap();
    const ALLOWED: &str = r#"softphone_verifier_decisions_total{result="allowed",reason="none"}"#;
    const REVOKED: &str = r#"softphone_verifier_decisions_total{result="denied",reason="revoked"}"#;

    let mut stream = eventually(
        Duration::from_secs(10),
        "the verifier accepts connections",
        || TcpStream::connect(addr).ok(),
    );
    stream.set_nodelay(true).unwrap();
    let request =
        format!("GET {CHECK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n\r\n")
            .into_bytes();
    let refused =
        format!("GET {CHECK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {revoked}\r\n\r\n")
            .into_bytes();
    // An nchan subscriber's check: the answer also names its channels.
    let subscribe = format!(
        "GET /auth HTTP/1.1\r\nHost: x\r\nX-Original-URI: {SUBSCRIBE}users-state?authorization={valid}\r\n\r\n"
    )
    .into_bytes();
    let mut buf = [0u8; 4096];
    assert_eq!(
        round_trip(&mut stream, &refused, &mut buf),
        401,
        "revoked sessions are refused"
    );
    assert_eq!(round_trip(&mut stream, &subscribe, &mut buf), 200);
    let answer = String::from_utf8_lossy(&buf[..]).into_owned();
    assert!(
        answer.contains("\r\nX-Softphone-Session: live-session\r\n"),
        "{answer}"
    );
    // Warm up: the identity is interned once, buffers reach their size.
    for _ in 0..1000 {
        assert_eq!(round_trip(&mut stream, &request, &mut buf), 200);
        assert_eq!(round_trip(&mut stream, &subscribe, &mut buf), 200);
    }

    // Counted before the measured loop: a scrape allocates (its text).
    let allowed_before = scraped(addr, ALLOWED);
    assert_eq!(
        allowed_before,
        2000 + 1,
        "the warm-up and the first subscriber check"
    );
    assert_eq!(scraped(addr, REVOKED), 1);

    // Half media checks, half subscriber checks.
    let before = allocations();
    for i in 0..REQUESTS {
        let request = if i % 2 == 0 { &request } else { &subscribe };
        assert_eq!(round_trip(&mut stream, request, &mut buf), 200);
    }
    let allocated = allocations() - before;
    let per_request = allocated as f64 / REQUESTS as f64;
    eprintln!("{allocated} allocations over {REQUESTS} requests: {per_request:.4} per request");
    assert!(per_request < 0.05, "{per_request} allocations per request");
    // Every one of them was counted, without allocating.
    assert_eq!(scraped(addr, ALLOWED), allowed_before + REQUESTS);
}
