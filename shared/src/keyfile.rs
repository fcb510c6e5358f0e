//! The HMAC key file: `<data>/db/secret.key`, 64 hex characters, mode 0600.
//!
//! The key is the file's ASCII characters (surrounding whitespace trimmed), NOT the
//! hex-decoded bytes: that is how the original PHP module signs, so an existing
//! MikoPBX `secret.key` keeps working unchanged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// Shortest key we accept, in characters. 32 hex characters are 128 bits.
pub const MIN_KEY_CHARS: usize = 32;

/// A loaded signing key.
pub struct Key {
    hmac: hmac::Key,
    kid: String,
}

impl std::fmt::Debug for Key {
    // Never print key material, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).finish()
    }
}

impl Key {
    /// Builds a key from its textual form, as stored in the file.
    pub fn from_text(text: &str) -> Option<Key> {
        let trimmed = text.trim();
        if trimmed.len() < MIN_KEY_CHARS {
            return None;
        }
        let fingerprint = digest::digest(&digest::SHA256, trimmed.as_bytes());
        let kid = hex(&fingerprint.as_ref()[..8]);
        Some(Key {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, trimmed.as_bytes()),
            kid,
        })
    }

    pub fn hmac(&self) -> &hmac::Key {
        &self.hmac
    }

    /// A public fingerprint of the key (first 8 bytes of its SHA-256), used as `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Loads the key file, creating it first when it does not exist.
///
/// Creation is atomic and never clobbers: the key is written to a temporary file
/// and hard-linked into place, so when both daemons start at once exactly one key
/// wins and both read it back.
pub fn load_or_create(path: &Path) -> Result<Key> {
    match fs::metadata(path) {
        Ok(_) => load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(path)?;
            load(path)
        }
        Err(e) => Err(key_error(path, format!("cannot read: {e}"))),
    }
}

/// Loads an existing key file; refuses empty, short or unreadable files.
pub fn load(path: &Path) -> Result<Key> {
    let text =
        fs::read_to_string(path).map_err(|e| key_error(path, format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Err(key_error(path, "file is empty".into()));
    }
    Key::from_text(&text).ok_or_else(|| {
        key_error(
            path,
            format!("key is shorter than {MIN_KEY_CHARS} characters"),
        )
    })
}

fn create(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    let text = hex(&bytes);

    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Make the new directory entry durable too.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        // Another process created the key first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Notices a key file replaced or rewritten (rotation by hand or by a tool),
/// so the daemons reload it within a second without waiting for SIGHUP.
#[derive(Debug)]
pub struct KeyWatch {
    path: PathBuf,
    last: Option<Stamp>,
}

/// What identifies one version of the file: inode, size and modification time.
type Stamp = (u64, u64, u64, std::time::SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

impl KeyWatch {
    /// Starts watching `path` as it is now.
    pub fn new(path: &Path) -> KeyWatch {
        KeyWatch {
            path: path.to_path_buf(),
            last: stamp(path),
        }
    }

    /// True once per change of the file since the last call.
    pub fn changed(&mut self) -> bool {
        let now = stamp(&self.path);
        if now == self.last {
            return false;
        }
        self.last = now;
        true
    }
}

/// Writes a warning when the key file can be read by others than its owner.
pub fn permission_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "warning: key file {} has mode {:o}; it should be 0600",
            path.display(),
            mode & 0o777
        )
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

fn key_error(path: &Path, reason: String) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        reason,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        let mut bytes = [0u8; 8];
        SystemRandom::new().fill(&mut bytes).ok();
        let dir = std::env::temp_dir().join(format!("softphone-key-{}", hex(&bytes)));
        fs::create_dir_all(&dir).ok();
        dir
    }

    #[test]
    fn creates_a_0600_key_of_64_hex_characters_once() {
        let dir = tempdir();
        let path = dir.join("db").join("secret.key");
        let first = load_or_create(&path).map(|k| k.kid().to_owned());
        let text = fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.len(), 64);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        // A second start reads the same key instead of making a new one.
        let second = load_or_create(&path).map(|k| k.kid().to_owned());
        assert_eq!(first.ok(), second.ok());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_empty_short_and_unreadable_keys_naming_the_path() {
        let dir = tempdir();
        let path = dir.join("secret.key");
        for bad in ["", "   \n", "0123456789abcdef0123456789abcde"] {
            fs::write(&path, bad).ok();
            let err = load_or_create(&path)
                .map(|_| ())
                .err()
                .map(|e| e.to_string());
            let msg = err.unwrap_or_default();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        let as_dir = dir.join("a-directory.key");
        fs::create_dir_all(&as_dir).ok();
        assert!(load_or_create(&as_dir).is_err());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_rewritten_or_replaced_key_file_is_noticed_once() {
        let dir = tempdir();
        let path = dir.join("secret.key");
        fs::write(&path, "a".repeat(64)).unwrap();
        let mut watch = KeyWatch::new(&path);
        assert!(!watch.changed());
        let tmp = dir.join("new.key");
        fs::write(&tmp, "b".repeat(64)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
        fs::write(&path, "c".repeat(65)).unwrap();
        assert!(watch.changed());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_key() {
        let a = Key::from_text("0123456789abcdef0123456789abcdef\n").map(|k| k.kid().to_owned());
        let b = Key::from_text("  0123456789abcdef0123456789abcdef").map(|k| k.kid().to_owned());
        assert!(a.is_some());
        assert_eq!(a, b);
    }
}
