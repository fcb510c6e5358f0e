//! HTTP-level attacks on the real verifier: duplicated and conflicting token
//! sources, odd `Bearer` spellings, bytes that are not UTF-8, a long pipeline,
//! broken body framing and smuggling, endless request heads and slowloris. Every
//! attack ends in 401 or 403 (or a closed connection), never a 2xx it should not
//! get and never a 5xx; the verifier stays up and the next valid request, on a
//! fresh connection, is 200.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use softphone_testkit::http::{Conn, build};
use softphone_testkit::{CHECK, Daemons};

use crate::{PASSWORD, USER, logged_in};

/// Sends `bytes` on a fresh connection and collects every answer until the
/// verifier closes the connection, or stays quiet for `quiet` after an answer
/// (5 s before the first: the machine may be busy).
fn answers(d: &Daemons, bytes: &[u8], quiet: Duration) -> Vec<u16> {
    let mut conn = Conn::open(d.verifier).unwrap();
    // The peer may close while we are still writing: what it answered counts.
    let _ = conn.send(bytes);
    conn.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    // Until quiet, or closed (or reset) by the verifier.
    while let Ok(r) = conn.read_response() {
        assert!(r.status < 500, "a 5xx: {}", r.status);
        got.push(r.status);
        conn.stream().set_read_timeout(Some(quiet)).unwrap();
    }
    got
}

/// How long to wait for an answer to a request hidden in a body.
const SMUGGLE_QUIET: Duration = Duration::from_millis(300);

/// One request's answers (there must be at most one) on a fresh connection.
fn one(d: &Daemons, bytes: &[u8]) -> Option<u16> {
    let got = answers(d, bytes, Duration::from_millis(100));
    assert!(got.len() <= 1, "one request, several answers: {got:?}");
    got.first().copied()
}

fn get(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    build("GET", target, headers, b"")
}

/// The verifier is alive and a valid token on a fresh connection is 200.
fn assert_still_serving(d: &mut Daemons, access: &str) {
    assert!(
        d.verifier_child().try_wait().unwrap().is_none(),
        "verifier died"
    );
    assert_eq!(d.check(Some(access)).status, 200);
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn duplicated_and_conflicting_token_sources() {
    let (mut d, a, refresh) = logged_in("http-sources");
    // A second session: a second valid access token for the same user.
    let (b, _) = d.tokens(USER, PASSWORD);
    assert_ne!(a, b);
    let ba = format!("Bearer {a}");
    let bb = format!("Bearer {b}");
    let br = format!("Bearer {refresh}");
    let bad = "Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA";
    let auth = |values: &[&str]| -> Vec<u8> {
        let headers: Vec<(&str, &str)> = values.iter().map(|v| ("Authorization", *v)).collect();
        get(CHECK, &headers)
    };
    let q = |query: &str, header: Option<&str>| -> Vec<u8> {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", *h)).collect();
        get(&format!("{CHECK}?{query}"), &headers)
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // DESIGN §2: only two *different* tokens conflict; the same one twice is
        // still that one token. (nginx itself answers 400 to a duplicated
        // Authorization, checked with Debian's 1.22.)
        ("two headers, same token", auth(&[&ba, &ba]), 200),
        ("two headers, valid then invalid", auth(&[&ba, bad]), 401),
        ("two headers, invalid then valid", auth(&[bad, &ba]), 401),
        ("two headers, two valid tokens", auth(&[&ba, &bb]), 401),
        ("two headers, access and refresh", auth(&[&ba, &br]), 401),
        // An empty value is no token at all, as `?token=` is.
        ("two headers, valid then empty", auth(&[&ba, ""]), 200),
        // The verifier compares at most four Authorization headers; more are
        // refused outright.
        (
            "five headers, same token",
            auth(&[&ba, &ba, &ba, &ba, &ba]),
            401,
        ),
        (
            "header and ?token= agree",
            q(&format!("token={a}"), Some(&ba)),
            200,
        ),
        (
            "header valid, ?token= other valid",
            q(&format!("token={b}"), Some(&ba)),
            401,
        ),
        (
            "header valid, ?token= invalid",
            q("token=x.y.z", Some(&ba)),
            401,
        ),
        (
            "header invalid, ?token= valid",
            q(&format!("token={a}"), Some(bad)),
            401,
        ),
        (
            "header refresh, ?token= access",
            q(&format!("token={a}"), Some(&br)),
            401,
        ),
        (
            "?token= twice, same",
            q(&format!("token={a}&token={a}"), None),
            200,
        ),
        (
            "?token= twice, different",
            q(&format!("token={a}&token={b}"), None),
            401,
        ),
        (
            "?token= twice, valid then junk",
            q(&format!("token={a}&token=junk"), None),
            401,
        ),
        (
            "?token= twice, junk then valid",
            q(&format!("token=junk&token={a}"), None),
            401,
        ),
        (
            "?authorization= and ?token= differ",
            q(&format!("authorization={a}&token={b}"), None),
            401,
        ),
        (
            "?token= percent-encoded, same as header",
            q(&format!("token=Bearer%20{a}"), Some(&ba)),
            200,
        ),
        (
            "X-Original-URI ?token= other than the header",
            get(
                CHECK,
                &[
                    ("Authorization", &ba),
                    ("X-Original-URI", &format!("/media/x.mp3?token={b}")),
                ],
            ),
            401,
        ),
        (
            "X-Original-URI ?token= other than the target's",
            get(
                &format!("/auth?token={a}"),
                &[("X-Original-URI", &format!("/sub/x?authorization={b}"))],
            ),
            401,
        ),
    ];
    let mut report = Vec::new();
    for (why, bytes, want) in &cases {
        let got = one(&d, bytes);
        report.push(format!("{why}: {got:?}"));
        assert_eq!(got, Some(*want), "{why}");
    }
    eprintln!("{}", report.join("\n"));
    // A conflict is an invalid token, not a missing one (RFC 6750 error code).
    let mut conn = Conn::open(d.verifier).unwrap();
    conn.send(&auth(&[&ba, &bb])).unwrap();
    let r = conn.read_response().unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.header("WWW-Authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""),
        "{:?}",
        r.headers
    );
    assert_still_serving(&mut d, &b);
}

/// DESIGN §2 and the README: `Bearer <jwt>` with the scheme in any case and one
/// space, or the bare `<jwt>`. The original Lua matched `^Bearer%s+` (case-
/// sensitive, any run of whitespace); we keep RFC 7235's case-insensitive scheme
/// and do not repair the spacing: a tab, two spaces or no space leave a value
/// that is not a token, which is 401 (the issuer parses it the same way).
#[test]
fn bearer_spellings() {
    let (mut d, a, _) = logged_in("http-bearer");
    let cases = [
        (format!("Bearer {a}"), 200),
        (format!("bearer {a}"), 200),
        (format!("BEARER {a}"), 200),
        (format!("bEaReR {a}"), 200),
        (a.clone(), 200),
        (format!("Bearer\t{a}"), 401),
        (format!("Bearer  {a}"), 401),
        (format!("Bearer \t{a}"), 401),
        (format!("Bearer{a}"), 401),
        (format!("Bearer: {a}"), 401),
        (format!("Basic {a}"), 401),
        (format!("Bearer {a} {a}"), 401),
        (format!("Bearer {a},"), 401),
        ("Bearer".to_owned(), 401),
        ("Bearer ".to_owned(), 401),
    ];
    for (value, want) in &cases {
        let got = one(&d, &get(CHECK, &[("Authorization", value)]));
        assert_eq!(got, Some(*want), "{:?}", value.replace(&a, "<jwt>"));
    }
    // The same spellings in the query (percent-encoded: %09 tab, + space).
    for (query, want) in [
        (format!("token=Bearer+{a}"), 200),
        (format!("token=bearer%20{a}"), 200),
        (format!("token=Bearer%09{a}"), 401),
        (format!("token=Bearer++{a}"), 401),
        (format!("authorization=Bearer{a}"), 401),
    ] {
        let got = one(&d, &get(&format!("/auth?{query}"), &[]));
        assert_eq!(got, Some(want), "{}", query.replace(&a, "<jwt>"));
    }
    assert_still_serving(&mut d, &a);
}

#[test]
fn bytes_that_are_not_utf8() {
    let (mut d, a, _) = logged_in("http-utf8");
    let raw = |parts: &[&[u8]]| -> Vec<u8> { parts.concat() };
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "header value: not UTF-8 instead of a token",
            raw(&[b"GET /auth HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\xfd\r\n\r\n"]),
            Some(401),
        ),
        (
            "header value: a valid token with a byte after it",
            raw(&[
                b"GET /auth HTTP/1.1\r\nAuthorization: Bearer ",
                a.as_bytes(),
                b"\xc3\r\n\r\n",
            ]),
            Some(401),
        ),
        (
            "header value: overlong UTF-8 in front of the token",
            raw(&[
                b"GET /auth HTTP/1.1\r\nAuthorization: \xc0\xa0",
                a.as_bytes(),
                b"\r\n\r\n",
            ]),
            Some(401),
        ),
        (
            "X-Original-URI: token not UTF-8",
            raw(&[b"GET /auth HTTP/1.1\r\nX-Original-URI: /media/x.mp3?token=\xff\xfe\r\n\r\n"]),
            Some(401),
        ),
        (
            "X-Original-URI: token percent-encoding to bytes that are not UTF-8",
            raw(&[b"GET /auth HTTP/1.1\r\nX-Original-URI: /media/x.mp3?token=%ff%fe\r\n\r\n"]),
            Some(401),
        ),
        // A raw-byte file name in the original URI does not matter: the token
        // does. (nginx passes $request_uri as it came.)
        (
            "X-Original-URI: path not UTF-8, valid token",
            raw(&[
                b"GET /auth HTTP/1.1\r\nX-Original-URI: /media/\xe9t\xe9.mp3?token=",
                a.as_bytes(),
                b"\r\n\r\n",
            ]),
            Some(200),
        ),
        (
            "header name not a token",
            raw(&[
                b"GET /auth HTTP/1.1\r\nX-\xff: 1\r\nAuthorization: Bearer ",
                a.as_bytes(),
                b"\r\n\r\n",
            ]),
            Some(401),
        ),
        // The request target must be UTF-8 for the parser: a target that is not
        // cannot be read, so it cannot be authorised.
        (
            "path not UTF-8",
            raw(&[
                b"GET /auth/\xff HTTP/1.1\r\nAuthorization: Bearer ",
                a.as_bytes(),
                b"\r\n\r\n",
            ]),
            Some(401),
        ),
        (
            "query token not UTF-8",
            raw(&[b"GET /auth?token=\xff\xfe HTTP/1.1\r\n\r\n"]),
            Some(401),
        ),
        (
            "valid query token, another parameter not UTF-8",
            raw(&[
                b"GET /auth?token=",
                a.as_bytes(),
                b"&x=\xff HTTP/1.1\r\n\r\n",
            ]),
            Some(401),
        ),
        (
            "NUL in the target",
            raw(&[b"GET /auth?token=", a.as_bytes(), b"\x00 HTTP/1.1\r\n\r\n"]),
            Some(401),
        ),
    ];
    let mut report = Vec::new();
    for (why, bytes, want) in &cases {
        let got = one(&d, bytes);
        report.push(format!("{why}: {got:?}"));
        assert_eq!(got, *want, "{why}");
    }
    eprintln!("{}", report.join("\n"));
    assert_still_serving(&mut d, &a);
}

#[test]
fn a_hundred_mixed_requests_in_one_write() {
    let (mut d, access, refresh) = logged_in("http-pipeline");
    // A second session, logged out: its access token is revoked.
    let (revoked, _) = d.tokens(USER, PASSWORD);
    assert_eq!(d.issuer_post("/auth/logout", Some(&revoked)).status, 200);
    let kinds: [(&str, Vec<u8>, u16); 7] = [
        (
            "valid",
            get(CHECK, &[("Authorization", &format!("Bearer {access}"))]),
            200,
        ),
        (
            "valid in the query",
            get(&format!("/auth?authorization={access}"), &[]),
            200,
        ),
        (
            "invalid",
            get(CHECK, &[("Authorization", "Bearer a.b.c")]),
            401,
        ),
        (
            "revoked",
            get(CHECK, &[("Authorization", &format!("Bearer {revoked}"))]),
            401,
        ),
        (
            "refresh as access",
            get(CHECK, &[("Authorization", &format!("Bearer {refresh}"))]),
            403,
        ),
        ("no token", get(CHECK, &[]), 401),
        (
            "conflict",
            get(
                &format!("/auth?token={refresh}"),
                &[("Authorization", &format!("Bearer {access}"))],
            ),
            401,
        ),
    ];
    // A fixed pseudo-random order, so equal kinds are not always neighbours.
    let mut seed = 0x2545_f491_u32;
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..100 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let (_, request, status) = &kinds[seed as usize % kinds.len()];
        bytes.extend_from_slice(request);
        expected.push(*status);
    }
    // Far more than one read buffer: requests straddle buffer boundaries.
    assert!(bytes.len() > 16 * 1024, "{}", bytes.len());
    let mut conn = Conn::open(d.verifier).unwrap();
    conn.send(&bytes).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        let r = conn.read_response().unwrap();
        if r.status == 200 {
            assert_eq!(r.header("X-Softphone-Username"), Some(USER));
        }
        got.push(r.status);
    }
    assert_eq!(got, expected);
    // Exactly 100: nothing more comes, and the connection is still usable.
    conn.stream()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut extra = [0u8; 1];
    match conn.stream().read(&mut extra) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("after 100 answers: {other:?}"),
    }
    conn.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    conn.send(&kinds[0].1).unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
    eprintln!(
        "100 pipelined requests ({} bytes in one write): {} x 200, {} x 401, {} x 403",
        bytes.len(),
        got.iter().filter(|&&s| s == 200).count(),
        got.iter().filter(|&&s| s == 401).count(),
        got.iter().filter(|&&s| s == 403).count()
    );
    assert_still_serving(&mut d, &access);
}

#[test]
fn broken_content_length_and_smuggled_requests() {
    let (mut d, a, _) = logged_in("http-framing");
    let bearer = format!("Bearer {a}");
    let valid = get(CHECK, &[("Authorization", &bearer)]);
    let valid_text = String::from_utf8(valid.clone()).unwrap();
    let head = |extra: &str, auth: bool| -> String {
        let auth = if auth {
            format!("Authorization: {bearer}\r\n")
        } else {
            String::new()
        };
        format!("GET {CHECK} HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n")
    };

    // Content-Length the verifier cannot trust: the request is refused although
    // its token is valid (nginx never sends us a body), and the valid request
    // behind it is not read as a request.
    let mut report = Vec::new();
    for (why, extra) in [
        ("Content-Length: abc", "Content-Length: abc\r\n"),
        ("Content-Length: -1", "Content-Length: -1\r\n"),
        ("Content-Length: +5", "Content-Length: +5\r\n"),
        (
            "Content-Length twice, 5 and 6",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        ("Content-Length: 5, 6", "Content-Length: 5, 6\r\n"),
        (
            "Content-Length: 0 then 5",
            "Content-Length: 0\r\nContent-Length: 5\r\n",
        ),
        (
            "Content-Length: 99999999999999999999",
            "Content-Length: 99999999999999999999\r\n",
        ),
        (
            "Content-Length: 18446744073709551616",
            "Content-Length: 18446744073709551616\r\n",
        ),
    ] {
        let mut bytes = head(extra, true).into_bytes();
        bytes.extend_from_slice(&valid);
        let got = answers(&d, &bytes, SMUGGLE_QUIET);
        report.push(format!("{why}: {got:?}"));
        assert_eq!(got, vec![401], "{why}");
    }

    // Requests hidden in bodies: whatever the framing says, a request the client
    // sent inside a body never gets an answer of its own.
    let chunk = format!("{:x}\r\n{valid_text}\r\n0\r\n\r\n", valid.len());
    let smuggles: Vec<(&str, String)> = vec![
        (
            "chunked, request in a chunk",
            format!("{}{chunk}", head("Transfer-Encoding: chunked\r\n", false)),
        ),
        (
            "chunked, valid token outside too",
            format!("{}{chunk}", head("Transfer-Encoding: chunked\r\n", true)),
        ),
        (
            "chunked, request after the last chunk",
            format!(
                "{}0\r\n\r\n{valid_text}",
                head("Transfer-Encoding: chunked\r\n", false)
            ),
        ),
        (
            "CL.TE: Content-Length 5 and chunked",
            format!(
                "{}0\r\n\r\n{valid_text}",
                head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", false)
            ),
        ),
        (
            "TE.CL: chunked and Content-Length 4",
            format!(
                "{}{chunk}",
                head("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", false)
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "{}{chunk}",
                head("Transfer-Encoding: chunked, identity\r\n", false)
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!("{}{chunk}", head("Transfer-Encoding: xchunked\r\n", false)),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!("{}{chunk}", head("Transfer-Encoding : chunked\r\n", false)),
        ),
        (
            "Content-Length exactly the smuggled request",
            format!(
                "{}{valid_text}",
                head(&format!("Content-Length: {}\r\n", valid.len()), false)
            ),
        ),
        (
            "Content-Length larger than any drain",
            format!("{}{valid_text}", head("Content-Length: 100000\r\n", false)),
        ),
        (
            "Content-Length shorter than the smuggled request",
            format!("{}{valid_text}", head("Content-Length: 3\r\n", false)),
        ),
    ];
    for (why, bytes) in &smuggles {
        let got = answers(&d, bytes.as_bytes(), SMUGGLE_QUIET);
        report.push(format!("{why}: {got:?}"));
        assert!(
            !got.contains(&200),
            "{why}: a smuggled request was answered: {got:?}"
        );
        assert!(got.len() <= 1, "{why}: {got:?}");
        assert!(
            got.iter().all(|s| matches!(s, 400 | 401 | 403)),
            "{why}: {got:?}"
        );
    }
    eprintln!("{}", report.join("\n"));
    assert_still_serving(&mut d, &a);
}

/// Writes `head` and then `chunk` over and over, up to 64 MiB, until the
/// verifier cuts the connection; returns how much it took in.
fn flood(addr: SocketAddr, head: &[u8], chunk: &[u8]) -> (usize, Option<TcpStream>) {
    const LIMIT: usize = 64 * 1024 * 1024;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0;
    let cut = s.write_all(head).is_err() || {
        loop {
            if sent >= LIMIT {
                break false;
            }
            if s.write_all(chunk).is_err() {
                break true;
            }
            sent += chunk.len();
        }
    };
    (sent, (!cut).then_some(s))
}

#[test]
fn endless_request_heads_are_cut_and_memory_stays_bounded() {
    let (mut d, a, _) = logged_in("http-endless");
    let pid = d.pids().1;
    // Settle: a few requests so the verifier's buffers reach their working size.
    for _ in 0..10 {
        assert_eq!(d.check(Some(&a)).status, 200);
    }
    // The bound itself: a head of exactly 16 KiB is read, one byte more is not.
    let bearer = format!("Bearer {a}");
    let padded = |len: usize| {
        let bare = get(CHECK, &[("X-Pad", ""), ("Authorization", &bearer)]).len();
        let pad = "p".repeat(len - bare);
        get(CHECK, &[("X-Pad", &pad), ("Authorization", &bearer)])
    };
    let mut conn = Conn::open(d.verifier).unwrap();
    conn.send(&padded(16 * 1024)).unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
    conn.send(&padded(16 * 1024 + 1)).unwrap();
    let r = conn.read_response().unwrap();
    assert_eq!((r.status, r.header("Connection")), (401, Some("close")));
    assert!(
        conn.read_response().is_err(),
        "open after an oversized head"
    );

    let rss_before = vm_kib(pid, "VmRSS:");
    let hwm_before = vm_kib(pid, "VmHWM:");
    let lines = b"X-a: b\r\n".repeat(8 * 1024);
    let value = vec![b'b'; 64 * 1024];
    let floods: [(&str, &[u8], &[u8]); 3] = [
        (
            "header lines without the final CRLF",
            b"GET /auth HTTP/1.1\r\nHost: x\r\n",
            &lines,
        ),
        (
            "one header value without end",
            b"GET /auth HTTP/1.1\r\nHost: x\r\nX-a: ",
            &value,
        ),
        ("a request target without end", b"GET /auth?a=", &value),
    ];
    let started = Instant::now();
    // All three at once, so the memory of each would add up.
    let handles: Vec<_> = floods
        .iter()
        .map(|(why, head, chunk)| {
            let (why, head, chunk) = (why.to_string(), head.to_vec(), chunk.to_vec());
            let addr = d.verifier;
            thread::spawn(move || {
                let (sent, open) = flood(addr, &head, &chunk);
                (why, sent, open)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let rss_after = vm_kib(pid, "VmRSS:");
    let hwm_after = vm_kib(pid, "VmHWM:");
    eprintln!(
        "endless heads, {:?}: RSS {rss_before} -> {rss_after} KiB, peak {hwm_before} -> {hwm_after} KiB",
        started.elapsed()
    );
    for (why, sent, open) in &results {
        eprintln!("  {why}: cut after {} KiB sent", sent / 1024);
        assert!(open.is_none(), "{why}: still open after {} MiB", sent >> 20);
        // Socket buffers take in a few MiB before a write fails; the verifier
        // itself keeps 16 KiB of a head.
        assert!(*sent < 16 * 1024 * 1024, "{why}: {sent} bytes taken in");
    }
    assert!(
        rss_after < rss_before + 4 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        hwm_after < hwm_before + 4 * 1024,
        "peak RSS grew from {hwm_before} to {hwm_after} KiB"
    );
    drop(results);
    assert_still_serving(&mut d, &a);
}

#[test]
fn slowloris_does_not_starve_valid_clients() {
    let (mut d, a, _) = logged_in("http-slowloris");
    const SLOW: usize = 50;
    let request = get(CHECK, &[("Authorization", &format!("Bearer {a}"))]);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(d.verifier).unwrap())
        .collect();
    // 1 byte per 100 ms on every slow connection for 3 s (30 bytes each: no head
    // completes), while a valid client keeps asking on fresh connections.
    let dripper = {
        let request = request.clone();
        let mut conns: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        thread::spawn(move || {
            for i in 0..30 {
                for c in &mut conns {
                    c.write_all(&request[i..=i]).unwrap();
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    while !dripper.is_finished() {
        let t = Instant::now();
        assert_eq!(d.check(Some(&a)).status, 200);
        slowest = slowest.max(t.elapsed());
        answered += 1;
        thread::sleep(Duration::from_millis(20));
    }
    dripper.join().unwrap();
    eprintln!("slowloris: {answered} valid answers during the drip, slowest {slowest:?}");
    assert!(answered >= 30, "{answered}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    // Heads that arrived byte by byte are understood once they are complete.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&request[30..]).unwrap();
    }
    for s in &mut slow {
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
    }
    drop(slow);
    assert_still_serving(&mut d, &a);
}

/// nginx asks with the client's GET or HEAD, nchan with GET: any other method,
/// even with a valid token and no body, is not a question nginx asks.
#[test]
fn methods_other_than_get_and_head_are_refused() {
    let (mut d, access, _) = logged_in("http-methods");
    let bearer = format!("Bearer {access}");
    for (method, want) in [
        ("GET", 200),
        ("HEAD", 200),
        ("POST", 401),
        ("PUT", 401),
        ("DELETE", 401),
        ("PATCH", 401),
        ("OPTIONS", 401),
        ("TRACE", 401),
        ("get", 401),
    ] {
        let got = one(
            &d,
            &build(method, CHECK, &[("Authorization", &bearer)], b""),
        );
        assert_eq!(got, Some(want), "{method}");
    }
    assert_still_serving(&mut d, &access);
}
