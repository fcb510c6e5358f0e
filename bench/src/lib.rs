//! softphone-bench: a load generator ([`load`]), the floors we compare against
//! ([`floors`]), the scenario suite ([`suite`]) and its reports ([`report`]).

pub mod floors;
pub mod load;
pub mod peers;
pub mod procstat;
pub mod report;
pub mod suite;
