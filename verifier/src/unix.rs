//! The verifier on a unix socket, for nginx on the same host: no TCP on either
//! side of the subrequest. Each connection runs the same loop as the TCP
//! listener ([`crate::conn`]), so both answer exactly alike.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use may::coroutine::JoinHandle;
use may::go;
use may::os::unix::net::UnixListener;

use crate::conn;
use crate::decision::Verifier;

/// Pause after a failed accept (e.g. out of file descriptors), so the accept
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

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
            let Ok(stream) = stream else {
                may::coroutine::sleep(ACCEPT_BACKOFF);
                continue;
            };
            let verifier = Arc::clone(&verifier);
            go!(move || {
                let _ = conn::serve(stream, &verifier);
            });
        }
    });
    Ok(handle)
}
