//! One configuration for both daemons: an optional TOML file, `SOFTPHONE_*`
//! environment overrides on top, and defaults that run with no file at all.
//!
//! Every field, its environment variable and its default:
//!
//! | field | env | default |
//! |---|---|---|
//! | `data_dir` | `SOFTPHONE_DATA` | `var` (relative to the working directory) |
//! | `key_file` | `SOFTPHONE_KEY_FILE` | `<data_dir>/db/secret.key` |
//! | `database` | `SOFTPHONE_DATABASE` | `<data_dir>/db/softphone.db` |
//! | `log_dir` | `SOFTPHONE_LOG_DIR` | `<data_dir>/log` |
//! | `issuer_listen` | `SOFTPHONE_ISSUER_LISTEN` | `127.0.0.1:8081` |
//! | `verifier_listen` | `SOFTPHONE_VERIFIER_LISTEN` | `127.0.0.1:8082` (loopback only) |
//! | `verifier_socket` | `SOFTPHONE_VERIFIER_SOCKET` | none (also listen on this unix socket; nginx then uses it) |
//! | `verifier_workers` | `SOFTPHONE_VERIFIER_WORKERS` | `1` |
//! | `access_ttl` | `SOFTPHONE_ACCESS_TTL` | `3600` |
//! | `refresh_ttl` | `SOFTPHONE_REFRESH_TTL` | `2592000` |
//! | `leeway` | `SOFTPHONE_LEEWAY` | `30` |
//! | `user_source` | `SOFTPHONE_USER_SOURCE` | `builtin` (or `mikopbx:<path>`) |
//! | `syslog` | `SOFTPHONE_SYSLOG` | `false` |
//! | `pbkdf2_iterations` | `SOFTPHONE_PBKDF2_ITERATIONS` | `600000` (minimum) |
//! | `login_concurrency` | `SOFTPHONE_LOGIN_CONCURRENCY` | `1` |
//! | `login_max_failures` | `SOFTPHONE_LOGIN_MAX_FAILURES` | `5` |
//! | `login_window` | `SOFTPHONE_LOGIN_WINDOW` | `900` |
//! | `login_user_ceiling` | `SOFTPHONE_LOGIN_USER_CEILING` | `20` |
//! | `login_user_interval` | `SOFTPHONE_LOGIN_USER_INTERVAL` | `10` |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::password::MIN_ITERATIONS;
use crate::{Error, Result};

/// Where logins are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub database: PathBuf,
    pub log_dir: PathBuf,
    pub issuer_listen: SocketAddr,
    pub verifier_listen: SocketAddr,
    /// Also serve on this unix socket; the rendered nginx config then uses it.
    pub verifier_socket: Option<PathBuf>,
    pub verifier_workers: usize,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub leeway: i64,
    pub user_source: UserSource,
    pub syslog: bool,
    pub pbkdf2_iterations: u32,
    pub login_concurrency: usize,
    pub login_max_failures: u32,
    pub login_window: i64,
    pub login_user_ceiling: u32,
    pub login_user_interval: i64,
}

/// The file as written: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    data_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    database: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    issuer_listen: Option<String>,
    verifier_listen: Option<String>,
    verifier_socket: Option<PathBuf>,
    verifier_workers: Option<usize>,
    access_ttl: Option<i64>,
    refresh_ttl: Option<i64>,
    leeway: Option<i64>,
    user_source: Option<String>,
    syslog: Option<bool>,
    pbkdf2_iterations: Option<u32>,
    login_concurrency: Option<usize>,
    login_max_failures: Option<u32>,
    login_window: Option<i64>,
    login_user_ceiling: Option<u32>,
    login_user_interval: Option<i64>,
}

impl Config {
    /// Loads `file` (if given) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("SOFTPHONE_"))
            .collect();
        Config::load_with_env(file, &env)
    }

    /// Loads `file` (if given) with `env` standing in for the environment.
    pub fn load_with_env(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
        let (mut raw, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let raw: Raw = toml::from_str(&text).map_err(|e| Error::Config {
                    origin: path.display().to_string(),
                    field: e.span().map_or_else(String::new, |s| {
                        text.get(s).unwrap_or_default().chars().take(40).collect()
                    }),
                    reason: e.message().to_owned(),
                })?;
                (raw, path.display().to_string())
            }
            None => (Raw::default(), "defaults".to_owned()),
        };
        apply_env(&mut raw, env)?;
        Config::resolve(raw, &origin)
    }

    fn resolve(raw: Raw, origin: &str) -> Result<Config> {
        let bad = |field: &str, reason: &str| Error::Config {
            origin: origin.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("var"));
        let addr = |field: &str, value: Option<String>, default: &str| -> Result<SocketAddr> {
            value
                .as_deref()
                .unwrap_or(default)
                .parse()
                .map_err(|_| bad(field, "expected an address like 127.0.0.1:8081"))
        };
        let user_source = match raw.user_source {
            Some(s) => s.parse().map_err(|e: String| bad("user_source", &e))?,
            None => UserSource::Builtin,
        };
        let config = Config {
            key_file: raw
                .key_file
                .unwrap_or_else(|| data_dir.join("db/secret.key")),
            database: raw
                .database
                .unwrap_or_else(|| data_dir.join("db/softphone.db")),
            log_dir: raw.log_dir.unwrap_or_else(|| data_dir.join("log")),
            issuer_listen: addr("issuer_listen", raw.issuer_listen, "127.0.0.1:8081")?,
            verifier_listen: addr("verifier_listen", raw.verifier_listen, "127.0.0.1:8082")?,
            verifier_socket: raw.verifier_socket,
            verifier_workers: raw.verifier_workers.unwrap_or(1),
            access_ttl: raw.access_ttl.unwrap_or(3600),
            refresh_ttl: raw.refresh_ttl.unwrap_or(2_592_000),
            leeway: raw.leeway.unwrap_or(30),
            user_source,
            syslog: raw.syslog.unwrap_or(false),
            pbkdf2_iterations: raw.pbkdf2_iterations.unwrap_or(MIN_ITERATIONS),
            login_concurrency: raw.login_concurrency.unwrap_or(1),
            login_max_failures: raw.login_max_failures.unwrap_or(5),
            login_window: raw.login_window.unwrap_or(900),
            login_user_ceiling: raw.login_user_ceiling.unwrap_or(20),
            login_user_interval: raw.login_user_interval.unwrap_or(10),
            data_dir,
        };
        if !config.verifier_listen.ip().is_loopback() {
            return Err(bad(
                "verifier_listen",
                "must be a loopback address: only nginx on this host may ask the verifier",
            ));
        }
        if config.verifier_workers == 0 || config.verifier_workers > 64 {
            return Err(bad("verifier_workers", "must be between 1 and 64"));
        }
        if config.access_ttl < 1 || config.refresh_ttl < config.access_ttl {
            return Err(bad(
                "access_ttl",
                "must be positive and not longer than refresh_ttl",
            ));
        }
        if !(0..=300).contains(&config.leeway) {
            return Err(bad("leeway", "must be between 0 and 300 seconds"));
        }
        if config.pbkdf2_iterations < MIN_ITERATIONS {
            return Err(bad("pbkdf2_iterations", "must be at least 600000"));
        }
        if config.login_concurrency == 0 {
            return Err(bad("login_concurrency", "must be at least 1"));
        }
        if config.login_max_failures == 0 || config.login_window < 1 {
            return Err(bad(
                "login_max_failures",
                "throttling needs at least 1 failure in a window of at least 1 second",
            ));
        }
        if config.login_user_ceiling < config.login_max_failures || config.login_user_interval < 1 {
            return Err(bad(
                "login_user_ceiling",
                "must be at least login_max_failures, with login_user_interval at least 1",
            ));
        }
        Ok(config)
    }

    /// The security log file.
    pub fn security_log(&self) -> PathBuf {
        self.log_dir.join("security.log")
    }
}

fn apply_env(raw: &mut Raw, env: &HashMap<String, String>) -> Result<()> {
    fn set<T: FromStr>(
        env: &HashMap<String, String>,
        name: &str,
        slot: &mut Option<T>,
    ) -> Result<()> {
        if let Some(value) = env.get(name) {
            *slot = Some(value.trim().parse().map_err(|_| Error::Config {
                origin: "environment".into(),
                field: name.into(),
                reason: format!("cannot parse {value:?}"),
            })?);
        }
        Ok(())
    }
    set(env, "SOFTPHONE_DATA", &mut raw.data_dir)?;
    set(env, "SOFTPHONE_KEY_FILE", &mut raw.key_file)?;
    set(env, "SOFTPHONE_DATABASE", &mut raw.database)?;
    set(env, "SOFTPHONE_LOG_DIR", &mut raw.log_dir)?;
    set(env, "SOFTPHONE_ISSUER_LISTEN", &mut raw.issuer_listen)?;
    set(env, "SOFTPHONE_VERIFIER_LISTEN", &mut raw.verifier_listen)?;
    set(env, "SOFTPHONE_VERIFIER_SOCKET", &mut raw.verifier_socket)?;
    set(env, "SOFTPHONE_VERIFIER_WORKERS", &mut raw.verifier_workers)?;
    set(env, "SOFTPHONE_ACCESS_TTL", &mut raw.access_ttl)?;
    set(env, "SOFTPHONE_REFRESH_TTL", &mut raw.refresh_ttl)?;
    set(env, "SOFTPHONE_LEEWAY", &mut raw.leeway)?;
    set(env, "SOFTPHONE_USER_SOURCE", &mut raw.user_source)?;
    set(env, "SOFTPHONE_SYSLOG", &mut raw.syslog)?;
    set(
        env,
        "SOFTPHONE_PBKDF2_ITERATIONS",
        &mut raw.pbkdf2_iterations,
    )?;
    set(
        env,
        "SOFTPHONE_LOGIN_CONCURRENCY",
        &mut raw.login_concurrency,
    )?;
    set(
        env,
        "SOFTPHONE_LOGIN_MAX_FAILURES",
        &mut raw.login_max_failures,
    )?;
    set(env, "SOFTPHONE_LOGIN_WINDOW", &mut raw.login_window)?;
    set(
        env,
        "SOFTPHONE_LOGIN_USER_CEILING",
        &mut raw.login_user_ceiling,
    )?;
    set(
        env,
        "SOFTPHONE_LOGIN_USER_INTERVAL",
        &mut raw.login_user_interval,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_run_without_a_file() {
        let c = Config::load_with_env(None, &env(&[])).unwrap();
        assert_eq!(c.key_file, PathBuf::from("var/db/secret.key"));
        assert_eq!(c.database, PathBuf::from("var/db/softphone.db"));
        assert_eq!(
            (c.access_ttl, c.refresh_ttl, c.leeway),
            (3600, 2_592_000, 30)
        );
        assert_eq!(c.user_source, UserSource::Builtin);
        assert_eq!((c.login_max_failures, c.login_window), (5, 900));
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("softphone-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("softphone.toml");
        std::fs::write(&file, "data_dir = \"/srv/a\"\naccess_ttl = 60\n").unwrap();
        let c = Config::load_with_env(
            Some(&file),
            &env(&[
                ("SOFTPHONE_DATA", "/srv/b"),
                ("SOFTPHONE_USER_SOURCE", "mikopbx:/cf/conf/mikopbx.db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/b"));
        assert_eq!(c.key_file, PathBuf::from("/srv/b/db/secret.key"));
        assert_eq!(c.access_ttl, 60);
        assert_eq!(
            c.user_source,
            UserSource::MikoPbx("/cf/conf/mikopbx.db".into())
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = std::env::temp_dir().join(format!("softphone-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "acces_ttl = 60\n").unwrap();
        let msg = Config::load_with_env(Some(&file), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("acces_ttl"),
            "{msg}"
        );

        let msg = Config::load_with_env(None, &env(&[("SOFTPHONE_LEEWAY", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("SOFTPHONE_LEEWAY"), "{msg}");
        let msg = Config::load_with_env(None, &env(&[("SOFTPHONE_VERIFIER_LISTEN", "0.0.0.0:1")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("verifier_listen"), "{msg}");
        let msg = Config::load_with_env(None, &env(&[("SOFTPHONE_PBKDF2_ITERATIONS", "1000")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pbkdf2_iterations"), "{msg}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
