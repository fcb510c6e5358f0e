//! The scenario families, one module each: each measures its part of the stack
//! against a floor from the same run and adds rows and targets to the report.

pub(crate) mod directory;
pub(crate) mod generator;
pub(crate) mod issuer;
pub(crate) mod media;
pub(crate) mod mikopbx;
pub(crate) mod nchan;
pub(crate) mod peers;
pub(crate) mod scale;
pub(crate) mod verifier;
