//! The sessions a token may belong to, in memory, kept in step with the database
//! through the epoch: every session that exists and has not expired, with
//! whether it was revoked. A validly signed token of a session the database does
//! not know (purged, or minted with a leaked key) is refused like a revoked one,
//! as the issuer refuses it.
//!
//! Per request: one atomic load of the shared epoch and, for a token not seen
//! before, one hash lookup. Only when the epoch moved (a login, a refresh, a
//! revocation) does a request read the changed rows from SQLite, so a logout is
//! refused from the very next request after its 200.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use softphone_shared::epoch::Epoch;
use softphone_shared::store::Store;
use softphone_shared::token::Validation;

use crate::Result;

/// "Known and not revoked as of set version N", kept with a cached token.
#[derive(Debug, Default)]
pub struct Memo(AtomicU64);

/// The revocation list could not be read: callers fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

struct Reader {
    store: Store,
    last_seq: i64,
}

pub struct Revocations {
    /// Our own mapping of the epoch file, read lock-free on every request.
    epoch: Epoch,
    /// The epoch value the set is known to be current for.
    synced: AtomicU64,
    /// Set when the epoch file was replaced under us: from then on every request
    /// asks SQLite (slower, still correct) until the verifier restarts.
    direct: AtomicBool,
    /// Reading revocations failed last time (reported once, not per request).
    failing: AtomicBool,
    /// sid → (expires, revoked).
    sessions: RwLock<HashMap<Box<str>, (i64, bool)>>,
    /// Bumped after every change to `sessions`; starts at 1 so a fresh
    /// [`Memo`] (0) never matches.
    version: AtomicU64,
    reader: Mutex<Reader>,
    db_path: PathBuf,
    /// Tokens live `leeway` seconds past `exp`; so must their revocations.
    leeway: i64,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("db", &self.db_path)
            .field("synced", &self.synced)
            .finish()
    }
}

impl Revocations {
    /// Opens the database read-only and loads every live revocation.
    pub fn open(db_path: &Path, now: i64, leeway: i64) -> Result<Revocations> {
        let store = Store::open_read_only(db_path)?;
        let epoch = Epoch::open(&Epoch::path_for(db_path))?;
        let revocations = Revocations {
            synced: AtomicU64::new(0),
            epoch,
            direct: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            sessions: RwLock::new(HashMap::new()),
            version: AtomicU64::new(1),
            reader: Mutex::new(Reader {
                store,
                last_seq: -1,
            }),
            db_path: db_path.to_path_buf(),
            leeway,
        };
        revocations.load(now, revocations.epoch.load(), true)?;
        Ok(revocations)
    }

    /// Whether a token of `sid` must be refused: the session was revoked, or is
    /// not known at all. Brings the list up to date first if the epoch moved.
    pub fn is_revoked(&self, sid: &str, now: i64) -> Result<bool, Unavailable> {
        self.is_revoked_memo(sid, &Memo::default(), now)
    }

    /// As [`is_revoked`](Self::is_revoked), remembering in `memo` (kept with a
    /// cached token) that `sid` was usable as of the set's current version:
    /// while nothing is pending and the set has not changed since, the answer
    /// needs no lookup at all.
    pub fn is_revoked_memo(&self, sid: &str, memo: &Memo, now: i64) -> Result<bool, Unavailable> {
        if self.direct.load(Ordering::Relaxed) {
            return self.ask_database(sid);
        }
        if self.epoch.load() != self.synced.load(Ordering::Acquire) {
            self.sync(now)?;
        } else if memo.0.load(Ordering::Acquire) == self.version.load(Ordering::Acquire) {
            return Ok(false);
        }
        // Read the version before the set: an insertion racing with us bumps it
        // after inserting, so a stale memo can only cause another lookup.
        let version = self.version.load(Ordering::Acquire);
        let revoked = match self.sessions.read() {
            Ok(sessions) => sessions.get(sid).is_none_or(|&(_, revoked)| revoked),
            Err(_) => return Err(Unavailable),
        };
        if !revoked {
            memo.0.store(version, Ordering::Release);
        }
        Ok(revoked)
    }

    /// Reads revocations newer than the last seen one. The epoch is read *before*
    /// the query, so anything committed before that bump is in the result.
    #[cold]
    pub fn sync(&self, now: i64) -> Result<(), Unavailable> {
        let epoch = self.epoch.load();
        if epoch == self.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        self.noted(self.load(now, epoch, false))
    }

    /// Reports a failing read once (not per request) and its recovery.
    fn noted(&self, result: softphone_shared::Result<()>) -> Result<(), Unavailable> {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    eprintln!("softphone-verifier: revocations readable again");
                }
                Ok(())
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!("softphone-verifier: cannot read revocations, refusing tokens: {e}");
                }
                Err(Unavailable)
            }
        }
    }

    /// Reads the revocations committed since the last read and records that the
    /// set is current for `epoch`, which the caller read *before* calling. Unless
    /// `force`d, it does nothing when another thread already got to `epoch`.
    ///
    /// `synced` only ever takes an epoch value read before a completed query:
    /// any other value (arithmetic on it, say) could equal a bump not yet read.
    fn load(&self, now: i64, epoch: u64, force: bool) -> softphone_shared::Result<()> {
        let mut reader = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !force && epoch == self.synced.load(Ordering::Acquire) {
            return Ok(()); // another worker just did it
        }
        let fresh = reader
            .store
            .changes_since(reader.last_seq, self.validation(now).oldest_live_exp())?;
        if let Some(last) = fresh.last() {
            reader.last_seq = last.seq;
            let mut set = self
                .sessions
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for r in fresh {
                set.insert(r.sid.into_boxed_str(), (r.expires, r.revoked));
            }
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        self.synced.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Background upkeep, about once a second: forget revocations whose sessions
    /// have expired, notice a replaced epoch file, and re-read from the database
    /// even without a bump (a safety net for hand edits).
    pub fn maintain(&self, now: i64) {
        if let Ok(mut set) = self.sessions.write() {
            let validation = self.validation(now);
            set.retain(|_, (expires, _)| !validation.expired(*expires));
        }
        if self.epoch.replaced() && !self.direct.swap(true, Ordering::Relaxed) {
            eprintln!(
                "verifier: {} was replaced; checking every request against the database until restart",
                self.epoch.path().display()
            );
        }
        // Re-read even without a bump: a safety net for rows changed by hand.
        let epoch = self.epoch.load();
        let _ = self.noted(self.load(now, epoch, true));
    }

    /// A session lives as long as its tokens: `leeway` past its expiry.
    fn validation(&self, now: i64) -> Validation {
        Validation {
            now,
            leeway: self.leeway,
        }
    }

    fn ask_database(&self, sid: &str) -> Result<bool, Unavailable> {
        let reader = self.reader.lock().map_err(|_| Unavailable)?;
        // A session we never recorded is treated as revoked: fail closed.
        reader
            .store
            .session_active(sid)
            .map(|active| !active)
            .map_err(|_| Unavailable)
    }

    pub fn len(&self) -> usize {
        self.sessions.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use softphone_shared::store::RevokeReason;

    use super::*;

    /// A revocation committed just before the background upkeep runs must still
    /// be seen by the next request (a bug once let the upkeep mark the set
    /// current for a bump it never read, for up to a second).
    #[test]
    fn upkeep_never_hides_a_fresh_revocation() {
        let dir = softphone_testkit::TestDir::new("revocations");
        let db = dir.path().join("softphone.db");
        let now = 1_800_000_000;
        let mut writer = Store::open(&db).unwrap();
        for i in 0..50 {
            softphone_testkit::insert_session(&mut writer, &format!("s{i}"), now);
        }
        let revocations = Revocations::open(&db, now, 30).unwrap();
        for i in 0..50 {
            let sid = format!("s{i}");
            assert!(!revocations.is_revoked(&sid, now).unwrap());
            writer
                .revoke_session(&sid, RevokeReason::Logout, now)
                .unwrap();
            revocations.maintain(now);
            assert!(
                revocations.is_revoked(&sid, now).unwrap(),
                "revocation of {sid} hidden"
            );
        }
        // A session the database does not know is refused.
        assert!(revocations.is_revoked("never-created", now).unwrap());
        // With a memo, as cached tokens use it: still seen at once.
        let memo = Memo::default();
        softphone_testkit::insert_session(&mut writer, "memo", now);
        assert!(!revocations.is_revoked_memo("memo", &memo, now).unwrap());
        assert!(!revocations.is_revoked_memo("memo", &memo, now).unwrap());
        writer
            .revoke_session("memo", RevokeReason::Logout, now)
            .unwrap();
        assert!(revocations.is_revoked_memo("memo", &memo, now).unwrap());
        // And without the upkeep: the epoch alone brings it in.
        softphone_testkit::insert_session(&mut writer, "last", now);
        assert!(!revocations.is_revoked("last", now).unwrap());
        writer
            .revoke_session("last", RevokeReason::Logout, now)
            .unwrap();
        assert!(revocations.is_revoked("last", now).unwrap());
    }
}
