//! A lane: one thread that runs jobs one at a time, in the order they came.
//!
//! The reads of MikoPBX's databases that a request waits for (a day of call
//! records, a remade directory) take about a millisecond each and go through
//! one connection. Run on the blocking pool, concurrent ones became threads
//! time-sliced on the same core, queued on that connection's lock in no
//! particular order, each waiting for slices of all the others: `history` on
//! 4 connections, pinned to one core, had p99 21 ms. In a lane each runs to
//! its end and the next starts: p99 10 ms at a higher rate (bench/README.md,
//! the diary of the `directory` family).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use tokio::sync::oneshot;

use crate::error::internal;
use crate::{ApiError, Result};

/// Jobs waiting before new ones are told to come back (503 + Retry-After):
/// at a millisecond each, a quarter of a second of work.
pub const MAX_WAITING: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, Clone)]
pub struct Lane {
    jobs: SyncSender<Job>,
}

impl Lane {
    /// Starts the lane's thread, named `name`; it ends when every handle is
    /// gone.
    pub fn start(name: &str) -> Result<Lane> {
        let (jobs, queue) = mpsc::sync_channel(MAX_WAITING);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(queue))?;
        Ok(Lane { jobs })
    }

    /// Runs `f` when the jobs before it are done. Its error is logged and
    /// becomes a 500, as on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> softphone_shared::Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            // Nobody waits any more (the client went away): skip the read.
            if !answer.is_closed() {
                let _ = answer.send(f());
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ApiError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                eprintln!("softphone-issuer: a lane's thread is gone");
                return Err(ApiError::Internal);
            }
        }
        match answered.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(internal(&e)),
            // The job panicked; the thread said so on stderr.
            Err(_) => Err(ApiError::Internal),
        }
    }
}

fn run(queue: Receiver<Job>) {
    for job in queue {
        // A panicking job must not end the lane for every later request.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn jobs_run_one_at_a_time_in_the_order_they_came() {
        let lane = Lane::start("test-lane").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Mutex::new(0));
        let mut waits = Vec::new();
        for i in 0..20 {
            let (seen, running, lane) = (Arc::clone(&seen), Arc::clone(&running), lane.clone());
            waits.push(tokio::spawn(async move {
                lane.run(move || {
                    *running.lock().unwrap() += 1;
                    assert_eq!(*running.lock().unwrap(), 1, "two jobs at once");
                    std::thread::sleep(Duration::from_millis(2));
                    seen.lock().unwrap().push(i);
                    *running.lock().unwrap() -= 1;
                    Ok(i * 10)
                })
                .await
            }));
            // Sent in this order.
            tokio::task::yield_now().await;
        }
        for (i, wait) in waits.into_iter().enumerate() {
            assert_eq!(wait.await.unwrap(), Ok(i * 10));
        }
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failing_or_panicking_job_is_a_500_and_the_lane_goes_on() {
        let lane = Lane::start("test-lane").unwrap();
        let failed: Result<(), ApiError> =
            lane.run(|| Err(rusqlite::Error::InvalidQuery.into())).await;
        assert_eq!(failed, Err(ApiError::Internal));
        let panicked: Result<(), ApiError> = lane.run(|| panic!("a bug")).await;
        assert_eq!(panicked, Err(ApiError::Internal));
        assert_eq!(lane.run(|| Ok(7)).await, Ok(7));
    }

    #[tokio::test]
    async fn a_full_lane_says_come_back_later() {
        let lane = Lane::start("test-lane").unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let first = lane.clone();
        let blocked = tokio::spawn(async move {
            first
                .run(move || {
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        });
        // The first job holds the thread; MAX_WAITING more fill the queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..MAX_WAITING)
            .map(|_| {
                let lane = lane.clone();
                tokio::spawn(async move { lane.run(|| Ok(())).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(lane.run(|| Ok(())).await, Err(ApiError::Busy));
        release.send(()).unwrap();
        assert_eq!(blocked.await.unwrap(), Ok(()));
        for q in queued {
            assert_eq!(q.await.unwrap(), Ok(()));
        }
    }
}
