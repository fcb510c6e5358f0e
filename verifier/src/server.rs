//! may_minihttp wiring: one service per connection, all sharing the [`Verifier`].

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use may::coroutine::JoinHandle;
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};
use softphone_shared::unix_now;

use crate::decision::Verifier;
use crate::reply;
use crate::request::Head;

/// Largest body we read and throw away to keep a connection in step.
const MAX_DRAIN: usize = 64 * 1024;

pub struct Service {
    verifier: Arc<Verifier>,
}

impl HttpService for Service {
    fn call(&mut self, req: Request<'_, '_, '_>, rsp: &mut Response<'_>) -> io::Result<()> {
        let mut head = Head::new(req.path());
        let mut drain = None;
        for header in req.headers() {
            head.header(header.name, header.value);
            if header.name.eq_ignore_ascii_case("content-length") && drain.is_none() {
                drain = Some(drainable_length(header.value));
            }
        }
        let decision = self.verifier.decide(&head, unix_now());
        if head.has_body {
            // nginx never sends us a body. Read a small, well-formed one away so the
            // next request parses cleanly; anything else is left for the parser,
            // which drops the connection on garbage.
            if let Some(Some(_)) = drain {
                let _ = io::copy(&mut req.body().take(MAX_DRAIN as u64), &mut io::sink());
            }
        }
        reply::write(decision, rsp);
        Ok(())
    }
}

/// `Some(n)` when `Content-Length` is a plain decimal no larger than [`MAX_DRAIN`]:
/// may_minihttp's own body reader panics on anything it cannot parse, so it is
/// only called for values we checked the same way.
fn drainable_length(value: &[u8]) -> Option<usize> {
    let n: usize = std::str::from_utf8(value).ok()?.parse().ok()?;
    (n <= MAX_DRAIN).then_some(n)
}

pub struct Factory {
    verifier: Arc<Verifier>,
}

impl HttpServiceFactory for Factory {
    type Service = Service;

    fn new_service(&self, _id: usize) -> Service {
        Service {
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// Starts serving on `addr`; the handle runs until the process exits.
pub fn start(verifier: Arc<Verifier>, addr: SocketAddr) -> crate::Result<JoinHandle<()>> {
    Factory { verifier }
        .start(addr)
        .map_err(|source| crate::Error::Listen { addr, source })
}
