//! MikoPBX as the user source, read-only: a login is a SIP peer's extension and
//! secret from `m_Sip`; the user id is `m_Extensions.userid` of that number.
//! The same tables give the directory (`m_Sip` peers, named by `m_Users` or
//! `m_Extensions.callerid`), `m_PbxSettings` the feature codes; and the same
//! kind of handle reads MikoPBX's call records ([`crate::calls`]).
//!
//! One long-lived read-only handle per PBX database. Opening the file parses its
//! whole schema (~0.7 ms on MikoPBX's 63 tables), which a login flood must not be
//! able to multiply; so the handle stays open and is reopened only when the file
//! was replaced (MikoPBX's configuration restore writes a new file). One lookup
//! runs at a time: they take microseconds, and the mutex bounds what a flood can
//! make the PBX database do.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::features::Features;
use crate::users::{self, Credential, DirectoryEntry, Secret, User};
use crate::{Error, Result};

const FIND: &str = "SELECT CAST(s.id AS INTEGER),
        CAST(e.userid AS INTEGER),
        CAST(s.secret AS TEXT),
        COALESCE(CAST(s.disabled AS TEXT), '0')
    FROM m_Sip AS s
    LEFT JOIN m_Extensions AS e ON CAST(e.number AS TEXT) = CAST(s.extension AS TEXT)
    WHERE s.type = 'peer' AND CAST(s.extension AS TEXT) = ?1
    ORDER BY s.id LIMIT 1";

pub struct PbxDatabase {
    path: PathBuf,
    open: Mutex<Option<Handle>>,
}

struct Handle {
    conn: Connection,
    /// (device, inode) of the file this handle reads: a different pair at the
    /// path means the file was replaced.
    file: (u64, u64),
    /// `PRAGMA data_version` when [`PbxDatabase::changed`] last looked.
    seen_version: Option<i64>,
}

impl std::fmt::Debug for PbxDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbxDatabase")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PbxDatabase {
    /// Nothing is opened yet: the PBX database may appear after the issuer starts.
    pub fn new(path: &Path) -> PbxDatabase {
        PbxDatabase {
            path: path.to_owned(),
            open: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks a login name up.
    pub fn find(&self, username: &str) -> Result<Option<Credential>> {
        self.with_handle(|handle| {
            let row = handle
                .conn
                .prepare_cached(FIND)?
                .query_row([username], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()?;
            Ok(row.map(|(sip_id, user_id, secret, disabled)| Credential {
                user: User {
                    id: user_id_of(sip_id, user_id),
                    username: username.to_owned(),
                    role: "user".to_owned(),
                },
                // An empty secret never matches: the login handler refuses empty
                // passwords.
                secret: Secret::Plain(secret.unwrap_or_default()),
                disabled: disabled == "1",
            }))
        })
    }

    /// The directory: every enabled SIP peer with its number, its user's name
    /// (else the extension's caller id) and the id its logins get, in
    /// [`users::sort_directory`]'s order. Extensions hidden from MikoPBX's
    /// phonebook (`show_in_phonebook = '0'`) are left out. Where several
    /// peers share a number, the one logins use (the lowest `m_Sip.id`)
    /// decides. The tables are joined here, not in SQL: their columns are
    /// untyped text, and a join on `CAST`s would compare every pair.
    pub fn directory(&self) -> Result<Vec<DirectoryEntry>> {
        self.with_handle(|handle| {
            let conn = &handle.conn;
            let mut names: HashMap<i64, String> = HashMap::new();
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(id AS INTEGER), COALESCE(CAST(username AS TEXT), '') FROM m_Users",
            )?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, Option<i64>>(0)?, r.get(1)?)))? {
                if let (Some(id), name) = row? {
                    names.insert(id, name);
                }
            }
            let mut extensions: HashMap<String, (Option<i64>, String, bool)> = HashMap::new();
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(number AS TEXT), CAST(userid AS INTEGER),
                        COALESCE(CAST(callerid AS TEXT), ''),
                        COALESCE(CAST(show_in_phonebook AS TEXT), '1')
                 FROM m_Extensions ORDER BY id",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })? {
                let (number, user_id, callerid, shown) = row?;
                if let Some(number) = number {
                    extensions
                        .entry(number)
                        .or_insert((user_id, callerid, shown != "0"));
                }
            }
            let mut seen = std::collections::HashSet::new();
            let mut entries = Vec::new();
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(id AS INTEGER), CAST(extension AS TEXT),
                        COALESCE(CAST(disabled AS TEXT), '0')
                 FROM m_Sip WHERE type = 'peer' ORDER BY id",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })? {
                let (sip_id, number, disabled) = row?;
                let Some(number) = number.filter(|n| !n.is_empty()) else {
                    continue;
                };
                if !seen.insert(number.clone()) || disabled == "1" {
                    continue;
                }
                let (user_id, callerid, shown) = extensions
                    .get(&number)
                    .map_or((None, "", true), |(u, c, s)| (*u, c.as_str(), *s));
                if !shown {
                    continue;
                }
                let name = user_id
                    .and_then(|id| names.get(&id))
                    .filter(|n| !n.is_empty())
                    .map_or(callerid, String::as_str)
                    .to_owned();
                entries.push(DirectoryEntry {
                    id: user_id_of(sip_id, user_id),
                    number,
                    name,
                });
            }
            users::sort_directory(&mut entries);
            Ok(entries)
        })
    }

    /// The feature codes from `m_PbxSettings`; a key it does not hold (MikoPBX
    /// stores only values changed from its defaults) keeps `defaults`'.
    pub fn features(&self, defaults: &Features) -> Result<Features> {
        self.with_handle(|handle| {
            let mut features = defaults.clone();
            let mut stmt = handle.conn.prepare_cached(
                "SELECT CAST(key AS TEXT), CAST(value AS TEXT) FROM m_PbxSettings
                 WHERE key IN ('PBXFeaturePickupExten', 'PBXFeatureAttendedTransfer',
                               'PBXFeatureBlindTransfer')",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                ))
            })? {
                let (Some(key), Some(value)) = row? else {
                    continue;
                };
                let slot = match key.as_str() {
                    "PBXFeaturePickupExten" => &mut features.pickup,
                    "PBXFeatureAttendedTransfer" => &mut features.attended_transfer,
                    "PBXFeatureBlindTransfer" => &mut features.blind_transfer,
                    _ => continue,
                };
                // An emptied setting turns the feature off in MikoPBX.
                *slot = Some(value).filter(|v| !v.is_empty());
            }
            Ok(features)
        })
    }

    /// Runs `f` on the open read-only handle (for another of MikoPBX's
    /// databases than the configuration, e.g. its call records).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.with_handle(|handle| f(&handle.conn))
    }

    /// Whether the PBX database may have changed since the last call: another
    /// connection committed (SQLite's `data_version`), or the file was replaced.
    /// The first call answers true.
    pub fn changed(&self) -> Result<bool> {
        self.with_handle(|handle| {
            let version: i64 = handle
                .conn
                .query_row("PRAGMA data_version", [], |r| r.get(0))?;
            Ok(handle.seen_version.replace(version) != Some(version))
        })
    }

    /// Runs `f` on the open handle, (re)opening the file first when it is new.
    fn with_handle<T>(&self, f: impl FnOnce(&mut Handle) -> rusqlite::Result<T>) -> Result<T> {
        let failed =
            |e: &dyn std::fmt::Display| Error::UserSource(format!("{}: {e}", self.path.display()));
        let meta = std::fs::metadata(&self.path).map_err(|e| failed(&e))?;
        let file = (meta.dev(), meta.ino());
        let mut slot = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let handle = match slot.take() {
            Some(handle) if handle.file == file => slot.insert(handle),
            // None yet, or a replaced file (the old handle still reads the
            // unlinked original): open the file at the path now.
            _ => slot.insert(Handle {
                conn: open(&self.path).map_err(|e| failed(&e))?,
                file,
                seen_version: None,
            }),
        };
        let result = f(handle);
        if result.is_err() {
            // Whatever went wrong (a damaged file, a schema MikoPBX changed), the
            // next lookup starts from a fresh handle.
            *slot = None;
        }
        result.map_err(|e| failed(&e))
    }
}

/// The id a PBX user's tokens carry: its `m_Extensions.userid`, else (no
/// extension row, or no user) its `m_Sip.id`.
fn user_id_of(sip_id: i64, user_id: Option<i64>) -> i64 {
    user_id.filter(|id| *id > 0).unwrap_or(sip_id)
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(2))?;
    Ok(conn)
}
