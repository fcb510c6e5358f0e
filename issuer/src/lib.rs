//! The issuer: login, refresh, logout, profile and health over warp, what the
//! app shows besides calls (the directory, the user's call history, the
//! feature codes), its Prometheus metrics, plus the admin commands. `main.rs` only parses arguments; everything lives here so the
//! routes can be driven in-process by `warp::test`.

pub mod admin;
pub mod directory;
pub mod error;
pub mod group_commit;
pub mod handlers;
pub mod hashing;
pub mod history;
pub mod lane;
pub mod listing;
pub mod metrics;
pub mod nginx;
pub mod pbx_watch;
pub mod readers;
pub mod refresh_rate;
pub mod routes;
pub mod serve;
pub mod state;
pub mod throttle;
pub mod tokens;
pub mod watchdog;

pub use error::{ApiError, Error, Result};
