//! A raw HTTP/1.1 client for tests: exact bytes out, responses parsed by
//! `Content-Length`. Test code needs to send what no client library would
//! (broken heads, 30 headers, pipelines); this is that, not a general client.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A string field of a JSON body.
    pub fn json_str(&self, field: &str) -> String {
        self.json()[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field:?} in {}", self.text()))
            .to_owned()
    }

    /// The `error` message of a contract error body.
    pub fn error(&self) -> String {
        self.json_str("error")
    }
}

/// A keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// A connection from `source` (any 127.x.y.z works on Linux loopback), so
    /// that nginx sees that client address.
    pub fn open_from(addr: SocketAddr, source: IpAddr) -> io::Result<Conn> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
        socket.connect_timeout(&SockAddr::from(addr), Duration::from_secs(10))?;
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends one request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send(&build(method, path, headers, body))?;
        self.read_response()
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads one response (head, then `Content-Length` bytes of body).
    pub fn read_response(&mut self) -> io::Result<Response> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.fill()?;
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return Ok(Response {
                    status,
                    headers,
                    body,
                });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads a response head byte by byte (the rest stays in the stream, e.g. a
/// WebSocket or an event stream), returning it as text.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read_exact(&mut byte).is_err() {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Builds request bytes: `Host`, the given headers, and `Content-Length` for bodies.
pub fn build(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One request on a fresh connection.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    send_raw(addr, &build(method, path, headers, body))
}

/// One request on a fresh connection; panics on I/O errors.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// Repeats `attempt` while it answers 503, as an app honouring `Retry-After`
/// would (at most 10 times, 0.5 s apart), and returns the last answer. Logins
/// from addresses the issuer does not know are hashed on nice-19 threads, and a
/// test machine loaded by the rest of the suite can starve them past the 1.5 s
/// a check may wait: the login is then told to come back, with its check not
/// run and nothing charged. Tests about something else settle those here;
/// tests of that behaviour look at the first answer.
pub fn settled(mut attempt: impl FnMut() -> Response) -> Response {
    let mut response = attempt();
    for _ in 0..10 {
        if response.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        response = attempt();
    }
    response
}

/// Sends exact bytes on a fresh connection and reads one response.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<Response> {
    let mut conn = Conn::open(addr)?;
    conn.send(bytes)?;
    conn.read_response()
}
