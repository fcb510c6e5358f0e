//! The load generator: HTTP/1.1 keep-alive over a fixed number of connections for
//! a fixed time, one request in flight per connection (as wrk does), each thread
//! an edge-triggered epoll loop (mio) over its share of the connections.
//!
//! Per request it makes one `write` and, for a response that fits one segment,
//! one `read`: a complete response means nothing else can be pending on that
//! connection, so there is no extra read to find `EAGAIN`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// One kind of request in a plan.
#[derive(Debug, Clone)]
pub struct Request {
    pub bytes: Vec<u8>,
    /// The status a correct server gives; anything else is counted as unexpected.
    pub expect: Option<u16>,
}

/// `(request index, sent at, status)` → true when the answer is wrong.
pub type Judge = Arc<dyn Fn(usize, Instant, u16) -> bool + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub connections: usize,
    pub duration: Duration,
    pub threads: usize,
    pub requests: Vec<Request>,
    /// Indices into `requests`, cycled per connection: `[0; 90] + [1; 5] + …` makes
    /// a 90/5/… mix.
    pub schedule: Vec<usize>,
    /// Each connection keeps to one slot of the schedule (connection `i` to
    /// slot `i % schedule.len()`) instead of cycling through it: concurrent
    /// requests then never share one (e.g. 64 refreshes of 64 sessions).
    pub sticky: bool,
    /// Ends the run before its duration once set: a run that lasts as long as
    /// something it watches (a purge), so that requests that wait for that
    /// thing are answered within the run and counted, not cut off.
    pub until: Option<Arc<AtomicBool>>,
    /// Optional extra judgement per response: `(request index, sent at, status)`
    /// → true when the answer is wrong (e.g. allowed after its logout).
    pub judge: Option<Judge>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("addr", &self.addr)
            .field("connections", &self.connections)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub unexpected: u64,
    pub wrong: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed: Duration,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            latency: new_histogram(),
            requests: 0,
            errors: 0,
            non_2xx: 0,
            unexpected: 0,
            wrong: 0,
            statuses: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at `q` (0..=1), in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Adds a run made after this one (rounds of one condition, measured
    /// between rounds of another).
    pub fn then(&mut self, later: Outcome) {
        self.elapsed += later.elapsed;
        self.merge(later);
    }

    fn merge(&mut self, other: Outcome) {
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.errors += other.errors;
        self.non_2xx += other.non_2xx;
        self.unexpected += other.unexpected;
        self.wrong += other.wrong;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
    }
}

/// 1 µs .. 1 h at 3 significant digits: a request that waited for a purge of a
/// million rows took two minutes. Longer ones are recorded as an hour.
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds: cannot fail
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Runs `plan`; `progress` counts completed requests as they happen.
pub fn run(plan: &Plan, progress: &AtomicU64) -> io::Result<Outcome> {
    if plan.requests.is_empty() || plan.schedule.is_empty() || plan.connections == 0 {
        return Err(io::Error::other("empty plan"));
    }
    let threads = plan.threads.clamp(1, plan.connections);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let deadline = started + plan.duration;
    let results: Vec<io::Result<Outcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share =
                    plan.connections / threads + usize::from(t < plan.connections % threads);
                // This thread's first connection, numbered across all threads.
                let first = t * (plan.connections / threads) + t.min(plan.connections % threads);
                let stop = &stop;
                scope.spawn(move || run_thread(plan, (t, first), share, deadline, stop, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("load thread panicked")))
            })
            .collect()
    });
    let mut total = Outcome::new();
    for result in results {
        total.merge(result?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    request: usize,
    slot: usize,
    sent_at: Instant,
    written: usize,
}

/// A new connection to `addr`, registered with `poll` under `token` for both
/// directions.
fn connect(addr: SocketAddr, poll: &Poll, token: usize) -> io::Result<TcpStream> {
    let std = std::net::TcpStream::connect(addr)?;
    std.set_nodelay(true)?;
    std.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std);
    poll.registry().register(
        &mut stream,
        Token(token),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(stream)
}

fn run_thread(
    plan: &Plan,
    (thread, first): (usize, usize),
    connections: usize,
    deadline: Instant,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut out = Outcome::new();
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = connect(plan.addr, &poll, i)?;
        // Spread the schedule so connections do not move in lockstep.
        let slot = if plan.sticky {
            (first + i) % plan.schedule.len()
        } else {
            (thread * 7919 + i * 104_729) % plan.schedule.len()
        };
        conns.push(Conn {
            stream,
            buf: vec![0; 64 * 1024],
            filled: 0,
            request: plan.schedule[slot],
            slot,
            sent_at: Instant::now(),
            written: 0,
        });
    }
    for c in &mut conns {
        begin(c);
        send(plan, c)?;
    }
    let mut done_since_report = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline
            || plan
                .until
                .as_ref()
                .is_some_and(|u| u.load(Ordering::Relaxed))
        {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        poll.poll(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(50))),
        )?;
        for event in events.iter() {
            let i = event.token().0;
            let Some(c) = conns.get_mut(i) else { continue };
            let mut result = Ok(false);
            if event.is_writable() {
                result = send(plan, c).map(|()| false);
            }
            if result.is_ok() && (event.is_readable() || event.is_read_closed()) {
                result = receive(plan, c, &mut out);
            }
            match result {
                Ok(false) => {} // more to come
                Ok(true) => {
                    done_since_report += 1;
                    if done_since_report == 256 {
                        progress.fetch_add(done_since_report, Ordering::Relaxed);
                        done_since_report = 0;
                    }
                    next_request(plan, c);
                    begin(c);
                    if send(plan, c).is_err() {
                        reconnect(plan, &poll, c, i, &mut out)?;
                    }
                }
                Err(_) => reconnect(plan, &poll, c, i, &mut out)?,
            }
        }
    }
    progress.fetch_add(done_since_report, Ordering::Relaxed);
    Ok(out)
}

/// A broken connection is an error; carry on with a new one and the next request.
fn reconnect(
    plan: &Plan,
    poll: &Poll,
    c: &mut Conn,
    token: usize,
    out: &mut Outcome,
) -> io::Result<()> {
    out.errors += 1;
    let _ = poll.registry().deregister(&mut c.stream);
    c.stream = connect(plan.addr, poll, token)?;
    next_request(plan, c);
    begin(c);
    send(plan, c)
}

fn next_request(plan: &Plan, c: &mut Conn) {
    if plan.sticky {
        return;
    }
    c.slot = (c.slot + 1) % plan.schedule.len();
    c.request = plan.schedule[c.slot];
}

fn begin(c: &mut Conn) {
    c.written = 0;
    c.filled = 0;
    c.sent_at = Instant::now();
}

/// Writes what is left of the current request. Requests are small: one write
/// almost always takes all of it; the rest waits for a writable event.
fn send(plan: &Plan, c: &mut Conn) -> io::Result<()> {
    let bytes = &plan.requests[c.request].bytes;
    while c.written < bytes.len() {
        match c.stream.write(&bytes[c.written..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "closed")),
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what is there; Ok(true) when a whole response has been consumed.
fn receive(plan: &Plan, c: &mut Conn, out: &mut Outcome) -> io::Result<bool> {
    loop {
        if c.filled == c.buf.len() {
            c.buf.resize(c.buf.len() * 2, 0);
        }
        match c.stream.read(&mut c.buf[c.filled..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => c.filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
        match parse(&c.buf[..c.filled]) {
            Parsed::Partial => continue,
            Parsed::Invalid => return Err(io::Error::other("unparsable response")),
            Parsed::Complete { status, len } => {
                if len != c.filled {
                    return Err(io::Error::other("unexpected bytes after a response"));
                }
                let micros = c.sent_at.elapsed().as_micros() as u64;
                out.latency.saturating_record(micros.max(1));
                out.requests += 1;
                *out.statuses.entry(status).or_default() += 1;
                if !(200..300).contains(&status) {
                    out.non_2xx += 1;
                }
                if plan.requests[c.request].expect.is_some_and(|e| e != status) {
                    out.unexpected += 1;
                }
                if let Some(judge) = &plan.judge
                    && judge(c.request, c.sent_at, status)
                {
                    out.wrong += 1;
                }
                return Ok(true);
            }
        }
    }
}

enum Parsed {
    Partial,
    Invalid,
    Complete { status: u16, len: usize },
}

/// Parses one response: status, then a `Content-Length` or chunked body.
fn parse(buf: &[u8]) -> Parsed {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Parsed::Invalid
        } else {
            Parsed::Partial
        };
    };
    let head = &buf[..head_end];
    let Some(status) = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
    else {
        return Parsed::Invalid;
    };
    let mut length = None;
    let mut chunked = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            && value.eq_ignore_ascii_case(b"chunked")
        {
            chunked = true;
        }
    }
    let body_start = head_end + 4;
    if chunked {
        return parse_chunked(buf, body_start, status);
    }
    let total = body_start + length.unwrap_or(0);
    if buf.len() < total {
        Parsed::Partial
    } else {
        Parsed::Complete { status, len: total }
    }
}

fn parse_chunked(buf: &[u8], mut at: usize, status: u16) -> Parsed {
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n") else {
            return Parsed::Partial;
        };
        let size_text = &buf[at..at + line_end];
        let size_text = size_text.split(|&b| b == b';').next().unwrap_or(size_text);
        let Some(size) = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            return Parsed::Invalid;
        };
        at += line_end + 2;
        if size == 0 {
            // Trailers end with an empty line; we send none and expect none.
            return if buf.len() >= at + 2 {
                Parsed::Complete {
                    status,
                    len: at + 2,
                }
            } else {
                Parsed::Partial
            };
        }
        if buf.len() < at + size + 2 {
            return Parsed::Partial;
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths_and_chunks() {
        let r = b"HTTP/1.1 200 Ok\r\nContent-Length: 2\r\n\r\nhi";
        assert!(matches!(parse(r), Parsed::Complete { status: 200, len } if len == r.len()));
        assert!(matches!(parse(&r[..r.len() - 1]), Parsed::Partial));
        let r = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(r), Parsed::Complete { status: 401, .. }));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert!(matches!(parse(r), Parsed::Complete { status: 200, len } if len == r.len()));
        assert!(matches!(parse(&r[..r.len() - 3]), Parsed::Partial));
        assert!(matches!(parse(b"garbage\r\n\r\n"), Parsed::Invalid));
    }
}
