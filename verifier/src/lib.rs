//! The verifier: answers nginx's `auth_request` and nchan's subscriber
//! authorization with 200, 401 or 403, at line rate and without allocating for a
//! valid token.
//!
//! The request path: [`listener`] accepts TCP and unix-socket connections, [`conn`]
//! runs the bounded HTTP/1.1 loop of one connection, [`request`] reads the head
//! and finds the token, [`decision`] decides, and [`reply`] is the one table from
//! decisions to HTTP. What a decision reads is the [`state::Verifier`]: the live
//! keys, the sessions of [`revocations`], the [`identity`] headers interned once,
//! and the [`cache`] of tokens already verified. [`subscriptions`] ends live
//! nchan subscriptions when their session or token does. [`metrics`] counts
//! every answer and serves Prometheus scrapes. [`sched`] sets the
//! scheduling policy the daemon runs under; [`watchdog`] pings systemd from the
//! coroutines that serve.

pub mod cache;
pub mod conn;
pub mod decision;
pub mod error;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod reply;
pub mod request;
pub mod revocations;
pub mod sched;
pub mod session_set;
pub mod state;
pub mod subscriptions;
pub mod watchdog;

pub use error::{Error, Result};
