//! may_minihttp wiring: one service per connection, all sharing the [`Verifier`].

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use may::coroutine::JoinHandle;
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};
use softphone_shared::unix_now;

use crate::decision::{Scratch, Verifier};
use crate::reply;
use crate::request::Head;

/// Largest body we read and throw away to keep a connection in step.
const MAX_DRAIN: usize = 64 * 1024;

pub struct Service {
    verifier: Arc<Verifier>,
    scratch: Box<Scratch>,
}

impl HttpService for Service {
    fn call(&mut self, req: Request<'_, '_, '_>, rsp: &mut Response<'_>) -> io::Result<()> {
        let mut head = Head::new(req.path());
        for header in req.headers() {
            head.header(header.name, header.value);
        }
        let decision = self.verifier.decide(&head, unix_now(), &mut self.scratch);
        // Bodies are rare (nginx sends none): look at their framing only then.
        if head.has_body && Framing::of(&req).drainable() {
            // nginx never sends us a body. Read a small, unambiguous one away so
            // the next request on this connection parses cleanly; anything else is
            // left to the parser, which drops the connection on garbage.
            let _ = io::copy(&mut req.body().take(MAX_DRAIN as u64), &mut io::sink());
        }
        reply::write(decision, rsp);
        Ok(())
    }
}

/// How the request says its body is framed.
#[derive(Default)]
struct Framing {
    content_lengths: usize,
    length: Option<usize>,
    chunked: bool,
}

impl Framing {
    fn of(req: &Request<'_, '_, '_>) -> Framing {
        let mut framing = Framing::default();
        for header in req.headers() {
            if header.name.eq_ignore_ascii_case("content-length") {
                framing.content_lengths += 1;
                framing.length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.parse().ok());
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                framing.chunked = true;
            }
        }
        framing
    }

    /// One plain decimal `Content-Length` in 1..=[`MAX_DRAIN`] and no
    /// `Transfer-Encoding`. may_minihttp's body reader panics on a length it cannot
    /// parse, so it is only called for a value we parsed the same way.
    fn drainable(&self) -> bool {
        self.content_lengths == 1
            && !self.chunked
            && self.length.is_some_and(|n| (1..=MAX_DRAIN).contains(&n))
    }
}

pub struct Factory {
    verifier: Arc<Verifier>,
}

impl HttpServiceFactory for Factory {
    type Service = Service;

    fn new_service(&self, _id: usize) -> Service {
        Service {
            verifier: Arc::clone(&self.verifier),
            scratch: Scratch::new(),
        }
    }
}

/// Starts serving on `addr`; the handle runs until the process exits.
pub fn start(verifier: Arc<Verifier>, addr: SocketAddr) -> crate::Result<JoinHandle<()>> {
    Factory { verifier }
        .start(addr)
        .map_err(|source| crate::Error::Listen { addr, source })
}
