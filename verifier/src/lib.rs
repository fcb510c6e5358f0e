//! The verifier: answers nginx's `auth_request` and nchan's subscriber
//! authorization with 200, 401 or 403, at line rate and without allocating for a
//! valid token.
//!
//! [`request`] turns a request into a [`decision::Decision`] (pure, fuzzable),
//! [`reply`] is the one table from decisions to HTTP, [`revocations`] keeps the
//! revoked sessions in memory and in step with the database, [`identity`] interns
//! the identity headers, and [`server`] wires them into may_minihttp.

pub mod cache;
pub mod decision;
pub mod error;
pub mod identity;
pub mod reply;
pub mod request;
pub mod revocations;
pub mod server;
pub mod unix;

pub use error::{Error, Result};
