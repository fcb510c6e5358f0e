//! The read connections that requests' lookups share (is this session
//! active? who is this user?).
//!
//! There are a few, not one, because a lookup runs on the blocking pool and
//! the scheduler may take the core from its thread while it holds a
//! connection: with daemons pinned to one core and a 250 Hz kernel, every
//! lookup behind it then waited up to a tick. During a purge of 100 000
//! sessions, refreshes that were still slow spent most of their time waiting
//! for the one connection that profile's lookups also held (bench/README.md,
//! the scale family's sixth pass). A lookup now takes any free connection,
//! and waits only when every one is busy.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::Result;
use softphone_shared::store::Store;

/// Connections in the pool: more than the lookups that can be under way on a
/// core at once, few enough that their page caches (2 MiB each at most) stay
/// small beside the writer's.
pub const CONNECTIONS: usize = 4;

#[derive(Debug)]
pub struct Readers {
    stores: Box<[Mutex<Store>]>,
    /// Where the next lookup starts looking, so the connections share the
    /// work (and their caches stay warm) instead of the first doing it all.
    next: AtomicUsize,
}

impl Readers {
    /// Opens [`CONNECTIONS`] read-only connections to the database at `path`.
    pub fn open(path: &Path) -> Result<Readers> {
        let stores = (0..CONNECTIONS)
            .map(|_| Store::open_read_only(path).map(Mutex::new))
            .collect::<softphone_shared::Result<Vec<_>>>()?;
        Ok(Readers {
            stores: stores.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, else the next one once it is free.
    /// Call it on a thread that may block.
    pub fn take(&self) -> MutexGuard<'_, Store> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.stores.len();
        for i in 0..count {
            match self.stores[(start + i) % count].try_lock() {
                Ok(guard) => return guard,
                // A lookup that panicked left the connection as it was:
                // SQLite ends its statements and transactions with it.
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.stores[start % count]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    use softphone_testkit::TestDir;

    use super::*;

    fn readers() -> (TestDir, Arc<Readers>) {
        let dir = TestDir::new("readers");
        let path = dir.path().join("sessions.db");
        Store::open(&path).unwrap();
        (dir, Arc::new(Readers::open(&path).unwrap()))
    }

    /// Takes a connection on another thread and looks a session up on it;
    /// true when that was done within `wait`. The thread is not waited for:
    /// a lookup stuck behind a held connection fails the test, not hangs it.
    fn looked_up_within(readers: &Arc<Readers>, wait: Duration) -> bool {
        let (done, finished) = mpsc::channel();
        let readers = Arc::clone(readers);
        std::thread::spawn(move || {
            readers.take().session("none").unwrap();
            let _ = done.send(());
        });
        finished.recv_timeout(wait).is_ok()
    }

    /// While lookups hold all connections but one, the next lookups get the
    /// free one at once, wherever the rotation stands.
    #[test]
    fn a_lookup_takes_the_free_connection_while_the_others_are_held() {
        let (_dir, readers) = readers();
        for free in 0..CONNECTIONS {
            let held: Vec<_> = (0..CONNECTIONS)
                .filter(|&i| i != free)
                .map(|i| readers.stores[i].lock().unwrap())
                .collect();
            for _ in 0..CONNECTIONS {
                assert!(
                    looked_up_within(&readers, Duration::from_secs(5)),
                    "connection {free} was free and not taken"
                );
            }
            drop(held);
        }
    }

    /// With every connection held, a lookup waits, and goes on once one is
    /// let go.
    #[test]
    fn a_lookup_waits_while_every_connection_is_held() {
        let (_dir, readers) = readers();
        let held: Vec<_> = readers.stores.iter().map(|s| s.lock().unwrap()).collect();
        let (done, finished) = mpsc::channel();
        let waiting = Arc::clone(&readers);
        std::thread::spawn(move || {
            waiting.take().session("none").unwrap();
            let _ = done.send(());
        });
        assert!(finished.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        assert!(finished.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
