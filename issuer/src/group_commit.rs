//! Group commit: every write of the issuer goes through one thread that owns
//! the writer connection and commits the writes waiting at that moment
//! together, in one transaction and one fsync ([`Store::begin_batch`]).
//!
//! A write's answer is handed back only after its batch's commit returned, so
//! a 200 still means "on disk": the guarantee of one commit per write, at the
//! cost of one fsync per batch. Nothing waits to fill a batch: while one batch
//! is being synced the next one queues up, so a lone write costs what it
//! always did and 64 concurrent refreshes share a few fsyncs.
//!
//! Each write runs in a savepoint of its own: one that fails is undone and
//! answered with its error, the others commit.
//!
//! Background work that may be lost in a crash (the purge of expired
//! sessions) uses the same connection between two batches, so it shares its
//! page cache (a commit on another connection empties it: a purge there
//! cost three times the CPU per row) and never waits for SQLite's write
//! lock, but on a thread of its own ([`Writer::background`]), in a
//! transaction whose commit is not synced. On the group-commit thread, its
//! CPU time and its fsyncs were the requests' wait: with it on its own
//! thread, the refresh p99 during a purge of 100 000 on a busy core fell
//! from 8.9-13x idle to 4.8-6.8x (bench/README.md, fifth pass).
//!
//! Background work and checkpoints run at a lower CPU priority than requests
//! ([`thread_priority`]): on a core the requests keep busy, the kernel gives
//! it what they leave. A batch that finds background work holding the
//! connection raises that thread back until it lets go, so no batch waits for
//! every busier thread as well.
//!
//! Checkpoints run on a thread and connection of their own, so that no batch
//! waits for one. While the log is short that thread is under SCHED_IDLE: a
//! checkpoint holds nothing a request waits for, and at nice 10 each of its
//! turns held a busy core for up to a scheduler tick. After a burst of 10 000
//! revocations (another process's commit, of 10 008 rows) the verifier's
//! requests on that core waited 4-6 ms every 40 ms while the issuer copied
//! it back: p99 3-6x in 7 runs of 14, against 1.1-1.4x in 7 of 7 with the
//! copy under SCHED_IDLE. Once the issuer's own commits make the log long,
//! the core evidently has no idle time to give, and the writer thread takes
//! the checkpoint thread out of SCHED_IDLE (to nice 10) so that it keeps
//! moving. Alone, they would let the log grow without end under
//! steady load (2 GB beside a 56 MB database in a bench run): the log starts
//! again from its beginning only when a write finds every page of it copied
//! back, and writes keep coming while a checkpoint copies. So once the log is
//! long, the writer thread itself copies the last few pages between two
//! batches, when no write can come between, and the next write restarts it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use softphone_shared::store::Store;
use softphone_shared::thread_priority::{self, Tid};
use tokio::sync::oneshot;

use crate::error::internal;
use crate::{ApiError, Result};

/// Most writes in one batch: bounds how long the first of them waits for the
/// last (a refresh's write takes some 50 µs).
const MAX_BATCH: usize = 256;
/// Writes that may wait for the thread; more wait in `write` itself, on the
/// blocking pool, so the async threads stay free.
const QUEUE: usize = 4096;

/// Hands the result of a write to its caller once the batch is decided:
/// `true` when it committed.
type Deliver = Box<dyn FnOnce(bool) + Send>;
/// A write: runs on the thread, says whether it succeeded, and how to answer.
type Job = Box<dyn FnOnce(&mut Store) -> (bool, Deliver) + Send>;

/// How often the checkpoint thread copies the log back into the database.
/// Often enough that, at the tens of MB a second a bench's refreshes write,
/// the log does not grow far past [`RESTART_AFTER_PAGES`] between two looks.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// A log of this many pages (16 MiB) is restarted by the writer thread...
const RESTART_AFTER_PAGES: i64 = 4096;
/// ...after a checkpoint pass that left at most this many for it to copy
/// (the writer's copy holds up the batch that waits).
const WRITER_COPIES_AT_MOST: i64 = 256;
/// A log this long after one of the writer's commits takes the checkpoint
/// thread out of SCHED_IDLE: it has not been restarted at
/// [`RESTART_AFTER_PAGES`], so the copies are not keeping up.
const RAISE_AT_PAGES: i64 = 2 * RESTART_AFTER_PAGES;

/// The handle requests write through.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: SyncSender<Job>,
    /// The writer connection: the group-commit thread holds it for each
    /// batch, background work between two batches.
    store: Arc<Mutex<Store>>,
    /// The thread doing background work on the connection, while it holds it.
    holder: Arc<Holder>,
    /// The checkpoint thread runs while a handle exists.
    _alive: Arc<()>,
}

impl Writer {
    /// Starts the thread that owns `store`, and one that checkpoints on
    /// `checkpointer` (another connection to the same database), so that no
    /// batch waits for a checkpoint's writes and fsync. Both end when every
    /// handle is gone.
    pub fn start(mut store: Store, checkpointer: Store) -> Result<Writer> {
        let holder = Arc::new(Holder::new());
        let copier = Arc::new(Copier::default());
        let told = Arc::clone(&copier);
        store.leave_checkpoints_to_another(move |pages| told.log_is(pages))?;
        if !holder.lowers {
            eprintln!(
                "softphone-issuer: the purge and the PBX watcher's sweep run at the priority of requests: this process may not raise a thread's priority back (the unit's LimitNICE=+0 allows it)"
            );
        }
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        // Raised by the checkpoint thread when the log is long, lowered by
        // the writer thread once it copied the rest.
        let restart = Arc::new(AtomicBool::new(false));
        let wanted = Arc::clone(&restart);
        let store = Arc::new(Mutex::new(store));
        let shared = Arc::clone(&store);
        let held = Arc::clone(&holder);
        let lowers = holder.lowers;
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || run(&shared, &held, queue, &wanted))?;
        let alive = Arc::new(());
        let watched = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                // It holds nothing a request waits for: lowered for good, to
                // nice 10, and under SCHED_IDLE while the log is short.
                let me = Tid::current();
                let _ = thread_priority::set_nice(me, thread_priority::BACKGROUND);
                copier.thread.store(me.raw(), Ordering::Release);
                let mut failing = false;
                while watched.upgrade().is_some() {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    copier.pick_class(me, lowers);
                    // Said once, not twice a second while the disk is full.
                    match checkpointer.checkpoint() {
                        Err(e) if !failing => {
                            failing = true;
                            eprintln!("softphone-issuer: checkpoint failed (the log grows until it works): {e}");
                        }
                        Err(_) => {}
                        Ok(done) => {
                            if failing {
                                failing = false;
                                eprintln!("softphone-issuer: checkpoints work again");
                            }
                            if done.log >= RESTART_AFTER_PAGES
                                && done.log - done.copied <= WRITER_COPIES_AT_MOST
                            {
                                restart.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })?;
        Ok(Writer {
            jobs,
            store,
            holder,
            _alive: alive,
        })
    }

    /// Runs `f` on the writer connection in the next batch, and returns its
    /// result once the batch is on disk. A database error is logged and
    /// becomes a 500, as on the blocking pool.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let result = f(store);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |committed| {
                let _ = answer.send(match result {
                    Ok(value) if committed => Ok(value),
                    // The commit failed: the thread reported why.
                    Ok(_) => Err(ApiError::Internal),
                    Err(e) => Err(internal(&e)),
                });
            });
            (ok, deliver)
        });
        let sent = match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            // A full queue blocks the sender: wait off the async threads.
            Err(TrySendError::Full(job)) => {
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
        };
        if !sent {
            eprintln!("softphone-issuer: the writer thread is gone");
            return Err(ApiError::Internal);
        }
        answered.await.unwrap_or(Err(ApiError::Internal))
    }

    /// Runs `f` on the writer connection on the calling thread, between two
    /// batches, in a transaction of its own whose commit is not synced: for
    /// background work a crash may undo and the next pass does again. Its
    /// CPU time is the caller's, so call it from a thread of its own, not
    /// the async threads: that thread is lowered to background priority (see
    /// the module's doc), and a batch waits for it at most as long as `f`
    /// runs at the priority of requests.
    pub fn background<T>(
        &self,
        f: impl FnOnce(&mut Store) -> softphone_shared::Result<T>,
    ) -> softphone_shared::Result<T> {
        let me = Tid::current();
        if self.holder.lowers {
            // Also after a batch raised it during the previous call.
            let _ = thread_priority::set_nice(me, thread_priority::BACKGROUND);
        }
        // Named before it waits for the connection, so that a batch which
        // finds it taken the moment it is raises it.
        let _holding = self.holder.hold(me);
        let mut store = lock(&self.store);
        store.begin_unsynced_batch()?;
        let result = f(&mut store);
        match &result {
            Ok(_) => store.end_batch()?,
            Err(_) => store.abort_batch(),
        }
        result
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The checkpoint thread's class: SCHED_IDLE while the log the writer's
/// commits leave is short, nice 10 once it is long ([`RAISE_AT_PAGES`]; see
/// the module's doc).
#[derive(Debug, Default)]
struct Copier {
    /// The checkpoint thread, 0 until it runs.
    thread: AtomicI32,
    /// Whether it is under SCHED_IDLE.
    idle: AtomicBool,
    /// The log's length in pages after the writer's last commit.
    log: AtomicI64,
}

impl Copier {
    /// Told by the writer connection after each commit: a long log takes the
    /// checkpoint thread out of SCHED_IDLE at once, also in the middle of a
    /// copy a busy core starves.
    fn log_is(&self, pages: i64) {
        self.log.store(pages, Ordering::Relaxed);
        if pages >= RAISE_AT_PAGES
            && self.idle.swap(false, Ordering::AcqRel)
            && let Some(thread) = Tid::from_raw(self.thread.load(Ordering::Acquire))
        {
            let _ = thread_priority::set_idle(thread, false);
        }
    }

    /// Called by the checkpoint thread before each copy: back under
    /// SCHED_IDLE once the log is short again (only when this process may
    /// take it out again: `lowers`).
    fn pick_class(&self, me: Tid, lowers: bool) {
        let idle = lowers && self.log.load(Ordering::Relaxed) < RAISE_AT_PAGES;
        if idle != self.idle.load(Ordering::Acquire) && thread_priority::set_idle(me, idle).is_ok()
        {
            self.idle.store(idle, Ordering::Release);
        }
    }
}

/// Which background thread holds the writer connection, so that a batch
/// waiting for it can raise it; and whether background work is lowered at
/// all (only when this process may raise it back: [`thread_priority::may_raise`]).
#[derive(Debug)]
struct Holder {
    thread: AtomicI32,
    lowers: bool,
}

impl Holder {
    fn new() -> Holder {
        Holder {
            thread: AtomicI32::new(0),
            lowers: thread_priority::may_raise(),
        }
    }

    /// Names `thread` as the holder until the guard is dropped.
    fn hold(&self, thread: Tid) -> Holding<'_> {
        self.thread.store(thread.raw(), Ordering::Release);
        Holding(self)
    }

    /// Gives the holder, if any, the priority of requests: it is lowered
    /// again at its next background call.
    fn raise(&self) {
        if let Some(thread) = Tid::from_raw(self.thread.load(Ordering::Acquire)) {
            let _ = thread_priority::set_nice(thread, thread_priority::NORMAL);
        }
    }
}

/// Clears the holder also when background work panics, so that no thread id
/// the kernel may give out again stays named.
struct Holding<'h>(&'h Holder);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.thread.store(0, Ordering::Release);
    }
}

/// The writer connection for a batch: at once when it is free; otherwise the
/// background thread holding it is raised, then waited for.
fn take<'s>(shared: &'s Mutex<Store>, holder: &Holder) -> MutexGuard<'s, Store> {
    match shared.try_lock() {
        Ok(store) => store,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            holder.raise();
            lock(shared)
        }
    }
}

fn run(shared: &Mutex<Store>, holder: &Holder, queue: Receiver<Job>, restart: &AtomicBool) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut delivers: Vec<Deliver> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        let mut store = take(shared, holder);
        if restart.load(Ordering::Relaxed) {
            // The checkpoint thread copied most of the log a moment ago:
            // copy the rest, so that this batch's commit restarts it (unless
            // a reader still uses an older part; then the next pass retries).
            if let Ok(done) = store.checkpoint()
                && done.copied == done.log
            {
                restart.store(false, Ordering::Relaxed);
            }
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let committed = commit(&mut store, &mut batch, &mut delivers);
        drop(store);
        for deliver in delivers.drain(..) {
            deliver(committed);
        }
    }
}

/// Runs `batch` in one synced transaction; returns whether it committed,
/// with each job's answer in `delivers`.
fn commit(store: &mut Store, batch: &mut Vec<Job>, delivers: &mut Vec<Deliver>) -> bool {
    if let Err(e) = store.begin_batch() {
        // Another process holds the lock past the busy timeout: these
        // writes are answered 500 (their senders see the job dropped).
        eprintln!("softphone-issuer: cannot start a write: {e}");
        batch.clear();
        return false;
    }
    let mut broken = false;
    for job in batch.drain(..) {
        if broken {
            continue; // dropped unrun: its caller gets a 500
        }
        match store.in_batch(job) {
            Ok(deliver) => delivers.push(deliver),
            Err(e) => {
                // The savepoint itself failed: the transaction is in an
                // unknown state, so nothing of it may be committed.
                eprintln!("softphone-issuer: a write of a batch failed: {e}");
                broken = true;
            }
        }
    }
    if broken {
        store.abort_batch();
        return false;
    }
    match store.end_batch() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("softphone-issuer: a batch of writes was not committed: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use softphone_testkit::{TestDir, insert_session};

    /// The thread this process named `name`.
    fn thread_named(name: &str) -> Option<Tid> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == name)
            })
            .and_then(|task| task.file_name().to_str()?.parse().ok())
            .and_then(Tid::from_raw)
    }

    /// The checkpoint thread copies under SCHED_IDLE while the log is short.
    /// (Tests run as root in CI, so taking it out again is allowed.)
    #[test]
    fn checkpoints_wait_for_an_idle_core() {
        assert!(
            thread_priority::may_raise(),
            "the test needs to raise priorities (root)"
        );
        let dir = TestDir::new("group-commit-idle");
        let db = dir.path().join("softphone.db");
        let _writer = Writer::start(Store::open(&db).unwrap(), Store::open(&db).unwrap()).unwrap();
        let copier = softphone_testkit::eventually(
            Duration::from_secs(10),
            "the checkpoint thread under SCHED_IDLE",
            || thread_named("checkpoint").filter(|t| thread_priority::is_idle(*t).unwrap_or(false)),
        );
        assert_eq!(
            thread_priority::nice(copier).unwrap(),
            thread_priority::BACKGROUND
        );
    }

    /// A commit that leaves a long log takes the checkpoint thread out of
    /// SCHED_IDLE at once, also while it copies; its next copy goes back
    /// only once the log is short again.
    #[test]
    fn a_long_log_takes_the_checkpoints_out_of_idle() {
        assert!(thread_priority::may_raise(), "the test needs root");
        let copier = Copier::default();
        let (tell, told) = std::sync::mpsc::channel();
        let (next, go) = std::sync::mpsc::channel::<i64>();
        let (done, copied) = std::sync::mpsc::channel();
        let copier = &copier;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let me = Tid::current();
                copier.thread.store(me.raw(), Ordering::Release);
                copier.pick_class(me, true);
                tell.send(me).unwrap();
                while let Ok(pages) = go.recv() {
                    copier.log_is(pages);
                    copier.pick_class(me, true);
                    done.send(thread_priority::is_idle(me).unwrap()).unwrap();
                }
            });
            let me = told.recv().unwrap();
            assert!(thread_priority::is_idle(me).unwrap(), "short: idle");
            // Told by another thread (the writer's), between two copies.
            copier.log_is(RAISE_AT_PAGES);
            assert!(!thread_priority::is_idle(me).unwrap(), "taken out at once");
            for (pages, idle) in [(RAISE_AT_PAGES + 1, false), (RAISE_AT_PAGES - 1, true)] {
                next.send(pages).unwrap();
                assert_eq!(copied.recv().unwrap(), idle, "{pages} pages");
            }
            drop(next);
        });
    }

    /// Background work commits in a transaction of its own, not synced, and
    /// the synced writes after it still commit: a reader sees both rows.
    #[test]
    fn an_unsynced_write_commits_in_a_transaction_of_its_own() {
        let dir = TestDir::new("group-commit-unsynced");
        let db = dir.path().join("softphone.db");
        let writer = Writer::start(Store::open(&db).unwrap(), Store::open(&db).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let now = softphone_shared::unix_now();
        let sent = writer
            .background(|store| {
                insert_session(store, "background", now);
                Ok(7)
            })
            .unwrap();
        assert_eq!(sent, 7);
        runtime.block_on(async {
            writer
                .write(move |store| {
                    insert_session(store, "request", now);
                    Ok(())
                })
                .await
                .unwrap();
        });
        let reader = Store::open_read_only(&db).unwrap();
        for sid in ["background", "request"] {
            assert!(reader.session(sid).unwrap().is_some(), "{sid}");
        }
    }

    /// Background work runs lowered; a write that finds it holding the
    /// connection raises it to the priority of requests, and the next
    /// background call is lowered again.
    #[test]
    fn a_waiting_write_raises_the_background_work_it_waits_for() {
        let dir = TestDir::new("group-commit-priority");
        let db = dir.path().join("softphone.db");
        let writer = Writer::start(Store::open(&db).unwrap(), Store::open(&db).unwrap()).unwrap();
        assert!(
            writer.holder.lowers,
            "the tests run where priorities may be raised"
        );
        let now = softphone_shared::unix_now();
        let (held, holding) = mpsc::channel();
        let (nice_during, nice_after) = std::thread::scope(|scope| {
            let background = scope.spawn(|| {
                let me = Tid::current();
                let during = writer
                    .background(|store| {
                        let lowered = thread_priority::nice(me).unwrap();
                        held.send(()).unwrap();
                        // The write below is queued now; wait for its raise.
                        let raised = softphone_testkit::poll_until(Duration::from_secs(10), || {
                            thread_priority::nice(me).unwrap() == thread_priority::NORMAL
                        });
                        insert_session(store, "background", now);
                        Ok((lowered, raised.is_some()))
                    })
                    .unwrap();
                writer.background(|_| Ok(())).unwrap();
                (during, thread_priority::nice(me).unwrap())
            });
            holding.recv().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(writer.write(move |store| {
                    insert_session(store, "request", now);
                    Ok(())
                }))
                .unwrap();
            background.join().unwrap()
        });
        assert_eq!(nice_during, (thread_priority::BACKGROUND, true));
        assert_eq!(nice_after, thread_priority::BACKGROUND);
    }

    /// Writes that never pause, beside readers that never pause: the log still
    /// starts again from its beginning, and its file stays within bounds.
    /// (Checkpoints on their own thread alone let it grow by every page
    /// written: some 100 MiB here.)
    #[test]
    fn the_log_restarts_under_steady_writes_and_reads() {
        let dir = TestDir::new("group-commit-log");
        let db = dir.path().join("softphone.db");
        let writer = Writer::start(Store::open(&db).unwrap(), Store::open(&db).unwrap()).unwrap();
        let wal = dir.path().join("softphone.db-wal");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let now = softphone_shared::unix_now();
        let stop = AtomicBool::new(false);
        let mut largest = 0;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let reader = Store::open_read_only(&db).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    reader.session("s0").unwrap();
                }
            });
            runtime.block_on(async {
                for batch in 0..800u64 {
                    // Ten sessions at scattered keys: some 40 pages a commit.
                    writer
                        .write(move |store| {
                            for i in 0..10 {
                                let key = (batch * 10 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                                insert_session(store, &format!("{key:016x}"), now);
                            }
                            Ok(())
                        })
                        .await
                        .unwrap();
                    if batch % 50 == 0 {
                        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                    }
                }
            });
            stop.store(true, Ordering::Relaxed);
        });
        // The file kept, and a restart's worth of pages written past it.
        let bound = (softphone_shared::store::WAL_FILE_LIMIT + RESTART_AFTER_PAGES * 4096) as u64;
        assert!(largest <= bound, "the log grew to {largest} bytes");
    }
}
