//! The verifier: answers nginx's `auth_request` and nchan's subscriber
//! authorization with 200, 401 or 403, at line rate and without allocating for a
//! valid token.
//!
//! [`request`] turns a request into a [`decision::Decision`] (pure, fuzzable),
//! [`reply`] is the one table from decisions to HTTP, [`revocations`] keeps the
//! revoked sessions in memory and in step with the database, [`identity`] interns
//! the identity headers, [`conn`] is the bounded HTTP/1.1 loop of one connection,
//! and [`server`] and [`unix`] are the TCP and unix-socket listeners.

pub mod cache;
pub mod conn;
pub mod decision;
pub mod error;
pub mod identity;
pub mod reply;
pub mod request;
pub mod revocations;
pub mod sched;
pub mod server;
pub mod unix;

pub use error::{Error, Result};
