//! The HMAC key file: `<data>/db/secret.key`, 64 hex characters, mode 0600, and
//! beside it `secret.key.previous`, the keys rotated out that still verify tokens.
//!
//! The key is the file's ASCII characters (surrounding whitespace trimmed), NOT the
//! hex-decoded bytes: that is how the original PHP module signs, so an existing
//! MikoPBX `secret.key` keeps working unchanged.
//!
//! Rotation ([`rotate`]) moves the current key into the previous-keys file with a
//! deadline (the longest token lifetime from now, plus leeway) and writes a new
//! key. Tokens name their key by `kid`; a token signed by a previous key verifies
//! until that key's deadline, so nobody is logged out by a rotation. A token
//! without `kid` (the original module's) is checked against the current key only.

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
    /// The base64url JOSE header naming this key, as [`crate::token::sign`] writes
    /// it: verification recognises it without decoding any JSON.
    header_b64: String,
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
            header_b64: crate::token::header_b64(&kid),
            kid,
        })
    }

    /// The JOSE header (base64url) of tokens signed with this key.
    pub fn header_b64(&self) -> &str {
        &self.header_b64
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
    read_key(path).map(|(key, _)| key)
}

/// The key file's key and its text (trimmed), refusing empty or short files.
fn read_key(path: &Path) -> Result<(Key, String)> {
    let text =
        fs::read_to_string(path).map_err(|e| key_error(path, format!("cannot read: {e}")))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(key_error(path, "file is empty".into()));
    }
    let key = Key::from_text(text).ok_or_else(|| {
        key_error(
            path,
            format!("key is shorter than {MIN_KEY_CHARS} characters"),
        )
    })?;
    Ok((key, text.to_owned()))
}

/// The current key and the previous keys. A previous key verifies nothing from
/// its deadline on ([`retired`]); the next rotation drops it from the file.
#[derive(Debug)]
pub struct KeyRing {
    current: Key,
    /// Keys rotated out, newest first, each with the Unix time from which it no
    /// longer verifies anything.
    previous: Vec<(Key, i64)>,
}

/// The deadline of the current key: none.
pub const NO_DEADLINE: i64 = i64::MAX;

/// Whether a key with deadline `until` no longer verifies at `now`.
pub fn retired(until: i64, now: i64) -> bool {
    until != NO_DEADLINE && now >= until
}

impl KeyRing {
    /// A ring of a current key and previous keys with their deadlines, newest first.
    pub fn new(current: Key, previous: Vec<(Key, i64)>) -> KeyRing {
        KeyRing { current, previous }
    }

    /// A ring of one key and no previous keys.
    pub fn single(current: Key) -> KeyRing {
        KeyRing {
            current,
            previous: Vec::new(),
        }
    }

    /// Loads the key file and its previous-keys file (missing means none).
    pub fn load(path: &Path) -> Result<KeyRing> {
        Ok(KeyRing {
            current: load(path)?,
            previous: load_previous(&previous_path(path))?,
        })
    }

    /// As [`KeyRing::load`], creating the key file first when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<KeyRing> {
        Ok(KeyRing {
            current: load_or_create(path)?,
            previous: load_previous(&previous_path(path))?,
        })
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &Key {
        &self.current
    }

    /// Previous keys with their deadlines, newest first.
    pub fn previous(&self) -> &[(Key, i64)] {
        &self.previous
    }

    /// The key whose signing header is exactly `header_b64`, and its deadline.
    pub fn by_header(&self, header_b64: &[u8]) -> Option<(&Key, i64)> {
        if self.current.header_b64.as_bytes() == header_b64 {
            return Some((&self.current, NO_DEADLINE));
        }
        self.previous
            .iter()
            .find(|(key, _)| key.header_b64.as_bytes() == header_b64)
            .map(|(key, until)| (key, *until))
    }

    /// The key named `kid`, and its deadline.
    pub fn by_kid(&self, kid: &str) -> Option<(&Key, i64)> {
        if self.current.kid == kid {
            return Some((&self.current, NO_DEADLINE));
        }
        self.previous
            .iter()
            .find(|(key, _)| key.kid == kid)
            .map(|(key, until)| (key, *until))
    }
}

/// Where the keys rotated out of `key_path` are kept: `<key file>.previous`.
pub fn previous_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    key_path.with_file_name(name)
}

/// Reads the previous-keys file (a missing file holds no keys).
fn load_previous(path: &Path) -> Result<Vec<(Key, i64)>> {
    let text = read_previous(path)?;
    previous_entries(path, &text)?
        .into_iter()
        .map(|(until, text)| {
            // previous_entries checked every key already.
            Key::from_text(text)
                .map(|key| (key, until))
                .ok_or_else(|| key_error(path, "unreadable key".into()))
        })
        .collect()
}

fn read_previous(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(key_error(path, format!("cannot read: {e}"))),
    }
}

/// The entries of a previous-keys file: one `<deadline> <key>` per line, newest
/// first; blank lines and `#` comments are ignored. A line we cannot read stops
/// the load (fail closed: a daemon keeps the keys it has).
fn previous_entries<'t>(path: &Path, text: &'t str) -> Result<Vec<(i64, &'t str)>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(char::is_whitespace)
            .and_then(|(until, key)| {
                let until: i64 = until.parse().ok()?;
                let key = key.trim();
                (key.len() >= MIN_KEY_CHARS).then_some((until, key))
            });
        match parsed {
            Some(entry) => entries.push(entry),
            // Never quote the line: it holds key material.
            None => {
                return Err(key_error(
                    path,
                    format!(
                        "line {}: expected `<unix deadline> <key of at least {MIN_KEY_CHARS} characters>`",
                        number + 1
                    ),
                ));
            }
        }
    }
    Ok(entries)
}

/// What [`rotate`] did, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_kid: String,
    pub new_kid: String,
    /// Until when tokens signed with the old key still verify.
    pub old_until: i64,
    /// Previous keys dropped because their deadline had passed.
    pub dropped: usize,
}

/// Rotates the key at `path`: the current key moves to the previous-keys file,
/// verifying until `keep_until`, and a fresh random key takes its place.
///
/// Order makes a crash at any point safe: the previous-keys file (with the current
/// key in it) is complete on disk before the new key replaces the old one, so a
/// daemon that sees the new key also sees the old one. Both files are replaced by
/// rename, so a reader never sees half a file.
pub fn rotate(path: &Path, keep_until: i64, now: i64) -> Result<Rotation> {
    let (old, old_text) = read_key(path)?;
    let previous_file = previous_path(path);
    let previous_text = read_previous(&previous_file)?;
    let existing = previous_entries(&previous_file, &previous_text)?;

    let mut out = String::from(
        "# Keys rotated out of secret.key, newest first: `<unix time until which\n\
         # tokens signed with the key verify> <key>`. Written by `softphone-issuer key rotate`.\n",
    );
    out.push_str(&format!("{keep_until} {old_text}\n"));
    let mut dropped = 0;
    for (until, key) in existing {
        if until > now {
            out.push_str(&format!("{until} {key}\n"));
        } else {
            dropped += 1;
        }
    }
    write_atomically(&previous_file, out.as_bytes())?;
    let new_text = random_key_text()?;
    write_atomically(path, new_text.as_bytes())?;
    let new_kid = Key::from_text(&new_text).map(|k| k.kid).unwrap_or_default();
    Ok(Rotation {
        old_kid: old.kid,
        new_kid,
        old_until: keep_until,
        dropped,
    })
}

/// Writes `bytes` to `path` through a 0600 temporary file, fsync and rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn random_key_text() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    Ok(hex(&bytes))
}

fn create(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = random_key_text()?;

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

/// Notices the key file or its previous-keys file replaced or rewritten (rotation
/// by hand or by `key rotate`), so the daemons reload them within a second
/// without waiting for SIGHUP.
#[derive(Debug)]
pub struct KeyWatch {
    paths: [PathBuf; 2],
    last: [Option<Stamp>; 2],
}

/// What identifies one version of the file: inode, size and modification time.
type Stamp = (u64, u64, u64, std::time::SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

impl KeyWatch {
    /// Starts watching the key file at `path` (and its previous keys) as they are now.
    pub fn new(path: &Path) -> KeyWatch {
        let paths = [path.to_path_buf(), previous_path(path)];
        KeyWatch {
            last: [stamp(&paths[0]), stamp(&paths[1])],
            paths,
        }
    }

    /// True once per change of either file since the last call.
    pub fn changed(&mut self) -> bool {
        let now = [stamp(&self.paths[0]), stamp(&self.paths[1])];
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
    fn rotation_keeps_the_old_key_until_its_deadline_and_drops_expired_ones() {
        let dir = tempdir();
        let path = dir.join("secret.key");
        let first = load_or_create(&path).unwrap();
        let mut watch = KeyWatch::new(&path);
        let done = rotate(&path, 2_000, 1_000).unwrap();
        assert!(watch.changed());
        assert_eq!(done.old_kid, first.kid());
        assert_eq!(done.dropped, 0);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.current().kid(), done.new_kid);
        assert_ne!(done.new_kid, done.old_kid);
        assert_eq!(
            ring.by_kid(first.kid()).map(|(_, until)| until),
            Some(2_000)
        );
        assert_eq!(
            ring.by_kid(&done.new_kid).map(|(_, u)| u),
            Some(NO_DEADLINE)
        );
        for file in [path.clone(), previous_path(&path)] {
            let mode = fs::metadata(&file).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600), "{}", file.display());
        }
        // A second rotation after the first deadline drops the first key.
        let again = rotate(&path, 5_000, 3_000).unwrap();
        assert_eq!(again.dropped, 1);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.previous().len(), 1);
        assert!(ring.by_kid(first.kid()).is_none());
        assert!(retired(2_000, 2_000) && !retired(2_000, 1_999));
        assert!(!retired(NO_DEADLINE, i64::MAX));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_previous_keys_file_is_refused_without_quoting_it() {
        let dir = tempdir();
        let path = dir.join("secret.key");
        fs::write(&path, "a".repeat(64)).unwrap();
        for bad in [
            "soon bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "12 short",
            "12",
        ] {
            fs::write(previous_path(&path), bad).unwrap();
            let msg = KeyRing::load(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains("line 1"), "{msg}");
            assert!(!msg.contains("bbbb") && !msg.contains("short"), "{msg}");
            assert!(
                rotate(&path, 10, 1).is_err(),
                "rotation keeps a file it cannot read"
            );
        }
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
