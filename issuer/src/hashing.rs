//! Password checks on a few dedicated threads of the lowest CPU priority.
//!
//! A check costs ~100 ms of CPU (PBKDF2, 600 000 rounds). Run at normal priority
//! on the cores that serve refresh and profile, a login flood pushed those
//! answers' p99 up tenfold; at nice 19 with SCHED_BATCH the scheduler runs the
//! checks in the gaps instead. At most `login_concurrency` run at once and at most
//! [`MAX_WAITING`] wait; beyond that a login is told to come back later.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};
use tokio::sync::oneshot;

use crate::ApiError;

/// Logins waiting for a hashing thread before new ones get 503 + Retry-After.
pub const MAX_WAITING: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
pub struct Hasher {
    queue: SyncSender<Job>,
}

impl Hasher {
    /// Starts `threads` hashing threads.
    pub fn start(threads: usize) -> std::io::Result<Hasher> {
        let (queue, jobs) = sync_channel::<Job>(MAX_WAITING);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    let lowered = set_thread_priority_and_policy(
                        thread_native_id(),
                        ThreadPriority::Min,
                        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
                    );
                    if let Err(e) = lowered {
                        eprintln!("softphone-issuer: password threads keep normal priority: {e:?}");
                    }
                    loop {
                        let job = match jobs.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the issuer is shutting down
                        }
                    }
                })?;
        }
        Ok(Hasher { queue })
    }

    /// Queues `check` at once; the receiver gets its verdict.
    pub fn submit<T, F>(&self, check: F) -> Result<oneshot::Receiver<T>, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(check());
        });
        match self.queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(ApiError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::Internal),
        }
    }

    /// Runs `check` on a hashing thread and returns its verdict.
    pub async fn run<T, F>(&self, check: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.submit(check)?.await.map_err(|_| ApiError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_checks_and_refuses_when_the_queue_is_full() {
        let hasher = Hasher::start(1).unwrap();
        assert_eq!(hasher.run(|| true).await, Ok(true));
        assert_eq!(hasher.run(|| false).await, Ok(false));

        // Block the only thread, fill the queue, and one more is refused.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocked = hasher.submit(move || wait.recv().is_ok()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..MAX_WAITING)
            .map(|_| hasher.submit(|| true).unwrap())
            .collect();
        assert_eq!(hasher.submit(|| true).err(), Some(ApiError::Busy));
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(true));
        for q in queued {
            assert_eq!(q.await, Ok(true));
        }
    }
}
