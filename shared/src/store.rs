//! The SQLite store: sessions (with refresh-token rotation and revocation) and the
//! built-in users, behind versioned migrations.
//!
//! Writers use `BEGIN IMMEDIATE` for every read-then-write, WAL with
//! `synchronous=FULL` so a commit that returned is on disk, and bump the
//! [`Epoch`] after each committed revocation so verifiers notice at once.
//!
//! A writer may also run many writes as one batch ([`Store::begin_batch`],
//! [`Store::in_batch`], [`Store::end_batch`]): one transaction and one fsync
//! for all of them, each write in a savepoint of its own so a failing one
//! changes nothing, and the epoch bumped once after the commit. Nothing a
//! write returns may be acted on before [`Store::end_batch`] succeeded.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::epoch::Epoch;
use crate::users::DirectoryEntry;
use crate::{Error, Result};

/// Each entry upgrades the schema by one version; `PRAGMA user_version` records how
/// many have run. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: sessions, revocation sequence, built-in users.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO meta (key, value) VALUES ('revoke_seq', 0);
    CREATE TABLE sessions (
        sid           TEXT PRIMARY KEY,
        user_id       INTEGER NOT NULL,
        username      TEXT NOT NULL,
        role          TEXT NOT NULL,
        cred_tag      TEXT NOT NULL,
        created       INTEGER NOT NULL,
        expires       INTEGER NOT NULL,
        generation    INTEGER NOT NULL DEFAULT 1,
        refresh_cur   TEXT NOT NULL,
        refresh_prev  TEXT,
        revoked_seq   INTEGER,
        revoked_at    INTEGER,
        revoke_reason TEXT
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX sessions_revoked ON sessions (revoked_seq) WHERE revoked_seq IS NOT NULL;
    CREATE INDEX sessions_username ON sessions (username);
    CREATE INDEX sessions_expires ON sessions (expires);
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL DEFAULT 'user',
        disabled      INTEGER NOT NULL DEFAULT 0,
        created       INTEGER NOT NULL,
        updated       INTEGER NOT NULL
    ) STRICT;",
    // 2: every change a verifier must learn of (a new session, a longer life, a
    // revocation) takes a number from the same sequence as revocations, so the
    // verifier knows every live session, not only the revoked ones.
    "ALTER TABLE sessions ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET change_seq = COALESCE(revoked_seq, 0);
    CREATE INDEX sessions_change ON sessions (change_seq);",
    // 3: every change to sessions takes a number of the change sequence, also
    // one made by hand in `sqlite3`: an insert or update that did not take the
    // latest number gets one, and a deletion leaves a numbered tombstone, so the
    // verifier's incremental read sees it. (Our own writes take a new, latest
    // number themselves, so these triggers stay idle for them.)
    "CREATE TABLE session_deletions (
        seq INTEGER PRIMARY KEY,
        sid TEXT NOT NULL,
        at  INTEGER NOT NULL
    ) STRICT;
    CREATE TRIGGER sessions_seq_insert AFTER INSERT ON sessions
    WHEN NEW.change_seq IS NOT (SELECT value FROM meta WHERE key = 'revoke_seq')
    BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'revoke_seq';
        UPDATE sessions SET change_seq = (SELECT value FROM meta WHERE key = 'revoke_seq')
         WHERE sid = NEW.sid;
    END;
    CREATE TRIGGER sessions_seq_update AFTER UPDATE ON sessions
    WHEN NEW.change_seq IS OLD.change_seq
      OR NEW.change_seq IS NOT (SELECT value FROM meta WHERE key = 'revoke_seq')
    BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'revoke_seq';
        UPDATE sessions SET change_seq = (SELECT value FROM meta WHERE key = 'revoke_seq')
         WHERE sid = NEW.sid;
        INSERT INTO session_deletions (seq, sid, at)
        SELECT value, OLD.sid, CAST(strftime('%s', 'now') AS INTEGER) FROM meta
         WHERE key = 'revoke_seq' AND OLD.sid IS NOT NEW.sid;
    END;
    CREATE TRIGGER sessions_seq_delete AFTER DELETE ON sessions
    BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'revoke_seq';
        INSERT INTO session_deletions (seq, sid, at)
        SELECT value, OLD.sid, CAST(strftime('%s', 'now') AS INTEGER) FROM meta
         WHERE key = 'revoke_seq';
    END;",
    // 4: what a verifier reads of every live session (id, expiry, revoked), and
    // the counts it compares, come from one index without touching the table:
    // at a million sessions the expiry index alone cost a lookup in the table
    // per row (3.4 s for the counts, against 0.1 s from this index).
    //
    // Also: deleting a session that expired over an hour ago (what the purge
    // deletes) is news to nobody, since every verifier forgot it at expiry +
    // leeway (at most 300 s): it leaves no tombstone and takes no number, so
    // purging a million sessions does not make verifiers read a million
    // tombstones. (The hour is `FORGOTTEN_AFTER`.)
    "CREATE INDEX sessions_live ON sessions (expires, revoked_seq);
    DROP INDEX sessions_expires;
    DROP TRIGGER sessions_seq_delete;
    CREATE TRIGGER sessions_seq_delete AFTER DELETE ON sessions
    WHEN OLD.expires >= CAST(strftime('%s', 'now') AS INTEGER) - 3600
    BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'revoke_seq';
        INSERT INTO session_deletions (seq, sid, at)
        SELECT value, OLD.sid, CAST(strftime('%s', 'now') AS INTEGER) FROM meta
         WHERE key = 'revoke_seq';
    END;",
    // 5: the name the directory (`GET users`) shows beside a built-in user's
    // number, set with `softphone-issuer user name`.
    "ALTER TABLE users ADD COLUMN display_name TEXT NOT NULL DEFAULT '';",
    // 6: a user's live sessions without their revoked ones. A login looks
    // for the sessions over the cap, a `user disable` for the live ones; by
    // the user's name alone that read every session the user ever had (each
    // login over the cap revokes one, kept until it expires), and logins
    // slowed as that history grew: 4 042/s to 1 964/s over a bench run.
    "CREATE INDEX sessions_user_live ON sessions (username, revoked_seq, created, change_seq);
    DROP INDEX sessions_username;",
    // 7: old tombstones are found by their age through an index: without it
    // each clean-up read every tombstone (5 ms at 130 000 of them), and while
    // it ran once per purge step, it made every step look too slow and shrank
    // the purge of 10 000 sessions to 95 a second.
    "CREATE INDEX session_deletions_at ON session_deletions (at);",
    // 8: what a verifier reads of each changed session (id, expiry, revoked)
    // comes from the index it finds the changes by, without a lookup in the
    // table per row: after a burst of 10 000 revocations those lookups were
    // 10 000 reads of pages all over the table (11 ms on the verifier's core,
    // while its requests asked the database instead). Every write that
    // changes the expiry or the revocation also changes `change_seq`, so the
    // index costs no write the old one did not.
    "CREATE INDEX sessions_change_state ON sessions (change_seq, expires, revoked_seq);
    DROP INDEX sessions_change;",
    // 9: a user's sessions in login order without the change sequence,
    // which every refresh changes: each refresh moved its session's entry in
    // migration 6's index, on a page of its user's among thousands at a
    // million sessions. A commit of 64 refreshes of 64 users wrote 68 log
    // pages at a million sessions against 4 with an index that a refresh
    // leaves alone, and refresh at 1 M / at 1 000 measured 0.78 (the bench
    // diary's thirteenth pass). `login_seq` is the change sequence number a
    // session was created with and never changes; sessions made before this
    // migration have 0, and tie by id within their second.
    "ALTER TABLE sessions ADD COLUMN login_seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX sessions_user ON sessions (username, revoked_seq, created, login_seq);
    DROP INDEX sessions_user_live;",
];

/// Deletes the tombstones older than ?1.
const OLD_TOMBSTONES: &str = "DELETE FROM session_deletions WHERE at < ?1";

/// A user's (?1) live sessions other than ?2 beyond the newest ?3, by
/// creation and then by login order (logins within one second).
const OVER_THE_CAP: &str = "SELECT sid FROM sessions
    WHERE username = ?1 AND revoked_seq IS NULL AND sid != ?2
    ORDER BY created DESC, login_seq DESC LIMIT -1 OFFSET ?3";

/// Steps of SQLite's machine between two offers of the core in
/// [`Store::share_the_core`]: some tens of microseconds.
pub const STEPS_BETWEEN_YIELDS: i32 = 1_000;

/// How long after its expiry a session is forgotten by every verifier (whose
/// leeway is at most 300 s), and may be purged: its deletion leaves no
/// tombstone (migration 4 writes this number into its trigger).
pub const FORGOTTEN_AFTER: i64 = 3600;

/// The most bytes of write-ahead log file kept on disk once the log restarts.
pub const WAL_FILE_LIMIT: i64 = 32 * 1024 * 1024;

/// What a checkpoint found in the write-ahead log, in pages (frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Pages in the log since it last started from its beginning.
    pub log: i64,
    /// How many of them are in the database now.
    pub copied: i64,
}

/// How long a deletion's tombstone is kept: a running verifier reads it within
/// a second; one that falls further behind re-reads everything anyway.
const TOMBSTONE_KEEP: i64 = 3600;

/// Why a session was revoked, recorded in the row for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    RefreshReuse,
    Admin,
    PasswordChanged,
    UserDisabled,
    CredentialsChanged,
    /// The user opened more sessions than `max_sessions_per_user`.
    SessionLimit,
}

impl RevokeReason {
    /// Every reason, in the order of [`RevokeReason::index`]: the issuer's
    /// metrics make one counter per reason up front.
    pub const ALL: [RevokeReason; 7] = [
        RevokeReason::Logout,
        RevokeReason::RefreshReuse,
        RevokeReason::Admin,
        RevokeReason::PasswordChanged,
        RevokeReason::UserDisabled,
        RevokeReason::CredentialsChanged,
        RevokeReason::SessionLimit,
    ];

    /// Position in [`RevokeReason::ALL`].
    pub const fn index(self) -> usize {
        match self {
            RevokeReason::Logout => 0,
            RevokeReason::RefreshReuse => 1,
            RevokeReason::Admin => 2,
            RevokeReason::PasswordChanged => 3,
            RevokeReason::UserDisabled => 4,
            RevokeReason::CredentialsChanged => 5,
            RevokeReason::SessionLimit => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::RefreshReuse => "refresh_reuse",
            RevokeReason::Admin => "admin",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::UserDisabled => "user_disabled",
            RevokeReason::CredentialsChanged => "credentials_changed",
            RevokeReason::SessionLimit => "session_limit",
        }
    }
}

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub user_id: i64,
    pub username: String,
    pub role: String,
    pub cred_tag: String,
    pub created: i64,
    pub expires: i64,
    pub generation: i64,
    pub refresh_cur: String,
    pub refresh_prev: Option<String>,
    pub revoked: bool,
}

/// What a new session starts with.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub sid: &'a str,
    pub user_id: i64,
    pub username: &'a str,
    pub role: &'a str,
    pub cred_tag: &'a str,
    pub created: i64,
    pub expires: i64,
    pub refresh_jti: &'a str,
    /// Built-in users: the password hash the login was checked against. The
    /// session is created only if the user still has it and is enabled, so a
    /// `user passwd` or `user disable` that commits during the check wins.
    pub password_hash: Option<&'a str>,
}

/// What [`Store::create_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The session exists; this many older sessions of the user were revoked.
    Session { revoked: usize },
    /// The built-in user's password or state changed while the login was
    /// checked: no session.
    CredentialChanged,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current (or the previous one whose successor was never used):
    /// `new_jti` is now the current refresh token.
    Rotated,
    /// An older generation came back after its successor was used: the session has
    /// just been revoked (RFC 9700 §4.14.2).
    ReuseDetected,
    /// The session is unknown, expired or already revoked.
    Invalid,
}

/// A session as the verifier needs it: whether it may be used, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub sid: String,
    pub expires: i64,
    pub revoked: bool,
    /// Position in the change sequence.
    pub seq: i64,
}

/// What changed in sessions since a point of the change sequence, read in one
/// snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChanges {
    /// The latest number of the change sequence: everything up to it is here.
    pub head: i64,
    /// Rows changed since, as they are now (expired ones included: the verifier
    /// drops them).
    pub rows: Vec<SessionState>,
    /// Sessions deleted since (a session deleted and made again is also in `rows`).
    pub deleted: Vec<String>,
    /// Live sessions (not expired before the cutoff) and how many of them are
    /// revoked, when asked for: a check that nothing escaped the sequence.
    pub counts: Option<(usize, usize)>,
}

/// A built-in user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub created: i64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Writers ring it after each commit; read-only stores have none.
    epoch: Option<Epoch>,
    /// In a batch: a write asked for the epoch to be bumped at its commit.
    bump_at_commit: bool,
    /// Commits are synced to disk (`synchronous = FULL`): every commit but an
    /// unsynced batch's.
    synced: bool,
}

/// One write's transaction: its own (`BEGIN IMMEDIATE`), or in a batch a
/// savepoint of the batch's.
enum Write<'c> {
    Alone(Transaction<'c>),
    InBatch(Nested<'c>),
}

impl std::ops::Deref for Write<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Write::Alone(tx) => tx,
            Write::InBatch(nested) => nested.conn,
        }
    }
}

impl Write<'_> {
    fn commit(self) -> Result<()> {
        match self {
            Write::Alone(tx) => tx.commit()?,
            Write::InBatch(nested) => nested.release()?,
        }
        Ok(())
    }
}

/// A savepoint whose statements are parsed once per connection (rusqlite's
/// parses its own at each use, which a batch of hundreds of writes feels);
/// dropped without [`Nested::release`], it undoes what was written in it.
struct Nested<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Nested<'c> {
    fn begin(conn: &'c Connection) -> Result<Nested<'c>> {
        conn.prepare_cached("SAVEPOINT write")?.execute([])?;
        Ok(Nested { conn, open: true })
    }

    fn release(mut self) -> Result<()> {
        self.open = false;
        self.conn.prepare_cached("RELEASE write")?.execute([])?;
        Ok(())
    }
}

impl Drop for Nested<'_> {
    fn drop(&mut self) {
        if self.open {
            for sql in ["ROLLBACK TO write", "RELEASE write"] {
                let _ = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute([]));
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the database for writing, creating it and running migrations.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_inner(path).map_err(|e| at(path, e))
    }

    fn open_inner(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // Sessions and password hashes are private: create the file 0600 so the
        // -wal and -shm files SQLite makes beside it inherit that mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        plan_once(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A writer touches pages all over a table of a million sessions (its
        // key is random): keep 32 MiB of them rather than SQLite's 2.
        conn.pragma_update(None, "cache_size", -32 * 1024)?;
        // A write in a savepoint (each write of a batch is in one) first copies
        // every page it changes into a sub-journal, a temporary file unless
        // temporary storage is in memory: a login's two page copies went
        // through pwrite() and the page cache, for a file that only a
        // rollback of that savepoint ever reads. In memory, the copies last
        // until the savepoint ends.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // When the log restarts from its beginning, a file grown longer by a
        // burst is cut back to this.
        conn.pragma_update(None, "journal_size_limit", WAL_FILE_LIMIT)?;
        let mut store = Store {
            epoch: Some(Epoch::open(&Epoch::path_for(path))?),
            conn,
            path: path.to_path_buf(),
            bump_at_commit: false,
            synced: true,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database read-only (the verifier). The schema must already
    /// be one this build understands.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Store::open_read_only_inner(path).map_err(|e| at(path, e))
    }

    fn open_read_only_inner(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(2))?;
        plan_once(&conn)?;
        let store = Store {
            epoch: None,
            conn,
            path: path.to_path_buf(),
            bump_at_commit: false,
            synced: true,
        };
        let version = store.schema_version()?;
        if version != MIGRATIONS.len() as i64 {
            return Err(Error::SchemaTooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The doorbell this store rings (none for a read-only store).
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// Takes the write lock as every write does and lets it go at once, writing
    /// nothing (so nothing to sync): the issuer's watchdog calls this before
    /// each ping. Waits at most the busy timeout for another process's lock.
    /// (In a batch, the batch holds the lock already.)
    pub fn take_write_lock(&mut self) -> Result<()> {
        self.write()?.commit()
    }

    /// Rings the doorbell after a commit (in a batch: after the batch's).
    fn bump(&mut self) {
        if self.batching() {
            self.bump_at_commit = true;
        } else if let Some(epoch) = &self.epoch {
            epoch.bump();
        }
    }

    fn batching(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Opens a write: a transaction of its own, or a savepoint in a batch.
    fn write(&mut self) -> Result<Write<'_>> {
        Ok(if self.batching() {
            Write::InBatch(Nested::begin(&self.conn)?)
        } else {
            self.sync_commits(true)?;
            Write::Alone(
                self.conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?,
            )
        })
    }

    /// Leaves checkpoints (copying the log back into the database) to
    /// [`Store::checkpoint`] on another connection, so that no commit of this
    /// one pays for them, and tells `log` the log's length in pages after
    /// each commit of this one. (One call for both: turning SQLite's own
    /// checkpoints off drops the hook that tells the length.)
    pub fn leave_checkpoints_to_another(
        &mut self,
        mut log: impl FnMut(i64) + Send + 'static,
    ) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        self.conn
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
                log(i64::from(pages));
                Ok(())
            }))?;
        Ok(())
    }

    /// Copies what the log holds back into the database, as far as readers
    /// allow, without waiting for writers (`PASSIVE`).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok(Checkpoint {
                    log: r.get(1)?,
                    copied: r.get(2)?,
                })
            })?)
    }

    /// Starts a batch: takes the write lock (`BEGIN IMMEDIATE`).
    pub fn begin_batch(&mut self) -> Result<()> {
        self.sync_commits(true)?;
        self.bump_at_commit = false;
        self.run_cached("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Starts a batch whose commit is not synced to disk: for work that may
    /// be lost in a crash and done again (the purge of expired sessions), so
    /// that it never makes the writer wait for an fsync. The log stays
    /// whole: a crash loses only commits after the last synced one, and the
    /// next synced commit makes this one durable too (one fsync covers the
    /// whole log file). Every other transaction is synced: the batch's end
    /// sets it back, and each synced start checks.
    pub fn begin_unsynced_batch(&mut self) -> Result<()> {
        self.sync_commits(false)?;
        self.bump_at_commit = false;
        self.run_cached("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Sets whether commits are synced, outside a transaction (where SQLite
    /// takes the setting). A failure leaves `synced` as it was, so a synced
    /// batch never starts on a connection that is not.
    fn sync_commits(&mut self, synced: bool) -> Result<()> {
        if self.synced != synced {
            let mode = if synced { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.synced = synced;
        }
        Ok(())
    }

    /// Runs one write of the batch in a savepoint of its own: when `write`
    /// says it failed, everything it did is undone and the batch goes on.
    pub fn in_batch<T>(&mut self, write: impl FnOnce(&mut Store) -> (bool, T)) -> Result<T> {
        self.run_cached("SAVEPOINT batch_write")?;
        let (ok, value) = write(self);
        if !ok {
            self.run_cached("ROLLBACK TO batch_write")?;
        }
        self.run_cached("RELEASE batch_write")?;
        Ok(value)
    }

    /// Rolls the batch back.
    pub fn abort_batch(&mut self) {
        if self.batching() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.bump_at_commit = false;
        // A failure here leaves `synced` false: the next synced start
        // tries again, and fails rather than commit unsynced.
        let _ = self.sync_commits(true);
    }

    /// Runs a statement without parameters, parsed once per connection.
    fn run_cached(&self, sql: &str) -> Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Commits the batch durably (one fsync), then bumps the epoch if any of
    /// its writes asked to. On failure everything in it is rolled back.
    pub fn end_batch(&mut self) -> Result<()> {
        if let Err(e) = self.run_cached("COMMIT") {
            self.abort_batch();
            return Err(e);
        }
        if std::mem::take(&mut self.bump_at_commit) {
            self.bump();
        }
        let _ = self.sync_commits(true); // as in `abort_batch`
        Ok(())
    }

    fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    fn migrate(&mut self) -> Result<()> {
        let known = MIGRATIONS.len() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > known {
            return Err(Error::SchemaTooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    // ----- sessions -------------------------------------------------------------

    /// Records a new session; verifiers learn of it before this returns (the
    /// epoch is bumped after the commit).
    /// Creates a session and, in the same transaction, revokes the user's oldest
    /// active sessions beyond `max_per_user` (the new one counts and is never
    /// the one revoked). Returns how many were revoked.
    pub fn create_session(&mut self, s: &NewSession<'_>, max_per_user: usize) -> Result<Created> {
        let tx = self.write()?;
        if let Some(hash) = s.password_hash {
            let unchanged: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM users
                     WHERE username = ?1 AND password_hash = ?2 AND NOT disabled)",
                )?
                .query_row(params![s.username, hash], |r| r.get(0))?;
            if !unchanged {
                return Ok(Created::CredentialChanged);
            }
        }
        let seq = next_seq(&tx)?;
        tx.prepare_cached(
            "INSERT INTO sessions (sid, user_id, username, role, cred_tag, created, expires, refresh_cur, change_seq, login_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        )?
        .execute(params![s.sid, s.user_id, s.username, s.role, s.cred_tag, s.created, s.expires, s.refresh_jti, seq])?;
        // The others the user may keep: the newest, by creation and then by
        // login order (logins within one second).
        let keep_others = i64::try_from(max_per_user.saturating_sub(1)).unwrap_or(i64::MAX);
        let over = tx
            .prepare_cached(OVER_THE_CAP)?
            .query_map(params![s.username, s.sid, keep_others], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        for sid in &over {
            revoke_in(
                &tx,
                "sid = ?4",
                &[sid],
                RevokeReason::SessionLimit,
                s.created,
            )?;
        }
        tx.commit()?;
        self.bump();
        Ok(Created::Session {
            revoked: over.len(),
        })
    }

    pub fn session(&self, sid: &str) -> Result<Option<Session>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE sid = ?1"
            ))?
            .query_row([sid], session_row)
            .optional()?)
    }

    /// True when the session exists and is not revoked. Expiry is the token's job.
    pub fn session_active(&self, sid: &str) -> Result<bool> {
        Ok(self.session_revoked(sid)? == Some(false))
    }

    /// Whether the session is revoked; `None` when the database does not know it.
    pub fn session_revoked(&self, sid: &str) -> Result<Option<bool>> {
        Ok(self
            .conn
            .prepare_cached("SELECT revoked_seq IS NOT NULL FROM sessions WHERE sid = ?1")?
            .query_row([sid], |r| r.get::<_, bool>(0))
            .optional()?)
    }

    /// How many sessions are usable at `now`: not revoked, not expired.
    pub fn live_session_count(&self, now: i64) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM sessions WHERE revoked_seq IS NULL AND expires >= ?1",
            )?
            .query_row([now], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0).unsigned_abs())?)
    }

    /// Presents refresh token `presented_jti` of session `sid`; on success
    /// `new_jti` becomes the current refresh token and the session lives until
    /// `new_expires`.
    ///
    /// The presented token stays valid until its successor has been used once: the
    /// row keeps the current and the previous generation. Anything older is reuse,
    /// and revokes the session.
    pub fn rotate_refresh(
        &mut self,
        sid: &str,
        presented_jti: &str,
        new_jti: &str,
        new_expires: i64,
        now: i64,
    ) -> Result<Rotation> {
        let tx = self.write()?;
        let row: Option<(String, Option<String>, bool)> = tx
            .prepare_cached(
                "SELECT refresh_cur, refresh_prev, revoked_seq IS NOT NULL FROM sessions WHERE sid = ?1",
            )?
            .query_row([sid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((current, previous, revoked)) = row else {
            return Ok(Rotation::Invalid);
        };
        if revoked {
            return Ok(Rotation::Invalid);
        }
        if presented_jti == current {
            // The successor of `previous` is used: `previous` dies, current becomes
            // the one that may still be retried.
            let seq = next_seq(&tx)?;
            tx.prepare_cached(
                "UPDATE sessions SET refresh_prev = refresh_cur, refresh_cur = ?2,
                        generation = generation + 1, expires = MAX(expires, ?3), change_seq = ?4
                 WHERE sid = ?1",
            )?
            .execute(params![sid, new_jti, new_expires, seq])?;
        } else if previous.as_deref() == Some(presented_jti) {
            // The app lost our last answer and retries: replace the unused successor.
            let seq = next_seq(&tx)?;
            tx.prepare_cached(
                "UPDATE sessions SET refresh_cur = ?2, expires = MAX(expires, ?3), change_seq = ?4
                 WHERE sid = ?1",
            )?
            .execute(params![sid, new_jti, new_expires, seq])?;
        } else {
            revoke_in(&tx, "sid = ?4", &[sid], RevokeReason::RefreshReuse, now)?;
            tx.commit()?;
            self.bump();
            return Ok(Rotation::ReuseDetected);
        }
        tx.commit()?;
        // The session lives longer now: verifiers must not forget it too early.
        self.bump();
        Ok(Rotation::Rotated)
    }

    /// Replaces a session's credential fingerprint (made again with the current
    /// key after a key rotation).
    pub fn set_cred_tag(&mut self, sid: &str, cred_tag: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET cred_tag = ?2 WHERE sid = ?1")?
            .execute(params![sid, cred_tag])?;
        Ok(())
    }

    /// Revokes one session. Returns whether it was active. The commit is durable
    /// and the epoch bumped before this returns.
    pub fn revoke_session(&mut self, sid: &str, reason: RevokeReason, now: i64) -> Result<bool> {
        Ok(self.revoke_committed("sid = ?4", &[sid], reason, now)? > 0)
    }

    /// Revokes every active session of a user (by login name).
    pub fn revoke_user_sessions(
        &mut self,
        username: &str,
        reason: RevokeReason,
        now: i64,
    ) -> Result<usize> {
        self.revoke_committed("username = ?4", &[username], reason, now)
    }

    /// Revokes the active sessions of a user that were opened with one
    /// credential (by its tag): those a changed password or a disabled account
    /// in an external user source ends.
    pub fn revoke_credential(
        &mut self,
        username: &str,
        cred_tag: &str,
        reason: RevokeReason,
        now: i64,
    ) -> Result<usize> {
        self.revoke_committed(
            "username = ?4 AND cred_tag = ?5",
            &[username, cred_tag],
            reason,
            now,
        )
    }

    /// [`revoke_in`] in a transaction of its own, committed durably, then the
    /// epoch bumped when anything changed. Returns how many sessions it revoked.
    fn revoke_committed(
        &mut self,
        filter: &str,
        values: &[&str],
        reason: RevokeReason,
        now: i64,
    ) -> Result<usize> {
        let tx = self.write()?;
        let changed = revoke_in(&tx, filter, values, reason, now)?;
        tx.commit()?;
        if changed > 0 {
            self.bump();
        }
        Ok(changed)
    }

    /// The distinct (username, credential tag) pairs of the active sessions: what
    /// a check against an external user source has to look at.
    pub fn active_credentials(&self, now: i64) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT username, cred_tag FROM sessions
             WHERE revoked_seq IS NULL AND expires >= ?1",
        )?;
        let rows = stmt
            .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Active (unrevoked, unexpired) sessions, for admin listing and sweeps.
    pub fn active_sessions(&self, now: i64) -> Result<Vec<Session>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE revoked_seq IS NULL AND expires >= ?1 ORDER BY created"
        ))?;
        let rows = stmt
            .query_map([now], session_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Deletes up to `limit` sessions that expired more than
    /// [`FORGOTTEN_AFTER`] seconds ago (their tokens are dead, every verifier
    /// forgot them); returns how many it deleted. Call it again while it
    /// returns `limit`.
    pub fn purge_expired(&mut self, now: i64, limit: usize) -> Result<usize> {
        let tx = self.write()?;
        let purged = tx.execute(
            "DELETE FROM sessions WHERE sid IN (
                SELECT sid FROM sessions INDEXED BY sessions_live WHERE expires < ?1 LIMIT ?2)",
            params![
                now.saturating_sub(FORGOTTEN_AFTER),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
        )?;
        tx.commit()?;
        Ok(purged)
    }

    /// Deletes the tombstones older than [`TOMBSTONE_KEEP`]; returns how many.
    pub fn purge_tombstones(&mut self, now: i64) -> Result<usize> {
        let tx = self.write()?;
        let purged = tx
            .prepare_cached(OLD_TOMBSTONES)?
            .execute([now.saturating_sub(TOMBSTONE_KEEP)])?;
        tx.commit()?;
        Ok(purged)
    }

    /// While `on`, a statement on this connection offers the core to the
    /// threads waiting for it (`sched_yield`) every [`STEPS_BETWEEN_YIELDS`]
    /// steps of SQLite's machine, and gives up (an error that
    /// [`Error::is_interrupted`] tells) once `give_up` is set. For a
    /// background thread on a core that request workers share, for reads
    /// nobody waits for (a verifier's counts over every session): a long
    /// read otherwise keeps the workers waiting until the kernel's next tick,
    /// up to 4 ms on a 250 Hz kernel. With no other thread waiting, a yield
    /// returns at once; with one, the yielding thread may wait a whole time
    /// slice for the core back, so a read that requests wait for must not
    /// share, and one they come to wait for gives up.
    pub fn share_the_core(&mut self, on: Option<Arc<AtomicBool>>) -> Result<()> {
        match on {
            Some(give_up) => self.conn.progress_handler(
                STEPS_BETWEEN_YIELDS,
                Some(move || {
                    std::thread::yield_now();
                    give_up.load(Ordering::Relaxed)
                }),
            )?,
            None => self.conn.progress_handler(0, None::<fn() -> bool>)?,
        }
        Ok(())
    }

    /// Everything the verifier needs to bring its view from sequence number
    /// `after` to now, in one snapshot; with `counts_from`, also the counts of
    /// sessions expiring at or after it.
    pub fn session_changes(
        &mut self,
        after: i64,
        counts_from: Option<i64>,
    ) -> Result<SessionChanges> {
        let tx = self.conn.transaction()?;
        let (head, rows, deleted) = changes_in(&tx, after, None)?;
        let counts = match counts_from {
            Some(cutoff) => Some(
                tx.prepare_cached(
                    "SELECT count(*), count(revoked_seq) FROM sessions
                     INDEXED BY sessions_live WHERE expires >= ?1",
                )?
                .query_row([cutoff], |r| {
                    Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize))
                })?,
            ),
            None => None,
        };
        tx.commit()?;
        Ok(SessionChanges {
            head,
            rows,
            deleted,
            counts,
        })
    }

    /// As [`Store::session_changes`] without counts, when at most `limit`
    /// rows changed and at most `limit` were deleted; `None` when more are
    /// waiting (having read `limit + 1` of them at most).
    pub fn few_session_changes(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Option<SessionChanges>> {
        let tx = self.conn.transaction()?;
        let (head, rows, deleted) = changes_in(&tx, after, Some(limit))?;
        tx.commit()?;
        Ok(
            (rows.len() <= limit && deleted.len() <= limit).then_some(SessionChanges {
                head,
                rows,
                deleted,
                counts: None,
            }),
        )
    }

    /// Every session not expired before `cutoff`, handed to `each` as it is
    /// read (id, expiry, revoked; nothing is kept per row), and the sequence
    /// number the snapshot is current for. Read from the `sessions_live`
    /// index alone.
    pub fn each_session(
        &mut self,
        cutoff: i64,
        mut each: impl FnMut(&str, i64, bool),
    ) -> Result<i64> {
        let tx = self.conn.transaction()?;
        let head = tx
            .prepare_cached("SELECT value FROM meta WHERE key = 'revoke_seq'")?
            .query_row([], |r| r.get(0))?;
        {
            let mut stmt = tx.prepare_cached(
                "SELECT sid, expires, revoked_seq IS NOT NULL FROM sessions
                 INDEXED BY sessions_live WHERE expires >= ?1",
            )?;
            let mut rows = stmt.query([cutoff])?;
            while let Some(row) = rows.next()? {
                let sid = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                each(sid, row.get(1)?, row.get(2)?);
            }
        }
        tx.commit()?;
        Ok(head)
    }

    /// Sessions changed (created, extended or revoked) after sequence number
    /// `after` and not expired before `now`, oldest change first.
    pub fn changes_since(&self, after: i64, now: i64) -> Result<Vec<SessionState>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sid, expires, revoked_seq IS NOT NULL, change_seq FROM sessions
             WHERE change_seq > ?1 AND expires >= ?2 ORDER BY change_seq",
        )?;
        let rows = stmt
            .query_map([after, now], state_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    // ----- built-in users --------------------------------------------------------

    pub fn add_user(
        &mut self,
        username: &str,
        password_hash: &str,
        role: &str,
        now: i64,
    ) -> Result<i64> {
        let inserted = self.conn.execute(
            "INSERT INTO users (username, password_hash, role, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (username) DO NOTHING",
            params![username, password_hash, role, now],
        )?;
        if inserted == 0 {
            return Err(Error::Invalid(format!("user {username} already exists")));
        }
        Ok(self.conn.last_insert_rowid())
    }

    pub fn user(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, username, password_hash, role, disabled, created FROM users WHERE username = ?1",
            )?
            .query_row([username], user_row)
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<UserRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, username, password_hash, role, disabled, created FROM users ORDER BY username",
        )?;
        let rows = stmt
            .query_map([], user_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Enabled users with their display names: the `builtin` directory, in
    /// [`crate::users::sort_directory`]'s order.
    pub fn directory(&self) -> Result<Vec<DirectoryEntry>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, username, display_name FROM users WHERE disabled = 0")?;
        let mut entries = stmt
            .query_map([], |r| {
                Ok(DirectoryEntry {
                    id: r.get(0)?,
                    number: r.get(1)?,
                    name: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        crate::users::sort_directory(&mut entries);
        Ok(entries)
    }

    /// Sets the name the directory shows for `username` (`""` for none).
    pub fn set_display_name(&mut self, username: &str, name: &str, now: i64) -> Result<()> {
        let updated = self.conn.execute(
            "UPDATE users SET display_name = ?2, updated = ?3 WHERE username = ?1",
            params![username, name, now],
        )?;
        if updated == 0 {
            return Err(Error::NotFound(format!("user {username}")));
        }
        Ok(())
    }

    pub fn user_count(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    /// Sets a new password hash and revokes the user's sessions, atomically.
    pub fn set_password(&mut self, username: &str, password_hash: &str, now: i64) -> Result<usize> {
        self.update_user_and_revoke(
            username,
            "UPDATE users SET password_hash = ?2, updated = ?3 WHERE username = ?1",
            params![username, password_hash, now],
            RevokeReason::PasswordChanged,
            now,
        )
    }

    /// Replaces a built-in user's hash by one of the same password at a new cost,
    /// unless the hash changed meanwhile (then nothing happens and this returns
    /// false). The user's sessions keep working: those tagged with any of
    /// `old_tags` get `new_tag`, the tag of the new hash.
    pub fn rehash_user(
        &mut self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        old_tags: &[String],
        new_tag: &str,
    ) -> Result<bool> {
        let tx = self.write()?;
        let replaced = tx.execute(
            "UPDATE users SET password_hash = ?3 WHERE username = ?1 AND password_hash = ?2",
            params![username, old_hash, new_hash],
        )?;
        if replaced == 0 {
            return Ok(false);
        }
        for tag in old_tags {
            tx.execute(
                "UPDATE sessions SET cred_tag = ?3
                 WHERE username = ?1 AND cred_tag = ?2 AND revoked_seq IS NULL",
                params![username, tag, new_tag],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Disables or enables a user; disabling revokes its sessions, atomically.
    pub fn set_disabled(&mut self, username: &str, disabled: bool, now: i64) -> Result<usize> {
        let sql = "UPDATE users SET disabled = ?2, updated = ?3 WHERE username = ?1";
        if disabled {
            self.update_user_and_revoke(
                username,
                sql,
                params![username, disabled, now],
                RevokeReason::UserDisabled,
                now,
            )
        } else {
            let changed = self.conn.execute(sql, params![username, disabled, now])?;
            if changed == 0 {
                return Err(Error::NotFound(format!("user {username}")));
            }
            Ok(0)
        }
    }

    fn update_user_and_revoke(
        &mut self,
        username: &str,
        sql: &str,
        values: impl rusqlite::Params,
        reason: RevokeReason,
        now: i64,
    ) -> Result<usize> {
        let tx = self.write()?;
        if tx.execute(sql, values)? == 0 {
            return Err(Error::NotFound(format!("user {username}")));
        }
        let revoked = revoke_in(&tx, "username = ?4", &[username], reason, now)?;
        tx.commit()?;
        if revoked > 0 {
            self.bump();
        }
        Ok(revoked)
    }
}

/// Names the database file in an error that does not already.
fn at(path: &Path, e: Error) -> Error {
    match e {
        Error::Db(_) => Error::DbOpen {
            path: path.to_path_buf(),
            source: Box::new(e),
        },
        other => other,
    }
}

/// Takes the next number of the change sequence.
/// Makes a cached statement keep its plan whatever values are bound to it.
/// Otherwise SQLite re-plans a statement whenever a value bound in its WHERE
/// clause changes, if the planner compared it while weighing a partial index
/// (`sessions_revoked`): a login's search for the sessions over the cap was
/// parsed and planned anew for every login, 9 % of the writer's time on it.
fn plan_once(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn next_seq(tx: &Connection) -> Result<i64> {
    Ok(tx
        .prepare_cached(
            "UPDATE meta SET value = value + 1 WHERE key = 'revoke_seq' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?)
}

/// What a verifier reads of the sessions changed after ?1, at most ?2 of
/// them, all from the index `sessions_change_state` (migration 8).
const CHANGED_ROWS: &str = "SELECT sid, expires, revoked_seq IS NOT NULL, change_seq
    FROM sessions WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2";

/// Marks the matching active sessions revoked under one new sequence number.
/// `filter` names its `values` as ?4, ?5, … (?1 to ?3 are taken).
/// The change sequence's head, the rows changed after `after` and the
/// sessions deleted after it; with `limit`, at most `limit + 1` of each.
fn changes_in(
    tx: &Connection,
    after: i64,
    limit: Option<usize>,
) -> Result<(i64, Vec<SessionState>, Vec<String>)> {
    // SQLite reads a negative LIMIT as none.
    let limit = limit.map_or(-1, |l| {
        i64::try_from(l.saturating_add(1)).unwrap_or(i64::MAX)
    });
    let head = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'revoke_seq'")?
        .query_row([], |r| r.get(0))?;
    let rows = tx
        .prepare_cached(CHANGED_ROWS)?
        .query_map([after, limit], state_row)?
        .collect::<rusqlite::Result<_>>()?;
    let deleted = tx
        .prepare_cached("SELECT sid FROM session_deletions WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map([after, limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((head, rows, deleted))
}

fn revoke_in(
    tx: &Connection,
    filter: &str,
    values: &[&str],
    reason: RevokeReason,
    now: i64,
) -> Result<usize> {
    let seq = next_seq(tx)?;
    let sql = format!(
        "UPDATE sessions SET revoked_seq = ?1, change_seq = ?1, revoked_at = ?2, revoke_reason = ?3
         WHERE {filter} AND revoked_seq IS NULL"
    );
    let reason = reason.as_str();
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&seq, &now, &reason];
    all.extend(values.iter().map(|v| v as &dyn rusqlite::ToSql));
    Ok(tx.prepare_cached(&sql)?.execute(all.as_slice())?)
}

const SESSION_COLUMNS: &str =
    "sid, user_id, username, role, cred_tag, created, expires, generation,
     refresh_cur, refresh_prev, revoked_seq IS NOT NULL";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        sid: r.get(0)?,
        user_id: r.get(1)?,
        username: r.get(2)?,
        role: r.get(3)?,
        cred_tag: r.get(4)?,
        created: r.get(5)?,
        expires: r.get(6)?,
        generation: r.get(7)?,
        refresh_cur: r.get(8)?,
        refresh_prev: r.get(9)?,
        revoked: r.get(10)?,
    })
}

fn state_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionState> {
    Ok(SessionState {
        sid: r.get(0)?,
        expires: r.get(1)?,
        revoked: r.get(2)?,
        seq: r.get(3)?,
    })
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        role: r.get(3)?,
        disabled: r.get(4)?,
        created: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;

    use super::*;

    fn session(sid: &str, expires: i64) -> NewSession<'_> {
        NewSession {
            sid,
            user_id: 1,
            username: "201",
            role: "user",
            cred_tag: "t",
            created: expires - 3600,
            expires,
            refresh_jti: "r",
            password_hash: None,
        }
    }

    /// Writes in a batch share one commit: one that fails is undone alone,
    /// nothing is visible to another connection (a verifier) before the
    /// commit, and the epoch rings once, after it.
    #[test]
    fn a_batch_commits_its_writes_together_and_undoes_a_failing_one() {
        let dir = TestDir::new("store-batch");
        let path = dir.path().join("softphone.db");
        let mut store = Store::open(&path).unwrap();
        let other = Store::open_read_only(&path).unwrap();
        let epoch = Epoch::open(&Epoch::path_for(&path)).unwrap();
        let now = 1_800_000_000;
        let before = epoch.load();
        store.begin_batch().unwrap();
        for sid in ["b1", "b2"] {
            let created = store
                .in_batch(|s| {
                    let r = s.create_session(&session(sid, now + 3600), usize::MAX);
                    (r.is_ok(), r)
                })
                .unwrap();
            assert_eq!(created.unwrap(), Created::Session { revoked: 0 });
        }
        // The same id again fails, after it wrote a change number: undone.
        let failed = store
            .in_batch(|s| {
                let r = s.create_session(&session("b1", now + 3600), usize::MAX);
                (r.is_ok(), r)
            })
            .unwrap();
        assert!(failed.is_err());
        let revoked = store
            .in_batch(|s| {
                let r = s.revoke_session("b2", RevokeReason::Logout, now);
                (r.is_ok(), r)
            })
            .unwrap();
        assert!(revoked.unwrap());
        assert_eq!(
            other.session_revoked("b1").unwrap(),
            None,
            "not committed yet"
        );
        assert_eq!(epoch.load(), before, "no bell before the commit");
        store.end_batch().unwrap();
        assert_eq!(epoch.load(), before + 1, "one bell for the batch");
        assert_eq!(other.session_revoked("b1").unwrap(), Some(false));
        assert_eq!(other.session_revoked("b2").unwrap(), Some(true));
        let seqs = other
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'revoke_seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        assert_eq!(
            seqs, 3,
            "two sessions and a revocation: the failed write took none"
        );
        // Outside a batch, writes commit on their own as before.
        store.take_write_lock().unwrap();
        store
            .create_session(&session("b3", now + 3600), usize::MAX)
            .unwrap();
        assert_eq!(epoch.load(), before + 2);
    }

    /// An unsynced batch commits like any other, and is the only transaction
    /// that is not synced: the connection is synced again after it, for a
    /// batch and for a write of its own.
    #[test]
    fn only_an_unsynced_batch_commits_without_a_sync() {
        let dir = TestDir::new("store-unsynced");
        let path = dir.path().join("softphone.db");
        let mut store = Store::open(&path).unwrap();
        let other = Store::open_read_only(&path).unwrap();
        let synchronous = |s: &Store| -> i64 {
            s.conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let now = 1_800_000_000;
        assert_eq!(synchronous(&store), FULL);
        store.begin_unsynced_batch().unwrap();
        assert_eq!(synchronous(&store), NORMAL);
        store
            .in_batch(|s| {
                let r = s.create_session(&session("u1", now + 3600), usize::MAX);
                (r.is_ok(), r)
            })
            .unwrap()
            .unwrap();
        store.end_batch().unwrap();
        assert_eq!(synchronous(&store), FULL, "synced again after it");
        assert_eq!(other.session_revoked("u1").unwrap(), Some(false));
        store.begin_unsynced_batch().unwrap();
        store.abort_batch();
        assert_eq!(synchronous(&store), FULL, "and after one rolled back");
        store.begin_batch().unwrap();
        assert_eq!(synchronous(&store), FULL);
        store.end_batch().unwrap();
        store
            .create_session(&session("u2", now + 3600), usize::MAX)
            .unwrap();
        assert_eq!(other.session_revoked("u2").unwrap(), Some(false));
    }

    /// The purge deletes in bounded steps, only sessions every verifier has
    /// forgotten, and leaves no tombstone for them: a verifier reads none of
    /// a mass purge. A session deleted sooner still leaves one.
    #[test]
    fn the_purge_takes_bounded_steps_and_leaves_no_tombstones() {
        let dir = TestDir::new("store-purge");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        // The trigger reads the wall clock: so must the test.
        let now = crate::unix_now();
        let (step, old) = (1000, 1010);
        for i in 0..old {
            store
                .create_session(
                    &session(&format!("old{i}"), now - FORGOTTEN_AFTER - 1),
                    usize::MAX,
                )
                .unwrap();
        }
        store
            .create_session(&session("recent", now - 10), usize::MAX)
            .unwrap();
        store
            .create_session(&session("live", now + 3600), usize::MAX)
            .unwrap();
        assert_eq!(store.purge_expired(now, step).unwrap(), step);
        assert_eq!(store.purge_expired(now, step).unwrap(), 10);
        assert_eq!(store.purge_expired(now, step).unwrap(), 0);
        let left: i64 = store
            .conn
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 2, "the recently expired and the live one stay");
        let changes = store.session_changes(-1, None).unwrap();
        assert!(
            changes.deleted.is_empty(),
            "{:?}",
            &changes.deleted[..3.min(changes.deleted.len())]
        );
        // Deleting a session that has not been forgotten yet is news.
        let tx = store.conn.unchecked_transaction().unwrap();
        tx.execute("DELETE FROM sessions WHERE sid = 'recent'", [])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            store.session_changes(-1, None).unwrap().deleted,
            vec!["recent".to_owned()]
        );
    }

    /// Old tombstones go through their own index, whatever their number (a
    /// scan of them all ran once per purge step and throttled the purge), and
    /// the recent ones stay.
    #[test]
    fn old_tombstones_are_found_by_their_age_alone() {
        let dir = TestDir::new("store-tombstones");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {OLD_TOMBSTONES}"))
            .unwrap()
            .query_map([0], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH session_deletions USING INDEX session_deletions_at (at<?)"]
        );
        let now = 1_800_000_000;
        for (seq, at) in [(1, now - TOMBSTONE_KEEP - 5), (2, now - TOMBSTONE_KEEP - 1)]
            .into_iter()
            .chain([(3, now - TOMBSTONE_KEEP), (4, now)])
        {
            store
                .conn
                .execute(
                    "INSERT INTO session_deletions (seq, sid, at) VALUES (?1, 'x', ?2)",
                    [seq, at],
                )
                .unwrap();
        }
        assert_eq!(store.purge_tombstones(now).unwrap(), 2);
        assert_eq!(store.purge_tombstones(now).unwrap(), 0);
        let left: Vec<i64> = store
            .conn
            .prepare("SELECT seq FROM session_deletions ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, [3, 4]);
    }

    /// A verifier's read of the changed sessions never looks a row up in the
    /// table (10 000 of those after a burst were 11 ms on its core).
    #[test]
    fn the_changed_sessions_are_read_from_one_index() {
        let dir = TestDir::new("store-changes-plan");
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CHANGED_ROWS}"))
            .unwrap()
            .query_map([0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH sessions USING COVERING INDEX sessions_change_state (change_seq>?)"]
        );
    }

    /// A bounded read of the changes gives all of them, or says there are
    /// more, counting changed rows and deletions each against the limit.
    #[test]
    fn a_shared_read_gives_up_when_asked() {
        let dir = TestDir::new("store-give-up");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let count =
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
                     SELECT count(*) FROM n";
        let give_up = Arc::new(AtomicBool::new(false));
        store.share_the_core(Some(Arc::clone(&give_up))).unwrap();
        let counted: i64 = store.conn.query_row(count, [], |r| r.get(0)).unwrap();
        assert_eq!(counted, 100_000);
        give_up.store(true, Ordering::Relaxed);
        let e = Error::from(
            store
                .conn
                .query_row(count, [], |r| r.get::<_, i64>(0))
                .unwrap_err(),
        );
        assert!(e.is_interrupted(), "{e}");
        store.share_the_core(None).unwrap();
        let counted: i64 = store.conn.query_row(count, [], |r| r.get(0)).unwrap();
        assert_eq!(counted, 100_000);
    }

    #[test]
    fn few_session_changes_are_all_or_nothing() {
        let dir = softphone_testkit::TestDir::new("store-few-changes");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let now = 1_800_000_000;
        let start = store.session_changes(-1, None).unwrap().head;
        for i in 0..5 {
            store
                .create_session(&session(&format!("s{i}"), now + 3600), usize::MAX)
                .unwrap();
        }
        let few = store.few_session_changes(start, 5).unwrap().unwrap();
        let all = store.session_changes(start, None).unwrap();
        assert_eq!(few.rows.len(), 5);
        assert_eq!((few.head, few.rows.len()), (all.head, all.rows.len()));
        assert!(store.few_session_changes(start, 4).unwrap().is_none());
        // Deletions count on their own.
        let tx = store.conn.unchecked_transaction().unwrap();
        tx.execute("DELETE FROM sessions WHERE sid IN ('s0', 's1')", [])
            .unwrap();
        tx.commit().unwrap();
        let few = store.few_session_changes(start, 3).unwrap().unwrap();
        assert_eq!((few.rows.len(), few.deleted.len()), (3, 2));
        assert!(store.few_session_changes(start, 1).unwrap().is_none());
        assert_eq!(
            store
                .few_session_changes(few.head, 0)
                .unwrap()
                .unwrap()
                .rows
                .len(),
            0
        );
    }

    /// A login's look for the sessions over the cap reads the user's live
    /// sessions only, in the order it wants, however many revoked ones the
    /// user has; and it still finds the right ones.
    #[test]
    fn the_cap_reads_only_the_users_live_sessions() {
        let dir = softphone_testkit::TestDir::new("store-cap");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let now = 1_800_000_000;
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {OVER_THE_CAP}"))
            .unwrap()
            .query_map(params!["201", "x", 1], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH sessions USING COVERING INDEX sessions_user (username=? AND revoked_seq=?)"]
        );
        // 40 logins with a cap of 3: 37 revoked, the newest 3 live.
        for i in 0..40 {
            let sid = format!("s{i:02}");
            let mut new = session(&sid, now + 3600);
            new.created = now + i;
            store.create_session(&new, 3).unwrap();
        }
        let live: Vec<String> = store
            .active_sessions(now)
            .unwrap()
            .into_iter()
            .map(|s| s.sid)
            .collect();
        assert_eq!(live.len(), 3, "{live:?}");
        for sid in ["s37", "s38", "s39"] {
            assert!(live.contains(&sid.to_owned()), "{live:?}");
        }
    }

    /// Migration 4's trigger names the same hour as [`FORGOTTEN_AFTER`].
    #[test]
    fn the_deletion_trigger_forgets_what_the_purge_deletes() {
        assert!(MIGRATIONS[3].contains(&format!("AS INTEGER) - {FORGOTTEN_AFTER}\n")));
    }

    /// The issuer's metrics index counters by reason.
    #[test]
    fn every_revoke_reason_has_its_index_and_a_name_of_its_own() {
        let mut names = std::collections::HashSet::new();
        for (i, reason) in RevokeReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
            assert!(names.insert(reason.as_str()), "{reason:?}");
        }
    }

    /// A login beyond the cap revokes the user's oldest active sessions, never
    /// the new one and never another user's, in the login's own transaction.
    #[test]
    fn sessions_beyond_the_per_user_cap_are_revoked_oldest_first() {
        let dir = TestDir::new("store-session-cap");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let mut login = |sid: &str, user: &str, created: i64, cap: usize| {
            store
                .create_session(
                    &NewSession {
                        sid,
                        user_id: 1,
                        username: user,
                        role: "user",
                        cred_tag: "t",
                        created,
                        expires: created + 3600,
                        refresh_jti: "r",
                        password_hash: None,
                    },
                    cap,
                )
                .unwrap()
        };
        let revoked = |n| Created::Session { revoked: n };
        assert_eq!(login("a1", "201", 100, 3), revoked(0));
        assert_eq!(login("b1", "202", 101, 3), revoked(0));
        assert_eq!(login("a2", "201", 102, 3), revoked(0));
        assert_eq!(login("a3", "201", 103, 3), revoked(0));
        assert_eq!(login("a4", "201", 104, 3), revoked(1));
        // A lower cap takes the two oldest left; the new session stays even
        // when its clock is behind.
        assert_eq!(login("a5", "201", 50, 2), revoked(2));
        let active: Vec<String> = store
            .active_sessions(0)
            .unwrap()
            .into_iter()
            .map(|s| s.sid)
            .collect();
        for (sid, live) in [
            ("a1", false),
            ("a2", false),
            ("a3", false),
            ("a4", true),
            ("a5", true),
            ("b1", true),
        ] {
            assert_eq!(active.contains(&sid.to_owned()), live, "{sid}: {active:?}");
            assert_eq!(store.session_active(sid).unwrap(), live, "{sid}");
        }
    }

    /// Logins within one second are ended in the order they were made,
    /// whatever refreshed since (a refresh takes a new change number).
    #[test]
    fn logins_within_a_second_end_in_login_order_after_refreshes() {
        let dir = TestDir::new("store-cap-same-second");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let now = 1_800_000_000;
        for sid in ["a1", "a2", "a3"] {
            store.create_session(&session(sid, now + 3600), 3).unwrap();
        }
        assert!(matches!(
            store
                .rotate_refresh("a1", "r", "r2", now + 7200, now)
                .unwrap(),
            Rotation::Rotated
        ));
        assert_eq!(
            store.create_session(&session("a4", now + 3600), 3).unwrap(),
            Created::Session { revoked: 1 }
        );
        for (sid, live) in [("a1", false), ("a2", true), ("a3", true), ("a4", true)] {
            assert_eq!(store.session_active(sid).unwrap(), live, "{sid}");
        }
    }

    /// A refresh changes no entry of the index the cap reads: one commit of
    /// 64 refreshes of 64 users among 2 000 writes a handful of log pages,
    /// not one per user (migration 6's index, which held the change number,
    /// took 68 at a million sessions).
    #[test]
    fn refreshes_of_many_users_write_few_log_pages() {
        let dir = TestDir::new("store-refresh-pages");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        let now = 1_800_000_000;
        let user = |i: usize| format!("{}", 200_000 + i % 2_000);
        store.conn.execute_batch("BEGIN").unwrap();
        for i in 0..20_000 {
            store
                .conn
                .prepare_cached(
                    "INSERT INTO sessions (sid, user_id, username, role, cred_tag, created, expires, refresh_cur, change_seq)
                     VALUES (?1, 1, ?2, 'user', 't', ?3, ?4, 'r', 1)",
                )
                .unwrap()
                .execute(params![format!("s{i:05}"), user(i), now - 1, now + 86_400])
                .unwrap();
        }
        store.conn.execute_batch("COMMIT").unwrap();
        let refreshing: Vec<(String, String)> = (0..64)
            .map(|u| (format!("t{u:02}"), user(u * 31)))
            .collect();
        for (sid, username) in &refreshing {
            let new = NewSession {
                sid,
                username,
                ..session(sid, now + 3600)
            };
            store.create_session(&new, usize::MAX).unwrap();
        }
        // The log's length in pages (a passive checkpoint reports it), then
        // emptied.
        let log_pages = |store: &Store| -> i64 {
            let pages = store
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap();
            store
                .conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            pages
        };
        log_pages(&store);
        store.begin_unsynced_batch().unwrap();
        for (sid, _) in &refreshing {
            let rotated = store
                .rotate_refresh(sid, "r", "r2", now + 7200, now)
                .unwrap();
            assert!(matches!(rotated, Rotation::Rotated), "{sid}");
        }
        store.end_batch().unwrap();
        let pages = log_pages(&store);
        eprintln!("measured: {pages} log pages for 64 refreshes");
        assert!(pages < 16, "{pages} log pages for 64 refreshes");
    }

    /// A login checked against a built-in user's hash makes no session when the
    /// password or the account changed meanwhile; revoking by credential tag
    /// ends exactly that credential's sessions.
    #[test]
    fn sessions_follow_the_credential_they_were_opened_with() {
        let dir = TestDir::new("store-credential");
        let mut store = Store::open(&dir.path().join("softphone.db")).unwrap();
        store.add_user("201", "hash-1", "user", 1).unwrap();
        let login = |store: &mut Store, sid: &str, tag: &str, hash: Option<&str>| {
            store
                .create_session(
                    &NewSession {
                        sid,
                        user_id: 1,
                        username: "201",
                        role: "user",
                        cred_tag: tag,
                        created: 10,
                        expires: 3600,
                        refresh_jti: "r",
                        password_hash: hash,
                    },
                    usize::MAX,
                )
                .unwrap()
        };
        let made = Created::Session { revoked: 0 };
        assert_eq!(login(&mut store, "s1", "t1", Some("hash-1")), made);
        store.set_password("201", "hash-2", 20).unwrap();
        assert_eq!(
            login(&mut store, "s2", "t1", Some("hash-1")),
            Created::CredentialChanged
        );
        assert_eq!(login(&mut store, "s3", "t2", Some("hash-2")), made);
        store.set_disabled("201", true, 30).unwrap();
        assert_eq!(
            login(&mut store, "s4", "t2", Some("hash-2")),
            Created::CredentialChanged
        );
        assert!(!store.session_active("s2").unwrap());
        assert!(!store.session_active("s4").unwrap());

        // External sources: sessions carry the tag, and only that tag's end.
        assert_eq!(login(&mut store, "x1", "old", None), made);
        assert_eq!(login(&mut store, "x2", "new", None), made);
        let pairs = store.active_credentials(0).unwrap();
        assert!(pairs.contains(&("201".into(), "old".into())), "{pairs:?}");
        assert_eq!(
            store
                .revoke_credential("201", "old", RevokeReason::CredentialsChanged, 40)
                .unwrap(),
            1
        );
        assert!(!store.session_active("x1").unwrap());
        assert!(store.session_active("x2").unwrap());
    }

    /// A database made by schema 1 is upgraded in place, and the verifier's view
    /// of it (every live session, revoked or not) is right afterwards.
    #[test]
    fn schema_1_databases_upgrade() {
        let dir = TestDir::new("store-schema-1");
        let path = dir.path().join("softphone.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO sessions (sid, user_id, username, role, cred_tag, created, expires, refresh_cur, revoked_seq)
                 VALUES ('live', 1, '201', 'user', 't', 100, 5000, 'r', NULL),
                        ('dead', 1, '201', 'user', 't', 100, 5000, 'r', 1);
                 UPDATE meta SET value = 1 WHERE key = 'revoke_seq';",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let mut states = store.changes_since(-1, 1000).unwrap();
        states.sort_by(|a, b| a.sid.cmp(&b.sid));
        assert_eq!(
            states
                .iter()
                .map(|s| (s.sid.as_str(), s.revoked))
                .collect::<Vec<_>>(),
            vec![("dead", true), ("live", false)]
        );
        // New changes come after the old ones.
        store
            .revoke_session("live", RevokeReason::Logout, 1000)
            .unwrap();
        let after = store.changes_since(1, 1000).unwrap();
        assert_eq!(after.len(), 1);
        assert!(after[0].revoked && after[0].seq > 1);
        assert!(Store::open_read_only(&path).is_ok());
    }
}
