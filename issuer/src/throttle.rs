//! Login throttling, in memory.
//!
//! Two limits, both counting failures in a sliding window (the original's 5 in
//! 900 s by default):
//! - per (username, address): the 6th try is refused with 429 and `Retry-After`
//!   until the oldest failure leaves the window, correct password or not;
//! - per username across all addresses: past a higher ceiling, attempts for that
//!   user are let through only one per `login_user_interval` seconds. That slows a
//!   distributed guesser to a crawl without letting anyone lock the user out from
//!   everywhere: the real user still gets an attempt every few seconds.
//!
//! An attempt is counted when it starts (so 64 parallel guesses cannot all slip
//! past the limit) and taken back when it succeeds. The state is lost on restart,
//! which an attacker gains nothing from: a restart is not theirs to trigger.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use softphone_shared::config::Config;

/// Entries kept before the oldest are evicted; far above honest use.
const MAX_ENTRIES: usize = 100_000;
/// What eviction brings the tables down to: the full scan then happens at most
/// once per 25 000 new entries, not on every attempt of a flood.
const LOW_WATER: usize = MAX_ENTRIES * 3 / 4;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_failures: usize,
    pub window: i64,
    pub user_ceiling: usize,
    pub user_interval: i64,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_failures: config.login_max_failures as usize,
            window: config.login_window,
            user_ceiling: config.login_user_ceiling as usize,
            user_interval: config.login_user_interval,
        }
    }
}

#[derive(Debug, Default)]
struct UserState {
    failures: VecDeque<i64>,
    last_slow_attempt: i64,
}

#[derive(Debug, Default)]
struct Tables {
    pairs: HashMap<(String, IpAddr), VecDeque<i64>>,
    users: HashMap<String, UserState>,
}

#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    tables: Mutex<Tables>,
}

/// A counted attempt; report its outcome with [`Throttle::succeeded`].
#[derive(Debug)]
pub struct Attempt {
    username: String,
    from: IpAddr,
    at: i64,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            tables: Mutex::new(Tables::default()),
        }
    }

    /// Counts an attempt, or refuses it with the seconds to wait.
    pub fn begin(&self, username: &str, from: IpAddr, now: i64) -> Result<Attempt, i64> {
        let Ok(mut tables) = self.tables.lock() else {
            return Err(1);
        };
        let limits = self.limits;
        let since = now - limits.window;

        let pair_key = (username.to_owned(), from);
        let pair = tables.pairs.entry(pair_key.clone()).or_default();
        prune(pair, since);
        if pair.len() >= limits.max_failures {
            let oldest = pair.front().copied().unwrap_or(now);
            return Err((oldest + limits.window - now).max(1));
        }

        let user = tables.users.entry(username.to_owned()).or_default();
        prune(&mut user.failures, since);
        if user.failures.len() >= limits.user_ceiling {
            let waited = now - user.last_slow_attempt;
            if waited < limits.user_interval {
                return Err(limits.user_interval - waited);
            }
            user.last_slow_attempt = now;
        }
        user.failures.push_back(now);
        tables.pairs.entry(pair_key).or_default().push_back(now);

        if tables.pairs.len() > MAX_ENTRIES || tables.users.len() > MAX_ENTRIES {
            evict(&mut tables, since);
        }
        Ok(Attempt {
            username: username.to_owned(),
            from,
            at: now,
        })
    }

    /// A correct password: the attempt is not a failure, and the address's record
    /// for this user is cleared.
    pub fn succeeded(&self, attempt: Attempt) {
        let Ok(mut tables) = self.tables.lock() else {
            return;
        };
        tables
            .pairs
            .remove(&(attempt.username.clone(), attempt.from));
        if let Some(user) = tables.users.get_mut(&attempt.username)
            && let Some(at) = user.failures.iter().rposition(|&t| t == attempt.at)
        {
            user.failures.remove(at);
        }
    }

    /// Drops entries whose window has passed (called periodically).
    pub fn prune_all(&self, now: i64) {
        if let Ok(mut tables) = self.tables.lock() {
            evict(&mut tables, now - self.limits.window);
        }
    }
}

fn prune(times: &mut VecDeque<i64>, since: i64) {
    while times.front().is_some_and(|&t| t <= since) {
        times.pop_front();
    }
}

fn evict(tables: &mut Tables, since: i64) {
    tables.pairs.retain(|_, times| {
        prune(times, since);
        !times.is_empty()
    });
    tables.users.retain(|_, user| {
        prune(&mut user.failures, since);
        !user.failures.is_empty()
    });
    // Still too many: a flood of distinct names. Forget arbitrary entries rather
    // than grow without bound; the per-user ceiling still slows what remains.
    let excess = tables.pairs.len().saturating_sub(LOW_WATER);
    let doomed: Vec<_> = tables.pairs.keys().take(excess).cloned().collect();
    for key in doomed {
        tables.pairs.remove(&key);
    }
    let excess = tables.users.len().saturating_sub(LOW_WATER);
    let doomed: Vec<_> = tables.users.keys().take(excess).cloned().collect();
    for key in doomed {
        tables.users.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(Limits {
            max_failures: 5,
            window: 900,
            user_ceiling: 20,
            user_interval: 10,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_sixth_failure_from_one_address_waits_for_the_window() {
        let t = throttle();
        for i in 0..5 {
            assert!(t.begin("201", ip(1), 1000 + i).is_ok());
        }
        assert_eq!(t.begin("201", ip(1), 1010).unwrap_err(), 890);
        // Another address and another user are not affected.
        assert!(t.begin("201", ip(2), 1010).is_ok());
        assert!(t.begin("202", ip(1), 1010).is_ok());
        // The window slides.
        assert!(t.begin("201", ip(1), 1901).is_ok());
    }

    #[test]
    fn success_clears_the_pair() {
        let t = throttle();
        for i in 0..4 {
            t.begin("201", ip(1), 1000 + i).unwrap();
        }
        let ok = t.begin("201", ip(1), 1004).unwrap();
        t.succeeded(ok);
        for i in 0..5 {
            assert!(t.begin("201", ip(1), 1005 + i).is_ok());
        }
    }

    #[test]
    fn a_distributed_guesser_is_slowed_but_the_user_is_not_locked_out() {
        let t = throttle();
        for i in 0..20u8 {
            // four addresses, five failures each
            t.begin("201", ip(i / 5), 1000).unwrap();
        }
        // Past the ceiling: one attempt per interval, from any address.
        assert!(t.begin("201", ip(100), 1001).is_ok());
        assert_eq!(t.begin("201", ip(101), 1002).unwrap_err(), 9);
        assert!(t.begin("201", ip(101), 1011).is_ok());
        // Other users are untouched.
        assert!(t.begin("202", ip(101), 1011).is_ok());
    }

    #[test]
    fn a_flood_of_distinct_names_stays_bounded() {
        let t = throttle();
        for i in 0..(MAX_ENTRIES as u64 + 30_000) {
            let _ = t.begin(&format!("name-{i}"), ip(1), 1000);
        }
        let tables = t.tables.lock().unwrap();
        assert!(tables.pairs.len() <= MAX_ENTRIES && tables.users.len() <= MAX_ENTRIES);
        // The last eviction went down to the low-water mark, not to just under
        // the ceiling, so the next scan is 25 000 attempts away.
        assert!(
            tables.pairs.len() < MAX_ENTRIES - 10_000,
            "{}",
            tables.pairs.len()
        );
    }
}
