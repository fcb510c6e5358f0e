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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Handles opened so far.
    opens: AtomicU64,
}

struct Handle {
    conn: Connection,
    /// (device, inode) of the file this handle reads: a different pair at the
    /// path means the file was replaced.
    file: (u64, u64),
    /// `PRAGMA data_version` when [`PbxDatabase::changed`] last looked.
    seen_version: Option<i64>,
    /// Which opening of the file this handle is: `data_version` is counted per
    /// connection, so it only compares within one.
    opened: u64,
}

/// What a PBX database held when [`PbxDatabase::version`] looked: equal
/// versions mean no commit and no other file in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    opened: u64,
    data_version: i64,
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
            opens: AtomicU64::new(0),
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

    /// The credentials of the login names `wanted` picks, by name, as
    /// [`PbxDatabase::find`] gives each (the lowest `m_Sip.id` of a number,
    /// its first extension's user), from one read of each table. For the
    /// watcher, which checks the users of every live session: a `find` each
    /// scans `m_Sip` (MikoPBX declares no index on it), so 100 000 users made
    /// 100 000 scans, minutes of a core after every start of the issuer. Rows
    /// of other names are skipped without a copy: after a start with a
    /// hundred users in session on a 100 000-peer PBX, copying every peer
    /// was most of the read.
    pub fn credentials_of(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<HashMap<String, Credential>> {
        self.with_handle(|handle| {
            let conn = &handle.conn;
            let mut user_ids: HashMap<String, Option<i64>> = HashMap::new();
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(number AS TEXT), CAST(userid AS INTEGER) FROM m_Extensions ORDER BY id",
            )?;
            let mut extensions = stmt.query([])?;
            while let Some(r) = extensions.next()? {
                if let Some(number) = text(r, 0)?
                    && wanted(number)
                    && !user_ids.contains_key(number)
                {
                    user_ids.insert(number.to_owned(), r.get(1)?);
                }
            }
            let mut credentials: HashMap<String, Credential> = HashMap::new();
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(id AS INTEGER), CAST(extension AS TEXT), CAST(secret AS TEXT),
                        COALESCE(CAST(disabled AS TEXT), '0')
                 FROM m_Sip WHERE type = 'peer' ORDER BY id",
            )?;
            let mut sip = stmt.query([])?;
            while let Some(r) = sip.next()? {
                let Some(number) = text(r, 1)? else {
                    continue;
                };
                if !wanted(number) || credentials.contains_key(number) {
                    continue;
                }
                let user_id = user_ids.get(number).copied().flatten();
                credentials.insert(
                    number.to_owned(),
                    Credential {
                        user: User {
                            id: user_id_of(r.get(0)?, user_id),
                            username: number.to_owned(),
                            role: "user".to_owned(),
                        },
                        secret: Secret::Plain(text(r, 2)?.unwrap_or_default().to_owned()),
                        disabled: text(r, 3)? == Some("1"),
                    },
                );
            }
            Ok(credentials)
        })
    }

    /// The directory: every enabled SIP peer with its number, its user's name
    /// (else the extension's caller id) and the id its logins get, in
    /// [`users::sort_directory`]'s order. Extensions hidden from MikoPBX's
    /// phonebook (`show_in_phonebook = '0'`) are left out. Where several
    /// peers share a number, the one logins use (the lowest `m_Sip.id`)
    /// decides. The tables are joined here, not in SQL: their columns are
    /// untyped text, and a join on `CAST`s would compare every pair. Made of
    /// thousands of rows, so each table's strings are borrowed from the row
    /// and copied only where the answer keeps them, and the maps are sized
    /// once: an allocation per column, and maps re-hashing as they grew,
    /// made 5 000 extensions cost 9 ms where the reads take 1.6.
    pub fn directory(&self) -> Result<Vec<DirectoryEntry>> {
        self.with_handle(|handle| {
            let conn = &handle.conn;
            let rows = |table: &str| -> rusqlite::Result<usize> {
                let n: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
                Ok(usize::try_from(n).unwrap_or(0))
            };

            // Per number, its first extension: (user id, name, shown in the
            // phonebook). The name is the user's, else the caller id; `m_Users`
            // is reached by its primary key.
            let mut extensions: HashMap<String, (Option<i64>, String, bool)> =
                HashMap::with_capacity(rows("m_Extensions")?);
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(e.number AS TEXT), CAST(e.userid AS INTEGER),
                        CAST(u.username AS TEXT), CAST(e.callerid AS TEXT),
                        CAST(e.show_in_phonebook AS TEXT)
                 FROM m_Extensions e LEFT JOIN m_Users u ON u.id = CAST(e.userid AS INTEGER)
                 ORDER BY e.id",
            )?;
            let mut rows_of_extensions = stmt.query([])?;
            while let Some(r) = rows_of_extensions.next()? {
                let Some(number) = text(r, 0)? else {
                    continue;
                };
                if extensions.contains_key(number) {
                    continue;
                }
                let name = match text(r, 2)?.filter(|n| !n.is_empty()) {
                    Some(user_name) => user_name,
                    None => text(r, 3)?.unwrap_or(""),
                };
                let shown = text(r, 4)? != Some("0");
                extensions.insert(number.to_owned(), (r.get(1)?, name.to_owned(), shown));
            }

            // The peers in the directory's order; a stable sort keeps equal
            // numbers in `m_Sip.id` order, so the first of each is the one
            // logins use.
            let mut peers: Vec<(String, i64, bool)> = Vec::with_capacity(rows("m_Sip")?);
            let mut stmt = conn.prepare_cached(
                "SELECT CAST(id AS INTEGER), CAST(extension AS TEXT), CAST(disabled AS TEXT)
                 FROM m_Sip WHERE type = 'peer' ORDER BY id",
            )?;
            let mut sip = stmt.query([])?;
            while let Some(r) = sip.next()? {
                if let Some(number) = text(r, 1)?.filter(|n| !n.is_empty()) {
                    peers.push((number.to_owned(), r.get(0)?, text(r, 2)? == Some("1")));
                }
            }
            peers.sort_by(|a, b| users::directory_order(&a.0, &b.0));
            peers.dedup_by(|later, first| later.0 == first.0);

            let mut entries = Vec::with_capacity(peers.len());
            for (number, sip_id, disabled) in peers {
                let (user_id, name, shown) = match extensions.remove(&number) {
                    Some(extension) => extension,
                    None => (None, String::new(), true),
                };
                if disabled || !shown {
                    continue;
                }
                entries.push(DirectoryEntry {
                    id: user_id_of(sip_id, user_id),
                    number,
                    name,
                });
            }
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

    /// The database's current [`Version`]: a pragma, microseconds. Unlike
    /// [`PbxDatabase::changed`] it changes nothing, so several answers made
    /// from one handle can each remember the version they were made at.
    pub fn version(&self) -> Result<Version> {
        self.with_handle(|handle| {
            Ok(Version {
                opened: handle.opened,
                data_version: handle
                    .conn
                    .query_row("PRAGMA data_version", [], |r| r.get(0))?,
            })
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
                opened: self.opens.fetch_add(1, Ordering::Relaxed),
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

/// Column `i` of a row as text borrowed from the row (`NULL` as `None`); the
/// queries `CAST` what they read this way.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|e| rusqlite::Error::Utf8Error(i, e)),
        _ => Ok(None),
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

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;
    use softphone_testkit::mikopbx::{Peer, create};

    use super::*;

    fn peer<'a>(
        extension: &'a str,
        secret: &'a str,
        kind: &'a str,
        disabled: &'a str,
        user_id: Option<i64>,
    ) -> Peer<'a> {
        Peer {
            extension,
            secret,
            kind,
            disabled,
            user_id,
        }
    }

    fn material(c: &Credential) -> String {
        match &c.secret {
            Secret::Plain(s) | Secret::Hash(s) => s.clone(),
        }
    }

    /// The watcher's one read of the peers says of each name what a lookup
    /// of that name says: the lowest `m_Sip.id` of a number wins, a peer
    /// without a user gets its `m_Sip.id`, other types are no logins; names
    /// not wanted are left out.
    #[test]
    fn every_credential_at_once_is_what_each_lookup_finds() {
        let dir = TestDir::new("mikopbx-credentials");
        let path = dir.path().join("mikopbx.db");
        create(
            &path,
            &[
                peer("201", "Secret201", "peer", "0", Some(1)),
                peer("202", "Secret202", "peer", "1", Some(2)),
                peer("203", "Secret203", "friend", "0", Some(3)),
                peer("204", "First204", "peer", "0", Some(4)),
                peer("204", "Second204", "peer", "0", Some(5)),
                peer("205", "Secret205", "peer", "0", None),
            ],
        );
        let db = PbxDatabase::new(&path);
        let all = db.credentials_of(|_| true).unwrap();
        assert_eq!(all.len(), 4, "201, 202, 204, 205");
        let some = db.credentials_of(|name| name != "201").unwrap();
        let mut names = some.keys().map(String::as_str).collect::<Vec<_>>();
        names.sort_unstable();
        assert_eq!(names, ["202", "204", "205"]);
        assert_eq!(material(&some["204"]), "First204");
        let shown = |c: Option<&Credential>| c.map(|c| (c.user.clone(), material(c), c.disabled));
        for name in ["201", "202", "203", "204", "205", "999"] {
            let found = db.find(name).unwrap();
            assert_eq!(shown(all.get(name)), shown(found.as_ref()), "{name}");
        }
        assert_eq!(material(&all["204"]), "First204");
        assert!(all["202"].disabled);
    }
}
