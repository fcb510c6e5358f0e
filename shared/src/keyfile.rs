//! The key files on disk: `<data>/db/secret.key`, 64 hex characters, mode 0600,
//! and beside it `secret.key.previous`, the keys rotated out that still verify
//! tokens. What a key is in memory is [`crate::keys`]; keeping the daemons' keys
//! in step with these files is [`crate::live_keys`].
//!
//! Rotation ([`rotate`]) moves the current key into the previous-keys file with a
//! deadline (the longest token lifetime from now, plus leeway) and writes a new
//! key. Tokens name their key by `kid`; a token signed by a previous key verifies
//! until that key's deadline, so nobody is logged out by a rotation. A token
//! without `kid` (the original module's) is checked against the current key only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::{Key, KeyRing, MIN_KEY_CHARS, retired};
use crate::{Error, Result};

/// Loads the key file and its previous-keys file (missing means none); refuses
/// an empty, short or unreadable key file and a previous-keys file it cannot read.
pub fn load(path: &Path) -> Result<KeyRing> {
    let (current, _) = read_key(path)?;
    Ok(KeyRing::new(current, load_previous(&previous_path(path))?))
}

/// As [`load`], creating the key file first when it does not exist.
///
/// Creation never clobbers: when both daemons start at once exactly one key wins
/// and both read it back.
pub fn load_or_create(path: &Path) -> Result<KeyRing> {
    match fs::metadata(path) {
        Ok(_) => load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(path)?;
            load(path)
        }
        Err(e) => Err(key_error(path, format!("cannot read: {e}"))),
    }
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
        if !retired(until, now) {
            out.push_str(&format!("{until} {key}\n"));
        } else {
            dropped += 1;
        }
    }
    write_private(&previous_file, out.as_bytes(), Existing::Replace)
        .map_err(|e| Error::io(&previous_file, e))?;
    let new_text = random_key_text()?;
    write_private(path, new_text.as_bytes(), Existing::Replace).map_err(|e| Error::io(path, e))?;
    let new_kid = Key::from_text(&new_text)
        .map(|k| k.kid().to_owned())
        .unwrap_or_default();
    Ok(Rotation {
        old_kid: old.kid().to_owned(),
        new_kid,
        old_until: keep_until,
        dropped,
    })
}

/// What [`write_private`] does when `path` exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Replace it (rename over it).
    Replace,
    /// Keep it: the write fails with `AlreadyExists`.
    Keep,
}

/// Writes `bytes` to `path` atomically and durably, readable by the owner only: a
/// 0600 temporary file in the same directory, fsync, then rename (or, for
/// [`Existing::Keep`], a link that never replaces), then fsync of the directory.
/// A reader never sees half a file; a crash leaves the old file or the new one.
fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".softphone-key.")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    // Owned like its directory before it is visible: a daemon that reloads the
    // moment it appears must be able to read it.
    crate::ownership::adopt_open(file.as_file(), path)?;
    file.as_file().sync_all()?;
    match existing {
        Existing::Replace => file.persist(path).map(drop),
        Existing::Keep => file.persist_noclobber(path).map(drop),
    }
    .map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

fn random_key_text() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    Ok(hex::encode(bytes))
}

fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    match write_private(path, random_key_text()?.as_bytes(), Existing::Keep) {
        Ok(()) => Ok(()),
        // Another process created the key first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, e)),
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

fn key_error(path: &Path, reason: String) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use softphone_testkit::{TEST_KEYS, TestDir};

    use super::*;
    use crate::keys::NO_DEADLINE;

    fn kid(ring: &KeyRing) -> String {
        ring.current().kid().to_owned()
    }

    #[test]
    fn creates_a_0600_key_of_64_hex_characters_once() {
        let dir = TestDir::new("key-create");
        let path = dir.path().join("db").join("secret.key");
        let first = load_or_create(&path).map(|r| kid(&r));
        let text = fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.len(), 64);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        // A second start reads the same key instead of making a new one.
        let second = load_or_create(&path).map(|r| kid(&r));
        assert_eq!(first.ok(), second.ok());
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret.key"]);
    }

    #[test]
    fn refuses_empty_short_and_unreadable_keys_naming_the_path() {
        let dir = TestDir::new("key-bad");
        let path = dir.path().join("secret.key");
        for bad in ["", "   \n", "0123456789abcdef0123456789abcde"] {
            fs::write(&path, bad).ok();
            let err = load_or_create(&path)
                .map(|_| ())
                .err()
                .map(|e| e.to_string());
            let msg = err.unwrap_or_default();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        let as_dir = dir.path().join("a-directory.key");
        fs::create_dir_all(&as_dir).ok();
        assert!(load_or_create(&as_dir).is_err());
    }

    #[test]
    fn rotation_keeps_the_old_key_until_its_deadline_and_drops_expired_ones() {
        let dir = TestDir::new("key-rotate");
        let path = dir.path().join("secret.key");
        let first = kid(&load_or_create(&path).unwrap());
        let done = rotate(&path, 2_000, 1_000).unwrap();
        assert_eq!(done.old_kid, first);
        assert_eq!(done.dropped, 0);
        let ring = load(&path).unwrap();
        assert_eq!(kid(&ring), done.new_kid);
        assert_ne!(done.new_kid, done.old_kid);
        assert_eq!(ring.by_kid(&first).map(|(_, until)| until), Some(2_000));
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
        let ring = load(&path).unwrap();
        assert_eq!(ring.previous().len(), 1);
        assert!(ring.by_kid(&first).is_none());
    }

    #[test]
    fn the_previous_keys_file_may_hold_comments_and_blank_lines() {
        let dir = TestDir::new("key-previous");
        let path = dir.path().join("secret.key");
        fs::write(&path, TEST_KEYS[0]).unwrap();
        let old = TEST_KEYS[1];
        fs::write(previous_path(&path), format!("# comment\n\n700 {old}\n")).unwrap();
        let ring = load(&path).unwrap();
        let old_kid = Key::from_text(old).unwrap().kid().to_owned();
        assert_eq!(ring.by_kid(&old_kid).map(|(_, until)| until), Some(700));
    }

    #[test]
    fn a_bad_previous_keys_file_is_refused_without_quoting_it() {
        let dir = TestDir::new("key-previous-bad");
        let path = dir.path().join("secret.key");
        fs::write(&path, TEST_KEYS[0]).unwrap();
        for bad in [
            "soon bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "12 short",
            "12",
        ] {
            fs::write(previous_path(&path), bad).unwrap();
            let msg = load(&path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("line 1"), "{msg}");
            assert!(!msg.contains("bbbb") && !msg.contains("short"), "{msg}");
            assert!(
                rotate(&path, 10, 1).is_err(),
                "rotation keeps a file it cannot read"
            );
        }
    }
}
