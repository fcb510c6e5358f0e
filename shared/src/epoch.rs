//! The revocation epoch: a counter in a small shared-memory file beside the database
//! (`<data>/db/softphone.db-epoch`) that lets the verifier notice a revocation on the
//! very next request without asking SQLite each time.
//!
//! Every writer bumps the counter *after* its revocation transaction has committed
//! and *before* it answers; the verifier compares one atomic load per request with
//! the value it last synchronised at, and only on a difference reads the new
//! revocations from SQLite. The database stays the single source of truth: the
//! epoch is only a doorbell, and losing it (a deleted file) is detected and
//! answered with a full re-read.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::{Error, Result};

/// The file is one page; the counter is its first eight bytes.
const FILE_LEN: u64 = 4096;

pub struct Epoch {
    map: MmapMut,
    path: PathBuf,
    inode: (u64, u64),
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("path", &self.path)
            .field("value", &self.load())
            .finish()
    }
}

impl Epoch {
    /// The epoch file that belongs to a database file.
    pub fn path_for(db_path: &Path) -> PathBuf {
        let mut name = db_path.as_os_str().to_os_string();
        name.push("-epoch");
        PathBuf::from(name)
    }

    /// Opens (creating if needed, never truncating) and maps the epoch file.
    pub fn open(path: &Path) -> Result<Epoch> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.len() < FILE_LEN {
            // Growing a file fills with zeros; a concurrent opener that grows it too
            // changes nothing.
            file.set_len(FILE_LEN).map_err(|e| Error::io(path, e))?;
        }
        let map = map(&file).map_err(|e| Error::io(path, e))?;
        Ok(Epoch {
            map,
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
        })
    }

    fn counter(&self) -> &AtomicU64 {
        let ptr = self.map.as_ptr().cast::<AtomicU64>();
        // SAFETY: the mapping is at least FILE_LEN (4096) bytes long and page
        // aligned, so the first 8 bytes are a valid, aligned u64. It is shared with
        // other processes that only ever access it through atomics too, and it lives
        // as long as `self`.
        #[allow(unsafe_code)]
        unsafe {
            &*ptr
        }
    }

    /// The current value: one relaxed-cost atomic load.
    pub fn load(&self) -> u64 {
        self.counter().load(Ordering::Acquire)
    }

    /// Announces a committed revocation to every verifier.
    pub fn bump(&self) -> u64 {
        let value = self.counter().fetch_add(1, Ordering::AcqRel) + 1;
        // Best effort: the value matters only to running processes, which share
        // the page cache; persistence across reboots is not needed.
        value
    }

    /// True when the path now names another file than the one mapped (deleted and
    /// re-created): the caller should reopen and re-read everything.
    pub fn replaced(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.inode,
            Err(_) => true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn map(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: the file is ours (mode 0600 in our data directory); it is never
    // truncated below FILE_LEN by us, and we only access it through atomics.
    #[allow(unsafe_code)]
    unsafe {
        memmap2::MmapOptions::new()
            .len(FILE_LEN as usize)
            .map_mut(file)
    }
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;

    use super::*;

    #[test]
    fn a_bump_in_one_mapping_is_seen_by_another() {
        let dir = TestDir::new("epoch");
        let path = Epoch::path_for(&dir.path().join("softphone.db"));
        let writer = Epoch::open(&path).unwrap();
        let reader = Epoch::open(&path).unwrap();
        let before = reader.load();
        assert_eq!(writer.bump(), before + 1);
        assert_eq!(reader.load(), before + 1);
        assert!(!reader.replaced());
        std::fs::remove_file(&path).unwrap();
        assert!(reader.replaced());
    }
}
