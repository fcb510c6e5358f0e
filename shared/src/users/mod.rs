//! Where logins are checked: our own `users` table or a MikoPBX database.
//!
//! A login is two steps so the caller can run them in different places: a lookup
//! ([`builtin::find`], [`mikopbx::PbxDatabase::find`]) is a quick database read, [`Credential::check`] is the slow, constant-time part
//! (PBKDF2 for built-in users). Unknown users go through the same slow path against
//! a dummy, so "no such user" and "wrong password" cannot be told apart.

pub mod builtin;
pub mod mikopbx;

use ring::hmac;

use crate::config::UserSource;
use crate::keys::{self, Key, KeyRing};

/// Who a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: String,
}

/// One line of the PBX directory (`GET users`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryEntry {
    /// The id this user's tokens carry (what `profile` reports).
    pub id: i64,
    /// The extension (the login name).
    pub number: String,
    /// The display name; `""` when the PBX has none.
    pub name: String,
}

/// The directory's order: numbers by value (`99` before `201` before `1001`),
/// then any other names in byte order. Stable: equal numbers keep their order.
pub fn sort_directory(entries: &mut [DirectoryEntry]) {
    entries.sort_by(|a, b| directory_order(&a.number, &b.number));
}

/// How two numbers compare in [`sort_directory`]'s order.
pub fn directory_order(a: &str, b: &str) -> std::cmp::Ordering {
    order_key(a).cmp(&order_key(b))
}

fn order_key(number: &str) -> (bool, usize, &str) {
    let numeric = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    let digits = number.trim_start_matches('0');
    if numeric {
        (false, digits.len(), number)
    } else {
        (true, 0, number)
    }
}

/// What a login is checked against.
#[derive(Clone)]
pub enum Secret {
    /// A self-describing PBKDF2 hash (built-in users).
    Hash(String),
    /// A plaintext SIP secret (MikoPBX keeps them so).
    Plain(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Hash(_) => "Secret::Hash(..)",
            Secret::Plain(_) => "Secret::Plain(..)",
        })
    }
}

/// A user as found in the source, with what its password is checked against.
#[derive(Debug, Clone)]
pub struct Credential {
    pub user: User,
    pub secret: Secret,
    pub disabled: bool,
}

impl Credential {
    /// Checks a password; a hash costs at least `iterations` rounds (see
    /// [`crate::password::verify`]). Disabled users fail, after the same work as
    /// the others.
    pub fn check(&self, password: &str, iterations: u32) -> bool {
        let matches = match &self.secret {
            Secret::Hash(stored) => crate::password::verify(password, stored, iterations).matches,
            Secret::Plain(secret) => constant_time_eq(password.as_bytes(), secret.as_bytes()),
        };
        matches && !self.disabled
    }

    /// The stored hash of a built-in user (what a new session is bound to).
    pub fn password_hash(&self) -> Option<&str> {
        match &self.secret {
            Secret::Hash(stored) => Some(stored),
            Secret::Plain(_) => None,
        }
    }

    /// The tags this credential's sessions may carry: made with the current key
    /// or a previous key that still verifies.
    pub fn live_tags(&self, keys: &KeyRing, now: i64) -> Vec<String> {
        std::iter::once(keys.current())
            .chain(
                keys.previous()
                    .iter()
                    .filter(|(_, until)| !keys::retired(*until, now))
                    .map(|(key, _)| key),
            )
            .map(|key| self.tag(key))
            .collect()
    }

    /// A fingerprint of the credential, stored with each session: when the password
    /// changes in the source, the fingerprint no longer matches and the session ends.
    /// Keyed with our HMAC key so the table never holds anything password-derived
    /// that could be attacked offline without the key.
    pub fn tag(&self, key: &Key) -> String {
        let material = match &self.secret {
            Secret::Hash(s) | Secret::Plain(s) => s.as_bytes(),
        };
        let mut ctx = hmac::Context::with_key(key.hmac());
        ctx.update(b"softphone-credential-tag\0");
        ctx.update(material);
        hex::encode(&ctx.sign().as_ref()[..12])
    }

    /// Which key the session's stored `tag` was made with, if it matches this
    /// credential at all. Sessions opened before a key rotation carry a tag made
    /// with a previous key; they stay valid, and the caller re-tags them with the
    /// current key so they outlive the previous key's deadline.
    pub fn tag_match(&self, keys: &KeyRing, stored: &str, now: i64) -> TagMatch {
        match self
            .live_tags(keys, now)
            .iter()
            .position(|tag| tag == stored)
        {
            Some(0) => TagMatch::Current,
            Some(_) => TagMatch::Previous,
            None => TagMatch::NoMatch,
        }
    }
}

/// See [`Credential::tag_match`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMatch {
    Current,
    Previous,
    NoMatch,
}

/// Spends the time a real check would, for a login whose user was not found.
pub fn check_missing(source: &UserSource, password: &str, iterations: u32) {
    match source {
        UserSource::Builtin => {
            crate::password::verify_dummy(password, iterations);
        }
        UserSource::MikoPbx(_) => {
            let _ = constant_time_eq(password.as_bytes(), b"0000000000000000000000000000000");
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare MACs of both sides: the time depends on neither the contents nor on
    // where they differ, and unequal lengths need no special case.
    let k = hmac::Key::new(hmac::HMAC_SHA256, b"softphone-secret-comparison");
    hmac::verify(&k, a, hmac::sign(&k, b).as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_sorted_by_number_value_then_name() {
        let mut entries: Vec<DirectoryEntry> = ["1001", "alice", "201", "99", "0200", "200", "bob"]
            .iter()
            .map(|n| DirectoryEntry {
                id: 0,
                number: (*n).to_owned(),
                name: String::new(),
            })
            .collect();
        sort_directory(&mut entries);
        let order: Vec<&str> = entries.iter().map(|e| e.number.as_str()).collect();
        assert_eq!(order, ["99", "0200", "200", "201", "1001", "alice", "bob"]);
    }
}
