//! The public paths, as the original module has them: the issuer's routes live
//! under [`API_BASE`], nginx sends [`CHECK_MEDIA_ACCESS`] to the verifier and
//! serves call recordings under [`RECORDINGS`]. And the file paths an
//! installed system has in common: [`SYSTEM_CONFIG`], and where MikoPBX and
//! Asterisk keep their call records and recordings.

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

/// Where nginx serves call recordings (the rendered `location ^~`), each file
/// at its path relative to the recordings directory; `history` links to them.
pub const RECORDINGS: &str = "/pbxcore/softphone/recordings/";

/// MikoPBX's call records (its `dbCDR` connection: table `cdr_general`).
pub const MIKOPBX_CDR_DATABASE: &str = "/storage/usbdisk1/mikopbx/astlogs/asterisk/cdr.db";

/// Where MikoPBX's Asterisk writes call recordings (`cdr_general.recordingfile`
/// holds absolute paths under it).
pub const MIKOPBX_RECORDINGS: &str = "/storage/usbdisk1/mikopbx/astspool/monitor";

/// Asterisk's own default recordings directory, for a PBX that is not MikoPBX.
pub const ASTERISK_RECORDINGS: &str = "/var/spool/asterisk/monitor";
