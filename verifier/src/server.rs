//! The TCP listener: one may coroutine per connection, each running the bounded
//! HTTP/1.1 loop of [`crate::conn`], all sharing the [`Verifier`].
//!
//! Why not may_minihttp any more (it served TCP until the hardening issue):
//! may_minihttp 0.1.11 grows a connection's read buffer without any bound while
//! a request head is incomplete (`reserve_buf` in `http_server.rs`, no setting
//! to limit it), so one connection sending a header line that never ends made
//! the verifier hold 64 MiB per 64 MiB sent (measured: RSS 17 → 142 MiB with
//! two such connections open). It also answers a body that it does not drain as
//! the next request (a valid GET behind `Content-Length: abc` got its own 200),
//! silently drops requests with more than 16 headers, and panics in
//! `Request::body()` on a garbage `Content-Length`. Its serving loop is private,
//! so a bound cannot be added from outside; only a fork could keep it.
//!
//! The unix-socket listener already had its own loop without these problems;
//! TCP now shares it, because it is not slower than may_minihttp and allocates
//! less. Measured with the release build, the verifier alone on CPU 0 and
//! `softphone-bench load -c 64` with a valid token on CPU 1, on a machine busy
//! with other builds, 8 alternating 5 s runs (medians): 104 k vs 98 k req/s,
//! 3.68 vs 3.92 µs of verifier CPU per request, p50 0.22 vs 0.24 ms; RSS 14 vs
//! 19 MiB after that load and 23 vs 38 MiB with 1 000 open connections;
//! `tests/alloc.rs`: 0.0001 vs 0.03 allocations per request. An endless head
//! now costs at most 16 KiB: RSS 13.7 → 13.8 MiB after 64 MiB sent, where
//! may_minihttp went to 79 MiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use may::coroutine::JoinHandle;
use may::go;
use may::net::TcpListener;

use crate::conn;
use crate::decision::Verifier;

/// Pause after a failed accept (e.g. out of file descriptors), so the accept
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Starts serving on `addr`; the handle runs until the process exits.
pub fn start(verifier: Arc<Verifier>, addr: SocketAddr) -> crate::Result<JoinHandle<()>> {
    let listener =
        TcpListener::bind(addr).map_err(|source| crate::Error::Listen { addr, source })?;
    let handle = go!(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(_) => {
                    may::coroutine::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            };
            // Each batch of answers is one write; do not let Nagle hold it back.
            let _ = stream.set_nodelay(true);
            let verifier = Arc::clone(&verifier);
            go!(move || {
                let _ = conn::serve(stream, &verifier);
            });
        }
    });
    Ok(handle)
}
