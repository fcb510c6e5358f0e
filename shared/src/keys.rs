//! Signing keys in memory: one [`Key`] (its HMAC key, its `kid` and the JOSE header
//! naming it) and the [`KeyRing`] of the current key and the keys rotated out, each
//! with the deadline from which it no longer verifies anything.
//!
//! The key is the file's ASCII characters (surrounding whitespace trimmed), NOT the
//! hex-decoded bytes: that is how the original PHP module signs, so an existing
//! MikoPBX `secret.key` keeps working unchanged. Reading and writing the files is
//! [`crate::keyfile`]'s job.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::hmac;

/// Shortest key we accept, in characters. 32 hex characters are 128 bits.
pub const MIN_KEY_CHARS: usize = 32;

/// The deadline of the current key: none.
pub const NO_DEADLINE: i64 = i64::MAX;

/// Whether a key with deadline `until` no longer verifies at `now`.
pub fn retired(until: i64, now: i64) -> bool {
    until != NO_DEADLINE && now >= until
}

/// A loaded signing key.
pub struct Key {
    hmac: hmac::Key,
    kid: String,
    /// The base64url JOSE header naming this key, as tokens signed with it carry
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
    /// Builds a key from its textual form, as stored in the file; `None` when it
    /// is shorter than [`MIN_KEY_CHARS`].
    pub fn from_text(text: &str) -> Option<Key> {
        let trimmed = text.trim();
        if trimmed.len() < MIN_KEY_CHARS {
            return None;
        }
        let fingerprint = digest::digest(&digest::SHA256, trimmed.as_bytes());
        let kid = hex::encode(&fingerprint.as_ref()[..8]);
        Some(Key {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, trimmed.as_bytes()),
            header_b64: URL_SAFE_NO_PAD
                .encode(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#)),
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

/// The current key and the previous keys. A previous key verifies nothing from
/// its deadline on ([`retired`]).
#[derive(Debug)]
pub struct KeyRing {
    current: Key,
    /// Keys rotated out, newest first, each with the Unix time from which it no
    /// longer verifies anything.
    previous: Vec<(Key, i64)>,
}

impl KeyRing {
    /// A ring of a current key and previous keys with their deadlines, newest first.
    pub fn new(current: Key, previous: Vec<(Key, i64)>) -> KeyRing {
        KeyRing { current, previous }
    }

    /// A ring of one key and no previous keys.
    pub fn single(current: Key) -> KeyRing {
        KeyRing::new(current, Vec::new())
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
        self.find(|key| key.header_b64.as_bytes() == header_b64)
    }

    /// The key named `kid`, and its deadline.
    pub fn by_kid(&self, kid: &str) -> Option<(&Key, i64)> {
        self.find(|key| key.kid == kid)
    }

    fn find(&self, matches: impl Fn(&Key) -> bool) -> Option<(&Key, i64)> {
        if matches(&self.current) {
            return Some((&self.current, NO_DEADLINE));
        }
        self.previous
            .iter()
            .find(|(key, _)| matches(key))
            .map(|(key, until)| (key, *until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_key() {
        let a = Key::from_text("0123456789abcdef0123456789abcdef\n").map(|k| k.kid().to_owned());
        let b = Key::from_text("  0123456789abcdef0123456789abcdef").map(|k| k.kid().to_owned());
        assert!(a.is_some());
        assert_eq!(a, b);
        assert!(Key::from_text("0123456789abcdef0123456789abcde").is_none());
    }

    #[test]
    fn a_key_is_retired_from_its_deadline_on_and_the_current_key_never() {
        assert!(retired(2_000, 2_000) && !retired(2_000, 1_999));
        assert!(!retired(NO_DEADLINE, i64::MAX));
    }

    #[test]
    fn the_ring_finds_keys_by_kid_and_by_header() {
        let current = Key::from_text(softphone_testkit::TEST_KEYS[0]).unwrap();
        let previous = Key::from_text(softphone_testkit::TEST_KEYS[1]).unwrap();
        let (current_kid, previous_kid) = (current.kid().to_owned(), previous.kid().to_owned());
        let previous_header = previous.header_b64().to_owned();
        let ring = KeyRing::new(current, vec![(previous, 500)]);
        assert_eq!(ring.by_kid(&current_kid).map(|(_, u)| u), Some(NO_DEADLINE));
        assert_eq!(ring.by_kid(&previous_kid).map(|(_, u)| u), Some(500));
        assert_eq!(
            ring.by_header(previous_header.as_bytes())
                .map(|(k, _)| k.kid()),
            Some(previous_kid.as_str())
        );
        assert!(ring.by_kid("0000000000000000").is_none());
    }
}
