//! Session ids: 16 bytes, written as 22 characters of base64url. The first
//! six bytes are the creation time in milliseconds since the epoch (big
//! endian), the other ten are random.
//!
//! Why the time comes first: the id is the key of the sessions table, a
//! B-tree. Fully random keys sent every login to a random page of a table
//! that, at a million sessions, is much larger than SQLite's page cache, and
//! each of those pages was written to the log at the next commit: about 6.6
//! log pages per login against 4.0 with ids in creation order, and 48 µs of
//! CPU per login at a million sessions against 39 µs (the bench diary's
//! "ninth pass"). Ids made within one millisecond, or a few, land on one or
//! two pages, however large the table. Whole seconds did not help: ten
//! thousand logins a second still spread over hundreds of pages.
//!
//! Eighty random bits keep an id unguessable (and a token naming it still
//! needs our signature); the creation time it tells is in the token's `iat`
//! anyway.
//!
//! Anything that indexes ids by their first bytes (the verifier does) must
//! use [`random_first`]: the first bytes of ids made days apart are the same.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// Bytes in an id.
pub const LEN: usize = 16;

/// Bytes of creation time at the start of an id: 48 bits of milliseconds
/// last until the year 10889.
pub const TIME_LEN: usize = 6;

/// A new id for a session created `now_ms` milliseconds after the epoch.
pub fn new(now_ms: u64) -> Result<[u8; LEN]> {
    let mut id = [0u8; LEN];
    id[..TIME_LEN].copy_from_slice(&now_ms.to_be_bytes()[8 - TIME_LEN..]);
    SystemRandom::new()
        .fill(&mut id[TIME_LEN..])
        .map_err(|_| Error::Random)?;
    Ok(id)
}

/// When the session of `id` was created, in milliseconds after the epoch.
pub fn created_ms(id: &[u8; LEN]) -> u64 {
    let mut ms = [0u8; 8];
    ms[8 - TIME_LEN..].copy_from_slice(&id[..TIME_LEN]);
    u64::from_be_bytes(ms)
}

/// The id's text.
pub fn text(id: &[u8; LEN]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The id a text spells, if it is one as [`text`] writes them; `None` for
/// any other text. 22 characters carry 132 bits: the decoder refuses
/// non-zero spare bits, so every id has exactly one spelling.
pub fn parse(text: &str) -> Option<[u8; LEN]> {
    let mut id = [0u8; LEN];
    if text.len() != 22 || URL_SAFE_NO_PAD.decode_slice(text, &mut id).ok()? != LEN {
        return None;
    }
    Some(id)
}

/// The id's bytes with its random part first.
pub fn random_first(mut id: [u8; LEN]) -> [u8; LEN] {
    id.rotate_left(TIME_LEN);
    id
}

/// The inverse of [`random_first`].
pub fn time_first(mut key: [u8; LEN]) -> [u8; LEN] {
    key.rotate_right(TIME_LEN);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time_and_differ_within_a_millisecond() {
        let earlier = new(1_800_000_000_000).unwrap();
        let same_ms = new(1_800_000_000_000).unwrap();
        let later = new(1_800_000_000_001).unwrap();
        assert_eq!(earlier[..TIME_LEN], same_ms[..TIME_LEN]);
        assert_ne!(earlier, same_ms, "ten random bytes differ");
        assert!(earlier < later && same_ms < later);
        assert_eq!(
            u64::from_be_bytes([
                0, 0, later[0], later[1], later[2], later[3], later[4], later[5]
            ]),
            1_800_000_000_001
        );
    }

    #[test]
    fn an_id_has_one_spelling() {
        let id = new(1_800_000_000_000).unwrap();
        assert_eq!(parse(&text(&id)), Some(id));
        assert_eq!(text(&id).len(), 22);
        for other in [
            "",
            "abc",
            "AAAAAAAAAAAAAAAAAAAAAB",
            "AAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn random_first_puts_the_random_bytes_first_and_undoes() {
        let id = new(1_800_000_000_000).unwrap();
        let key = random_first(id);
        assert_eq!(key[..LEN - TIME_LEN], id[TIME_LEN..]);
        assert_eq!(time_first(key), id);
    }
}
