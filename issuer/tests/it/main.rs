//! The issuer's integration tests: the real `softphone-issuer` and
//! `softphone-verifier` binaries on free loopback ports, over a temporary data
//! directory; the status table (`statuses`) drives the routes in-process with
//! `warp::test`. One test binary for the crate (every test file is another slow
//! link).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod attacks;
mod bad_input;
mod credentials;
mod directory;
mod disk_full;
mod durability;
mod flow;
mod history;
mod metrics;
mod mikopbx;
mod statuses;
mod throttle;
mod watchdog;

/// The seed README's example credentials.
pub const USER: &str = "201";
pub const PASSWORD: &str = "b749601f329a635a19c4a87bc359be3d";
