//! Password checks on a few dedicated threads of the lowest CPU priority.
//!
//! A check costs ~100 ms of CPU (PBKDF2, 600 000 rounds). Run at normal priority
//! on the cores that serve refresh and profile, a login flood pushed those
//! answers' p99 up tenfold; at nice 19 with SCHED_BATCH the scheduler runs the
//! checks in the gaps instead. At most `login_concurrency` run at once and at most
//! [`MAX_WAITING`] wait in each queue; beyond that a login is told to come back
//! later, and so is one that waited longer than [`MAX_WAIT`]. Logins from
//! addresses known to their user wait in their own queue, served first, and
//! have one more thread of their own at normal priority: on a machine a flood
//! (or anything else) keeps busy, a nice-19 thread can take seconds per hash,
//! and the real user's phone must not wait for that. A low-priority thread
//! takes a known check only while that thread is busy with another one (CI
//! caught a known login that a nice-19 thread had picked up first: 2.5 s on a
//! loaded machine, where the normal-priority thread takes 0.1–0.4 s). Only
//! someone who has logged in with the password before reaches that queue, so
//! it cannot be flooded.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};
use tokio::sync::oneshot;

use crate::ApiError;

/// Logins waiting for a hashing thread, per queue, before new ones get 503 +
/// Retry-After.
pub const MAX_WAITING: usize = 256;

/// Longest a login waits for a hashing thread before it is told to come back
/// (503 + Retry-After), unchecked. nginx gives the issuer 2.5 s before it
/// answers 503 itself (deploy/nginx/locations.conf.in): a login that could not
/// even start by then would be cut off mid-hash, its session possibly made but
/// its tokens lost.
pub const MAX_WAIT: Duration = Duration::from_millis(1500);

/// Longest a login waits for its verdict, started or not. A thread drops a job
/// that waited past [`MAX_WAIT`] only when it gets to it, and on a saturated
/// core a nice-19 thread may not run for seconds: the waiting side gives up
/// too, still inside nginx's 2.5 s, and the check, if it ever starts, sees
/// nobody waits and is skipped.
pub const GIVE_UP_AFTER: Duration = Duration::from_millis(2000);

struct Job {
    queued: Instant,
    run: Box<dyn FnOnce() + Send>,
}

/// Which queue a check waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// From an address that logged in to this user before: served first, so
    /// guessers (whose checks the throttle lets through at its own pace) or a
    /// flood of other names never make the real user wait for their hashes.
    Known,
    Other,
}

#[derive(Default)]
struct Jobs {
    known: VecDeque<Job>,
    other: VecDeque<Job>,
    /// The normal-priority thread is running a check; until it is done, the
    /// low-priority threads may take known checks too.
    known_thread_busy: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

pub struct Hasher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    /// Starts `threads` hashing threads at the lowest priority, and one at
    /// normal priority for known addresses only.
    pub fn start(threads: usize) -> std::io::Result<Hasher> {
        let shared = Arc::new(Shared::default());
        for i in 0..=threads.max(1) {
            let known_only = i == 0;
            let shared = Arc::clone(&shared);
            let name = if known_only {
                "password-known".to_owned()
            } else {
                format!("password-{i}")
            };
            std::thread::Builder::new().name(name).spawn(move || {
                if !known_only {
                    let lowered = set_thread_priority_and_policy(
                        thread_native_id(),
                        ThreadPriority::Min,
                        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
                    );
                    if let Err(e) = lowered {
                        eprintln!("softphone-issuer: password threads keep normal priority: {e:?}");
                    }
                }
                while let Some(job) = shared.next(known_only) {
                    // Dropped unrun, the job's answer channel closes: the
                    // login is told to come back later.
                    if job.queued.elapsed() <= MAX_WAIT {
                        (job.run)();
                    }
                }
            })?;
        }
        Ok(Hasher { shared })
    }

    /// Queues `check` at once; the receiver gets its verdict.
    pub fn submit<T, F>(&self, queue: Queue, check: F) -> Result<oneshot::Receiver<T>, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            queued: Instant::now(),
            run: Box::new(move || {
                if !tx.is_closed() {
                    let _ = tx.send(check());
                }
            }),
        };
        let Ok(mut jobs) = self.shared.jobs.lock() else {
            return Err(ApiError::Internal);
        };
        let waiting = match queue {
            Queue::Known => &mut jobs.known,
            Queue::Other => &mut jobs.other,
        };
        if waiting.len() >= MAX_WAITING {
            return Err(ApiError::Busy);
        }
        waiting.push_back(job);
        drop(jobs);
        // Wake every thread: a known job may be for the known thread only
        // waiting, an other job for any of the rest.
        self.shared.ready.notify_all();
        Ok(rx)
    }

    /// Checks waiting for a thread: the known queue's, then the other's.
    pub fn waiting(&self) -> [usize; 2] {
        self.shared
            .jobs
            .lock()
            .map_or([0, 0], |jobs| [jobs.known.len(), jobs.other.len()])
    }

    /// Runs `check` on a hashing thread and returns its verdict; [`ApiError::Busy`]
    /// when it could not run (the queue full, the wait too long, shutting down).
    pub async fn run<T, F>(&self, queue: Queue, check: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match tokio::time::timeout(GIVE_UP_AFTER, self.submit(queue, check)?).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(_)) | Err(_) => Err(ApiError::Busy),
        }
    }
}

impl Shared {
    /// The next job, known queue first (only that one with `known_only`, and
    /// for the others only while the known thread is busy); `None` when the
    /// issuer shuts down.
    fn next(&self, known_only: bool) -> Option<Job> {
        let mut jobs = self.jobs.lock().ok()?;
        if known_only {
            jobs.known_thread_busy = false;
        }
        loop {
            let job = if known_only {
                jobs.known.pop_front()
            } else if jobs.known_thread_busy {
                jobs.known.pop_front().or_else(|| jobs.other.pop_front())
            } else {
                jobs.other.pop_front()
            };
            if let Some(job) = job {
                if known_only {
                    jobs.known_thread_busy = true;
                }
                return Some(job);
            }
            if jobs.closed {
                return None;
            }
            jobs = self.ready.wait(jobs).ok()?;
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.shared.jobs.lock() {
            jobs.closed = true;
        }
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_checks_and_refuses_when_the_queue_is_full() {
        let hasher = Hasher::start(1).unwrap();
        assert_eq!(hasher.run(Queue::Other, || true).await, Ok(true));
        assert_eq!(hasher.run(Queue::Known, || false).await, Ok(false));

        // Block the only thread, fill the queue, and one more is refused.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocked = hasher
            .submit(Queue::Other, move || wait.recv().is_ok())
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let queued: Vec<_> = (0..MAX_WAITING)
            .map(|i| {
                let order = Arc::clone(&order);
                hasher
                    .submit(Queue::Other, move || {
                        order.lock().unwrap().push(i);
                        true
                    })
                    .unwrap()
            })
            .collect();
        assert_eq!(
            hasher.submit(Queue::Other, || true).err(),
            Some(ApiError::Busy)
        );
        // A known address's check still finds room, and goes first.
        let known = {
            let order = Arc::clone(&order);
            hasher
                .submit(Queue::Known, move || {
                    order.lock().unwrap().push(usize::MAX);
                    true
                })
                .unwrap()
        };
        // It runs on the known thread while every other thread is busy.
        let known = tokio::time::timeout(Duration::from_secs(5), known).await;
        assert_eq!(known.ok(), Some(Ok(true)));
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(true));
        for q in queued {
            assert_eq!(q.await, Ok(true));
        }
        let order = order.lock().unwrap();
        assert_eq!(order.len(), MAX_WAITING + 1);
        assert_eq!(order[0], usize::MAX, "the known check ran first");
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// Known checks run at normal priority whenever that thread is free, even
    /// with low-priority threads idle; they spill over only while it is busy.
    #[tokio::test]
    async fn known_checks_go_to_the_normal_priority_thread_first() {
        let hasher = Hasher::start(3).unwrap();
        for _ in 0..50 {
            let ran_on = hasher.run(Queue::Known, thread_name).await.unwrap();
            assert_eq!(ran_on, "password-known");
            let ran_on = hasher.run(Queue::Other, thread_name).await.unwrap();
            assert_ne!(ran_on, "password-known");
        }
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocked = hasher
            .submit(Queue::Known, move || {
                let name = thread_name();
                wait.recv().map(|()| name)
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ran_on = hasher.run(Queue::Known, thread_name).await.unwrap();
        assert!(ran_on.starts_with("password-") && ran_on != "password-known");
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(Ok("password-known".to_owned())));
    }

    /// With every thread stuck, a login is still answered (Busy) after
    /// GIVE_UP_AFTER, and its check never runs later.
    #[tokio::test]
    async fn a_login_gives_up_when_no_thread_gets_to_it() {
        let hasher = Hasher::start(1).unwrap();
        let mut releases = Vec::new();
        let mut blocked = Vec::new();
        for queue in [Queue::Known, Queue::Other] {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            blocked.push(hasher.submit(queue, move || wait.recv().is_ok()).unwrap());
            releases.push(release);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ran = Arc::new(Mutex::new(false));
        let started = Instant::now();
        let verdict = {
            let ran = Arc::clone(&ran);
            hasher
                .run(Queue::Other, move || *ran.lock().unwrap() = true)
                .await
        };
        let waited = started.elapsed();
        assert_eq!(verdict, Err(ApiError::Busy));
        assert!(
            waited >= GIVE_UP_AFTER && waited < GIVE_UP_AFTER * 2,
            "{waited:?}"
        );
        // Released at once, the thread reaches the job: nobody waits, it is skipped.
        drop(releases);
        for job in blocked {
            assert_eq!(job.await, Ok(false));
        }
        assert_eq!(hasher.run(Queue::Other, || 7).await, Ok(7));
        assert!(!*ran.lock().unwrap());
    }

    /// A check that waited longer than MAX_WAIT never runs: its login is told
    /// to come back, and the thread goes on with fresh ones.
    #[tokio::test]
    async fn checks_that_waited_too_long_are_not_run() {
        let hasher = Hasher::start(1).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocked = hasher
            .submit(Queue::Other, move || wait.recv().is_ok())
            .unwrap();
        let ran = Arc::new(Mutex::new(false));
        let stale = {
            let ran = Arc::clone(&ran);
            hasher
                .submit(Queue::Other, move || *ran.lock().unwrap() = true)
                .unwrap()
        };
        tokio::time::sleep(MAX_WAIT + Duration::from_millis(200)).await;
        release.send(()).unwrap();
        assert_eq!(blocked.await, Ok(true));
        assert!(
            stale.await.is_err(),
            "the stale check's answer channel closed"
        );
        assert!(!*ran.lock().unwrap());
        assert_eq!(hasher.run(Queue::Other, || 7).await, Ok(7));
    }
}
