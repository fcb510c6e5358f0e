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
//! runs at a time: a lookup probes the logins the handle read at the PBX's
//! last change ([`PbxDatabase::find`]), and the mutex bounds what a flood can
//! make the PBX database do.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::features::Features;
use crate::users::{self, Credential, DirectoryEntry, Secret, User};
use crate::{Error, Result};

/// How long a read waits for MikoPBX's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The logins as [`PbxDatabase::find`] last read them.
    logins: Option<Logins>,
}

/// Every login of a PBX database by name, as one read found them.
struct Logins {
    /// `data_version` before the read: a different one means it is stale.
    version: i64,
    by_name: HashMap<Box<str>, Login>,
}

/// A login as [`read_logins`] resolves it: its name is the map's key.
struct Login {
    /// The id its tokens carry ([`user_id_of`]).
    id: i64,
    secret: Box<str>,
    disabled: bool,
}

impl Login {
    fn credential(&self, username: &str) -> Credential {
        Credential {
            user: User {
                id: self.id,
                username: username.to_owned(),
                role: "user".to_owned(),
            },
            // An empty secret never matches: the login handler refuses empty
            // passwords.
            secret: Secret::Plain(self.secret.to_string()),
            disabled: self.disabled,
        }
    }
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

    /// Looks a login name up: a probe of the logins as the last read found
    /// them, read again first when another connection committed since
    /// (`data_version`, a pragma of microseconds). MikoPBX declares no index
    /// on `m_Sip.extension`, so a query per lookup scanned the table: 6.4 ms
    /// for a name halfway down 100 000 peers, and at 2 000 peers more than
    /// the rest of a refresh. A change costs one read of both tables, by the
    /// first lookup after it.
    pub fn find(&self, username: &str) -> Result<Option<Credential>> {
        self.with_handle(|handle| {
            let version = data_version(&handle.conn)?;
            let logins = match handle.logins.take() {
                Some(logins) if logins.version == version => handle.logins.insert(logins),
                _ => handle.logins.insert(Logins {
                    version,
                    by_name: read_logins(&handle.conn, |_| true)?,
                }),
            };
            Ok(logins
                .by_name
                .get(username)
                .map(|login| login.credential(username)))
        })
    }

    /// What [`PbxDatabase::find`] would answer, when it can be answered
    /// without waiting for anything: the handle free and open on the file
    /// at the path, its logins read at the database's current version, and
    /// that version readable at once (no wait for MikoPBX's write lock).
    /// Microseconds, so a request's thread may ask; `None` otherwise, and
    /// then `find`, off that thread, waits, reads or reports what failed.
    pub fn find_at_once(&self, username: &str) -> Option<Option<Credential>> {
        let file = file_at(&self.path).ok()?;
        let mut slot = self.open.try_lock().ok()?;
        let handle = slot.as_mut().filter(|handle| handle.file == file)?;
        let logins = handle.logins.as_ref()?;
        handle.conn.busy_timeout(Duration::ZERO).ok()?;
        let version = data_version(&handle.conn);
        // Should the timeout not come back, the next `find` opens afresh.
        if handle.conn.busy_timeout(BUSY_TIMEOUT).is_err() {
            *slot = None;
            return None;
        }
        (version.ok()? == logins.version)
            .then(|| logins.by_name.get(username).map(|l| l.credential(username)))
    }

    /// The credentials of the login names `wanted` picks, by name, as
    /// [`PbxDatabase::find`] gives each, from one read of each table, without
    /// keeping them: for the watcher, which checks the users of every live
    /// session after each change of the PBX.
    pub fn credentials_of(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<HashMap<String, Credential>> {
        self.with_handle(|handle| {
            let logins = read_logins(&handle.conn, wanted)?;
            Ok(logins
                .iter()
                .map(|(name, login)| (name.to_string(), login.credential(name)))
                .collect())
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
            let version = data_version(&handle.conn)?;
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
                data_version: data_version(&handle.conn)?,
            })
        })
    }

    /// Runs `f` on the open handle, (re)opening the file first when it is new.
    fn with_handle<T>(&self, f: impl FnOnce(&mut Handle) -> rusqlite::Result<T>) -> Result<T> {
        let failed =
            |e: &dyn std::fmt::Display| Error::UserSource(format!("{}: {e}", self.path.display()));
        let file = file_at(&self.path).map_err(|e| failed(&e))?;
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
                logins: None,
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

/// The logins whose names `wanted` picks, each as MikoPBX resolves a name:
/// the `peer` row of `m_Sip` with the lowest id, the user of the number's
/// first `m_Extensions` row. One pass over each table; rows of other names
/// are skipped without a copy (after a start with a hundred users in session
/// on a 100 000-peer PBX, copying every peer was most of the watcher's read).
fn read_logins(
    conn: &Connection,
    wanted: impl Fn(&str) -> bool,
) -> rusqlite::Result<HashMap<Box<str>, Login>> {
    let mut user_ids: HashMap<Box<str>, Option<i64>> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT CAST(number AS TEXT), CAST(userid AS INTEGER) FROM m_Extensions ORDER BY id",
    )?;
    let mut extensions = stmt.query([])?;
    while let Some(r) = extensions.next()? {
        if let Some(number) = text(r, 0)?
            && wanted(number)
            && !user_ids.contains_key(number)
        {
            user_ids.insert(number.into(), r.get(1)?);
        }
    }
    let mut logins: HashMap<Box<str>, Login> = HashMap::new();
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
        if !wanted(number) || logins.contains_key(number) {
            continue;
        }
        let user_id = user_ids.get(number).copied().flatten();
        logins.insert(
            number.into(),
            Login {
                id: user_id_of(r.get(0)?, user_id),
                secret: text(r, 2)?.unwrap_or_default().into(),
                disabled: text(r, 3)? == Some("1"),
            },
        );
    }
    Ok(logins)
}

/// SQLite's count of other connections' commits, as this connection saw them.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
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
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// (device, inode) of the file at `path`.
fn file_at(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;
    use softphone_testkit::mikopbx::{Peer, create};

    use rusqlite::OptionalExtension;

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

    /// A name's login as one query: what MikoPBX's own lookup of an extension
    /// says, and what [`PbxDatabase::find`] must agree with.
    const QUERY: &str = "SELECT CAST(s.id AS INTEGER),
        CAST(e.userid AS INTEGER),
        CAST(s.secret AS TEXT),
        COALESCE(CAST(s.disabled AS TEXT), '0')
    FROM m_Sip AS s
    LEFT JOIN m_Extensions AS e ON CAST(e.number AS TEXT) = CAST(s.extension AS TEXT)
    WHERE s.type = 'peer' AND CAST(s.extension AS TEXT) = ?1
    ORDER BY s.id LIMIT 1";

    fn queried(path: &Path, username: &str) -> Option<(i64, String, bool)> {
        let conn = Connection::open(path).unwrap();
        conn.query_row(QUERY, [username], |r| {
            Ok((
                user_id_of(r.get(0)?, r.get(1)?),
                r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                r.get::<_, String>(3)? == "1",
            ))
        })
        .optional()
        .unwrap()
    }

    fn material(c: &Credential) -> String {
        match &c.secret {
            Secret::Plain(s) | Secret::Hash(s) => s.clone(),
        }
    }

    /// What a lookup finds, as the one query says it and as `find` shows it.
    fn shown(c: Option<&Credential>) -> Option<(i64, String, bool)> {
        c.map(|c| (c.user.id, material(c), c.disabled))
    }

    /// The watcher's one read of the peers, each lookup and the one query
    /// agree on every name: the lowest `m_Sip.id` of a number wins, a peer
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
        for name in ["201", "202", "203", "204", "205", "999"] {
            let found = db.find(name).unwrap();
            assert_eq!(shown(found.as_ref()), queried(&path, name), "{name}");
            assert_eq!(shown(all.get(name)), shown(found.as_ref()), "{name}");
            if let Some(found) = found {
                assert_eq!(found.user.username, name);
            }
        }
        assert_eq!(material(&all["204"]), "First204");
        assert!(all["202"].disabled);
        assert_eq!(
            db.find("205").unwrap().unwrap().user.id,
            105,
            "its m_Sip.id"
        );
    }

    /// The logins a lookup probes are read again after any commit to the
    /// PBX database: the next lookup finds a changed secret, a peer disabled,
    /// added or removed, and a number given to another user, as the query
    /// does.
    #[test]
    fn a_lookup_after_a_change_of_the_pbx_finds_the_change() {
        let dir = TestDir::new("mikopbx-changes");
        let path = dir.path().join("mikopbx.db");
        create(
            &path,
            &[
                peer("201", "Secret201", "peer", "0", Some(1)),
                peer("202", "Secret202", "peer", "0", Some(2)),
                peer("203", "Secret203", "peer", "0", None),
            ],
        );
        let db = PbxDatabase::new(&path);
        let names = ["201", "202", "203", "204"];
        let agree = |when: &str| {
            assert!(db.find_at_once("201").is_none(), "stale {when}");
            for name in names {
                let found = db.find(name).unwrap();
                assert_eq!(shown(found.as_ref()), queried(&path, name), "{name} {when}");
                let at_once = db.find_at_once(name).expect("read at this version");
                assert_eq!(
                    shown(at_once.as_ref()),
                    shown(found.as_ref()),
                    "{name} {when}"
                );
            }
        };
        assert!(db.find_at_once("201").is_none(), "nothing read yet");
        agree("at first");
        let admin = Connection::open(&path).unwrap();
        for (when, change) in [
            (
                "after a new secret",
                "UPDATE m_Sip SET secret = 'New201' WHERE extension = '201'",
            ),
            (
                "after a peer was disabled",
                "UPDATE m_Sip SET disabled = '1' WHERE extension = '202'",
            ),
            (
                "after a peer was added",
                "INSERT INTO m_Sip (id, extension, type, secret) VALUES (500, '204', 'peer', 'Secret204')",
            ),
            (
                "after a peer was removed",
                "DELETE FROM m_Sip WHERE extension = '203'",
            ),
            (
                "after a number was given to another user",
                "UPDATE m_Extensions SET userid = 9 WHERE number = '201'",
            ),
        ] {
            admin.execute_batch(change).unwrap();
            agree(when);
        }
        assert_eq!(material(&db.find("201").unwrap().unwrap()), "New201");
        assert_eq!(db.find("201").unwrap().unwrap().user.id, 9);
        assert!(db.find("202").unwrap().unwrap().disabled);
        assert!(db.find("203").unwrap().is_none());
        assert_eq!(db.find("204").unwrap().unwrap().user.id, 500);
    }

    /// A lookup at once never waits for MikoPBX's write lock: while another
    /// connection holds it, it answers `None` at once, where `find` waits
    /// for the busy timeout.
    #[test]
    fn a_lookup_at_once_does_not_wait_for_a_writer() {
        let dir = TestDir::new("mikopbx-at-once");
        let path = dir.path().join("mikopbx.db");
        create(&path, &[peer("201", "Secret201", "peer", "0", Some(1))]);
        let db = PbxDatabase::new(&path);
        assert!(db.find("201").unwrap().is_some());
        assert!(db.find_at_once("201").unwrap().is_some());
        let writer = Connection::open(&path).unwrap();
        writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let asked = std::time::Instant::now();
        assert!(db.find_at_once("201").is_none());
        assert!(
            asked.elapsed() < BUSY_TIMEOUT / 2,
            "waited {:?}",
            asked.elapsed()
        );
        writer.execute_batch("ROLLBACK").unwrap();
        assert!(
            db.find_at_once("201").unwrap().is_some(),
            "once the writer is gone"
        );
    }
}
