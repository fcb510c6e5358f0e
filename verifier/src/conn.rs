//! One client connection, on the TCP or the unix-socket listener: a small
//! HTTP/1.1 loop over httparse (the parser may_minihttp uses) that answers every
//! complete request in its buffer, in order (pipelining).
//!
//! It is strict where an auth server must be:
//! - a request head may not outgrow [`MAX_HEAD`] (16 KiB; the buffer starts at
//!   4 KiB and grows only for such a head), so a head that never ends costs at
//!   most that much memory;
//! - up to [`MAX_HEADERS`] headers;
//! - a request that cannot be read (not HTTP/1.x, a target that is not UTF-8, too
//!   many headers, a head that is too long) is answered 401 and the connection
//!   closes: the answer on the auth paths is only ever 200, 401 or 403, and nginx
//!   turns a dropped connection into a 500 for the app;
//! - a request with a body (nginx never sends one) is answered 401 by
//!   [`Verifier::decide`], and then the connection closes, so the body is never
//!   read as a request of its own (no smuggling behind a bad `Content-Length` or
//!   a chunked body).

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use softphone_shared::token::TokenError;
use softphone_shared::unix_now;

use crate::decision::{Decision, DenyReason, Scratch};
use crate::reply;
use crate::request::Head;
use crate::state::Verifier;

/// Largest request head, and so the most a connection ever buffers.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;
/// A connection's first buffer: a request from nginx is well under 1 KiB.
const FIRST_BUF: usize = 4 * 1024;
/// After the last answer, what a client may still send before the close.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// The answer to a request that cannot be read. Not logged: it never reached
/// token checking, and only a broken or hostile client sends one.
const UNREADABLE: Decision = Decision::Unauthorized(DenyReason::Token(TokenError::Malformed));

/// What the loop needs of a stream besides reading and writing.
pub trait Stream: Read + Write {
    /// Set-up right after accept.
    fn accepted(&self) {}
    fn shutdown_write(&self) -> io::Result<()>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Parks until the stream has something to read (or is closed).
    fn wait_readable(&self);
}

impl Stream for may::net::TcpStream {
    fn accepted(&self) {
        // Each batch of answers is one write; do not let Nagle hold it back.
        let _ = self.set_nodelay(true);
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        may::net::TcpStream::set_read_timeout(self, timeout)
    }
    fn wait_readable(&self) {
        may::io::WaitIo::wait_io(self);
    }
}

impl Stream for may::os::unix::net::UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        may::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
    fn wait_readable(&self) {
        may::io::WaitIo::wait_io(self);
    }
}

/// Serves one connection until the client closes it or breaks the rules above.
pub fn serve<S: Stream>(mut stream: S, verifier: &Verifier) -> io::Result<()> {
    let mut buf = vec![0u8; FIRST_BUF];
    let mut filled = 0;
    let mut out = Vec::with_capacity(1024);
    let mut scratch = Scratch::new();
    let mut answered = false;
    loop {
        // Answer every complete request in the buffer, in order.
        let mut consumed = 0;
        let mut last = false;
        while !last {
            let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(&buf[consumed..filled], &mut headers) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut head = Head::new(req.path.unwrap_or("/"));
                    head.set_method(req.method.unwrap_or(""));
                    for h in req.headers.iter() {
                        head.add_header(h.name, h.value);
                    }
                    let decision = verifier.decide(&head, unix_now(), &mut scratch);
                    last = head.has_body;
                    respond(verifier, decision, last, &mut out);
                    consumed += len;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    respond(verifier, UNREADABLE, true, &mut out);
                    last = true;
                }
            }
        }
        if last {
            return finish(stream, &out, &mut buf);
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
            answered = true;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if filled == buf.len() {
            if buf.len() >= MAX_HEAD {
                respond(verifier, UNREADABLE, true, &mut out);
                return finish(stream, &out, &mut buf);
            }
            buf.resize((buf.len() * 2).min(MAX_HEAD), 0);
        }
        // nginx sends the next request on a connection only after our answer
        // to the last one: reading right away would almost always find nothing
        // (a wasted `recv`, measured as one syscall per request). Wait for the
        // event first; a read that races with new data still finds it.
        if filled == 0 && answered {
            stream.wait_readable();
        }
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

/// Counts an answer and writes it to `out`: the one place every answer to a
/// request passes, so the metrics count each exactly once.
fn respond(verifier: &Verifier, decision: Decision, close: bool, out: &mut Vec<u8>) {
    verifier.metrics().count(decision);
    if decision != Decision::Metrics {
        return reply::encode(decision, close, out);
    }
    match verifier.metrics().scrape() {
        Ok(text) => reply::encode_scrape(&text, close, out),
        // Writing into a String does not fail; were it to, say nothing found.
        Err(_) => reply::encode(Decision::NotFound, close, out),
    }
}

/// Sends the last answers and closes gently: closing a socket with unread input
/// resets the connection, and the reset can reach the client before it has
/// read the answer (nginx would then report a 502). So stop writing first, then
/// read and drop what the client still sends, up to [`LINGER_BYTES`] or
/// [`LINGER_TIME`], whichever comes first; the buffer is reused, nothing grows.
fn finish<S: Stream>(mut stream: S, out: &[u8], buf: &mut [u8]) -> io::Result<()> {
    stream.write_all(out)?;
    stream.shutdown_write()?;
    stream.set_read_timeout(Some(LINGER_TIME))?;
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    while drained < LINGER_BYTES && Instant::now() < deadline {
        match stream.read(buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}
