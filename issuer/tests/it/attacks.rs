//! Attacks on the issuer through the real binary: JSON bombs, huge and chunked
//! bodies, request smuggling, duplicate keys, content types, hostile and look-alike
//! credentials, log injection and a wrong-password flood. Each must end in the
//! contract's 4xx (never 2xx, never 5xx, never a crash), leave the database intact,
//! and the next honest login, profile and refresh must still work.
//!
//! `bad_input.rs` and `statuses.rs` hold the first cases of each kind; this file
//! extends them rather than repeating them.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use softphone_testkit::http::{Conn, build, settled};
use softphone_testkit::mikopbx::{self, Peer};
use softphone_testkit::{BASE, Daemons, Options, Response, TestDir, request};

use crate::{PASSWORD, USER};

const BAD_REQUEST: &str = "Invalid credentials provided";
const BAD_CREDENTIALS: &str = "Invalid credentials";

fn login_path() -> String {
    format!("{BASE}/auth/login")
}

/// A login body built by a JSON serialiser, so any string survives intact.
fn body(username: &str, password: &str) -> String {
    serde_json::json!({ "username": username, "password": password }).to_string()
}

/// A fresh client address per call (nginx's `X-Real-IP`, believed from loopback),
/// so the per-address throttle never answers in place of the case under test.
fn next_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// One login, settled (see `testkit::http::settled`).
fn post_login(d: &Daemons, content_type: Option<&str>, body: &[u8]) -> Response {
    let ip = next_ip();
    let mut headers = vec![("X-Real-IP", ip.as_str())];
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    settled(|| request(d.issuer, "POST", &login_path(), &headers, body))
}

fn json_login(d: &Daemons, body: &[u8]) -> Response {
    post_login(d, Some("application/json"), body)
}

/// A JSON login whose body the server refuses from its `Content-Length` and then
/// hangs up on: the body is written from another thread, which may find the
/// connection closed, while this one reads the answer.
fn oversized_login(d: &Daemons, body: &[u8]) -> Response {
    let mut conn = Conn::open(d.issuer).unwrap();
    let bytes = build(
        "POST",
        &login_path(),
        &[
            ("Content-Type", "application/json"),
            ("X-Real-IP", &next_ip()),
        ],
        body,
    );
    let mut writer = conn.stream().try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let r = conn.read_response().unwrap();
    pusher.join().unwrap();
    r
}

/// Asserts the status and, for the login errors, the contract's exact message.
fn expect(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let message = match status {
        400 => BAD_REQUEST,
        401 => BAD_CREDENTIALS,
        _ => return,
    };
    assert_eq!(r.error(), message, "{what}");
    assert_eq!(r.json()["success"], false, "{what}");
}

/// The daemon is alive and the whole honest flow still works for `user`.
fn assert_still_serves(d: &mut Daemons, user: &str, password: &str) {
    assert!(
        d.issuer_child().try_wait().unwrap().is_none(),
        "the issuer died"
    );
    let r = json_login(d, body(user, password).as_bytes());
    assert_eq!(r.status, 200, "login after the attack: {}", r.text());
    let (access, refresh) = (r.json_str("access_token"), r.json_str("refresh_token"));
    let profile = d.issuer_get("/profile", Some(&access));
    assert_eq!(profile.status, 200, "{}", profile.text());
    assert_eq!(profile.json()["user"]["username"], user);
    let refreshed = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
}

fn database(d: &Daemons) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(d.database(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
}

fn count(d: &Daemons, sql: &str) -> i64 {
    database(d).query_row(sql, [], |row| row.get(0)).unwrap()
}

fn sessions(d: &Daemons) -> i64 {
    count(d, "SELECT count(*) FROM sessions")
}

fn security_log(d: &Daemons) -> String {
    std::fs::read_to_string(d.security_log()).unwrap_or_default()
}

/// Sends `bytes` on one connection and reads every response until the server
/// closes it. Each case sends `Connection: close` or framing that forces a close,
/// so a connection still open after 5 s is itself a failure.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<Response> {
    let mut conn = Conn::open(addr).unwrap();
    conn.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    conn.send(bytes).unwrap();
    let mut responses = Vec::new();
    loop {
        match conn.read_response() {
            Ok(r) => responses.push(r),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return responses;
            }
            Err(e) => panic!("the server left the connection open or broke it: {e}"),
        }
    }
}

/// A request head for a chunked login; `extra` holds more header lines.
fn chunked_head(extra: &str) -> String {
    format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Real-IP: {}\r\nTransfer-Encoding: chunked\r\n{extra}\r\n",
        login_path(),
        next_ip()
    )
}

/// `data` as one chunk plus the last chunk.
fn one_chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

#[test]
fn json_bombs_huge_numbers_and_long_strings_are_refused() {
    let mut d = Daemons::start("attack-json");
    d.add_user(USER, PASSWORD);
    let before = sessions(&d);

    // 100 000 levels of `[`, all of it: over the 8 KiB limit, refused unread.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    expect(
        &oversized_login(&d, deep.as_bytes()),
        400,
        "100 000 nested arrays",
    );
    // The same streamed chunked (no Content-Length to refuse it by).
    let mut bytes = chunked_head("").into_bytes();
    for part in deep.as_bytes().chunks(4096) {
        bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        bytes.extend_from_slice(part);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let answers = exchange(d.issuer, &bytes);
    assert_eq!(answers.len(), 1);
    expect(&answers[0], 400, "100 000 nested arrays, chunked");

    // Nesting that fits in 8 KiB but passes serde_json's depth limit (128).
    let objects = format!(r#"{}"x"{}"#, r#"{"a":"#.repeat(1000), "}".repeat(1000));
    expect(
        &json_login(&d, objects.as_bytes()),
        400,
        "1000 nested objects",
    );
    let in_password = format!(
        r#"{{"username":"{USER}","password":{}"x"{}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    expect(
        &json_login(&d, in_password.as_bytes()),
        400,
        "array as password",
    );

    // Numbers where strings belong: a type error, whatever their size.
    for case in [
        format!(r#"{{"username":1e400,"password":"{PASSWORD}"}}"#),
        format!(
            r#"{{"username":{},"password":"{PASSWORD}"}}"#,
            "9".repeat(4000)
        ),
        format!(r#"{{"username":"{USER}","password":-1e-999999}}"#),
    ] {
        expect(&json_login(&d, case.as_bytes()), 400, &case[..40]);
    }
    // Unknown fields are ignored (apps may send more, as the original allowed), even
    // absurd numbers: the login is then judged on its credentials alone.
    for extra in ["1e999999999", &"7".repeat(5000), "-0.0e-99999999"] {
        let case = format!(r#"{{"username":"{USER}","password":"wrong","n":{extra}}}"#);
        expect(&json_login(&d, case.as_bytes()), 401, "huge ignored number");
    }

    // Long strings inside the limit: 401, with the username cut for the log.
    let long = "8".repeat(8000);
    expect(
        &json_login(&d, body(&long, "x").as_bytes()),
        401,
        "8000-byte name",
    );
    expect(
        &json_login(&d, body(USER, &format!("{PASSWORD}{long}")).as_bytes()),
        401,
        "8000-byte password starting with the right one",
    );
    // Escapes that decode small but weigh 12 KB on the wire: over the limit.
    let escaped = format!(
        r#"{{"username":"{}","password":"x"}}"#,
        r"\u0041".repeat(2000)
    );
    expect(
        &oversized_login(&d, escaped.as_bytes()),
        400,
        "12 KB of escapes",
    );
    // A lone surrogate is not a string.
    expect(
        &json_login(&d, br#"{"username":"\ud800","password":"x"}"#),
        400,
        "lone surrogate",
    );

    assert_eq!(sessions(&d), before, "an attack opened a session");
    assert_still_serves(&mut d, USER, PASSWORD);
    d.assert_logs_clean(&[PASSWORD]);
}

#[test]
fn a_100_mb_body_is_refused_early() {
    let mut d = Daemons::start("attack-100mb");
    d.add_user(USER, PASSWORD);
    const TOTAL: usize = 100 * 1024 * 1024;

    // Declared (Content-Length) and streamed (chunked, nothing declared).
    for chunked in [false, true] {
        let mut conn = Conn::open(d.issuer).unwrap();
        let head = if chunked {
            chunked_head("")
        } else {
            format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {TOTAL}\r\n\r\n",
                login_path()
            )
        };
        conn.send(head.as_bytes()).unwrap();
        let mut writer = conn.stream().try_clone().unwrap();
        let pusher = std::thread::spawn(move || {
            let data = vec![b'['; 64 * 1024];
            let mut chunk = if chunked {
                format!("{:x}\r\n", data.len()).into_bytes()
            } else {
                Vec::new()
            };
            chunk.extend_from_slice(&data);
            if chunked {
                chunk.extend_from_slice(b"\r\n");
            }
            let mut sent = 0;
            while sent < TOTAL {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
                sent += data.len();
            }
            sent
        });
        let r = conn.read_response().unwrap();
        expect(&r, 400, if chunked { "100 MB chunked" } else { "100 MB" });
        // Nothing more comes: the server hangs up instead of reading the rest.
        let mut rest = Vec::new();
        let _ = conn.stream().read_to_end(&mut rest);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        let sent = pusher.join().unwrap();
        // Socket buffers hold a few MB at most; the server read 8 KiB of it.
        assert!(
            sent < TOTAL / 4,
            "the client could push {sent} bytes (chunked: {chunked})"
        );
    }
    assert_still_serves(&mut d, USER, PASSWORD);
}

#[test]
fn content_types_other_than_json_are_400() {
    let mut d = Daemons::start("attack-content-type");
    d.add_user(USER, PASSWORD);
    let good = body(USER, PASSWORD);
    // What `curl -d` sends without `-H` (the seed's examples always set JSON).
    let form = format!("username={USER}&password={PASSWORD}");
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", form.as_str()),
        ("application/x-www-form-urlencoded", good.as_str()),
        ("multipart/form-data; boundary=x", good.as_str()),
        ("text/json", good.as_str()),
        ("application/jsonp", good.as_str()),
        ("application/json-seq", good.as_str()),
        ("application/vnd.api+json", good.as_str()),
        ("application/x-json", good.as_str()),
        ("json", good.as_str()),
        ("", good.as_str()),
    ] {
        expect(
            &post_login(&d, Some(content_type), body.as_bytes()),
            400,
            content_type,
        );
    }
    // A UTF-8 byte-order mark is not JSON either.
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(good.as_bytes());
    expect(&json_login(&d, &bom), 400, "BOM");

    // Two Content-Type headers are refused in either order (first-wins or
    // last-wins would let a proxy and us disagree on what the body is).
    for pair in [
        [
            ("Content-Type", "text/plain"),
            ("Content-Type", "application/json"),
        ],
        [
            ("Content-Type", "application/json"),
            ("Content-Type", "text/plain"),
        ],
        [
            ("Content-Type", "application/json"),
            ("Content-Type", "application/json"),
        ],
    ] {
        let r = request(d.issuer, "POST", &login_path(), &pair, good.as_bytes());
        expect(&r, 400, "two content types");
    }
    // Two Authorization headers are no token, even if one is valid.
    let (access, _) = d.tokens(USER, PASSWORD);
    let valid = format!("Bearer {access}");
    for pair in [
        [
            ("Authorization", valid.as_str()),
            ("Authorization", "Bearer x"),
        ],
        [
            ("Authorization", "Bearer x"),
            ("Authorization", valid.as_str()),
        ],
    ] {
        let r = request(d.issuer, "GET", &format!("{BASE}/profile"), &pair, b"");
        assert_eq!(r.status, 401, "{}", r.text());
    }

    // Media types are case-insensitive and may carry parameters (RFC 9110 §8.3.1).
    for content_type in ["APPLICATION/JSON", "Application/Json ; charset=UTF-8"] {
        let r = post_login(&d, Some(content_type), good.as_bytes());
        assert_eq!(r.status, 200, "{content_type}: {}", r.text());
    }
    assert_still_serves(&mut d, USER, PASSWORD);
}

#[test]
fn chunked_logins_work_and_smuggled_requests_do_not() {
    let mut d = Daemons::start("attack-chunked");
    d.add_user(USER, PASSWORD);
    d.add_user("202", "Secret202");
    let good = body(USER, PASSWORD);

    // HTTP/1.1 clients that stream send chunked: a valid one logs in, here in
    // one-byte chunks with a chunk extension and a trailer.
    let mut bytes = chunked_head("Connection: close\r\n").into_bytes();
    for b in good.bytes() {
        bytes.extend_from_slice(b"1;ext=1\r\n");
        bytes.push(b);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    let answers = exchange(d.issuer, &bytes);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 200, "{}", answers[0].text());
    let access = answers[0].json_str("access_token");

    // A second request after the last chunk is an ordinary pipelined request:
    // answered second, for exactly what it asked.
    let mut bytes = chunked_head("").into_bytes();
    bytes.extend_from_slice(&one_chunk(good.as_bytes()));
    bytes.extend_from_slice(
        format!(
            "GET {BASE}/profile HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {access}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let answers = exchange(d.issuer, &bytes);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].status, 200, "{}", answers[0].text());
    assert!(answers[0].json_str("access_token").starts_with("eyJ"));
    assert_eq!(answers[1].status, 200, "{}", answers[1].text());
    assert_eq!(answers[1].json()["user"]["username"], USER);

    let before = sessions(&d);
    let smuggled = build(
        "POST",
        &login_path(),
        &[("Content-Type", "application/json")],
        body("202", "Secret202").as_bytes(),
    );
    let wrong = body(USER, "wrong");
    // Content-Length and Transfer-Encoding together (CL.TE / TE.CL): read as
    // chunked and the connection closed after the answer (RFC 9112 §6.1), so the
    // request hidden after the chunks, where a Content-Length reader would find
    // it, is never run.
    for (first, second) in [
        ("Content-Length: 4", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 4"),
    ] {
        let mut bytes = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Real-IP: {}\r\n{first}\r\n{second}\r\n\r\n",
            login_path(),
            next_ip()
        )
        .into_bytes();
        bytes.extend_from_slice(&one_chunk(wrong.as_bytes()));
        bytes.extend_from_slice(&smuggled);
        let answers = exchange(d.issuer, &bytes);
        assert_eq!(answers.len(), 1, "the smuggled request was answered");
        expect(&answers[0], 401, "CL + TE");
        assert_eq!(answers[0].header("Connection"), Some("close"));
    }
    // A request inside a chunk is body (bad JSON), never a request.
    let mut bytes = chunked_head("Connection: close\r\n").into_bytes();
    bytes.extend_from_slice(&one_chunk(&smuggled));
    let answers = exchange(d.issuer, &bytes);
    assert_eq!(answers.len(), 1);
    expect(&answers[0], 400, "request in a chunk");
    // A chunk size that lies: the bytes after it are broken framing, not a request.
    let mut bytes = chunked_head("").into_bytes();
    bytes.extend_from_slice(b"2\r\n{}");
    bytes.extend_from_slice(&smuggled);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    let answers = exchange(d.issuer, &bytes);
    assert_eq!(answers.len(), 1);
    expect(&answers[0], 400, "lying chunk size");
    // Transfer codings we do not do, and chunked in HTTP/1.0: hyper refuses them
    // while parsing the head (400, no body: our routes never see them).
    for head in [
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            login_path()
        ),
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: xchunked\r\n\r\n",
            login_path()
        ),
        format!(
            "POST {} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            login_path()
        ),
    ] {
        let mut bytes = head.clone().into_bytes();
        bytes.extend_from_slice(&one_chunk(good.as_bytes()));
        bytes.extend_from_slice(&smuggled);
        let answers = exchange(d.issuer, &bytes);
        assert_eq!(answers.len(), 1, "{head}");
        assert_eq!(answers[0].status, 400, "{head}");
    }

    assert_eq!(sessions(&d), before, "a smuggled login opened a session");
    assert!(
        !security_log(&d).contains("[AUTH_SUCCESS] Successful login for user: 202 "),
        "the smuggled login ran"
    );
    assert_still_serves(&mut d, "202", "Secret202");
    d.assert_logs_clean(&[PASSWORD, "Secret202"]);
}

#[test]
fn duplicate_and_look_alike_keys_are_400_even_with_the_right_password() {
    let mut d = Daemons::start("attack-duplicates");
    d.add_user(USER, PASSWORD);
    d.add_user("202", "Secret202");
    // serde's derived struct reader refuses a repeated field (a map would keep
    // the last one silently): one answer whatever the order or the values.
    for case in [
        format!(r#"{{"username":"{USER}","password":"{PASSWORD}","password":"{PASSWORD}"}}"#),
        format!(r#"{{"username":"{USER}","username":"{USER}","password":"{PASSWORD}"}}"#),
        format!(r#"{{"username":"202","password":"{PASSWORD}","username":"{USER}"}}"#),
        format!(r#"{{"username":"{USER}","password":"wrong","password":"{PASSWORD}"}}"#),
        // The same key spelt with an escape is the same key.
        format!(r#"{{"username":"202","user\u006eame":"{USER}","password":"{PASSWORD}"}}"#),
        format!(r#"{{"username":"{USER}","p\u0061ssword":"{PASSWORD}","password":"x"}}"#),
    ] {
        expect(&json_login(&d, case.as_bytes()), 400, &case);
    }
    // Keys are case-sensitive: `USERNAME` is not `username` (so it is missing).
    let upper = format!(r#"{{"USERNAME":"{USER}","password":"{PASSWORD}"}}"#);
    expect(&json_login(&d, upper.as_bytes()), 400, &upper);
    assert_eq!(sessions(&d), 0, "a duplicate-key login opened a session");
    assert_still_serves(&mut d, USER, PASSWORD);
    d.assert_logs_clean(&[PASSWORD, "Secret202"]);
}

#[test]
fn hostile_credentials_are_401_and_the_database_is_intact() {
    let mut d = Daemons::start("attack-credentials");
    d.add_user(USER, PASSWORD);
    d.add_user("Alice", "AlicePassword1");
    let (access, _) = d.tokens("Alice", "AlicePassword1");
    let sessions_before = sessions(&d);
    let users_before = count(&d, "SELECT count(*) FROM users");
    assert_eq!((sessions_before, users_before), (1, 2));

    let sql = [
        "' OR 1=1 --",
        "201'--",
        "\"; DROP TABLE sessions; --",
        "201' UNION SELECT 1,'201','x','user',0,0,0 --",
    ];
    let mut cases: Vec<(String, String)> = Vec::new();
    for s in sql {
        cases.push((s.to_owned(), PASSWORD.to_owned()));
        cases.push((USER.to_owned(), s.to_owned()));
    }
    for (user, password) in [
        // NUL bytes: a C string would end at them.
        ("201\0", PASSWORD),
        ("\u{0}201", PASSWORD),
        ("2\u{0}01", PASSWORD),
        ("201", &format!("{PASSWORD}\0")),
        ("201", &format!("{PASSWORD}\0anything")),
        ("201", "\0"),
        // Near misses: case, spaces, full-width digits.
        ("alice", "AlicePassword1"),
        ("ALICE", "AlicePassword1"),
        ("Alice ", "AlicePassword1"),
        (" 201", PASSWORD),
        ("\u{ff12}\u{ff10}\u{ff11}", PASSWORD),
        ("Alice", "alicepassword1"),
        ("Alice", "AlicePassword1 "),
    ] {
        cases.push((user.to_owned(), password.to_owned()));
    }
    for (user, password) in &cases {
        expect(
            &json_login(&d, body(user, password).as_bytes()),
            401,
            &format!("{user:?} / {password:?}"),
        );
    }
    // 7 KB fits the 8 KiB body: an unknown user like any other.
    let long_name = "a".repeat(7 * 1024);
    expect(
        &json_login(&d, body(&long_name, "x").as_bytes()),
        401,
        "7 KB name",
    );
    // A 10 KB username and a 1 MB password do not fit: refused as too large before
    // anything is read (the contract's 400 for a body too large).
    expect(
        &oversized_login(&d, body(&"b".repeat(10 * 1024), "x").as_bytes()),
        400,
        "10 KB name",
    );
    expect(
        &oversized_login(&d, body(USER, &"p".repeat(1024 * 1024)).as_bytes()),
        400,
        "1 MB password",
    );

    // Long names are throttled by their first 256 bytes (no real name is longer):
    // five different 7 KB names from one address, then that address waits.
    let from = next_ip();
    for i in 0..6 {
        let name = format!("{long_name}{i}");
        let r = request(
            d.issuer,
            "POST",
            &login_path(),
            &[("Content-Type", "application/json"), ("X-Real-IP", &from)],
            body(&name, "x").as_bytes(),
        );
        assert_eq!(r.status, if i < 5 { 401 } else { 429 }, "long name {i}");
    }

    // The built-in user table takes no look-alikes in the first place.
    let (ok, out) = d.admin(&["user", "add", "jos\u{e9}"], "Password123\n");
    assert!(!ok, "{out}");

    assert_eq!(sessions(&d), sessions_before, "sessions changed");
    assert_eq!(count(&d, "SELECT count(*) FROM users"), users_before);
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('sessions', 'users')"
        ),
        2
    );
    // The session opened before the attacks still works.
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
    assert_still_serves(&mut d, USER, PASSWORD);
    assert_still_serves(&mut d, "Alice", "AlicePassword1");
    d.assert_logs_clean(&[PASSWORD, "AlicePassword1", "Password123"]);
}

#[test]
fn unicode_look_alikes_do_not_log_in_as_someone_else() {
    // Built-in names are ASCII (see above); MikoPBX extensions are any text, so
    // the comparison is checked there. It is byte-exact, with no normalisation:
    // "jos\u{e9}" (NFC) and "jose\u{301}" (NFD) are different users, and a
    // password must match byte for byte.
    let fixture = TestDir::new("attack-unicode-fixture");
    let db = fixture.path().join("mikopbx.db");
    let nfc = "jos\u{e9}";
    let nfd = "jose\u{301}";
    let secret = "caf\u{e9}-Secret";
    mikopbx::create(
        &db,
        &[
            Peer {
                extension: nfc,
                secret,
                kind: "peer",
                disabled: "0",
                user_id: Some(9),
            },
            Peer {
                extension: "201",
                secret: "Secret201",
                kind: "peer",
                disabled: "0",
                user_id: Some(7),
            },
        ],
    );
    let mut d = Daemons::start_with(
        "attack-unicode",
        Options::default().with(
            "SOFTPHONE_USER_SOURCE",
            &format!("mikopbx:{}", db.display()),
        ),
    );
    for (user, password) in [
        (nfd, secret),
        (nfc, "cafe\u{301}-Secret"),
        ("JOS\u{c9}", secret),
        ("jos\u{c9}", secret),
        ("jos\u{e9}\u{200b}", secret),
        ("\u{feff}jos\u{e9}", secret),
        ("jos\u{e9}\0", secret),
        ("201\0", "Secret201"),
        ("201", "Secret201\0"),
        ("\u{ff12}\u{ff10}\u{ff11}", "Secret201"),
    ] {
        expect(
            &json_login(&d, body(user, password).as_bytes()),
            401,
            &format!("{user:?} / {password:?}"),
        );
    }
    assert_eq!(sessions(&d), 0);
    // The precomposed name itself logs in, and is reported as stored.
    assert_still_serves(&mut d, nfc, secret);
    assert_still_serves(&mut d, "201", "Secret201");
    d.assert_logs_clean(&[secret, "Secret201"]);
}

#[test]
fn line_breaks_and_controls_in_usernames_never_split_a_log_line() {
    // The line does not depend on the user source; an (empty) MikoPBX source
    // spares the 14 dummy PBKDF2 runs the built-in one would do.
    let fixture = TestDir::new("attack-log-lines-fixture");
    let db = fixture.path().join("mikopbx.db");
    mikopbx::create(&db, &[]);
    let d = Daemons::start_with(
        "attack-log-lines",
        Options::default().with(
            "SOFTPHONE_USER_SOURCE",
            &format!("mikopbx:{}", db.display()),
        ),
    );
    let names = [
        "a\nb",
        "a\rb",
        "a\r\n[AUTH_SUCCESS] Successful login for user: 201 | From: 8.8.8.8 | Time: 2026-01-01 00:00:00\n",
        "a\u{b}b\u{c}c",
        "a\u{85}b\u{2028}c\u{2029}d",
        "\u{1b}[2J\u{1b}[1;1H",
        "a\0b",
        "201 | From: 1.2.3.4",
    ];
    let mut events = 0;
    for name in names {
        expect(&json_login(&d, body(name, "x").as_bytes()), 401, name);
        events += 1;
    }
    // The throttle's line carries the name too: six tries from one address.
    let from = next_ip();
    for i in 0..6 {
        let r = request(
            d.issuer,
            "POST",
            &login_path(),
            &[("Content-Type", "application/json"), ("X-Real-IP", &from)],
            body("x\ny", "x").as_bytes(),
        );
        assert_eq!(r.status, if i < 5 { 401 } else { 429 });
        events += 1;
    }

    let log = security_log(&d);
    // Only printable ASCII and the line ends: nothing a terminal, a log viewer or
    // fail2ban (which also splits on a lone CR) could read as a new line.
    assert!(
        log.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "{log:?}"
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), events, "{log}");
    for line in &lines {
        assert!(
            line.starts_with("[AUTH_FAILED] ") || line.starts_with("[AUTH_RATE_LIMITED] "),
            "{line}"
        );
        assert_eq!(line.matches(" | From: ").count(), 1, "{line}");
        assert_eq!(line.matches(" | Time: ").count(), 1, "{line}");
    }
    assert_eq!(log.matches("[AUTH_RATE_LIMITED]").count(), 1, "{log}");
    assert!(log.contains("user: x\\x0ay | From: "), "{log}");
}

#[test]
fn a_wrong_password_flood_leaves_profile_and_refresh_answering() {
    let mut d = Daemons::start("attack-flood");
    d.add_user(USER, PASSWORD);
    d.add_user("victim", "VictimPassword1");
    let (access, refresh) = d.tokens(USER, PASSWORD);
    let issuer = d.issuer;
    let done = Arc::new(AtomicBool::new(false));

    // 64 guesses at once, each from its own address (a distributed guesser).
    let guesses: Vec<_> = (0..64)
        .map(|i| {
            let ip = next_ip();
            std::thread::spawn(move || {
                // The checks queue for one nice-19 hashing thread: on a busy
                // machine the last one can wait longer than the kit's 10 s.
                let mut conn = Conn::open(issuer).unwrap();
                conn.stream()
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                conn.send(&build(
                    "POST",
                    &login_path(),
                    &[("Content-Type", "application/json"), ("X-Real-IP", &ip)],
                    body("victim", &format!("guess-{i}")).as_bytes(),
                ))
                .unwrap();
                let r = conn.read_response().unwrap();
                (r.status, r.header("Retry-After").is_some())
            })
        })
        .collect();
    let profiles = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut answered = 0;
            loop {
                let last = done.load(Ordering::SeqCst);
                let r = request(
                    issuer,
                    "GET",
                    &format!("{BASE}/profile"),
                    &[("Authorization", &format!("Bearer {access}"))],
                    b"",
                );
                assert_eq!(r.status, 200, "profile during the flood: {}", r.text());
                assert_eq!(r.json()["user"]["username"], USER);
                answered += 1;
                if last {
                    return answered;
                }
            }
        })
    };
    let refreshes = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut token = refresh;
            let mut answered = 0;
            loop {
                let last = done.load(Ordering::SeqCst);
                let r = request(
                    issuer,
                    "POST",
                    &format!("{BASE}/auth/refresh"),
                    &[("Authorization", &format!("Bearer {token}"))],
                    b"",
                );
                assert_eq!(r.status, 200, "refresh during the flood: {}", r.text());
                token = r.json_str("refresh_token");
                answered += 1;
                if last {
                    return answered;
                }
                // Within one session's refresh bound (10 back to back, then one
                // per 6 s) for a flood of up to 30 s.
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };

    let statuses: Vec<(u16, bool)> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let profiles = profiles.join().unwrap();
    let refreshes = refreshes.join().unwrap();

    // Every guess is refused: 401, or 429 + Retry-After once the per-user ceiling
    // (20 failures from anywhere) is passed, or 503 + Retry-After when its
    // check waited too long for a hashing thread and never ran. Never a 2xx or
    // a 500.
    for (status, retry_after) in &statuses {
        assert!(matches!(status, 401 | 429 | 503), "a guess got {status}");
        assert_eq!(*retry_after, *status != 401);
    }
    // The per-user ceiling lets 20 through to the hashing queue; those that
    // waited too long there (one nice-19 thread, a busy machine) came back 503.
    let checked = statuses.iter().filter(|(s, _)| *s == 401).count();
    let unrun = statuses.iter().filter(|(s, _)| *s == 503).count();
    assert!(checked >= 1, "no guess was checked");
    assert!(
        checked + unrun >= 20,
        "only {checked} guesses were checked and {unrun} came back"
    );
    assert!(profiles >= 2 && refreshes >= 2, "{profiles} {refreshes}");

    assert_still_serves(&mut d, USER, PASSWORD);
    d.assert_logs_clean(&[PASSWORD, "VictimPassword1"]);
}
