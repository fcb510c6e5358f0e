//! The listeners: TCP for nginx's upstream, and optionally a unix socket for
//! nginx on the same host (no TCP on either side of the subrequest). Both run
//! one accept loop, a may coroutine per connection, each running the bounded
//! HTTP/1.1 loop of [`crate::conn`], so both answer exactly alike.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use may::coroutine::JoinHandle;
use may::go;
use may::net::TcpListener;
use may::os::unix::net::UnixListener;

use crate::conn::{self, Stream};
use crate::state::Verifier;

/// Pause after a failed accept (e.g. out of file descriptors), so the accept
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Starts serving TCP on `addr`; the handle runs until the process exits.
pub fn start_tcp(verifier: Arc<Verifier>, addr: SocketAddr) -> crate::Result<JoinHandle<()>> {
    let listener =
        TcpListener::bind(addr).map_err(|source| crate::Error::Listen { addr, source })?;
    Ok(go!(move || accept_loop(listener.incoming(), &verifier)))
}

/// Starts serving on the unix socket `path` (replacing a stale socket file).
pub fn start_unix(verifier: Arc<Verifier>, path: &Path) -> crate::Result<JoinHandle<()>> {
    let listen_error = |source| crate::Error::ListenUnix {
        path: path.to_path_buf(),
        source,
    };
    // A directory we make is nginx's to pass through (its workers run as
    // another user, and a unit's UMask=0077 would make it 0700); one that
    // exists is left as its owner set it.
    if let Some(dir) = path.parent().filter(|dir| !dir.exists()) {
        std::fs::create_dir_all(dir).map_err(listen_error)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(listen_error)?;
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
    Ok(go!(move || accept_loop(listener.incoming(), &verifier)))
}

/// Accepts connections until the process exits, each served on its own coroutine.
fn accept_loop<S: Stream + Send + 'static>(
    incoming: impl Iterator<Item = io::Result<S>>,
    verifier: &Arc<Verifier>,
) {
    for stream in incoming {
        let Ok(stream) = stream else {
            may::coroutine::sleep(ACCEPT_BACKOFF);
            continue;
        };
        stream.accepted();
        let verifier = Arc::clone(verifier);
        go!(move || {
            let _ = conn::serve(stream, &verifier);
        });
    }
}
