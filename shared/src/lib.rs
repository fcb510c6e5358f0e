//! Everything the issuer and the verifier share: the token format, the keys and
//! their files, the SQLite store and its revocation epoch, the configuration, the
//! security log, the user sources (and what else the PBX tells the apps: its
//! directory, call history, recordings and feature codes), the public paths and
//! what the daemons tell systemd. The two daemons never call each other; they meet only here.

pub mod calls;
pub mod config;
pub mod cpu_time;
pub mod epoch;
pub mod error;
pub mod features;
pub mod keyfile;
pub mod keys;
pub mod live_keys;
pub mod ownership;
pub mod password;
pub mod paths;
pub mod recordings;
pub mod seclog;
pub mod session_id;
pub mod sqlite_setup;
pub mod store;
pub mod systemd;
pub mod thread_priority;
pub mod token;
pub mod users;

pub use error::{Error, Result};

/// Milliseconds since the Unix epoch, as [`unix_now`] (0 before 1970).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch. Every time-dependent function takes `now` as an
/// argument so tests can pin the clock; only the daemons' edges call this.
pub fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // A clock before 1970 is treated as the epoch: tokens then look "not yet
        // valid" or fresh, never a panic.
        Err(_) => 0,
    }
}
