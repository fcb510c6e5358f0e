//! Live nchan subscriptions end with their session and with their token:
//! EventSource, WebSocket and long-poll, through the real nginx + nchan, cut by
//! the verifier deleting the session's or the expiry second's channel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use softphone_testkit::http::read_head;
use softphone_testkit::nginx::Nginx;
use softphone_testkit::{BASE, Daemons, Options, request};

use crate::{PASSWORD, logout, published};

/// What the issue allows between a session's end and its subscriptions' end.
const BOUND: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    EventSource,
    WebSocket,
    LongPoll,
}

const TRANSPORTS: [Transport; 3] = [
    Transport::EventSource,
    Transport::WebSocket,
    Transport::LongPoll,
];

#[derive(Debug)]
enum Seen {
    Message(String),
    /// The subscription ended, when and how (EOF, close code, HTTP status).
    Ended(Instant, String),
}

/// One open subscription, read by a thread of its own.
struct Subscriber {
    transport: Transport,
    seen: Receiver<Seen>,
    ended: Option<(Instant, String)>,
}

impl Subscriber {
    /// Subscribes to `channel` with `token`; `Err(status)` when refused.
    fn open(
        addr: SocketAddr,
        transport: Transport,
        channel: &str,
        token: &str,
    ) -> Result<Subscriber, u16> {
        let path = format!("{BASE}/sub/{channel}?authorization={token}");
        let (tx, seen) = mpsc::channel();
        match transport {
            Transport::EventSource => {
                let mut stream = connect(addr);
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
                )
                .unwrap();
                let status = status_of(&read_head(&mut stream));
                if status != 200 {
                    return Err(status);
                }
                std::thread::spawn(move || {
                    let mut text = String::new();
                    let mut chunk = [0u8; 4096];
                    let how = loop {
                        match stream.read(&mut chunk) {
                            Ok(0) => break "end of stream".to_owned(),
                            Ok(n) => text.push_str(&String::from_utf8_lossy(&chunk[..n])),
                            Err(e) => break format!("read error: {e}"),
                        }
                        while let Some(end) = text.find('\n') {
                            let line: String = text.drain(..=end).collect();
                            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                                let _ = tx.send(Seen::Message(data.to_owned()));
                            }
                        }
                    };
                    let _ = tx.send(Seen::Ended(Instant::now(), how));
                });
            }
            Transport::WebSocket => {
                let stream = connect(addr);
                let url = format!("ws://{addr}{path}");
                let mut socket = match tungstenite::client::client(url.as_str(), stream) {
                    Ok((socket, _)) => socket,
                    Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                        return Err(r.status().as_u16());
                    }
                    Err(e) => panic!("WebSocket handshake: {e}"),
                };
                std::thread::spawn(move || {
                    let how = loop {
                        match socket.read() {
                            Ok(tungstenite::Message::Text(text)) => {
                                let _ = tx.send(Seen::Message(text.as_str().to_owned()));
                            }
                            Ok(tungstenite::Message::Close(frame)) => {
                                break format!("close {}", frame.map_or(0, |f| u16::from(f.code)));
                            }
                            Ok(_) => {}
                            Err(e) => break format!("error: {e}"),
                        }
                    };
                    let _ = tx.send(Seen::Ended(Instant::now(), how));
                });
            }
            Transport::LongPoll => {
                // The first poll is answered once something is published; a
                // refusal comes at once.
                let (first_tx, first_rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut since: Vec<(String, String)> = Vec::new();
                    let mut first = Some(first_tx);
                    loop {
                        let mut stream = connect(addr);
                        let mut head =
                            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
                        for (name, value) in &since {
                            head.push_str(&format!("{name}: {value}\r\n"));
                        }
                        head.push_str("\r\n");
                        stream.write_all(head.as_bytes()).unwrap();
                        // Until the response head arrives the poll is open.
                        let _ = first.take().map(|f| f.send(()));
                        let mut answer = Vec::new();
                        if let Err(e) = stream.read_to_end(&mut answer) {
                            let _ =
                                tx.send(Seen::Ended(Instant::now(), format!("read error: {e}")));
                            return;
                        }
                        let answer = String::from_utf8_lossy(&answer).into_owned();
                        let status = status_of(&answer);
                        if status != 200 {
                            let _ =
                                tx.send(Seen::Ended(Instant::now(), format!("status {status}")));
                            return;
                        }
                        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
                        since.clear();
                        for line in head.lines() {
                            if let Some((name, value)) = line.split_once(": ") {
                                match name.to_ascii_lowercase().as_str() {
                                    "last-modified" => {
                                        since.push(("If-Modified-Since".into(), value.into()))
                                    }
                                    "etag" => since.push(("If-None-Match".into(), value.into())),
                                    _ => {}
                                }
                            }
                        }
                        let _ = tx.send(Seen::Message(body.to_owned()));
                    }
                });
                first_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                // A refused poll ends at once; give it the chance to.
                if let Ok(Seen::Ended(_, how)) = seen.recv_timeout(Duration::from_millis(300)) {
                    return Err(how.trim_start_matches("status ").parse().unwrap_or(0));
                }
            }
        }
        Ok(Subscriber {
            transport,
            seen,
            ended: None,
        })
    }

    /// Waits up to `limit` for the next message; `None` if the subscription
    /// ended (recorded) or nothing came.
    fn next_message(&mut self, limit: Duration) -> Option<String> {
        if self.ended.is_some() {
            return None;
        }
        match self.seen.recv_timeout(limit) {
            Ok(Seen::Message(m)) => Some(m),
            Ok(Seen::Ended(at, how)) => {
                self.ended = Some((at, how));
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("{:?}: reader gone", self.transport),
        }
    }

    /// Waits until `deadline` for the subscription to end; when and how, or
    /// `None` if it is still open. Messages on the way are returned too.
    fn wait_end(&mut self, deadline: Instant) -> (Option<(Instant, String)>, Vec<String>) {
        let mut messages = Vec::new();
        while self.ended.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(m) = self.next_message(left) {
                messages.push(m);
            }
        }
        (self.ended.clone(), messages)
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

fn status_of(head: &str) -> u16 {
    head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Opens one subscription per transport on `channel` and proves each live.
fn subscribe_all(nginx: &Nginx, channel: &str, token: &str) -> Vec<Subscriber> {
    let mut subs: Vec<Subscriber> = TRANSPORTS
        .iter()
        .map(|&t| {
            Subscriber::open(nginx.addr, t, channel, token)
                .unwrap_or_else(|s| panic!("{t:?} on {channel}: refused with {s}"))
        })
        .collect();
    // nchan may still be attaching the subscriber when the head arrives.
    std::thread::sleep(Duration::from_millis(200));
    // Unique, so that messages published before this subscription (which
    // nchan may deliver first) are told apart.
    let hello = format!(r#"{{"hello":"{}"}}"#, &token[token.len() - 12..]);
    published(nginx.addr, channel, &hello);
    for sub in &mut subs {
        let mut seen = Vec::new();
        while let Some(m) = sub.next_message(Duration::from_secs(10)) {
            seen.push(m);
            if seen.last() == Some(&hello) {
                break;
            }
        }
        assert_eq!(
            seen.last(),
            Some(&hello),
            "{:?} on {channel} is live",
            sub.transport
        );
    }
    // The long-poll asks again after each message: let that poll be admitted
    // before anything is revoked or stopped.
    std::thread::sleep(Duration::from_millis(500));
    subs
}

/// Waits for every subscription to end; returns the slowest delay after `since`
/// and asserts the bound, that nothing published afterwards arrives and that
/// the token opens no new subscription.
fn assert_cut(
    nginx: &Nginx,
    what: &str,
    channel: &str,
    token: &str,
    subs: &mut [Subscriber],
    since: Instant,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for sub in subs.iter_mut() {
        let (ended, messages) = sub.wait_end(since + BOUND + Duration::from_secs(5));
        let (at, how) = ended.unwrap_or_else(|| {
            panic!("{what}: the {:?} subscription is still open", sub.transport)
        });
        assert!(
            messages.is_empty(),
            "{what}: {:?} got {messages:?}",
            sub.transport
        );
        let delay = at.saturating_duration_since(since);
        eprintln!("{what}: {:?} ended after {delay:?} ({how})", sub.transport);
        assert!(
            delay <= BOUND,
            "{what}: {:?} ended after {delay:?}",
            sub.transport
        );
        slowest = slowest.max(delay);
    }
    published(nginx.addr, channel, r#"{"after":1}"#);
    for &t in &TRANSPORTS {
        let refused = Subscriber::open(nginx.addr, t, channel, token).err();
        assert_eq!(refused, Some(401), "{what}: a new {t:?} subscription");
    }
    slowest
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `exp` claim of an access token.
fn exp_of(token: &str) -> i64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&json).unwrap();
    claims["exp"].as_i64().unwrap()
}

fn refresh(nginx: &Nginx, refresh_token: &str) -> softphone_testkit::Response {
    let bearer = format!("Bearer {refresh_token}");
    request(
        nginx.addr,
        "POST",
        &format!("{BASE}/auth/refresh"),
        &[("Authorization", &bearer)],
        b"",
    )
}

/// Every way a session ends cuts its live subscriptions, on every transport,
/// within 5 s of the 200 (or of the admin command's return); a message
/// published afterwards reaches none, and the token opens none again.
#[test]
fn ending_a_session_ends_its_live_subscriptions() {
    let d = Daemons::start_with(
        "live-subs",
        Options::default().with("SOFTPHONE_MAX_SESSIONS_PER_USER", "2"),
    );
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");
    let kinds = [
        "logout",
        "session-revoke",
        "user-disable",
        "user-passwd",
        "refresh-reuse",
        "session-cap",
    ];
    // A bystander on a channel the logout's subscriptions share keeps its own.
    d.add_user("399", PASSWORD);
    let (bystander, _) = d.tokens("399", PASSWORD);
    let mut kept = subscribe_all(&nginx, "live-logout", &bystander);
    // One user each: disabling one must not touch the others.
    let mut open = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let user = format!("{}", 301 + i);
        d.add_user(&user, PASSWORD);
        let (mut access, refresh_token) = d.tokens(&user, PASSWORD);
        if *kind == "refresh-reuse" {
            // The previous generation is still accepted (a lost answer's
            // retry); the one before it is reuse.
            let mut current = refresh_token.clone();
            for _ in 0..2 {
                let r = refresh(&nginx, &current);
                assert_eq!(r.status, 200, "{}", r.text());
                access = r.json_str("access_token");
                current = r.json_str("refresh_token");
            }
        }
        let channel = format!("live-{kind}");
        let subs = subscribe_all(&nginx, &channel, &access);
        open.push((*kind, user, access, refresh_token, channel, subs));
    }

    for (kind, user, access, refresh_token, channel, subs) in &mut open {
        let since = Instant::now();
        match *kind {
            "logout" => logout(&nginx, access),
            "session-revoke" => {
                let (ok, out) = d.admin(&["session", "revoke", "--user", user], "");
                assert!(ok, "{out}");
            }
            "user-disable" => {
                let (ok, out) = d.admin(&["user", "disable", user], "");
                assert!(ok, "{out}");
            }
            "user-passwd" => {
                let (ok, out) = d.admin(&["user", "passwd", user], "another-password\n");
                assert!(ok, "{out}");
            }
            "refresh-reuse" => {
                let r = refresh(&nginx, refresh_token);
                assert_eq!(r.status, 401, "reuse is refused: {}", r.text());
            }
            "session-cap" => {
                d.tokens(user, PASSWORD);
                d.tokens(user, PASSWORD);
            }
            other => unreachable!("{other}"),
        }
        let slowest = assert_cut(&nginx, kind, channel, access, subs, since);
        eprintln!("{kind}: slowest {slowest:?}");
    }
    // The bystander's subscriptions saw the `after` message of live-logout and
    // are still open.
    for sub in &mut kept {
        let mut seen = Vec::new();
        while let Some(m) = sub.next_message(Duration::from_secs(5)) {
            seen.push(m);
            if seen.last().map(String::as_str) == Some(r#"{"after":1}"#) {
                break;
            }
        }
        assert_eq!(
            seen.last().map(String::as_str),
            Some(r#"{"after":1}"#),
            "{:?} of a bystander: {seen:?}",
            sub.transport
        );
        assert!(sub.ended.is_none(), "{:?}", sub.ended);
    }
    // A spelling of the subscriber path that nginx normalizes (`%73ub` for
    // `sub`) reaches the subscriber location without the verifier naming
    // channels: refused, never a subscription that nothing could end.
    let mut stream = connect(nginx.addr);
    write!(
        stream,
        "GET {BASE}/%73ub/live-logout?authorization={bystander} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let status = status_of(&read_head(&mut stream));
    assert!(status >= 400, "a subscription without channels: {status}");
    d.assert_logs_clean(&[PASSWORD, "another-password"]);
}

/// No subscription outlives its token: it ends within the second `exp + leeway`
/// (the token's last valid second), not before `exp`, and a token this close
/// to its end opens none.
#[test]
fn subscriptions_end_when_their_token_expires() {
    let d = Daemons::start_with(
        "live-subs-exp",
        Options::default()
            .with("SOFTPHONE_ACCESS_TTL", "6")
            .with("SOFTPHONE_LEEWAY", "2"),
    );
    d.add_user("301", PASSWORD);
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");
    let (access, _) = d.tokens("301", PASSWORD);
    let exp = exp_of(&access);
    let leeway = 2;
    let mut subs = subscribe_all(&nginx, "live-exp", &access);
    for sub in &mut subs {
        let (ended, messages) = sub.wait_end(Instant::now() + Duration::from_secs(20));
        let (at, how) = ended.unwrap_or_else(|| panic!("{:?} outlived its token", sub.transport));
        assert!(messages.is_empty(), "{messages:?}");
        let at_unix = unix_now_f64() - at.elapsed().as_secs_f64();
        eprintln!(
            "expiry: {:?} ended {:+.3} s after exp + leeway ({how})",
            sub.transport,
            at_unix - (exp + leeway) as f64
        );
        assert!(
            at_unix >= exp as f64,
            "{:?} ended before exp",
            sub.transport
        );
        assert!(
            at_unix < (exp + leeway + 1) as f64,
            "{:?} outlived the token's last valid second",
            sub.transport
        );
    }
    // The token is still valid for media until exp + leeway, but opens no
    // subscription in its last seconds.
    for &t in &TRANSPORTS {
        assert_eq!(
            Subscriber::open(nginx.addr, t, "live-exp", &access).err(),
            Some(401),
            "{t:?}"
        );
    }
}

/// A verifier that was down when a session was revoked ends its subscriptions
/// when it starts again.
#[test]
fn a_restarted_verifier_ends_what_was_revoked_while_it_was_down() {
    let mut d = Daemons::start("live-subs-restart");
    d.add_user("301", PASSWORD);
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");
    let (access, _) = d.tokens("301", PASSWORD);
    let mut subs = subscribe_all(&nginx, "live-restart", &access);
    let verifier = d.verifier_child();
    verifier.kill().unwrap();
    verifier.wait().unwrap();
    let (ok, out) = d.admin(&["session", "revoke", "--user", "301"], "");
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_secs(2));
    for sub in &mut subs {
        assert!(sub.next_message(Duration::from_millis(10)).is_none());
        assert!(
            sub.ended.is_none(),
            "{:?} ended without the verifier",
            sub.transport
        );
    }
    let since = Instant::now();
    d.start_verifier();
    let slowest = assert_cut(&nginx, "restart", "live-restart", &access, &mut subs, since);
    eprintln!("restart: slowest {slowest:?} after the verifier was started");
}
