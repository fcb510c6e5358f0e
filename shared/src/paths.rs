//! The public paths, as the original module has them: the issuer's routes live
//! under [`API_BASE`], and nginx sends [`CHECK_MEDIA_ACCESS`] to the verifier.
//! And the one file path an installed system has in common: [`SYSTEM_CONFIG`].

/// The base, as a macro so the paths under it are built from one literal.
macro_rules! api_base {
    () => {
        "/pbxcore/api/module-softphone-backend/v1"
    };
}

/// Base path of every public route.
pub const API_BASE: &str = api_base!();

/// The media check: the verifier answers it (nginx passes it through unchanged).
pub const CHECK_MEDIA_ACCESS: &str = concat!(api_base!(), "/check-media-access");

/// Where nchan subscribers connect (`<SUBSCRIBE>{channel}`): the verifier
/// tells nginx which session and expiry such a subscription belongs to.
pub const SUBSCRIBE: &str = concat!(api_base!(), "/sub/");

/// The config file the systemd units give both daemons. The binaries read it by
/// default when it exists, so an admin command run by hand acts on the daemons'
/// files.
pub const SYSTEM_CONFIG: &str = "/etc/softphone-backend/softphone.toml";
