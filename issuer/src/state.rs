//! The issuer's shared state and the two ways work leaves the async threads:
//! database calls (short, on the blocking pool) and password checks (long, on
//! dedicated low-priority threads, so a login flood queues instead of starving
//! refresh and profile).

use std::sync::{Arc, Mutex, RwLock};

use crate::hashing::{Hasher, Queue};
use crate::throttle::{Limits, Throttle};
use crate::{ApiError, Result};
use softphone_shared::config::Config;
use softphone_shared::keys::KeyRing;
use softphone_shared::live_keys::LiveKeys;
use softphone_shared::seclog::SecurityLog;
use softphone_shared::store::Store;

pub struct App {
    config: RwLock<Arc<Config>>,
    keys: LiveKeys,
    /// Writes (sessions, revocations) go through one connection: SQLite has one
    /// writer at a time anyway.
    writer: Arc<Mutex<Store>>,
    /// Reads (is this session active? who is this user?) do not wait for a
    /// writer's fsync.
    reader: Arc<Mutex<Store>>,
    log: SecurityLog,
    /// Kept across SIGHUP (logrotate sends one daily): only its limits change.
    throttle: Throttle,
    hasher: Hasher,
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
        let writer = Store::open(&config.database())?;
        let reader = Store::open_read_only(&config.database())?;
        let log = SecurityLog::open(&config.security_log(), config.syslog, "softphone-issuer")?;
        Ok(App {
            throttle: Throttle::new(Limits::from_config(&config)),
            hasher: Hasher::start(config.login_concurrency)?,
            config: RwLock::new(Arc::new(config)),
            keys,
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            log,
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
        let mut effective = new.with_files_of(&old);
        effective.issuer_listen = old.issuer_listen;
        if let Ok(mut slot) = self.config.write() {
            *slot = Arc::new(effective);
        }
        Ok(notes)
    }

    /// Runs `f` on the writer connection, off the async threads.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
    {
        run_blocking(Arc::clone(&self.writer), f).await
    }

    /// Runs `f` on the reader connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
    {
        run_blocking(Arc::clone(&self.reader), f).await
    }

    /// Runs a password check on the low-priority hashing threads.
    pub async fn check_password<F>(&self, queue: Queue, f: F) -> Result<bool, ApiError>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        self.hasher.run(queue, f).await
    }
}

async fn run_blocking<T, F>(store: Arc<Mutex<Store>>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> softphone_shared::Result<T> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        let mut guard = store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    })
    .await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            // Database messages name tables and constraints, never values.
            eprintln!("softphone-issuer: {e}");
            Err(ApiError::Internal)
        }
        Err(e) => {
            eprintln!("softphone-issuer: blocking task failed: {e}");
            Err(ApiError::Internal)
        }
    }
}
