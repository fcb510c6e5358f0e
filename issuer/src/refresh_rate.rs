//! How often one session may refresh. An app refreshes about once an hour (and
//! retries a few times when the network drops an answer); a stolen refresh token
//! replayed in a loop must not mint access tokens at thousands per second. Each
//! session has a bucket of `refresh_burst` refreshes, refilled one per
//! `refresh_interval` seconds (10 and 6: ten back to back, then ten a minute);
//! an empty bucket is a 429 with `Retry-After`, and the presented token stays
//! usable once the bucket refills. The limits are read from the config at each
//! call, so a SIGHUP changes them without forgetting the buckets.
//!
//! Only sessions whose refresh token verified reach the bucket, so the table
//! holds at most one entry per live session, and full buckets are pruned.

use std::collections::HashMap;
use std::sync::Mutex;

/// `refresh_burst` and `refresh_interval`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub burst: u32,
    pub interval: i64,
}

impl Limits {
    pub fn from_config(config: &softphone_shared::config::Config) -> Limits {
        Limits {
            burst: config.refresh_burst,
            interval: config.refresh_interval.max(1),
        }
    }
}

#[derive(Debug, Default)]
pub struct RefreshRate {
    /// sid → (refreshes left, when the last one was regained).
    buckets: Mutex<HashMap<String, (u32, i64)>>,
}

impl RefreshRate {
    /// Takes one refresh of `sid`'s bucket, or says in how many seconds one is
    /// regained.
    pub fn take(&self, sid: &str, now: i64, limits: Limits) -> Result<(), i64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(sid.to_owned()).or_insert((limits.burst, now));
        refill(bucket, now, limits);
        if bucket.0 == 0 {
            return Err(limits.interval - (now - bucket.1));
        }
        bucket.0 -= 1;
        Ok(())
    }

    /// Forgets buckets that have refilled completely.
    pub fn prune(&self, now: i64, limits: Limits) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|_, bucket| {
            refill(bucket, now, limits);
            bucket.0 < limits.burst
        });
    }
}

fn refill(bucket: &mut (u32, i64), now: i64, limits: Limits) {
    let regained = (now - bucket.1).max(0) / limits.interval;
    if regained > 0 {
        let regained = u32::try_from(regained).unwrap_or(u32::MAX);
        bucket.0 = limits.burst.min(bucket.0.saturating_add(regained));
        bucket.1 = now - (now - bucket.1) % limits.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: u32 = 10;
    const REFILL: i64 = 6;
    const LIMITS: Limits = Limits {
        burst: BURST,
        interval: REFILL,
    };

    #[test]
    fn a_burst_then_one_per_refill_period() {
        let rate = RefreshRate::default();
        for _ in 0..BURST {
            assert_eq!(rate.take("s", 1000, LIMITS), Ok(()));
        }
        assert_eq!(rate.take("s", 1000, LIMITS), Err(REFILL));
        assert_eq!(rate.take("s", 1000 + REFILL - 1, LIMITS), Err(1));
        // Another session is not affected.
        assert_eq!(rate.take("t", 1000, LIMITS), Ok(()));
        assert_eq!(rate.take("s", 1000 + REFILL, LIMITS), Ok(()));
        assert_eq!(rate.take("s", 1000 + REFILL, LIMITS), Err(REFILL));
        // Over an hour: BURST + 3600 / REFILL at most.
        let granted = (1000..4600)
            .filter(|t| rate.take("u", *t, LIMITS).is_ok())
            .count();
        assert_eq!(granted, BURST as usize + 3600 / REFILL as usize - 1);
        // Full buckets are forgotten, others kept.
        rate.prune(1000 + 100 * REFILL, LIMITS);
        assert_eq!(rate.buckets.lock().unwrap().len(), 1, "only u is still low");
    }
}
