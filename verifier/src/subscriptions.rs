//! Ending live nchan subscriptions. nchan asks the verifier once, when a
//! subscription starts, and never again; so every subscription also joins two
//! channels nobody publishes to, named in the verifier's answer
//! ([`crate::decision::Channels`]): `_s.<session>` and `_e.<expiry second>`.
//! Deleting either closes every subscription joined to it (EventSource and
//! WebSocket are closed, a waiting long-poll gets 410), and the app's reconnect
//! meets the verifier again. This thread deletes them through nginx's control
//! server (`nchan_control_listen`, DELETE only):
//! - `_s.<sid>` one tick (a second) after the verifier learned that the session
//!   ended ([`take_ended`](crate::revocations::Revocations::take_ended)): a subscriber admitted just before has
//!   joined by then, and none is admitted after;
//! - `_e.<t>` at the first tick of second `t + leeway`: the verifier admits a
//!   subscription only up to [`SUBSCRIBE_MARGIN`](crate::decision::SUBSCRIBE_MARGIN)
//!   seconds before that.
//!
//! Each channel is deleted once: nchan 1.3.6 (Debian's) leaves subscribers
//! behind when a channel deleted once is joined again and deleted a second
//! time, which the rules above make impossible. A verifier that starts deletes
//! the channels of sessions revoked while it was away and of every expiry
//! second of the last `lookback` seconds, so a restart loses nothing a token's
//! lifetime can still reach. When nginx does not answer, deletions wait and
//! are retried every tick; nothing is lost while it comes back.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use softphone_shared::unix_now;

use crate::state::Verifier;

const WHO: &str = "softphone-verifier";
/// How long one exchange with nginx may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of one control answer we read (nchan's are a few hundred).
const MAX_ANSWER: u64 = 64 * 1024;

/// Starts the thread; `lookback` covers the longest a token lives (access TTL
/// plus leeway).
pub fn start(verifier: Arc<Verifier>, control: SocketAddr, lookback: i64) -> io::Result<()> {
    let now = unix_now();
    let mut cutter = Cutter {
        control: Control::new(control),
        leeway: verifier.leeway,
        swept_to: now - verifier.leeway - lookback,
        due: verifier.revocations.revoked_sessions(),
        failing: false,
    };
    std::thread::Builder::new()
        .name("subscriptions".into())
        .spawn(move || {
            loop {
                sleep_to_next_second();
                cutter.tick(&verifier, unix_now());
            }
        })?;
    Ok(())
}

/// Sleeps to just past the next whole second, so a deletion due at second `t`
/// happens within milliseconds of `t`.
fn sleep_to_next_second() {
    let into = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let left = 1_000_000_000 - u64::from(into);
    std::thread::sleep(Duration::from_nanos(left) + Duration::from_millis(2));
}

struct Cutter {
    control: Control,
    leeway: i64,
    /// Every expiry channel up to this second has been deleted.
    swept_to: i64,
    /// Sessions whose channels go at this tick.
    due: Vec<Box<str>>,
    /// The last exchange with nginx failed (reported once, not per tick).
    failing: bool,
}

impl Cutter {
    fn tick(&mut self, verifier: &Verifier, now: i64) {
        let result = self.cut(verifier, now);
        match (result, self.failing) {
            (Ok(()), true) => {
                self.failing = false;
                eprintln!(
                    "{WHO}: nginx's nchan control at {} answers again; ending subscriptions",
                    self.control.addr
                );
            }
            (Err(e), false) => {
                self.failing = true;
                eprintln!(
                    "{WHO}: cannot end nchan subscriptions through {} ({e}); retrying every second",
                    self.control.addr
                );
            }
            _ => {}
        }
    }

    /// Deletes what is due; stops at the first failure, keeping the rest.
    fn cut(&mut self, verifier: &Verifier, now: i64) -> io::Result<()> {
        while let Some(sid) = self.due.last() {
            self.control.delete("_s.", sid)?;
            self.due.pop();
        }
        // Ended sessions wait one tick (see the module comment).
        self.due = verifier.revocations.take_ended();
        let up_to = now - self.leeway;
        while self.swept_to < up_to {
            let second = self.swept_to + 1;
            self.control
                .delete("_e.", itoa::Buffer::new().format(second))?;
            self.swept_to = second;
        }
        Ok(())
    }
}

/// A kept-alive HTTP/1.1 connection to nginx's control server.
struct Control {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

impl Control {
    fn new(addr: SocketAddr) -> Control {
        Control {
            addr,
            conn: None,
            request: Vec::new(),
        }
    }

    /// Deletes channel `<prefix><name>`; a channel that does not exist (no
    /// subscriber ever joined it) is as good as deleted.
    fn delete(&mut self, prefix: &str, name: &str) -> io::Result<()> {
        self.request.clear();
        for part in [
            "DELETE /control/",
            prefix,
            name,
            " HTTP/1.1\r\nHost: softphone-control\r\nContent-Length: 0\r\n\r\n",
        ] {
            self.request.extend_from_slice(part.as_bytes());
        }
        // A kept-alive connection nginx closed meanwhile fails the first try.
        let status = match self.exchange() {
            Ok(status) => status,
            Err(_) => {
                self.conn = None;
                self.exchange()?
            }
        };
        match status {
            200..=299 | 404 => Ok(()),
            other => {
                self.conn = None;
                Err(io::Error::other(format!("answered {other}")))
            }
        }
    }

    fn exchange(&mut self) -> io::Result<u16> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                stream.set_write_timeout(Some(TIMEOUT))?;
                stream.set_nodelay(true)?;
                self.conn.insert(BufReader::new(stream))
            }
        };
        conn.get_mut().write_all(&self.request)?;
        let result = read_answer(conn);
        if !matches!(result, Ok((_, true))) {
            self.conn = None;
        }
        result.map(|(status, _)| status)
    }
}

/// Reads one answer: its status, and whether the connection stays usable.
fn read_answer(conn: &mut BufReader<TcpStream>) -> io::Result<(u16, bool)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        conn.by_ref()
            .take(MAX_ANSWER)
            .read_until(b'\n', &mut head)?;
        if head.len() == before || head.len() as u64 >= MAX_ANSWER {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no complete answer",
            ));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(io::Error::other("unreadable answer")),
    }
    let status = response.code.unwrap_or(0);
    let mut length = 0u64;
    let mut keep_alive = true;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::other("bad Content-Length"))?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            keep_alive = false; // not expected from nchan: read no further
        } else if header.name.eq_ignore_ascii_case("connection")
            && header.value.eq_ignore_ascii_case(b"close")
        {
            keep_alive = false;
        }
    }
    if keep_alive {
        let skipped = io::copy(&mut conn.by_ref().take(length), &mut io::sink())?;
        keep_alive = skipped == length;
    }
    Ok((status, keep_alive))
}
