//! Admin commands, run against the database and key files directly (no daemon
//! needed): built-in users, session revocation and key rotation. Passwords come
//! from standard input (one line) or an interactive prompt, never from the
//! command line, where `ps` and shell history would see them.
//!
//! They act on the daemons' files: the same config file by default
//! ([`softphone_shared::paths::SYSTEM_CONFIG`]), the database named on stderr,
//! never a fresh database except for `user add`, and files left owned like
//! their directory ([`settle_ownership`]).

use std::io::{BufRead, IsTerminal};

use softphone_shared::config::{Config, UserSource};
use softphone_shared::epoch::Epoch;
use softphone_shared::password;
use softphone_shared::store::{RevokeReason, Store};
use softphone_shared::unix_now;
use softphone_shared::users::builtin::{validate_display_name, validate_role, validate_username};
use softphone_shared::{keyfile, keys, ownership};

use crate::{Error, Result};

pub fn user_add(config: &Config, username: &str, role: &str) -> Result<String> {
    validate_username(username)?;
    validate_role(role)?;
    warn_if_not_builtin(config);
    let secret = read_password(&format!("Password for {username}: "))?;
    let hash = password::hash(&secret, config.pbkdf2_iterations)?;
    // The one command that may start a database: the first user of a new system.
    let path = config.database();
    eprintln!("softphone-issuer: database {}", path.display());
    let mut store = Store::open(&path)?;
    let id = store.add_user(username, &hash, role, unix_now())?;
    Ok(format!("user {username} added with id {id}"))
}

pub fn user_passwd(config: &Config, username: &str) -> Result<String> {
    warn_if_not_builtin(config);
    let mut store = open_store(config)?;
    if store.user(username)?.is_none() {
        return Err(softphone_shared::Error::NotFound(format!("user {username}")).into());
    }
    let secret = read_password(&format!("New password for {username}: "))?;
    let hash = password::hash(&secret, config.pbkdf2_iterations)?;
    let revoked = store.set_password(username, &hash, unix_now())?;
    Ok(format!(
        "password of {username} changed; {revoked} session(s) revoked"
    ))
}

pub fn user_set_disabled(config: &Config, username: &str, disabled: bool) -> Result<String> {
    warn_if_not_builtin(config);
    let mut store = open_store(config)?;
    let revoked = store.set_disabled(username, disabled, unix_now())?;
    Ok(if disabled {
        format!("user {username} disabled; {revoked} session(s) revoked")
    } else {
        format!("user {username} enabled")
    })
}

pub fn user_name(config: &Config, username: &str, name: &str) -> Result<String> {
    validate_display_name(name)?;
    warn_if_not_builtin(config);
    let mut store = open_store(config)?;
    store.set_display_name(username, name, unix_now())?;
    Ok(if name.is_empty() {
        format!("user {username} has no display name")
    } else {
        format!("user {username} is shown as {name}")
    })
}

pub fn user_list(config: &Config) -> Result<String> {
    let store = open_store(config)?;
    let mut out = format!(
        "{:<6} {:<24} {:<6} {:<8} {}\n",
        "ID", "USERNAME", "ROLE", "STATE", "HASH COST"
    );
    for user in store.users()? {
        out.push_str(&format!(
            "{:<6} {:<24} {:<6} {:<8} {}\n",
            user.id,
            user.username,
            user.role,
            if user.disabled { "disabled" } else { "enabled" },
            password::iterations_of(&user.password_hash)
                .map_or_else(|| "?".into(), |i| i.to_string()),
        ));
    }
    Ok(out)
}

pub fn user_count(config: &Config) -> Result<i64> {
    Ok(open_store(config)?.user_count()?)
}

pub fn session_revoke(config: &Config, user: Option<&str>, sid: Option<&str>) -> Result<String> {
    let mut store = open_store(config)?;
    let now = unix_now();
    match (user, sid) {
        (Some(user), None) => {
            let n = store.revoke_user_sessions(user, RevokeReason::Admin, now)?;
            Ok(format!("{n} session(s) of {user} revoked"))
        }
        (None, Some(sid)) => {
            let revoked = store.revoke_session(sid, RevokeReason::Admin, now)?;
            Ok(if revoked {
                format!("session {sid} revoked")
            } else {
                format!("session {sid} was not active")
            })
        }
        _ => Err(Error::Usage("give exactly one of --user or --sid".into())),
    }
}

pub fn session_list(config: &Config) -> Result<String> {
    let store = open_store(config)?;
    let mut out = format!(
        "{:<24} {:<6} {:<24} {:<20} {}\n",
        "SID", "UID", "USERNAME", "CREATED (UTC)", "GENERATION"
    );
    for s in store.active_sessions(unix_now())? {
        out.push_str(&format!(
            "{:<24} {:<6} {:<24} {:<20} {}\n",
            s.sid,
            s.user_id,
            s.username,
            softphone_shared::seclog::timestamp(s.created),
            s.generation
        ));
    }
    Ok(out)
}

/// Rotates the signing key. The old key keeps verifying the tokens it signed
/// until the longest of them has expired (refresh lifetime plus leeway); the
/// running daemons notice the new files within a second (or on SIGHUP).
pub fn key_rotate(config: &Config) -> Result<String> {
    let now = unix_now();
    let longest = config.access_ttl.max(config.refresh_ttl);
    let until = now.saturating_add(longest).saturating_add(config.leeway);
    eprintln!("softphone-issuer: key file {}", config.key_file().display());
    let done = keyfile::rotate(&config.key_file(), until, now)?;
    let mut out = format!(
        "key rotated: new kid {}; previous kid {} verifies until {} UTC",
        done.new_kid,
        done.old_kid,
        softphone_shared::seclog::timestamp(done.old_until)
    );
    if done.dropped > 0 {
        out.push_str(&format!(
            "\n{} expired previous key(s) dropped",
            done.dropped
        ));
    }
    Ok(out)
}

/// Lists the current key and the previous keys by kid (never key material).
pub fn key_list(config: &Config) -> Result<String> {
    let keys = keyfile::load(&config.key_file())?;
    let now = unix_now();
    let mut out = format!("{:<18} {:<10} {}\n", "KID", "STATE", "VERIFIES UNTIL (UTC)");
    out.push_str(&format!(
        "{:<18} {:<10} {}\n",
        keys.current().kid(),
        "current",
        "-"
    ));
    for (key, until) in keys.previous() {
        let state = if keys::retired(*until, now) {
            "retired"
        } else {
            "previous"
        };
        out.push_str(&format!(
            "{:<18} {:<10} {}\n",
            key.kid(),
            state,
            softphone_shared::seclog::timestamp(*until)
        ));
    }
    Ok(out)
}

/// Opens the daemons' database, which must exist: a command run with another
/// config than the daemons' must fail, not act on a fresh, empty database.
fn open_store(config: &Config) -> Result<Store> {
    let path = config.database();
    eprintln!("softphone-issuer: database {}", path.display());
    if !path.is_file() {
        return Err(Error::Usage(format!(
            "no database at {}: the daemons create it when they first start; \
             is this the config they run with (--config, SOFTPHONE_CONFIG)?",
            path.display()
        )));
    }
    Ok(Store::open(&path)?)
}

/// After an admin command: the files it may have created or replaced (the
/// database's `-wal` and `-shm`, the epoch file, the keys) get the owner of
/// their directory, so daemons running as another user can still open them.
pub fn settle_ownership(config: &Config) {
    let database = config.database();
    let mut files = vec![
        Epoch::path_for(&database),
        config.key_file(),
        keyfile::previous_path(&config.key_file()),
    ];
    for suffix in ["", "-wal", "-shm"] {
        let mut name = database.clone().into_os_string();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files {
        if let Err(e) = ownership::adopt(&file) {
            eprintln!(
                "softphone-issuer: warning: {} keeps its owner ({e}); daemons running as its directory's owner may not open it",
                file.display()
            );
        }
    }
}

fn warn_if_not_builtin(config: &Config) {
    if let UserSource::MikoPbx(path) = &config.user_source {
        eprintln!(
            "note: user_source is mikopbx:{}; built-in users are not used for logins until user_source = \"builtin\"",
            path.display()
        );
    }
}

/// One line from standard input, or a prompt without echo on a terminal.
fn read_password(prompt: &str) -> Result<String> {
    let secret = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            return Err(Error::Usage("passwords do not match".into()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if secret.is_empty() {
        return Err(Error::Usage("empty password".into()));
    }
    // Logins refuse a password with a NUL (PBKDF2-HMAC would treat "a" and "a\0"
    // alike), so such a password could never be used.
    if secret.contains('\0') {
        return Err(Error::Usage("a password cannot contain a NUL byte".into()));
    }
    Ok(secret)
}
