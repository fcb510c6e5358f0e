//! The sessions a token may belong to, in memory, kept in step with the database:
//! every session that exists and has not expired, with whether it was revoked.
//! A validly signed token of a session the database does not know (purged,
//! deleted, or minted with a leaked key) is refused like a revoked one, as the
//! issuer refuses it.
//!
//! Per request: one atomic load of the shared epoch and, for a token not seen
//! before, one hash lookup. Only when the epoch moved (a login, a refresh, a
//! revocation) does a request read the changed rows from SQLite, so a logout is
//! refused from the very next request after its 200.
//!
//! Changes nobody announces (made by hand in `sqlite3`, a restored backup) are
//! found by the upkeep, about once a second: the schema's triggers give every
//! change, deletions included, a number of the change sequence, so the
//! upkeep's incremental read sees them; a sequence that went backwards (an older
//! copy restored) or, every few seconds, counts of live and revoked sessions
//! that differ from ours (anything that escaped the sequence) make it re-read
//! every session, into a new set built off-lock and swapped in.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::Duration;

use softphone_shared::epoch::{Epoch, FileState};
use softphone_shared::store::{SessionChanges, Store};
use softphone_shared::token::Validation;

use crate::Result;
use crate::session_set::{Builder, Change, SessionSet, sid_text};

/// How long after a change of doorbell (a damaged, rewritten or followed epoch
/// file) every request is checked against the database: a process started
/// meanwhile may ring a bell we do not read until its own upkeep (about a
/// second) follows the file.
const DISTRUST_SECONDS: i64 = 3;
/// How often the upkeep compares the database's counts of live and revoked
/// sessions with ours.
const COUNT_CHECK_SECONDS: i64 = 5;
/// Changed rows (and deleted ones) a request, or the upkeep, applies in place
/// at most. More (a user with thousands of sessions disabled) are a burst:
/// applied on a worker, 10 000 held up every request of that worker's
/// coroutines for most of 10 ms. A burst is read and shown to lookups at
/// once instead ([`Revocations::show`]), and settled by the upkeep, a few
/// rows at a time ([`Revocations::settle`]).
const REQUEST_APPLIES_AT_MOST: usize = 256;
/// Changed rows a request reads and shows itself, at most, and as many
/// deleted ones (10 000 took 2.0-2.4 ms to read and were shown within 3.6 ms
/// at a million sessions, while the other workers' requests asked the
/// database): the thread of the upkeep, woken for it instead, waited for
/// the core up to 4 ms on a busy one (a SCHED_BATCH wake-up preempts
/// nothing), every request meanwhile asking the database at several times
/// its usual cost. More (a database restored, a million sessions revoked)
/// are the upkeep's, woken for them.
const REQUEST_SHOWS_AT_MOST: usize = 16_384;
/// Connections for requests that ask the database by key: more than the
/// workers a verifier runs on a small machine.
const ASKERS: usize = 4;
/// Rows of a burst that cannot be shown (ids the issuer does not make)
/// applied under one hold of the set's write lock: requests reading the set
/// wait for one chunk at most, not for a whole burst.
const CHUNK: usize = 1024;
/// Shown changes the upkeep settles between two pauses: a few dozen
/// microseconds of work at a million sessions (each is a lookup in memory
/// that is mostly not in the cache). A burst's 10 000 applied in chunks of
/// [`CHUNK`] held the core the workers share in stretches of up to 3.4 ms
/// (under SCHED_BATCH a waiting worker gets it back only when the stretch
/// ends), and the requests meanwhile saw their p99 at 3 to 12 times its
/// usual in two runs out of nine; in pieces of 128, every piece still added
/// about 0.2 ms to the requests in flight.
const PIECE: usize = 32;
/// Pieces a burst is settled in, at most: larger bursts settle in larger
/// pieces, so that the upkeep's next round (the doorbell's file, changes
/// nobody announced, the key file) waits about a second on a busy core, not
/// minutes for a million rows.
const PIECES_AT_MOST: usize = 320;
/// How long the upkeep sleeps between two pieces. A sleep, not a yield, so
/// that the core goes to the workers for sure (a yield often returned at
/// once); on a busy core the thread is back at the kernel's next tick (a
/// burst of 10 000 settled over 0.8-0.9 s there), and in tens of
/// milliseconds on an idle one.
const PAUSE: Duration = Duration::from_micros(50);
const WHO: &str = "softphone-verifier";

/// "Known and not revoked as of set version N", kept with a cached token.
#[derive(Debug, Default)]
pub struct Memo(AtomicU64);

/// Whether [`Revocations::sync`] brought the set up to date, or found the
/// reader busy (or more changes waiting than a request reads or shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    Yes,
    Busy,
}

/// Who reads the changes: a request (up to a burst it shows, else none), or
/// the upkeep (all, comparing the counts when asked); `epoch` was read before
/// the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Request { epoch: u64 },
    Upkeep { count: bool, epoch: u64 },
}

/// What [`Revocations::load`] did.
#[derive(Debug)]
enum Loaded {
    All,
    /// More than a request reads, or a burst it cannot show: nothing was
    /// applied, for the upkeep (which the caller wakes).
    LeftToUpkeep,
    /// A burst, shown to lookups: the upkeep settles it once it has given
    /// the reader back ([`Revocations::settle`]).
    Shown(SessionChanges),
}

impl Loaded {
    fn shown(self) -> Option<SessionChanges> {
        match self {
            Loaded::Shown(changes) => Some(changes),
            Loaded::All | Loaded::LeftToUpkeep => None,
        }
    }
}

/// The revocation list could not be read: callers fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What the sessions say about a token's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Usable,
    Revoked,
    /// Not in the database (purged, deleted, never made: a leaked key?). Refused
    /// like a revoked one, and told apart in the log and the metrics.
    Unknown,
}

/// How the reads of the database went, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Reads that brought the set up to date, the first one at start-up included.
    pub succeeded: u64,
    pub failed: u64,
    /// When the last successful one was made (unix seconds).
    pub last_success: i64,
}

struct Reader {
    store: Store,
    /// The change sequence number the set is current for.
    last_seq: i64,
    /// When the counts were last compared (unix seconds).
    counted_at: i64,
}

pub struct Revocations {
    /// The shared doorbell, read lock-free on every request.
    epoch: Epoch,
    /// The epoch value the set is known to be current for.
    synced: AtomicU64,
    /// The epoch value whose changes a request found too many and left to
    /// the upkeep: until the set is current, requests ask the database
    /// instead of each reading the first few changes again.
    left_to_upkeep: AtomicU64,
    /// Set while the doorbell cannot be trusted (see [`DISTRUST_SECONDS`]):
    /// every request asks SQLite (slower, still correct).
    direct: AtomicBool,
    /// Until when (unix seconds) `direct` stays set.
    distrust_until: AtomicI64,
    /// Reading revocations failed last time (reported once, not per request).
    failing: AtomicBool,
    sessions: RwLock<SessionSet>,
    /// Bumped after every change to `sessions`; starts at 1 so a fresh
    /// [`Memo`] (0) never matches.
    version: AtomicU64,
    reader: Mutex<Reader>,
    /// Connections of their own for requests that ask the database directly
    /// (while the doorbell is distrusted, while the reader is busy, or while
    /// changes a request left to the upkeep wait): each only ever held for
    /// one lookup by key, and several, so
    /// that the workers do not queue on one (a worker blocked on a lock holds
    /// up every request of its coroutines).
    askers: Vec<Mutex<Store>>,
    /// Set by a request that found the upkeep holding the reader: the
    /// upkeep's counts (a pass over every session, most of a second at a
    /// million under load) give up and are tried again at the next round,
    /// rather than keep every request asking the database meanwhile.
    reader_wanted: Arc<AtomicBool>,
    db_path: PathBuf,
    /// Tokens live `leeway` seconds past `exp`; so must their revocations.
    leeway: i64,
    /// How many usable sessions became unusable while we watched.
    ended: AtomicU64,
    /// Those sessions, until [`crate::subscriptions`] takes them to end their
    /// live subscriptions.
    ended_outbox: Mutex<Vec<Box<str>>>,
    syncs_succeeded: AtomicU64,
    syncs_failed: AtomicU64,
    last_sync_success: AtomicI64,
    /// Set by a request that left changes to the upkeep, or showed a burst
    /// for it to settle; the upkeep's thread waits on it between its rounds.
    upkeep_wanted: Mutex<bool>,
    upkeep_bell: Condvar,
    /// Bursts a request showed, for the upkeep to settle.
    backlog: Mutex<Vec<SessionChanges>>,
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
    /// Opens the database read-only and loads every live session.
    pub fn open(db_path: &Path, now: i64, leeway: i64) -> Result<Revocations> {
        let store = Store::open_read_only(db_path)?;
        let epoch = Epoch::open(&Epoch::path_for(db_path))?;
        // A bell nobody rang before us: processes started earlier may still ring
        // another one until they follow the file.
        let distrust = epoch.created();
        let revocations = Revocations {
            synced: AtomicU64::new(0),
            left_to_upkeep: AtomicU64::new(0),
            epoch,
            direct: AtomicBool::new(distrust),
            distrust_until: AtomicI64::new(if distrust { now + DISTRUST_SECONDS } else { 0 }),
            failing: AtomicBool::new(false),
            sessions: RwLock::new(SessionSet::default()),
            version: AtomicU64::new(1),
            reader_wanted: Arc::new(AtomicBool::new(false)),
            askers: (0..ASKERS)
                .map(|_| Store::open_read_only(db_path).map(Mutex::new))
                .collect::<softphone_shared::Result<_>>()?,
            reader: Mutex::new(Reader {
                store,
                last_seq: -1,
                counted_at: now,
            }),
            db_path: db_path.to_path_buf(),
            leeway,
            ended: AtomicU64::new(0),
            ended_outbox: Mutex::new(Vec::new()),
            syncs_succeeded: AtomicU64::new(0),
            syncs_failed: AtomicU64::new(0),
            last_sync_success: AtomicI64::new(now),
            upkeep_wanted: Mutex::new(false),
            upkeep_bell: Condvar::new(),
            backlog: Mutex::new(Vec::new()),
        };
        {
            let epoch = revocations.epoch.load();
            let mut reader = revocations.lock_reader();
            revocations.reload_all(&mut reader, now)?;
            revocations.synced.store(epoch, Ordering::Release);
        }
        let _ = revocations.noted(Ok(()), now);
        Ok(revocations)
    }

    /// Whether a token of `sid` must be refused: the session was revoked, or is
    /// not known at all. Brings the list up to date first if the epoch moved.
    pub fn is_revoked(&self, sid: &str, now: i64) -> Result<bool, Unavailable> {
        Ok(self.standing(sid, &Memo::default(), now)? != Standing::Usable)
    }

    /// What the sessions say about `sid`, remembering in `memo` (kept with a
    /// cached token) that it was usable as of the set's current version:
    /// while the doorbell has not rung and the set has not changed since, the
    /// answer needs no lookup at all.
    pub fn standing(&self, sid: &str, memo: &Memo, now: i64) -> Result<Standing, Unavailable> {
        if self.direct.load(Ordering::Relaxed) {
            return self.ask_database(sid);
        }
        if self.epoch.load() != self.synced.load(Ordering::Acquire) {
            if self.sync(now)? == Synced::Busy {
                return self.ask_database(sid);
            }
        } else if memo.0.load(Ordering::Acquire) == self.version.load(Ordering::Acquire) {
            return Ok(Standing::Usable);
        }
        // Read the version before the set: an insertion racing with us bumps it
        // after inserting, so a stale memo can only cause another lookup.
        let version = self.version.load(Ordering::Acquire);
        let cutoff = self.validation(now).oldest_live_exp();
        let standing = match self.sessions.read() {
            Ok(sessions) => sessions.standing(sid, cutoff),
            Err(_) => return Err(Unavailable),
        };
        if standing == Standing::Usable {
            memo.0.store(version, Ordering::Release);
        }
        Ok(standing)
    }

    /// Reads the changes since the last read. The epoch is read *before* the
    /// query, so anything committed before that bump is in the result.
    ///
    /// A request never waits for the reader: the upkeep may hold it for a
    /// pass over a million sessions (the counts, a merge), and a coroutine
    /// that blocks holds up every request of its worker thread. When the
    /// reader is busy, or more changes wait than a request reads (or shows),
    /// the request asks the database about its own session. A burst it
    /// shows goes to the upkeep to settle.
    #[cold]
    fn sync(&self, now: i64) -> Result<Synced, Unavailable> {
        let epoch = self.epoch.load();
        if epoch == self.synced.load(Ordering::Acquire) {
            return Ok(Synced::Yes);
        }
        if epoch == self.left_to_upkeep.load(Ordering::Acquire) {
            return Ok(Synced::Busy);
        }
        let mut reader = match self.reader.try_lock() {
            Ok(reader) => reader,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // The upkeep's counts give up for this.
                self.reader_wanted.store(true, Ordering::Relaxed);
                return Ok(Synced::Busy);
            }
        };
        if epoch == self.synced.load(Ordering::Acquire) {
            return Ok(Synced::Yes); // another worker just did it
        }
        match self.load(&mut reader, now, Pass::Request { epoch }) {
            Ok(Loaded::All) => {
                self.synced.store(epoch, Ordering::Release);
                self.noted(Ok(()), now).map(|()| Synced::Yes)
            }
            // `show` marked the set current.
            Ok(Loaded::Shown(changes)) => {
                self.lock_backlog().push(changes);
                drop(reader);
                self.wake_upkeep();
                self.noted(Ok(()), now).map(|()| Synced::Yes)
            }
            Ok(Loaded::LeftToUpkeep) => {
                self.left_to_upkeep.store(epoch, Ordering::Release);
                drop(reader);
                self.wake_upkeep();
                Ok(Synced::Busy)
            }
            Err(e) => self.noted(Err(e), now).map(|()| Synced::Yes),
        }
    }

    /// Has the upkeep's thread run now rather than at its next round.
    fn wake_upkeep(&self) {
        let mut wanted = self
            .upkeep_wanted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *wanted = true;
        self.upkeep_bell.notify_one();
    }

    /// Waits until a request wants the upkeep, or `round` passed: what the
    /// upkeep's thread does between its calls of [`Revocations::maintain`].
    pub fn wait_for_upkeep(&self, round: Duration) {
        let wanted = self
            .upkeep_wanted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mut wanted, _) = self
            .upkeep_bell
            .wait_timeout_while(wanted, round, |wanted| !*wanted)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *wanted = false;
    }

    /// Counts every read of the database (each request's that found the epoch
    /// moved, the upkeep's, the first), and reports a failing read once (not
    /// per request) and its recovery.
    fn noted(&self, result: softphone_shared::Result<()>, now: i64) -> Result<(), Unavailable> {
        match result {
            Ok(()) => {
                self.syncs_succeeded.fetch_add(1, Ordering::Relaxed);
                self.last_sync_success.store(now, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    eprintln!("{WHO}: revocations readable again");
                }
                Ok(())
            }
            Err(e) => {
                self.syncs_failed.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!("{WHO}: cannot read revocations, refusing tokens: {e}");
                }
                Err(Unavailable)
            }
        }
    }

    fn lock_reader(&self) -> MutexGuard<'_, Reader> {
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies the changes committed since the last read, or shows them when
    /// they are a burst, for the upkeep to settle. A request reads a burst it
    /// may show at most (else nothing, and says so); the upkeep reads all,
    /// applies in chunks what it cannot show, and with `count` it also
    /// compares the counts of live and revoked sessions with the database's.
    /// Re-reads everything when the sequence went backwards or the counts
    /// differ.
    ///
    /// The caller sets `synced` only to an epoch value read before calling:
    /// any other value (arithmetic on it, say) could equal a bump not yet read.
    fn load(&self, reader: &mut Reader, now: i64, pass: Pass) -> softphone_shared::Result<Loaded> {
        let cutoff = self.validation(now).oldest_live_exp();
        let changes = match pass {
            Pass::Request { .. } => match reader
                .store
                .few_session_changes(reader.last_seq, REQUEST_SHOWS_AT_MOST)?
            {
                Some(changes) => changes,
                None => return Ok(Loaded::LeftToUpkeep),
            },
            Pass::Upkeep { count, .. } => reader
                .store
                .session_changes(reader.last_seq, count.then_some(cutoff))?,
        };
        if changes.head < reader.last_seq {
            eprintln!(
                "{WHO}: the change sequence went back from {} to {} (an older copy of the database restored?); re-reading every session",
                reader.last_seq, changes.head
            );
            return self.reload_all(reader, now).map(|()| Loaded::All);
        }
        // A burst (other workers' requests ask the database meanwhile): shown
        // to lookups at once, settled later. Its counts, if read, are not
        // compared: the sessions shown are not all where the counting looks
        // yet. A request leaves one it cannot show (ids the issuer does not
        // make) to the upkeep, which applies those in chunks.
        let (Pass::Request { epoch } | Pass::Upkeep { epoch, .. }) = pass;
        let burst = changes.rows.len() + changes.deleted.len() > REQUEST_APPLIES_AT_MOST;
        if burst && self.show(&changes, epoch, cutoff) {
            reader.last_seq = changes.head;
            return Ok(Loaded::Shown(changes));
        }
        if burst && matches!(pass, Pass::Request { .. }) {
            return Ok(Loaded::LeftToUpkeep);
        }
        let mut ended = Vec::new();
        for sids in changes.deleted.chunks(CHUNK) {
            let mut set = self.write_sessions();
            for sid in sids {
                if set.remove(sid, cutoff) == Change::Ended {
                    ended.push(sid.as_str().into());
                }
            }
            drop(set);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        for rows in changes.rows.chunks(CHUNK) {
            let mut set = self.write_sessions();
            for row in rows {
                // An expired row is recorded too: it reads as unknown, and the
                // next merge leaves it out.
                if set.set(&row.sid, row.expires, row.revoked, cutoff) == Change::Ended {
                    ended.push(row.sid.as_str().into());
                }
            }
            drop(set);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        reader.last_seq = changes.head;
        self.sessions_ended(&ended);
        if let Some(theirs) = changes.counts {
            // A pass over every session: under the read lock, which requests
            // share (we hold the reader, so no change can wait behind it).
            let ours = self.read_sessions().counts(cutoff);
            if theirs != ours {
                return self
                    .recount(reader, now, theirs, ours)
                    .map(|()| Loaded::All);
            }
        }
        Ok(Loaded::All)
    }

    /// Shows `changes` to lookups before they are settled, so that requests
    /// stop asking the database: the map is built under the read lock, which
    /// requests share, and put in place under the write lock in one step.
    /// Returns false (nothing shown) when an id is not one the issuer makes.
    fn show(&self, changes: &SessionChanges, epoch: u64, cutoff: i64) -> bool {
        let Some(pending) = self.read_sessions().pending(
            changes
                .rows
                .iter()
                .map(|r| (r.sid.as_str(), r.expires, r.revoked)),
            changes.deleted.iter().map(String::as_str),
        ) else {
            return false;
        };
        let ended = self.write_sessions().show(pending, cutoff);
        // Memos of tokens usable before are stale now.
        self.version.fetch_add(1, Ordering::AcqRel);
        // The changes are everything committed before `epoch` was read.
        self.synced.store(epoch, Ordering::Release);
        self.sessions_ended(
            &ended
                .iter()
                .map(|id| sid_text(id).into())
                .collect::<Vec<_>>(),
        );
        true
    }

    /// Settles the changes [`Revocations::show`] showed, a piece at a time
    /// with a pause after each: no request waits for this (the upkeep's next
    /// round does, see [`PIECES_AT_MOST`]). Lookups answer from the shown
    /// changes meanwhile, and as they answer the same once a change is
    /// settled, no memo goes stale. Done without the reader: requests read
    /// what is committed meanwhile, and a row of a session still shown
    /// settles it first ([`SessionSet::set`]). Sessions that ended are handed
    /// on piece by piece.
    fn settle(&self, changes: &SessionChanges, now: i64) {
        let cutoff = self.validation(now).oldest_live_exp();
        let rows = changes.deleted.len() + changes.rows.len();
        let piece = PIECE.max(rows.div_ceil(PIECES_AT_MOST));
        let mut sids = changes
            .deleted
            .iter()
            .chain(changes.rows.iter().map(|row| &row.sid))
            .peekable();
        let mut ended: Vec<Box<str>> = Vec::new();
        while sids.peek().is_some() {
            let mut set = self.write_sessions();
            for sid in sids.by_ref().take(piece) {
                if set.settle(sid, cutoff) == Change::Ended {
                    ended.push(sid.as_str().into());
                }
            }
            drop(set);
            self.sessions_ended(&ended);
            ended.clear();
            std::thread::sleep(PAUSE);
        }
        let emptied = self.write_sessions().settled();
        drop(emptied);
    }

    #[cold]
    fn recount(
        &self,
        reader: &mut Reader,
        now: i64,
        theirs: (usize, usize),
        ours: (usize, usize),
    ) -> softphone_shared::Result<()> {
        eprintln!(
            "{WHO}: the database has {} live session(s), {} revoked, where we knew {}, {} revoked (changed by hand without the triggers?); re-reading every session",
            theirs.0, theirs.1, ours.0, ours.1
        );
        self.reload_all(reader, now)
    }

    /// Reads every live session into a new set, built without holding the lock
    /// requests need, and swaps it in.
    fn reload_all(&self, reader: &mut Reader, now: i64) -> softphone_shared::Result<()> {
        let cutoff = self.validation(now).oldest_live_exp();
        let mut fresh = Builder::new(cutoff);
        let head = reader.store.each_session(cutoff, |sid, expires, revoked| {
            fresh.add(sid, expires, revoked);
        })?;
        let mut old = std::mem::replace(&mut *self.write_sessions(), fresh.finish());
        self.version.fetch_add(1, Ordering::AcqRel);
        reader.last_seq = head;
        // Off-lock again: which usable sessions the re-read ended, those of
        // a burst shown and not yet settled included (settled here: the
        // upkeep's settling finds nothing shown in the new set).
        let settled = old.settle_all(cutoff);
        let set = self.read_sessions();
        let ended: Vec<Box<str>> = settled
            .iter()
            .map(sid_text)
            .filter(|sid| set.standing(sid, cutoff) != Standing::Usable)
            .chain(
                old.each()
                    .filter(|old| {
                        !old.revoked
                            && old.expires >= cutoff
                            && set.standing(&old.sid, cutoff) != Standing::Usable
                    })
                    .map(|old| old.sid),
            )
            .map(String::into_boxed_str)
            .collect();
        drop(set);
        drop(old);
        self.sessions_ended(&ended);
        Ok(())
    }

    /// Merges the sessions created since the last merge into the sorted part
    /// and drops the expired and deleted ones, when that is worth a pass: the
    /// new set is built under the read lock (requests go on) and swapped in.
    /// The caller holds the reader (the argument proves it), so no change is
    /// read meanwhile; and it is the upkeep, the only one that settles, so
    /// with nothing shown nothing is settled meanwhile either.
    fn compact(&self, _reader: &mut Reader, cutoff: i64, counting: bool) {
        let merged = {
            let set = self.read_sessions();
            // Not while changes are shown (a new set would lose them): they
            // are settled before the next round.
            if set.showing() > 0 || !(set.recent_is_full() || counting && set.base_is_dying(cutoff))
            {
                return;
            }
            set.merged(cutoff)
        };
        let old = std::mem::replace(&mut *self.write_sessions(), merged);
        // What requests see has not changed: no new version.
        drop(old);
    }

    /// The one place where the verifier learns that sessions it knew as usable
    /// are not any more: revoked, deleted, or gone from a re-read database.
    /// (Expiry is not reported here: it needs no news from the database.) Every
    /// request after this refuses their tokens already; whatever else must end
    /// with a session (subscriptions it opened) hooks on here.
    #[cold]
    fn sessions_ended(&self, sids: &[Box<str>]) {
        if !sids.is_empty() {
            self.ended.fetch_add(sids.len() as u64, Ordering::Relaxed);
            self.lock_outbox().extend_from_slice(sids);
        }
    }

    /// How many usable sessions became unusable while this verifier watched.
    pub fn ended_count(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    pub fn sync_stats(&self) -> SyncStats {
        SyncStats {
            succeeded: self.syncs_succeeded.load(Ordering::Relaxed),
            failed: self.syncs_failed.load(Ordering::Relaxed),
            last_success: self.last_sync_success.load(Ordering::Relaxed),
        }
    }

    /// The sessions that ended since the last call.
    pub fn take_ended(&self) -> Vec<Box<str>> {
        std::mem::take(&mut *self.lock_outbox())
    }

    /// Every session known as revoked and not yet expired: what a verifier
    /// started after they were revoked must still end.
    pub fn revoked_sessions(&self) -> Vec<Box<str>> {
        self.read_sessions()
            .each()
            .filter(|session| session.revoked)
            .map(|session| session.sid.into_boxed_str())
            .collect()
    }

    fn lock_backlog(&self) -> MutexGuard<'_, Vec<SessionChanges>> {
        self.backlog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_outbox(&self) -> MutexGuard<'_, Vec<Box<str>>> {
        self.ended_outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Background upkeep, about once a second: look at the epoch file, forget
    /// sessions that have expired, and read changes even without a bump (the
    /// way changes made by hand arrive), comparing counts every few seconds.
    pub fn maintain(&self, now: i64) {
        let trusted = match self.epoch.check_and_report(WHO) {
            FileState::Ours => true,
            FileState::Followed | FileState::Damaged { .. } => {
                self.distrust_until
                    .store(now + DISTRUST_SECONDS, Ordering::Relaxed);
                if !self.direct.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "{WHO}: checking every request against the database until the doorbell can be trusted again"
                    );
                }
                false
            }
        };
        let mut reader = self.lock_reader();
        // First the changes, so that requests answer from the set again as
        // soon as it is current (a burst a request left here, say), without
        // offering the core: meanwhile every request asks the database, at
        // several times its usual cost, and a yield every 1 000 steps of
        // SQLite stretched the read of a burst's 10 008 rows from 1.5 ms to
        // 115 ms under load. Then the passes over every session, the counts
        // and a merge, which requests need not wait for: those take turns
        // with the workers on their core, and the counts give up as soon as
        // a request finds the reader taken (a burst that came meanwhile).
        // A burst either read showed is settled once the reader is given back.
        let mut shown = None;
        let epoch = self.epoch.load();
        let mut result = self
            .load(
                &mut reader,
                now,
                Pass::Upkeep {
                    count: false,
                    epoch,
                },
            )
            .map(|loaded| shown = loaded.shown());
        if result.is_ok() {
            self.synced.store(epoch, Ordering::Release);
        }
        // Not counted while a burst is shown (by this read or a request's).
        let mut count = self.read_sessions().showing() == 0
            && (now >= reader.counted_at + COUNT_CHECK_SECONDS || now < reader.counted_at);
        if count && result.is_ok() {
            let counted_before = std::mem::replace(&mut reader.counted_at, now);
            self.reader_wanted.store(false, Ordering::Relaxed);
            let sharing = reader
                .store
                .share_the_core(Some(Arc::clone(&self.reader_wanted)));
            let epoch = self.epoch.load();
            result = self
                .load(&mut reader, now, Pass::Upkeep { count: true, epoch })
                .map(|loaded| shown = loaded.shown());
            match &result {
                Ok(()) => self.synced.store(epoch, Ordering::Release),
                // A request wanted the reader: counted at the next round.
                Err(e) if e.is_interrupted() => {
                    reader.counted_at = counted_before;
                    result = Ok(());
                    count = false;
                }
                Err(_) => {}
            }
            if sharing.is_ok() {
                let _ = reader.store.share_the_core(None);
            }
        }
        self.compact(&mut reader, self.validation(now).oldest_live_exp(), count);
        drop(reader);
        let _ = self.noted(result, now);
        let backlog = std::mem::take(&mut *self.lock_backlog());
        for changes in backlog.iter().chain(&shown) {
            self.settle(changes, now);
        }
        if trusted
            && self.direct.load(Ordering::Relaxed)
            && now >= self.distrust_until.load(Ordering::Relaxed)
        {
            self.direct.store(false, Ordering::Relaxed);
            eprintln!("{WHO}: the doorbell is trusted again");
        }
    }

    fn write_sessions(&self) -> std::sync::RwLockWriteGuard<'_, SessionSet> {
        self.sessions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_sessions(&self) -> std::sync::RwLockReadGuard<'_, SessionSet> {
        self.sessions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A session lives as long as its tokens: `leeway` past its expiry.
    fn validation(&self, now: i64) -> Validation {
        Validation {
            now,
            leeway: self.leeway,
        }
    }

    fn ask_database(&self, sid: &str) -> Result<Standing, Unavailable> {
        // The first free connection; if none is, wait for the first.
        let free = self.askers.iter().find_map(|asker| asker.try_lock().ok());
        let asker = match free {
            Some(asker) => asker,
            None => self.askers[0].lock().map_err(|_| Unavailable)?,
        };
        match asker.session_revoked(sid) {
            Ok(None) => Ok(Standing::Unknown),
            Ok(Some(true)) => Ok(Standing::Revoked),
            Ok(Some(false)) => Ok(Standing::Usable),
            Err(_) => Err(Unavailable),
        }
    }

    pub fn len(&self) -> usize {
        self.read_sessions().len()
    }

    /// Changes of a burst shown to lookups and not yet settled.
    pub fn shown(&self) -> usize {
        self.read_sessions().showing()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use softphone_shared::session_id;
    use softphone_shared::store::RevokeReason;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// A database of `count` sessions of user 201, with ids as the issuer
    /// makes them, and a verifier's view of it.
    struct IssuerSessions {
        dir: softphone_testkit::TestDir,
        writer: Store,
        sids: Vec<String>,
        revocations: Revocations,
    }

    fn issuer_sessions(name: &str, count: usize) -> IssuerSessions {
        let dir = softphone_testkit::TestDir::new(name);
        let db = dir.path().join("softphone.db");
        let mut writer = Store::open(&db).unwrap();
        let sids: Vec<String> = (0..count as u64)
            .map(|ms| session_id::text(&session_id::new(ms).unwrap()))
            .collect();
        for sid in &sids {
            softphone_testkit::insert_session(&mut writer, sid, NOW);
        }
        let revocations = Revocations::open(&db, NOW, 30).unwrap();
        IssuerSessions {
            dir,
            writer,
            sids,
            revocations,
        }
    }

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
        // A session the database does not know is refused, and told apart.
        assert!(revocations.is_revoked("never-created", now).unwrap());
        let fresh = Memo::default();
        assert_eq!(
            revocations.standing("never-created", &fresh, now),
            Ok(Standing::Unknown)
        );
        assert_eq!(
            revocations.standing("s0", &fresh, now),
            Ok(Standing::Revoked)
        );
        // With a memo, as cached tokens use it: still seen at once.
        let memo = Memo::default();
        softphone_testkit::insert_session(&mut writer, "memo", now);
        assert_eq!(
            revocations.standing("memo", &memo, now),
            Ok(Standing::Usable)
        );
        assert_eq!(
            revocations.standing("memo", &memo, now),
            Ok(Standing::Usable)
        );
        writer
            .revoke_session("memo", RevokeReason::Logout, now)
            .unwrap();
        assert_eq!(
            revocations.standing("memo", &memo, now),
            Ok(Standing::Revoked)
        );
        // And without the upkeep: the epoch alone brings it in.
        softphone_testkit::insert_session(&mut writer, "last", now);
        assert!(!revocations.is_revoked("last", now).unwrap());
        writer
            .revoke_session("last", RevokeReason::Logout, now)
            .unwrap();
        assert!(revocations.is_revoked("last", now).unwrap());
    }

    /// A burst of revocations larger than a request applies, of ids it cannot
    /// show (not the issuer's), is left to the upkeep, woken for it; requests
    /// meanwhile get the database's answer about their own session; the
    /// upkeep then applies all of it.
    #[test]
    fn a_burst_is_left_to_the_upkeep_and_requests_ask_by_key_meanwhile() {
        let dir = softphone_testkit::TestDir::new("revocations-burst");
        let db = dir.path().join("softphone.db");
        let now = 1_800_000_000;
        let mut writer = Store::open(&db).unwrap();
        let burst = REQUEST_APPLIES_AT_MOST + 1;
        for i in 0..burst {
            softphone_testkit::insert_session(&mut writer, &format!("s{i}"), now);
        }
        softphone_testkit::insert_session_of(&mut writer, "other", (8, "202"), now);
        let revocations = Revocations::open(&db, now, 30).unwrap();
        assert_eq!(revocations.len(), burst + 1);
        let cutoff = revocations.validation(now).oldest_live_exp();
        let in_set = |sid: &str| revocations.read_sessions().standing(sid, cutoff);
        assert_eq!(in_set("s0"), Standing::Usable);

        let revoked = writer
            .revoke_user_sessions("201", RevokeReason::Admin, now)
            .unwrap();
        assert_eq!(revoked, burst);
        let memo = Memo::default();
        assert_eq!(
            revocations.standing("s0", &memo, now),
            Ok(Standing::Revoked)
        );
        assert_eq!(
            revocations.standing("other", &memo, now),
            Ok(Standing::Usable)
        );
        assert_eq!(
            in_set("s0"),
            Standing::Usable,
            "a request applied the burst"
        );
        // The request woke the upkeep: it does not wait for its round.
        let woken = std::time::Instant::now();
        revocations.wait_for_upkeep(Duration::from_secs(30));
        assert!(woken.elapsed() < Duration::from_secs(10));
        revocations.maintain(now);
        for i in 0..burst {
            assert_eq!(in_set(&format!("s{i}")), Standing::Revoked);
        }
        assert_eq!(revocations.ended_count(), burst as u64);
        assert_eq!(
            revocations.standing("other", &memo, now),
            Ok(Standing::Usable)
        );
        // Unwoken, the upkeep waits for its round.
        let idle = std::time::Instant::now();
        revocations.wait_for_upkeep(Duration::from_millis(200));
        assert!(idle.elapsed() >= Duration::from_millis(200));
    }

    /// A burst of ids as the issuer makes them is shown to lookups by the
    /// first request after it, and settled by the upkeep: then every session
    /// is revoked, each ended once, nothing is left shown, and the memos of
    /// tokens went stale once (when it was shown), not once per piece.
    #[test]
    fn a_burst_of_issuer_ids_is_shown_then_settled() {
        let burst = REQUEST_APPLIES_AT_MOST * 8 + 1;
        let IssuerSessions {
            dir: _dir,
            mut writer,
            sids,
            revocations,
        } = issuer_sessions("revocations-shown", burst);
        let now = NOW;
        let standing = |sid: &str| revocations.standing(sid, &Memo::default(), now);
        assert_eq!(standing(&sids[0]), Ok(Standing::Usable));
        let revoked = writer
            .revoke_user_sessions("201", RevokeReason::Admin, now)
            .unwrap();
        assert_eq!(revoked, burst);
        let version = revocations.version.load(Ordering::Acquire);
        // The first request after it reads the burst and shows it.
        assert_eq!(standing(&sids[burst - 1]), Ok(Standing::Revoked));
        assert_eq!(revocations.read_sessions().showing(), burst);
        assert_eq!(revocations.lock_backlog().len(), 1, "left to settle");
        revocations.maintain(now);
        assert!(
            sids.iter()
                .all(|sid| standing(sid) == Ok(Standing::Revoked))
        );
        assert_eq!(revocations.ended_count(), burst as u64);
        assert_eq!(revocations.read_sessions().showing(), 0);
        assert_eq!(revocations.version.load(Ordering::Acquire), version + 1);
    }

    /// While a shown burst waits to be settled, the reader is free: a request
    /// reads a change committed meanwhile, and a change to a shown session
    /// settles it first, so it neither hides behind the shown one nor ends
    /// twice.
    #[test]
    fn changes_read_while_a_burst_is_shown_settle_it_first() {
        let burst = REQUEST_APPLIES_AT_MOST + 1;
        let IssuerSessions {
            dir,
            mut writer,
            sids,
            revocations,
        } = issuer_sessions("revocations-settle", burst);
        let now = NOW;
        let standing = |sid: &str| revocations.standing(sid, &Memo::default(), now);
        writer
            .revoke_user_sessions("201", RevokeReason::Admin, now)
            .unwrap();
        let epoch = revocations.epoch.load();
        let upkeep = Pass::Upkeep {
            count: false,
            epoch,
        };
        let loaded = revocations.load(&mut revocations.lock_reader(), now, upkeep);
        let shown = loaded.unwrap().shown().expect("a burst is shown");
        assert_eq!(revocations.read_sessions().showing(), burst);
        // Meanwhile: one of the burst deleted by hand, a new session made.
        rusqlite::Connection::open(dir.path().join("softphone.db"))
            .unwrap()
            .execute("DELETE FROM sessions WHERE sid = ?1", [&sids[0]])
            .unwrap();
        writer.epoch().unwrap().bump();
        let new = session_id::text(&session_id::new(burst as u64).unwrap());
        softphone_testkit::insert_session(&mut writer, &new, now);
        let reads = revocations.sync_stats().succeeded;
        assert_eq!(standing(&new), Ok(Standing::Usable));
        assert_eq!(
            revocations.sync_stats().succeeded,
            reads + 1,
            "read, not asked"
        );
        assert_eq!(standing(&sids[0]), Ok(Standing::Unknown));
        assert_eq!(revocations.read_sessions().showing(), burst - 1);
        revocations.settle(&shown, now);
        assert_eq!(revocations.read_sessions().showing(), 0);
        assert_eq!(standing(&sids[0]), Ok(Standing::Unknown));
        assert!(
            sids[1..]
                .iter()
                .all(|sid| standing(sid) == Ok(Standing::Revoked))
        );
        assert_eq!(revocations.ended_count(), burst as u64, "each ended once");
    }

    /// A re-read of every session while a burst of new ones is shown (a
    /// restored database, counts that differ) still reports those the
    /// re-read finds revoked, once: they were usable only in the burst.
    #[test]
    fn a_reread_while_a_burst_is_shown_ends_its_sessions_once() {
        let IssuerSessions {
            dir: _dir,
            mut writer,
            revocations,
            ..
        } = issuer_sessions("revocations-reread", 0);
        let burst = REQUEST_APPLIES_AT_MOST + 1;
        let sids: Vec<String> = (0..burst as u64)
            .map(|ms| session_id::text(&session_id::new(ms).unwrap()))
            .collect();
        for sid in &sids {
            softphone_testkit::insert_session(&mut writer, sid, NOW);
        }
        let upkeep = Pass::Upkeep {
            count: false,
            epoch: revocations.epoch.load(),
        };
        let loaded = revocations.load(&mut revocations.lock_reader(), NOW, upkeep);
        let shown = loaded.unwrap().shown().expect("a burst is shown");
        assert!(!revocations.is_revoked(&sids[0], NOW).unwrap());
        writer
            .revoke_user_sessions("201", RevokeReason::Admin, NOW)
            .unwrap();
        revocations
            .reload_all(&mut revocations.lock_reader(), NOW)
            .unwrap();
        assert_eq!(revocations.ended_count(), burst as u64);
        revocations.settle(&shown, NOW);
        assert_eq!(revocations.ended_count(), burst as u64, "not twice");
        assert!(
            sids.iter()
                .all(|sid| revocations.is_revoked(sid, NOW).unwrap())
        );
    }

    /// Every read of the database is counted: the first, each upkeep's, and
    /// each a request makes when the doorbell rang; the time of the last good
    /// one is kept for the sync-age gauge.
    #[test]
    fn reads_of_the_database_are_counted() {
        let dir = softphone_testkit::TestDir::new("revocations-stats");
        let db = dir.path().join("softphone.db");
        let now = 1_800_000_000;
        let mut writer = Store::open(&db).unwrap();
        let revocations = Revocations::open(&db, now, 30).unwrap();
        let stats = |succeeded, last_success| SyncStats {
            succeeded,
            failed: 0,
            last_success,
        };
        assert_eq!(revocations.sync_stats(), stats(1, now));
        revocations.maintain(now + 1);
        assert_eq!(revocations.sync_stats(), stats(2, now + 1));
        // Nothing rang: a request reads nothing.
        assert!(revocations.is_revoked("s", now + 2).unwrap());
        assert_eq!(revocations.sync_stats(), stats(2, now + 1));
        softphone_testkit::insert_session(&mut writer, "s", now);
        assert!(!revocations.is_revoked("s", now + 3).unwrap());
        assert_eq!(revocations.sync_stats(), stats(3, now + 3));
        assert_eq!(revocations.len(), 1);
    }
}
