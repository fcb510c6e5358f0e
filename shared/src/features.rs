//! The PBX's feature codes an app shows or dials: call pickup, attended and
//! blind transfer. The `builtin` source takes them from the configuration; the
//! `mikopbx` source reads MikoPBX's settings
//! ([`crate::users::mikopbx::PbxDatabase::features`]) over these.

use serde::Serialize;

use crate::config::Config;

/// `None`: the PBX has the feature turned off (an emptied MikoPBX setting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Features {
    pub pickup: Option<String>,
    pub attended_transfer: Option<String>,
    pub blind_transfer: Option<String>,
}

impl Features {
    pub fn from_config(config: &Config) -> Features {
        Features {
            pickup: Some(config.feature_pickup.clone()),
            attended_transfer: Some(config.feature_attended_transfer.clone()),
            blind_transfer: Some(config.feature_blind_transfer.clone()),
        }
    }
}
