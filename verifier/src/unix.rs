//! The verifier on a unix socket, for nginx on the same host: no TCP on either
//! side of the subrequest. may has unix listeners, may_minihttp does not, so this
//! is a small HTTP/1.1 loop of its own over httparse, answering exactly what the
//! TCP listener answers (same [`Verifier::decide`], same reply table).
//!
//! It is stricter than may_minihttp where that matters here: a request head may
//! not outgrow the connection's buffer (16 KiB), it may carry up to 32 headers,
//! and a request with a body closes the connection after its answer, so nothing
//! can be smuggled behind it.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use may::coroutine::JoinHandle;
use may::go;
use may::os::unix::net::{UnixListener, UnixStream};
use softphone_shared::unix_now;

use crate::decision::{Scratch, Verifier};
use crate::reply;
use crate::request::Head;

/// Largest request head, and so the most a connection ever buffers.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;

/// Listens on `path` (replacing a stale socket file) until the process exits.
pub fn start(verifier: Arc<Verifier>, path: &Path) -> crate::Result<JoinHandle<()>> {
    let listen_error = |source| crate::Error::ListenUnix {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_error)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen_error)?;
    // nginx's workers run as another user; the directory's mode guards access.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    let handle = go!(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let verifier = Arc::clone(&verifier);
            go!(move || {
                let _ = serve(stream, &verifier);
            });
        }
    });
    Ok(handle)
}

fn serve(mut stream: UnixStream, verifier: &Verifier) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    let mut scratch = Scratch::new();
    loop {
        // Answer every complete request in the buffer (pipelining), in order.
        let mut consumed = 0;
        let mut close = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[consumed..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut head = Head::new(req.path.unwrap_or("/"));
                    for h in req.headers.iter() {
                        head.header(h.name, h.value);
                    }
                    let decision = verifier.decide(&head, unix_now(), &mut scratch);
                    reply::encode(decision, &mut out);
                    consumed += len;
                    if head.has_body {
                        close = true;
                        break;
                    }
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if filled == buf.len() {
            return Ok(()); // a head larger than we accept
        }
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}
