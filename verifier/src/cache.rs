//! Tokens already verified. An app presents the same access token on every
//! media request and subscription of a session, so a token seen before skips
//! the HMAC and the JSON: measured, that is ~0.5 µs of a ~0.7 µs decision.
//!
//! What is cached is only what full verification established (claims and the
//! interned identity); expiry, revocation and type are still checked on every
//! request. Entries are found by the signature's first eight characters mixed
//! with a random per-process value (signatures are HMAC outputs, and only
//! verified tokens are ever inserted, so the map cannot be flooded with chosen
//! keys) and confirmed by comparing the whole token in constant time, so neither
//! the lookup nor the comparison tells an attacker anything about the tokens we
//! hold. A key reload empties the cache.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use nohash_hasher::BuildNoHashHasher;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use softphone_shared::token::{TokenTimes, TokenType, Validation, Verified};
use subtle::ConstantTimeEq;

use crate::identity::Identity;
use crate::revocations::Memo;

/// Entries kept; beyond it the cache starts over (a PBX has far fewer sessions).
pub const MAX_ENTRIES: usize = 65_536;

/// What verification established about a token.
#[derive(Debug)]
pub struct CachedToken {
    /// Judged again on every use: a cached token expires, and its key retires.
    pub times: TokenTimes,
    pub kind: TokenType,
    pub sid: Box<str>,
    pub username: Box<str>,
    /// `None` when the identity cannot be sent as headers (refused then).
    pub identity: Option<&'static Identity>,
    /// The last revocation-set version this session was found unrevoked at.
    pub memo: Memo,
}

impl CachedToken {
    pub fn new(verified: &Verified<'_>, identity: Option<&'static Identity>) -> CachedToken {
        let claims = &verified.claims;
        CachedToken {
            times: verified.times,
            kind: claims.kind,
            sid: claims.sid.into(),
            username: claims.username.into(),
            identity,
            memo: Memo::default(),
        }
    }
}

struct Entry {
    token: Box<[u8]>,
    cached: CachedToken,
}

#[derive(Default)]
pub struct TokenCache {
    /// Random per process; mixed into every slot.
    salt: u64,
    entries: RwLock<HashMap<u64, Entry, BuildNoHashHasher<u64>>>,
    /// Bumped by [`TokenCache::clear`]: a verification that began before a key
    /// reload must not land in the cache after it.
    generation: AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .finish()
    }
}

impl TokenCache {
    pub fn new() -> TokenCache {
        TokenCache {
            salt: RandomState::new().hash_one(0u8),
            ..TokenCache::default()
        }
    }

    fn slot(&self, token: &[u8]) -> u64 {
        let signature = token.rsplit(|&b| b == b'.').next().unwrap_or(token);
        let mut prefix = [0u8; 8];
        let n = signature.len().min(8);
        prefix[..n].copy_from_slice(&signature[..n]);
        u64::from_le_bytes(prefix) ^ self.salt
    }

    /// Runs `f` on what is known about `token`, if it was verified before.
    pub fn with<R>(&self, token: &[u8], f: impl FnOnce(&CachedToken) -> R) -> Option<R> {
        let slot = self.slot(token);
        let entries = self.entries.read().ok()?;
        let entry = entries.get(&slot)?;
        if same_bytes(&entry.token, token) {
            Some(f(&entry.cached))
        } else {
            None
        }
    }

    /// Read before the key a verification uses; passed back to [`insert`].
    ///
    /// [`insert`]: TokenCache::insert
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Remembers a token that passed full verification, unless the cache was
    /// cleared since `generation` was read.
    pub fn insert(&self, token: &[u8], cached: CachedToken, generation: u64) {
        let slot = self.slot(token);
        if let Ok(mut entries) = self.entries.write() {
            if generation != self.generation() {
                return;
            }
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                slot,
                Entry {
                    token: token.into(),
                    cached,
                },
            );
        }
    }

    /// Forgets everything (the key changed).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// Drops entries of tokens expired for longer than `leeway`.
    pub fn prune(&self, now: i64, leeway: i64) {
        if let Ok(mut entries) = self.entries.write() {
            let validation = Validation { now, leeway };
            entries.retain(|_, e| !validation.expired(e.cached.times.exp));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Equality whose time depends on the length only: the difference of every
/// 8-byte word is OR-ed together and tested once, in constant time. (subtle's
/// byte-wise slice comparison measured as the verifier's largest user-space cost.)
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_tail.iter().zip(b_tail) {
        diff |= u64::from(x ^ y);
    }
    bool::from(diff.ct_eq(&0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: i64) -> CachedToken {
        CachedToken {
            times: TokenTimes {
                exp,
                not_before: 0,
                key_until: softphone_shared::keys::NO_DEADLINE,
            },
            kind: TokenType::Access,
            sid: "s".into(),
            username: "201".into(),
            identity: None,
            memo: Memo::default(),
        }
    }

    #[test]
    fn same_bytes_compares_every_byte() {
        let a: Vec<u8> = (0..=255).collect();
        assert!(same_bytes(&a, &a.clone()));
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x40;
            assert!(!same_bytes(&a, &b), "byte {i}");
        }
        assert!(!same_bytes(&a, &a[..255]));
        assert!(same_bytes(b"", b""));
    }

    #[test]
    fn only_the_identical_token_hits() {
        let cache = TokenCache::new();
        cache.insert(b"aaa.bbb.sig", verified(10), cache.generation());
        assert_eq!(cache.with(b"aaa.bbb.sig", |v| v.times.exp), Some(10));
        // Same signature, other payload: not a hit.
        assert_eq!(cache.with(b"aaa.bbc.sig", |v| v.times.exp), None);
        assert_eq!(cache.with(b"aaa.bbb.sih", |v| v.times.exp), None);
        cache.prune(100, 30);
        assert!(cache.is_empty());
        let before_reload = cache.generation();
        cache.insert(b"aaa.bbb.sig", verified(1000), before_reload);
        cache.clear();
        assert_eq!(cache.with(b"aaa.bbb.sig", |v| v.times.exp), None);
        // A verification that started before the reload does not land.
        cache.insert(b"aaa.bbb.sig", verified(1000), before_reload);
        assert!(cache.is_empty());
    }
}
