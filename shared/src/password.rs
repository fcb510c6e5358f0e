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
    let iterations = NonZeroU32::new(cost(iterations)).ok_or(Error::Random)?;
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

/// A password check: whether it matched, and how many PBKDF2 rounds it spent
/// (what its time is made of).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub matches: bool,
    pub rounds: u32,
}

/// Checks `password` against a stored hash in constant time, spending at least
/// `iterations` rounds: a hash stored before `pbkdf2_iterations` was raised
/// takes as long to check as an unknown user's dummy, so timing does not tell
/// old accounts from missing ones. A hash string we cannot parse never matches.
pub fn verify(password: &str, stored: &str, iterations: u32) -> Checked {
    let Some((stored_rounds, salt, expected)) = parse(stored) else {
        return verify_dummy(password, iterations);
    };
    let matches = pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        stored_rounds,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok();
    let rest = cost(iterations).saturating_sub(stored_rounds.get());
    let padding = NonZeroU32::new(rest).map_or(0, |rest| spend(password, rest));
    Checked {
        matches,
        rounds: stored_rounds.get() + padding,
    }
}

/// Spends the time of [`verify`] against a real hash of the configured cost, for
/// logins of unknown users, so timing does not tell which usernames exist.
pub fn verify_dummy(password: &str, iterations: u32) -> Checked {
    let rounds = NonZeroU32::new(cost(iterations)).map_or(0, |n| spend(password, n));
    Checked {
        matches: false,
        rounds,
    }
}

/// Whether a stored hash should be re-made at the configured cost (done after a
/// successful login, when the password is at hand).
pub fn needs_rehash(stored: &str, iterations: u32) -> bool {
    iterations_of(stored) != Some(cost(iterations))
}

/// The cost hashes are made at: the configured one, never below the floor.
fn cost(iterations: u32) -> u32 {
    iterations.max(MIN_ITERATIONS)
}

/// `rounds` rounds of PBKDF2 whose result nobody looks at.
fn spend(password: &str, rounds: NonZeroU32) -> u32 {
    let _ = pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        b"softphone-dummy!",
        password.as_bytes(),
        &[0u8; HASH_LEN],
    );
    rounds.get()
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
        assert!(verify("s3cret", &stored, MIN_ITERATIONS).matches);
        assert!(!verify("s3cret ", &stored, MIN_ITERATIONS).matches);
        assert!(!verify("", &stored, MIN_ITERATIONS).matches);
        assert!(!needs_rehash(&stored, MIN_ITERATIONS));
        assert!(needs_rehash(&stored, MIN_ITERATIONS + 1));
    }

    /// After the configured cost was raised, a user whose hash is older costs as
    /// many rounds as an unknown user (the dummy), whether or not the password
    /// matches; a hash at the new cost costs the same.
    #[test]
    fn every_check_spends_at_least_the_configured_cost() {
        let old = hash("s3cret", MIN_ITERATIONS).unwrap();
        let raised = MIN_ITERATIONS + 50_000;
        let new = hash("s3cret", raised).unwrap();
        let unknown = verify_dummy("s3cret", raised);
        assert_eq!(unknown.rounds, raised);
        for (password, stored, matches) in [
            ("s3cret", &old, true),
            ("wrong", &old, false),
            ("s3cret", &new, true),
            ("wrong", &new, false),
            ("s3cret", &"garbage".to_owned(), false),
        ] {
            let checked = verify(password, stored, raised);
            assert_eq!(
                checked,
                Checked {
                    matches,
                    rounds: raised
                },
                "{stored}"
            );
        }
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
            assert!(!verify("plain", stored, MIN_ITERATIONS).matches, "{stored}");
        }
    }
}
