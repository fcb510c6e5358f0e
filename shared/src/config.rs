//! One configuration for both daemons: the [`Config`] struct is the one list of
//! fields. Defaults ([`Config::default`]) run the system with no file at all; an
//! optional TOML file is read over them (unknown fields refused); `SOFTPHONE_*`
//! environment variables override both, one per field (`SOFTPHONE_<FIELD>`, and
//! `SOFTPHONE_DATA` for `data_dir`). Every error names its origin (the file, the
//! variable, or the defaults) and the field. The README's table documents each
//! field; a test keeps it complete.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::password::MIN_ITERATIONS;
use crate::{Error, Result, paths};

/// Where logins are checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum UserSource {
    /// The `users` table of our own database, managed with the issuer's admin commands.
    Builtin,
    /// A MikoPBX configuration database, read-only (`m_Sip` peers).
    MikoPbx(PathBuf),
}

impl FromStr for UserSource {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "builtin" {
            Ok(UserSource::Builtin)
        } else if let Some(path) = s.strip_prefix("mikopbx:").filter(|p| !p.is_empty()) {
            Ok(UserSource::MikoPbx(PathBuf::from(path)))
        } else {
            Err("expected `builtin` or `mikopbx:<path to mikopbx.db>`".into())
        }
    }
}

impl TryFrom<String> for UserSource {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// The configuration. Each field is written here once; its default is in
/// [`Config::default`], its meaning in the README's table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Base of the key, database and log paths that are not set.
    pub data_dir: PathBuf,
    /// See [`Config::key_file`].
    key_file: Option<PathBuf>,
    /// See [`Config::database`].
    database: Option<PathBuf>,
    /// See [`Config::log_dir`].
    log_dir: Option<PathBuf>,
    pub issuer_listen: SocketAddr,
    /// Loopback only: only nginx on this host may ask the verifier.
    pub verifier_listen: SocketAddr,
    /// See [`Config::verifier_socket`].
    verifier_socket: Option<PathBuf>,
    /// Loopback only: nginx's control server for nchan, where the verifier
    /// deletes the channels that end live subscriptions (see the verifier's
    /// `subscriptions` module).
    pub nchan_control_listen: SocketAddr,
    /// The HTTPS server's certificate chain (PEM), for the rendered nginx site.
    pub tls_certificate: PathBuf,
    /// Its private key (PEM); nginx's master process reads it as root.
    pub tls_certificate_key: PathBuf,
    /// Served under `/.well-known/acme-challenge/` on plain HTTP (certbot's
    /// webroot mode writes its challenges there).
    pub acme_webroot: PathBuf,
    pub verifier_workers: usize,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: i64,
    pub user_source: UserSource,
    /// See [`Config::cdr_database`].
    cdr_database: Option<PathBuf>,
    /// See [`Config::recordings_dir`].
    recordings_dir: Option<PathBuf>,
    /// The feature codes `features` reports with the `builtin` source, and
    /// with the `mikopbx` source for a code its settings table does not hold
    /// (MikoPBX's own defaults, so both agree out of the box).
    pub feature_pickup: String,
    pub feature_attended_transfer: String,
    pub feature_blind_transfer: String,
    pub syslog: bool,
    pub pbkdf2_iterations: u32,
    pub login_concurrency: usize,
    pub login_max_failures: u32,
    pub login_window: i64,
    pub login_user_ceiling: u32,
    pub login_user_interval: i64,
    /// A refused login is answered no sooner than this after it arrived.
    pub login_failure_delay_ms: u64,
    /// A login beyond this many active sessions of a user revokes the oldest.
    pub max_sessions_per_user: usize,
    /// Refreshes one session may make back to back …
    pub refresh_burst: u32,
    /// … then one per this many seconds.
    pub refresh_interval: i64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("var"),
            key_file: None,
            database: None,
            log_dir: None,
            issuer_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            verifier_listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            verifier_socket: None,
            nchan_control_listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            // Debian's ssl-cert package makes this pair on every host: the
            // site starts before a real certificate is in place.
            tls_certificate: PathBuf::from("/etc/ssl/certs/ssl-cert-snakeoil.pem"),
            tls_certificate_key: PathBuf::from("/etc/ssl/private/ssl-cert-snakeoil.key"),
            acme_webroot: PathBuf::from("/var/www/html"),
            verifier_workers: 1,
            access_ttl: 3600,
            refresh_ttl: 2_592_000,
            leeway: 30,
            user_source: UserSource::Builtin,
            cdr_database: None,
            recordings_dir: None,
            feature_pickup: "*8".into(),
            feature_attended_transfer: "##".into(),
            feature_blind_transfer: "**".into(),
            syslog: false,
            pbkdf2_iterations: MIN_ITERATIONS,
            login_concurrency: 1,
            login_max_failures: 5,
            login_window: 900,
            login_user_ceiling: 20,
            login_user_interval: 60,
            login_failure_delay_ms: 1000,
            max_sessions_per_user: 16,
            refresh_burst: 10,
            refresh_interval: 6,
        }
    }
}

/// Environment variables whose names are not `SOFTPHONE_<FIELD>`.
const ENV_ALIASES: [(&str, &str); 1] = [("data_dir", "SOFTPHONE_DATA")];

impl Config {
    /// Every field's name, as the file spells it.
    pub fn fields() -> &'static [&'static str] {
        serde_aux::serde_introspection::serde_introspect::<Config>()
    }

    /// The environment variable that overrides `field`.
    pub fn env_name(field: &str) -> String {
        ENV_ALIASES.iter().find(|(f, _)| *f == field).map_or_else(
            || format!("SOFTPHONE_{}", field.to_uppercase()),
            |(_, v)| (*v).to_owned(),
        )
    }

    /// Loads `file` (if given) and the process environment.
    /// The config file to read: the one given (`--config`, `SOFTPHONE_CONFIG`),
    /// else `system` ([`crate::paths::SYSTEM_CONFIG`]) when it exists, else none
    /// (the built-in defaults).
    pub fn locate(given: Option<&Path>, system: &Path) -> Option<PathBuf> {
        given
            .map(Path::to_path_buf)
            .or_else(|| system.is_file().then(|| system.to_path_buf()))
    }

    pub fn load(file: Option<&Path>) -> Result<Config> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("SOFTPHONE_"))
            .collect();
        Config::load_with_env(file, &env)
    }

    /// Loads `file` (if given) with `env` standing in for the environment.
    pub fn load_with_env(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
        let mut layers = Layers::default();
        if let Some(path) = file {
            layers.read_file(path)?;
        }
        for field in Config::fields() {
            let name = Config::env_name(field);
            if let Some(value) = env.get(&name) {
                layers.set_from_env(field, name, value.trim())?;
            }
        }
        let config = layers.config()?;
        config.check().map_err(|(field, reason)| Error::Config {
            origin: layers.origin(field),
            field: field.to_owned(),
            reason: reason.to_owned(),
        })?;
        Ok(config)
    }

    /// The rules between fields and on values; the field to blame and why.
    fn check(&self) -> std::result::Result<(), (&'static str, &'static str)> {
        if !self.verifier_listen.ip().is_loopback() {
            return Err((
                "verifier_listen",
                "must be a loopback address: only nginx on this host may ask the verifier",
            ));
        }
        if !self.nchan_control_listen.ip().is_loopback() {
            return Err((
                "nchan_control_listen",
                "must be a loopback address: it deletes nchan channels",
            ));
        }
        if self.verifier_workers == 0 || self.verifier_workers > 64 {
            return Err(("verifier_workers", "must be between 1 and 64"));
        }
        if self.access_ttl < 1 || self.refresh_ttl < self.access_ttl {
            return Err((
                "access_ttl",
                "must be positive and not longer than refresh_ttl",
            ));
        }
        if !(0..=300).contains(&self.leeway) {
            return Err(("leeway", "must be between 0 and 300 seconds"));
        }
        if self.pbkdf2_iterations < MIN_ITERATIONS {
            return Err(("pbkdf2_iterations", "must be at least 600000"));
        }
        if self.login_concurrency == 0 {
            return Err(("login_concurrency", "must be at least 1"));
        }
        if self.login_max_failures == 0 || self.login_window < 1 {
            return Err((
                "login_max_failures",
                "throttling needs at least 1 failure in a window of at least 1 second",
            ));
        }
        if self.login_user_ceiling < self.login_max_failures || self.login_user_interval < 1 {
            return Err((
                "login_user_ceiling",
                "must be at least login_max_failures, with login_user_interval at least 1",
            ));
        }
        for (field, code) in [
            ("feature_pickup", &self.feature_pickup),
            ("feature_attended_transfer", &self.feature_attended_transfer),
            ("feature_blind_transfer", &self.feature_blind_transfer),
        ] {
            if !valid_feature_code(code) {
                return Err((field, "must be 1-16 characters of 0-9 * #"));
            }
        }
        if self.max_sessions_per_user == 0 {
            return Err(("max_sessions_per_user", "must be at least 1"));
        }
        if self.refresh_burst == 0 || self.refresh_interval < 1 {
            return Err((
                "refresh_burst",
                "must be at least 1, with refresh_interval at least 1",
            ));
        }
        Ok(())
    }

    /// The HMAC key file: `key_file`, or `<data_dir>/db/secret.key`.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("db/secret.key"))
    }

    /// The SQLite database: `database`, or `<data_dir>/db/softphone.db`.
    pub fn database(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.data_dir.join("db/softphone.db"))
    }

    /// The unix socket the verifier also serves on, and the rendered nginx
    /// config reaches it by: `verifier_socket`, or `<data_dir>/run/verifier.sock`;
    /// `None` when set to `""` (TCP only, for a verifier on another host). nginx
    /// on the same host asks faster over it: no TCP on either side of every
    /// subrequest.
    pub fn verifier_socket(&self) -> Option<PathBuf> {
        match &self.verifier_socket {
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
            None => Some(self.data_dir.join("run/verifier.sock")),
        }
    }

    /// MikoPBX's call records (`cdr_general`), which `history` reads:
    /// `cdr_database`; unset, MikoPBX's own file with the `mikopbx` source
    /// and none with `builtin`; `None` also when set to `""`.
    pub fn cdr_database(&self) -> Option<PathBuf> {
        match (&self.cdr_database, &self.user_source) {
            (Some(path), _) if path.as_os_str().is_empty() => None,
            (Some(path), _) => Some(path.clone()),
            (None, UserSource::MikoPbx(_)) => Some(PathBuf::from(paths::MIKOPBX_CDR_DATABASE)),
            (None, UserSource::Builtin) => None,
        }
    }

    /// The directory nginx serves under [`paths::RECORDINGS`]; `history` links
    /// only to files inside it: `recordings_dir`, or MikoPBX's with the
    /// `mikopbx` source, Asterisk's default with `builtin`.
    pub fn recordings_dir(&self) -> PathBuf {
        match (&self.recordings_dir, &self.user_source) {
            (Some(path), _) => path.clone(),
            (None, UserSource::MikoPbx(_)) => PathBuf::from(paths::MIKOPBX_RECORDINGS),
            (None, UserSource::Builtin) => PathBuf::from(paths::ASTERISK_RECORDINGS),
        }
    }

    /// The log directory: `log_dir`, or `<data_dir>/log`.
    pub fn log_dir(&self) -> PathBuf {
        self.log_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log"))
    }

    /// The security log file.
    pub fn security_log(&self) -> PathBuf {
        self.log_dir().join("security.log")
    }

    /// This configuration with the files of `running` (key, database, logs): what
    /// a reload applies when those need a restart to change.
    pub fn with_files_of(mut self, running: &Config) -> Config {
        self.key_file = Some(running.key_file());
        self.database = Some(running.database());
        self.log_dir = Some(running.log_dir());
        self
    }
}

/// The file and the environment as TOML values over the defaults, remembering
/// where each field came from for the error messages.
#[derive(Default)]
struct Layers {
    values: toml::Table,
    /// field → the file or the variable that set it.
    origins: HashMap<String, String>,
}

impl Layers {
    fn read_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let origin = path.display().to_string();
        // Read as the struct first: its errors point at the offending line.
        toml::from_str::<Config>(&text).map_err(|e| Error::Config {
            origin: origin.clone(),
            field: e
                .span()
                .map_or_else(String::new, |span| key_of_line_at(&text, span.start)),
            reason: e.message().to_owned(),
        })?;
        let values: toml::Table = toml::from_str(&text).map_err(|e| Error::Config {
            origin: origin.clone(),
            field: String::new(),
            reason: e.message().to_owned(),
        })?;
        for field in values.keys() {
            self.origins.insert(field.clone(), origin.clone());
        }
        self.values = values;
        Ok(())
    }

    /// Sets `field` from the variable `name`: as a number or boolean when it reads
    /// as one and the field takes it, else as a string.
    fn set_from_env(&mut self, field: &str, name: String, value: &str) -> Result<()> {
        let typed = if let Ok(n) = value.parse::<i64>() {
            Some(toml::Value::Integer(n))
        } else {
            value.parse::<bool>().ok().map(toml::Value::Boolean)
        };
        let candidates = typed
            .into_iter()
            .chain([toml::Value::String(value.to_owned())]);
        for candidate in candidates {
            let mut values = self.values.clone();
            values.insert(field.to_owned(), candidate);
            if toml::Value::Table(values.clone())
                .try_into::<Config>()
                .is_ok()
            {
                self.values = values;
                self.origins.insert(field.to_owned(), name);
                return Ok(());
            }
        }
        Err(Error::Config {
            origin: name,
            field: field.to_owned(),
            reason: format!("cannot parse {value:?}"),
        })
    }

    fn config(&self) -> Result<Config> {
        toml::Value::Table(self.values.clone())
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config {
                origin: "configuration".into(),
                field: String::new(),
                reason: e.message().to_owned(),
            })
    }

    fn origin(&self, field: &str) -> String {
        self.origins
            .get(field)
            .cloned()
            .unwrap_or_else(|| "defaults".into())
    }
}

/// A code a phone can dial: digits, `*` and `#`.
fn valid_feature_code(code: &str) -> bool {
    (1..=16).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

/// The key of the `key = value` line around byte `at` (at most 40 characters).
fn key_of_line_at(text: &str, at: usize) -> String {
    let start = text
        .get(..at)
        .and_then(|before| before.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text.get(start..).unwrap_or_default();
    let key = line.split(['=', '\n']).next().unwrap_or_default().trim();
    key.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn error(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
        Config::load_with_env(file, &env(pairs))
            .unwrap_err()
            .to_string()
    }

    /// The daemons' file is read by default when it exists; a given file wins.
    #[test]
    fn the_system_config_is_the_default_when_it_exists() {
        let dir = TestDir::new("config-locate");
        let system = dir.path().join("softphone.toml");
        let given = dir.path().join("other.toml");
        assert_eq!(Config::locate(None, &system), None);
        std::fs::write(&system, "").unwrap();
        assert_eq!(Config::locate(None, &system), Some(system.clone()));
        assert_eq!(Config::locate(Some(&given), &system), Some(given));
    }

    #[test]
    fn defaults_run_without_a_file() {
        let c = Config::load_with_env(None, &env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.key_file(), PathBuf::from("var/db/secret.key"));
        assert_eq!(c.database(), PathBuf::from("var/db/softphone.db"));
        assert_eq!(c.security_log(), PathBuf::from("var/log/security.log"));
        assert_eq!(
            (c.access_ttl, c.refresh_ttl, c.leeway),
            (3600, 2_592_000, 30)
        );
        assert_eq!(c.user_source, UserSource::Builtin);
        assert_eq!((c.login_max_failures, c.login_window), (5, 900));
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = TestDir::new("config");
        let file = dir.path().join("softphone.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/a\"\naccess_ttl = 60\nsyslog = true\nlog_dir = \"/l\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&file),
            &env(&[
                ("SOFTPHONE_DATA", "/srv/b"),
                ("SOFTPHONE_USER_SOURCE", "mikopbx:/cf/conf/mikopbx.db"),
                ("SOFTPHONE_SYSLOG", "false"),
                ("SOFTPHONE_ISSUER_LISTEN", "127.0.0.1:9000"),
                ("SOFTPHONE_VERIFIER_SOCKET", "/run/v.sock"),
                // Not a field: other tools' variables share the prefix.
                ("SOFTPHONE_PORT", "8080"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/b"));
        assert_eq!(c.key_file(), PathBuf::from("/srv/b/db/secret.key"));
        // The socket by default under the data directory; "" turns it off.
        let default = Config::load_with_env(None, &env(&[("SOFTPHONE_DATA", "/srv/b")])).unwrap();
        assert_eq!(
            default.verifier_socket(),
            Some(PathBuf::from("/srv/b/run/verifier.sock"))
        );
        let off = Config::load_with_env(None, &env(&[("SOFTPHONE_VERIFIER_SOCKET", "")])).unwrap();
        assert_eq!(off.verifier_socket(), None);
        assert_eq!(c.log_dir(), PathBuf::from("/l"));
        assert_eq!(c.access_ttl, 60);
        assert!(!c.syslog);
        assert_eq!(c.issuer_listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(c.verifier_socket(), Some(PathBuf::from("/run/v.sock")));
        assert_eq!(
            c.user_source,
            UserSource::MikoPbx("/cf/conf/mikopbx.db".into())
        );
    }

    #[test]
    fn every_field_has_its_variable() {
        let fields = Config::fields();
        assert_eq!(fields.len(), 32, "{fields:?}");
        assert_eq!(Config::env_name("data_dir"), "SOFTPHONE_DATA");
        assert_eq!(Config::env_name("leeway"), "SOFTPHONE_LEEWAY");
        // A path that reads as a number is still a path.
        let c = Config::load_with_env(None, &env(&[("SOFTPHONE_DATA", "2024")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("2024"));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = TestDir::new("config-bad");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "acces_ttl = 60\n").unwrap();
        let msg = error(Some(&file), &[]);
        assert!(
            msg.contains("bad.toml") && msg.contains("acces_ttl"),
            "{msg}"
        );
        std::fs::write(&file, "leeway = \"lots\"\n").unwrap();
        let msg = error(Some(&file), &[]);
        assert!(msg.contains("bad.toml") && msg.contains("leeway"), "{msg}");

        let msg = error(None, &[("SOFTPHONE_LEEWAY", "lots")]);
        assert!(msg.contains("SOFTPHONE_LEEWAY"), "{msg}");
        let msg = error(None, &[("SOFTPHONE_VERIFIER_LISTEN", "0.0.0.0:1")]);
        assert!(
            msg.contains("verifier_listen") && msg.contains("SOFTPHONE_VERIFIER_LISTEN"),
            "{msg}"
        );
        let msg = error(None, &[("SOFTPHONE_PBKDF2_ITERATIONS", "1000")]);
        assert!(msg.contains("pbkdf2_iterations"), "{msg}");
        // A rule broken in the file names the file.
        std::fs::write(&file, "leeway = 301\n").unwrap();
        let msg = error(Some(&file), &[]);
        assert!(msg.contains("bad.toml") && msg.contains("leeway"), "{msg}");
    }

    /// The call records and recordings follow the user source unless set.
    #[test]
    fn call_records_and_recordings_follow_the_user_source() {
        let builtin = Config::load_with_env(None, &env(&[])).unwrap();
        assert_eq!(builtin.cdr_database(), None);
        assert_eq!(
            builtin.recordings_dir(),
            PathBuf::from("/var/spool/asterisk/monitor")
        );
        let pbx = Config::load_with_env(
            None,
            &env(&[("SOFTPHONE_USER_SOURCE", "mikopbx:/cf/conf/mikopbx.db")]),
        )
        .unwrap();
        assert_eq!(
            pbx.cdr_database(),
            Some(PathBuf::from(
                "/storage/usbdisk1/mikopbx/astlogs/asterisk/cdr.db"
            ))
        );
        assert_eq!(
            pbx.recordings_dir(),
            PathBuf::from("/storage/usbdisk1/mikopbx/astspool/monitor")
        );
        let set = Config::load_with_env(
            None,
            &env(&[
                ("SOFTPHONE_USER_SOURCE", "mikopbx:/cf/conf/mikopbx.db"),
                ("SOFTPHONE_CDR_DATABASE", ""),
                ("SOFTPHONE_RECORDINGS_DIR", "/srv/rec"),
            ]),
        )
        .unwrap();
        assert_eq!(set.cdr_database(), None);
        assert_eq!(set.recordings_dir(), PathBuf::from("/srv/rec"));
        assert_eq!(
            (
                builtin.feature_pickup.as_str(),
                builtin.feature_attended_transfer.as_str(),
                builtin.feature_blind_transfer.as_str()
            ),
            ("*8", "##", "**")
        );
        let msg = error(None, &[("SOFTPHONE_FEATURE_PICKUP", "*8; rm")]);
        assert!(msg.contains("feature_pickup"), "{msg}");
        let msg = error(None, &[("SOFTPHONE_FEATURE_BLIND_TRANSFER", "")]);
        assert!(msg.contains("feature_blind_transfer"), "{msg}");
    }

    /// The README documents every field with its variable: a field added here
    /// and not there fails this test.
    #[test]
    fn the_readme_table_lists_every_field() {
        let readme = include_str!("../../README.md");
        for field in Config::fields() {
            let row = format!("| `{field}` | `{}` |", Config::env_name(field));
            assert!(readme.contains(&row), "README.md has no row starting {row}");
        }
    }
}
