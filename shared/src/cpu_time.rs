//! The CPU time the calling thread has used: what a piece of work cost, which
//! wall time overstates whenever other threads share the core (a purge step
//! timed by the wall clock on a loaded core looked too slow and shrank).

use std::time::Duration;

/// CPU time of the calling thread so far (user and system).
pub fn this_thread() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is Linux's
    // per-thread CPU clock, which always exists.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sleeping costs no CPU time; spinning does, never more than the wall
    /// time it took.
    #[test]
    fn counts_work_not_waiting() {
        let start = this_thread();
        std::thread::sleep(Duration::from_millis(50));
        let slept = this_thread() - start;
        assert!(slept < Duration::from_millis(10), "{slept:?}");
        // The wall clock starts first and stops last, so its interval holds
        // the CPU clock's; the two clocks tick apart by a little, which the
        // margin allows (a CI run saw 20.000101 ms of CPU in 20.000 ms of wall
        // time when the CPU clock was read first).
        let wall = std::time::Instant::now();
        let start = this_thread();
        let mut spun = Duration::ZERO;
        while spun < Duration::from_millis(20) && wall.elapsed() < Duration::from_secs(10) {
            std::hint::black_box(0u64);
            spun = this_thread() - start;
        }
        let took = wall.elapsed();
        assert!(spun >= Duration::from_millis(20), "{spun:?}");
        assert!(
            spun <= took + Duration::from_millis(1),
            "{spun:?} in {took:?}"
        );
    }
}
