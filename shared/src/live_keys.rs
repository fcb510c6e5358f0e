//! The keys a running daemon signs and verifies with, kept in step with the key
//! files: reloaded on SIGHUP ([`LiveKeys::reload`]) and within a second of either
//! file changing on disk ([`LiveKeys::reload_if_changed`], from the daemon's
//! upkeep). A file that cannot be used keeps the keys in use. Readers never wait:
//! the ring is swapped whole.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::Result;
use crate::keyfile;
use crate::keys::KeyRing;

/// The key ring of a running daemon.
pub struct LiveKeys {
    path: PathBuf,
    ring: ArcSwap<KeyRing>,
    watch: Mutex<FileStamps>,
    /// The daemon's name, first on every line it prints.
    daemon: &'static str,
}

impl std::fmt::Debug for LiveKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKeys")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LiveKeys {
    /// Loads the key file at `path` (creating it when missing) and its previous
    /// keys; warns when others than its owner can read it.
    pub fn open(path: &Path, daemon: &'static str) -> Result<LiveKeys> {
        let ring = keyfile::load_or_create(path)?;
        if let Some(warning) = keyfile::permission_warning(path) {
            eprintln!("{daemon}: {warning}");
        }
        Ok(LiveKeys {
            watch: Mutex::new(FileStamps::of(path)),
            path: path.to_path_buf(),
            ring: ArcSwap::from_pointee(ring),
            daemon,
        })
    }

    /// The keys as they are now: lock-free, for the hot path.
    pub fn ring(&self) -> arc_swap::Guard<Arc<KeyRing>> {
        self.ring.load()
    }

    /// The keys as they are now, to hold across an `await`.
    pub fn ring_arc(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Re-reads both files. On failure the keys in use stay.
    pub fn reload(&self) -> Result<()> {
        // Stamp first: a change racing with the read is then seen again.
        if let Ok(mut watch) = self.watch.lock() {
            *watch = FileStamps::of(&self.path);
        }
        let ring = keyfile::load(&self.path)?;
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// [`reload`](Self::reload), saying what happened on stderr as `<daemon>:
    /// <why>: …`. True when the keys were replaced.
    pub fn reload_and_report(&self, why: &str) -> bool {
        match self.reload() {
            Ok(()) => {
                eprintln!("{}: {why}: key reloaded", self.daemon);
                true
            }
            Err(e) => {
                eprintln!("{}: {why}: keeping the old key: {e}", self.daemon);
                false
            }
        }
    }

    /// Reloads when either file was replaced or rewritten since the last look
    /// (rotation by hand or by `key rotate`). True when the keys were replaced.
    pub fn reload_if_changed(&self) -> bool {
        let changed = self.watch.lock().is_ok_and(|watch| {
            let now = FileStamps::of(&self.path);
            *watch != now
        });
        changed && self.reload_and_report("key file changed")
    }
}

/// What identifies one version of the key file and of its previous-keys file:
/// device, inode, size and modification time of each.
#[derive(Debug, PartialEq, Eq)]
struct FileStamps([Option<(u64, u64, u64, SystemTime)>; 2]);

impl FileStamps {
    fn of(key_path: &Path) -> FileStamps {
        FileStamps([stamp(key_path), stamp(&keyfile::previous_path(key_path))])
    }
}

fn stamp(path: &Path) -> Option<(u64, u64, u64, SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use softphone_testkit::{TEST_KEYS, TestDir};

    use super::*;

    fn kid(keys: &LiveKeys) -> String {
        keys.ring().current().kid().to_owned()
    }

    #[test]
    fn a_rewritten_or_replaced_key_file_is_reloaded_once() {
        let dir = TestDir::new("live-keys");
        let path = dir.path().join("secret.key");
        fs::write(&path, TEST_KEYS[0]).unwrap();
        let keys = LiveKeys::open(&path, "test").unwrap();
        let first = kid(&keys);
        assert!(!keys.reload_if_changed());
        // Replaced by rename.
        let tmp = dir.path().join("new.key");
        fs::write(&tmp, TEST_KEYS[1]).unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert!(keys.reload_if_changed());
        assert!(!keys.reload_if_changed());
        let second = kid(&keys);
        assert_ne!(first, second);
        // Rewritten in place.
        fs::write(&path, TEST_KEYS[2]).unwrap();
        assert!(keys.reload_if_changed());
        assert_ne!(kid(&keys), second);
        // A rotation changes both files.
        keyfile::rotate(&path, i64::MAX - 1, 0).unwrap();
        assert!(keys.reload_if_changed());
        assert_eq!(keys.ring().previous().len(), 1);
    }

    #[test]
    fn an_unusable_key_file_keeps_the_keys_in_use() {
        let dir = TestDir::new("live-keys-bad");
        let path = dir.path().join("secret.key");
        let keys = LiveKeys::open(&path, "test").unwrap();
        let before = kid(&keys);
        fs::write(&path, "short").unwrap();
        assert!(!keys.reload_if_changed());
        assert!(keys.reload().is_err());
        assert_eq!(kid(&keys), before);
    }
}
