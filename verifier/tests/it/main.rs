//! The verifier's integration tests against the real binaries. (The allocation
//! count lives in its own binary, `tests/alloc.rs`: it needs the whole process to
//! itself.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod clock;
mod database_truth;
mod hostile;
mod http_attacks;
mod metrics;
mod rotation;
mod signals;
mod soak;
mod sources;
mod startup;
mod unix;
mod watchdog;

pub const USER: &str = "201";
pub const PASSWORD: &str = "verifier-test-password";

/// Both daemons with one user logged in: (daemons, access, refresh).
pub fn logged_in(name: &str) -> (softphone_testkit::Daemons, String, String) {
    let d = softphone_testkit::Daemons::start(name);
    d.add_user(USER, PASSWORD);
    let (access, refresh) = d.tokens(USER, PASSWORD);
    (d, access, refresh)
}

pub use softphone_testkit::signal;
