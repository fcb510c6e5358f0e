//! Files get the owner of the directory they live in. The daemons run as the
//! `softphone` user; an operator runs the admin commands as root. A key that
//! `key rotate` wrote as root with mode 0600, or a `-wal` file SQLite created
//! for a root process, would lock the daemons out of their own data.

use std::fs;
use std::os::unix::fs::{MetadataExt, fchown};
use std::path::Path;

/// The (uid, gid) of the directory holding `path`.
fn directory_owner(path: &Path) -> std::io::Result<(u32, u32)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = fs::metadata(dir)?;
    Ok((meta.uid(), meta.gid()))
}

/// Gives the open `file`, about to become `path`, the owner of `path`'s
/// directory. Only root can give a file away; for anyone else a differing
/// owner is left as it is (and [`adopt`] reports it afterwards).
pub fn adopt_open(file: &fs::File, path: &Path) -> std::io::Result<()> {
    let (uid, gid) = directory_owner(path)?;
    let meta = file.metadata()?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(());
    }
    match fchown(file, Some(uid), Some(gid)) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

/// Gives `path` (if it exists) the owner of its directory. An error names what
/// could not be fixed; the caller decides whether that is worth a warning.
pub fn adopt(path: &Path) -> std::io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => meta,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let (uid, gid) = directory_owner(path)?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}
