//! Password hashing for built-in users: PBKDF2-HMAC-SHA256 in a self-describing
//! string, `$pbkdf2-sha256$<iterations>$<salt>$<hash>` (salt and hash base64url),
//! so the cost can be raised later without breaking stored hashes.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// OWASP's 2023 floor for PBKDF2-HMAC-SHA256; config cannot go below it.
pub const MIN_ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const SCHEME: &str = "pbkdf2-sha256";

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str, iterations: u32) -> Result<String> {
    let iterations = NonZeroU32::new(iterations.max(MIN_ITERATIONS)).ok_or(Error::Random)?;
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Random)?;
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "${SCHEME}${iterations}${}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(out)
    ))
}

/// Checks `password` against a stored hash in constant time. A hash string we
/// cannot parse never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    let Some((iterations, salt, expected)) = parse(stored) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

/// Spends the same time as [`verify`] against a real hash, for logins of unknown
/// users, so timing does not tell which usernames exist.
pub fn verify_dummy(password: &str, iterations: u32) {
    let iterations = NonZeroU32::new(iterations.max(MIN_ITERATIONS)).unwrap_or(NonZeroU32::MIN);
    let _ = pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        b"softphone-dummy!",
        password.as_bytes(),
        &[0u8; HASH_LEN],
    );
}

/// The iteration count of a stored hash, if it is one of ours.
pub fn iterations_of(stored: &str) -> Option<u32> {
    parse(stored).map(|(i, _, _)| i.get())
}

fn parse(stored: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.strip_prefix('$')?.split('$');
    if parts.next()? != SCHEME {
        return None;
    }
    let iterations = NonZeroU32::new(parts.next()?.parse().ok()?)?;
    let salt = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let hash = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    if parts.next().is_some() || hash.len() != HASH_LEN || salt.is_empty() {
        return None;
    }
    Some((iterations, salt, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_self_description() {
        let stored = hash("s3cret", MIN_ITERATIONS).unwrap();
        assert!(stored.starts_with("$pbkdf2-sha256$600000$"), "{stored}");
        assert_eq!(iterations_of(&stored), Some(600_000));
        assert!(verify("s3cret", &stored));
        assert!(!verify("s3cret ", &stored));
        assert!(!verify("", &stored));
    }

    #[test]
    fn lower_costs_are_raised_to_the_floor_and_salts_differ() {
        let a = hash("x", 1).unwrap();
        let b = hash("x", 1).unwrap();
        assert_eq!(iterations_of(&a), Some(MIN_ITERATIONS));
        assert_ne!(a, b);
    }

    #[test]
    fn garbage_hashes_never_match() {
        for stored in ["", "$", "$pbkdf2-sha256$0$AA$AA", "$md5$1$AA$AA", "plain"] {
            assert!(!verify("plain", stored), "{stored}");
        }
    }
}
