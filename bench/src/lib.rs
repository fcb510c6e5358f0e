//! softphone-bench: a load generator ([`load`]), the floors we compare against
//! ([`floors`]), the running stack ([`stack`]), the scenario families run by the
//! suite ([`suite`]) and its reports ([`report`]).

pub mod floors;
pub mod load;
pub mod peers;
pub mod procstat;
pub mod report;
mod scenarios;
pub mod stack;
pub mod suite;
