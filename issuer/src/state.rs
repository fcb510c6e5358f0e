//! The issuer's shared state and the ways work leaves the async threads: our
//! own database's reads (short, on the blocking pool) and writes (on the
//! group-commit thread), reads of the PBX's databases for what the app shows
//! (about a millisecond each, one at a time in a [`Lane`]), and password
//! checks (long, on dedicated low-priority threads, so a login flood queues
//! instead of starving refresh and profile).

use std::sync::{Arc, Mutex, RwLock};

use crate::error::internal;
use crate::group_commit::Writer;
use crate::hashing::{Hasher, Queue};
use crate::lane::Lane;
use crate::listing::Cached;
use crate::metrics::Metrics;
use crate::readers::Readers;
use crate::refresh_rate::RefreshRate;
use crate::throttle::{Limits, Throttle};
use crate::{ApiError, Result};
use softphone_shared::config::{Config, UserSource};
use softphone_shared::keys::KeyRing;
use softphone_shared::live_keys::LiveKeys;
use softphone_shared::seclog::SecurityLog;
use softphone_shared::store::Store;
use softphone_shared::users::mikopbx::PbxDatabase;
use softphone_shared::users::{Credential, builtin};

pub struct App {
    config: RwLock<Arc<Config>>,
    keys: LiveKeys,
    /// Writes (sessions, revocations) go through one connection, owned by
    /// the group-commit thread: SQLite has one writer at a time anyway, and
    /// concurrent writes share a commit.
    writer: Writer,
    /// Reads (is this session active? who is this user?) do not wait for a
    /// writer's fsync, nor for each other.
    readers: Arc<Readers>,
    /// The metrics' scrape counts sessions on a connection of its own, so a
    /// scrape never waits for a request's read, nor a request for a scrape.
    scrape_reader: Arc<Mutex<Store>>,
    /// The PBX database of a `mikopbx` user source, open for the daemon's life;
    /// its lookups never wait for the store's connections.
    pbx: RwLock<Option<Arc<Pbx>>>,
    /// MikoPBX's call records (`history`), when configured; a handle of its
    /// own, read in the `pbx_reads` lane.
    calls: RwLock<Option<Arc<PbxDatabase>>>,
    /// Where a day of call records, the directory and the feature codes are
    /// read from the PBX's databases, one at a time.
    pbx_reads: Lane,
    /// `GET users` and `GET features`, made at most once a second.
    directory: Cached,
    features: Cached,
    log: SecurityLog,
    /// Kept across SIGHUP (logrotate sends one daily): only its limits change.
    throttle: Throttle,
    refresh_rate: RefreshRate,
    hasher: Hasher,
    metrics: Metrics,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Loads (or creates) the key and database and opens the security log.
    pub fn open(config: Config) -> Result<App> {
        let keys = LiveKeys::open(&config.key_file(), "softphone-issuer")?;
        let writer = Writer::start(
            Store::open(&config.database())?,
            Store::open(&config.database())?,
        )?;
        let readers = Readers::open(&config.database())?;
        let scrape_reader = Store::open_read_only(&config.database())?;
        let log = SecurityLog::open(&config.security_log(), config.syslog, "softphone-issuer")?;
        Ok(App {
            pbx: RwLock::new(pbx_of(&config.user_source)),
            calls: RwLock::new(calls_of(&config)),
            pbx_reads: Lane::start("pbx-reads")?,
            directory: Cached::default(),
            features: Cached::default(),
            throttle: Throttle::new(Limits::from_config(&config)),
            refresh_rate: RefreshRate::default(),
            hasher: Hasher::start(config.login_concurrency)?,
            config: RwLock::new(Arc::new(config)),
            keys,
            writer,
            readers: Arc::new(readers),
            scrape_reader: Arc::new(Mutex::new(scrape_reader)),
            log,
            metrics: Metrics::new(),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// The current key (signs) and the previous keys (still verify).
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.ring_arc()
    }

    /// Reloads the keys when their files changed on disk, as SIGHUP does.
    pub fn reload_keys_if_changed(&self) {
        self.keys.reload_if_changed();
    }

    pub fn log(&self) -> &SecurityLog {
        &self.log
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn refresh_rate(&self) -> &RefreshRate {
        &self.refresh_rate
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Logins waiting for a hashing thread, per queue (known, other).
    pub fn hashing_waiting(&self) -> [usize; 2] {
        self.hasher.waiting()
    }

    /// SIGHUP: re-read the config and the key, reopen the security log. Settings
    /// that need a restart (the address, the files) are reported and left as
    /// they are.
    pub fn reload(&self, new: Config) -> Result<Vec<String>> {
        let old = self.config();
        let mut notes = Vec::new();
        for (name, changed) in [
            ("issuer_listen", old.issuer_listen != new.issuer_listen),
            ("key_file", old.key_file() != new.key_file()),
            ("database", old.database() != new.database()),
            ("log_dir", old.log_dir() != new.log_dir()),
        ] {
            if changed {
                notes.push(format!("{name} changed: takes effect after a restart"));
            }
        }
        // Reopen the log first: logrotate's SIGHUP must work even when the new
        // config or key turns out to be broken.
        self.log.reopen()?;
        self.keys.reload()?;
        // New limits apply to the counters kept so far: a reload must not give
        // a guesser a fresh start.
        self.throttle.set_limits(Limits::from_config(&new));
        if new.user_source != old.user_source
            && let Ok(mut slot) = self.pbx.write()
        {
            *slot = pbx_of(&new.user_source);
        }
        if new.cdr_database() != old.cdr_database()
            && let Ok(mut slot) = self.calls.write()
        {
            *slot = calls_of(&new);
        }
        // The source or the configured feature codes may have changed.
        self.directory.clear();
        self.features.clear();
        let mut effective = new.with_files_of(&old);
        effective.issuer_listen = old.issuer_listen;
        if let Ok(mut slot) = self.config.write() {
            *slot = Arc::new(effective);
        }
        Ok(notes)
    }

    /// Runs `f` on the writer connection, off the async threads, and returns
    /// once what it wrote is on disk ([`crate::group_commit`]).
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// The writer, for background work on a thread of its own
    /// ([`Writer::background`]).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs `f` on a read connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        blocking(move || f(&mut readers.take())).await
    }

    /// Runs `f` on the scrapes' own read connection, off the async threads.
    pub async fn scrape_read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
    {
        let store = Arc::clone(&self.scrape_reader);
        blocking(move || f(&mut store.lock().unwrap_or_else(|p| p.into_inner()))).await
    }

    /// The PBX database handles when users come from MikoPBX.
    pub fn pbx(&self) -> Option<Arc<Pbx>> {
        self.pbx
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// MikoPBX's call records, when `history` has any to read.
    pub fn calls(&self) -> Option<Arc<PbxDatabase>> {
        self.calls
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The directory (`GET users`), as served.
    pub fn directory(&self) -> &Cached {
        &self.directory
    }

    /// The feature codes (`GET features`), as served.
    pub fn features(&self) -> &Cached {
        &self.features
    }

    /// Runs `f`, a read of the PBX's databases for an answer (not a login's or
    /// a refresh's lookup), in the lane: after the reads before it.
    pub async fn read_pbx<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> softphone_shared::Result<T> + Send + 'static,
    {
        self.pbx_reads.run(f).await
    }

    /// Looks a login name up in the configured user source, off the async
    /// threads (not for logins: see [`Pbx::logins`]).
    pub async fn find_user(&self, username: String) -> Result<Option<Credential>, ApiError> {
        match self.pbx() {
            None => {
                self.read(move |store| builtin::find(store, &username))
                    .await
            }
            Some(pbx) => blocking(move || pbx.others.find(&username)).await,
        }
    }

    /// Reads the PBX's logins into the handles that look logins up, before
    /// the first request: a read takes 0.1 s of the core at 100 000 peers,
    /// which the first refresh and the first login would otherwise each pay
    /// while other requests wait. A database missing or unreadable now is
    /// reported by the lookups that need it.
    pub async fn read_pbx_logins(&self) {
        if let Some(pbx) = self.pbx() {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = pbx.others.find("");
                let _ = pbx.logins.find("");
            })
            .await;
        }
    }

    /// A refresh's user ([`RefreshUser`]): from the PBX's database on this
    /// thread when its handle answers without waiting
    /// ([`PbxDatabase::find_at_once`]), else off the async threads. Each trip
    /// off them was a blocking-pool thread woken and the request's task woken
    /// back: with 64 refreshes under way, 99 such threads took a fifth of
    /// the core (bench/README.md, the scale family's fourteenth pass).
    pub async fn refresh_user(&self, username: &str) -> Result<RefreshUser, ApiError> {
        let Some(pbx) = self.pbx() else {
            return Ok(RefreshUser::Builtin);
        };
        if let Some(found) = pbx.others.find_at_once(username) {
            return Ok(RefreshUser::Found(found));
        }
        let username = username.to_owned();
        blocking(move || pbx.others.find(&username))
            .await
            .map(RefreshUser::Found)
    }

    /// Runs a password check on the low-priority hashing threads.
    pub async fn check_password<T, F>(&self, queue: Queue, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.hasher.run(queue, f).await
    }
}

/// Where a refresh's user comes from.
#[derive(Debug)]
pub enum RefreshUser {
    /// From the PBX's database, looked up before the refresh's write: a wait
    /// for MikoPBX's lock must never hold up the writer.
    Found(Option<Credential>),
    /// A built-in user, read by the refresh's write on the writer connection
    /// (our own database, its pages warm there).
    Builtin,
}

impl RefreshUser {
    /// The user named `username`, reading it from `store` if it is built in.
    pub fn resolve(
        self,
        store: &Store,
        username: &str,
    ) -> softphone_shared::Result<Option<Credential>> {
        match self {
            RefreshUser::Found(found) => Ok(found),
            RefreshUser::Builtin => builtin::find(store, username),
        }
    }
}

/// The PBX database of a `mikopbx` source, open twice.
#[derive(Debug)]
pub struct Pbx {
    /// For logins, read on the low-priority hashing threads with the password
    /// check: a flood of PBX logins, cheap as each is, then queues there as
    /// PBKDF2 checks do, instead of taking the cores profile and refresh need.
    /// Its own handle, so a hashing thread preempted while it holds it never
    /// holds up a refresh.
    pub logins: PbxDatabase,
    /// For refresh, and the change watcher's look at the file.
    pub others: PbxDatabase,
    /// For the directory and the feature codes: each reads whole tables,
    /// which must not hold up a refresh.
    pub listings: PbxDatabase,
    /// For the watcher's sweep, which reads every peer under SCHED_IDLE: its
    /// own handle, so that no request waits behind an idle-class thread that
    /// holds it.
    pub sweeps: PbxDatabase,
}

fn pbx_of(source: &UserSource) -> Option<Arc<Pbx>> {
    match source {
        UserSource::Builtin => None,
        UserSource::MikoPbx(path) => Some(Arc::new(Pbx {
            logins: PbxDatabase::new(path),
            others: PbxDatabase::new(path),
            listings: PbxDatabase::new(path),
            sweeps: PbxDatabase::new(path),
        })),
    }
}

fn calls_of(config: &Config) -> Option<Arc<PbxDatabase>> {
    config
        .cdr_database()
        .map(|path| Arc::new(PbxDatabase::new(&path)))
}

/// Runs `f` on the blocking pool; its errors are logged and become a 500.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> softphone_shared::Result<T> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(f).await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(internal(&e)),
        Err(e) => {
            eprintln!("softphone-issuer: blocking task failed: {e}");
            Err(ApiError::Internal)
        }
    }
}
