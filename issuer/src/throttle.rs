//! Login throttling, in memory.
//!
//! Each username has a *lane* per client address (an IPv6 client's /64, which one
//! subscriber holds whole) and one *shared budget*:
//! - a lane refuses its 6th failure within the window (the original's 5 in 900 s)
//!   with 429 and `Retry-After`, correct password or not;
//! - a lane that logged in successfully stays *known* for `refresh_ttl` (as long as
//!   a session it opened could be refreshed). A known lane answers to its own limit
//!   only, so guessers elsewhere cannot spend the real user's attempts;
//! - every other lane draws on the username's shared budget, a token bucket of
//!   `login_user_ceiling` password checks refilled one per `login_user_interval`
//!   seconds. However many addresses guess, together they get at most
//!   `ceiling + 3600 / interval` checks of that username per hour (80 by default).
//!   A refusal costs the bucket nothing, so hammering does not starve it further.
//!
//! An attempt is counted when it starts (so 64 parallel guesses cannot all slip
//! past a limit). A success clears its lane's failures, makes the lane known and
//! gives back its budget token; an attempt never checked (the hashing queue was
//! full) gives back everything.
//!
//! Memory is bounded by `max_entries` (users plus lanes) without ever forgetting a
//! live counter: only entries that say nothing (no failure in the window, not
//! known, budget full) are swept, and removing those is the same as never having
//! had them. When live entries alone fill the table, attempts that would need a
//! new entry are refused until some expire; a flood of other usernames can thus
//! delay new names but never reset an existing one.
//!
//! The state lives as long as the process: a SIGHUP changes the limits and keeps
//! the counters ([`Throttle::set_limits`]). A restart forgets them, known lanes
//! included.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use softphone_shared::config::Config;

/// Users plus lanes kept at most; each costs well under 1 KiB, so ~50 MiB.
pub const MAX_ENTRIES: usize = 100_000;
/// Known lanes per user: its phones and desktops, not every café it ever used.
/// Beyond this, the lane that would expire first stops being known.
const MAX_KNOWN_PER_USER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures per lane in `window` seconds.
    pub max_failures: usize,
    pub window: i64,
    /// The shared budget's size (password checks at once)…
    pub user_ceiling: i64,
    /// … and the seconds it takes to win one back.
    pub user_interval: i64,
    /// Seconds a lane stays known after a successful login.
    pub known_for: i64,
    /// Users plus lanes held at most.
    pub max_entries: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_failures: config.login_max_failures as usize,
            window: config.login_window,
            user_ceiling: i64::from(config.login_user_ceiling),
            user_interval: config.login_user_interval,
            known_for: config.refresh_ttl,
            max_entries: MAX_ENTRIES,
        }
    }

    /// Password checks the unknown addresses of one username get, together, in
    /// any hour at most.
    pub fn shared_checks_per_hour(&self) -> i64 {
        self.user_ceiling + 3600 / self.user_interval.max(1)
    }
}

#[derive(Debug, Default)]
struct Lane {
    /// Start times of the failures (and attempts still being checked) in the window.
    failures: VecDeque<i64>,
    /// Known until then (0: never was).
    known_until: i64,
}

#[derive(Debug, Default)]
struct User {
    /// Generic cell rate: the shared budget is full again at this time; an
    /// attempt is allowed while it lies at most `(ceiling - 1) * interval` ahead.
    budget_full_at: i64,
    lanes: HashMap<IpAddr, Lane>,
}

#[derive(Debug)]
struct Tables {
    limits: Limits,
    users: HashMap<String, User>,
    /// Users plus lanes.
    entries: usize,
    last_sweep: i64,
}

#[derive(Debug)]
pub struct Throttle {
    tables: Mutex<Tables>,
}

/// A counted attempt; report its outcome with [`Throttle::succeeded`] or
/// [`Throttle::abandoned`] (a failure needs no report).
#[derive(Debug)]
pub struct Attempt {
    username: String,
    lane: IpAddr,
    at: i64,
    known: bool,
    spent_budget: bool,
}

impl Attempt {
    /// From an address that logged in to this user before: its password check
    /// goes ahead of the others.
    pub fn known(&self) -> bool {
        self.known
    }
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            tables: Mutex::new(Tables {
                limits,
                users: HashMap::new(),
                entries: 0,
                last_sweep: i64::MIN,
            }),
        }
    }

    /// New limits (SIGHUP); every counter and known lane stays.
    pub fn set_limits(&self, limits: Limits) {
        if let Ok(mut tables) = self.tables.lock() {
            tables.limits = limits;
        }
    }

    /// Counts an attempt, or refuses it with the seconds to wait.
    pub fn begin(&self, username: &str, from: IpAddr, now: i64) -> Result<Attempt, i64> {
        let Ok(mut guard) = self.tables.lock() else {
            return Err(1);
        };
        let tables = &mut *guard;
        let limits = tables.limits;
        let lane_key = lane_of(from);
        let since = now.saturating_sub(limits.window);

        // Judge on what exists, creating nothing yet: a refusal leaves no trace.
        let (known, budget_at, new_entries) = match tables.users.get_mut(username) {
            Some(user) => {
                let (known, new_lane) = match user.lanes.get_mut(&lane_key) {
                    Some(lane) => {
                        prune(&mut lane.failures, since);
                        if lane.failures.len() >= limits.max_failures {
                            let oldest = lane.failures.front().copied().unwrap_or(now);
                            return Err(oldest.saturating_add(limits.window - now).max(1));
                        }
                        (lane.known_until > now, 0)
                    }
                    None => (false, 1),
                };
                (known, user.budget_full_at.max(now), new_lane)
            }
            None => (false, now, 2),
        };
        let spend = !known;
        if spend {
            let ahead = budget_at - now;
            // Saturating: both come from the config, unbounded above.
            let allowed = (limits.user_ceiling - 1).saturating_mul(limits.user_interval);
            if ahead > allowed {
                return Err(ahead - allowed);
            }
        }
        if new_entries > 0 && !tables.room_for(new_entries, now) {
            return Err(limits.user_interval);
        }

        let user = tables.users.entry(username.to_owned()).or_default();
        let lane = user.lanes.entry(lane_key).or_default();
        lane.failures.push_back(now);
        if spend {
            user.budget_full_at = budget_at.saturating_add(limits.user_interval);
        }
        tables.entries += new_entries;
        Ok(Attempt {
            username: username.to_owned(),
            lane: lane_key,
            at: now,
            known,
            spent_budget: spend,
        })
    }

    /// A correct password: the lane's failures are cleared, the lane becomes known
    /// and the budget token is given back (a success is not a guess).
    pub fn succeeded(&self, attempt: Attempt, now: i64) {
        let Ok(mut guard) = self.tables.lock() else {
            return;
        };
        let tables = &mut *guard;
        let limits = tables.limits;
        let Some(user) = tables.users.get_mut(&attempt.username) else {
            return;
        };
        if attempt.spent_budget {
            user.budget_full_at = user.budget_full_at.saturating_sub(limits.user_interval);
        }
        // The lane holds this attempt, so no sweep removed it.
        if let Some(lane) = user.lanes.get_mut(&attempt.lane) {
            lane.failures.clear();
            lane.known_until = now.saturating_add(limits.known_for);
        }
        let mut known: Vec<(i64, IpAddr)> = user
            .lanes
            .iter()
            .filter(|(_, lane)| lane.known_until > now)
            .map(|(key, lane)| (lane.known_until, *key))
            .collect();
        if known.len() > MAX_KNOWN_PER_USER {
            known.sort_unstable();
            for (_, key) in &known[..known.len() - MAX_KNOWN_PER_USER] {
                if let Some(lane) = user.lanes.get_mut(key) {
                    lane.known_until = 0;
                }
            }
        }
    }

    /// The password was never checked (the hashing queue was full): the attempt
    /// costs nothing.
    pub fn abandoned(&self, attempt: Attempt) {
        let Ok(mut guard) = self.tables.lock() else {
            return;
        };
        let tables = &mut *guard;
        let interval = tables.limits.user_interval;
        let Some(user) = tables.users.get_mut(&attempt.username) else {
            return;
        };
        if attempt.spent_budget {
            user.budget_full_at = user.budget_full_at.saturating_sub(interval);
        }
        if let Some(lane) = user.lanes.get_mut(&attempt.lane)
            && let Some(at) = lane.failures.iter().rposition(|&t| t == attempt.at)
        {
            lane.failures.remove(at);
        }
    }

    /// Drops the entries that say nothing any more (called periodically).
    pub fn prune_all(&self, now: i64) {
        if let Ok(mut tables) = self.tables.lock() {
            tables.sweep(now);
        }
    }

    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        (tables.entries, tables.users.len())
    }
}

impl Tables {
    /// Whether `n` more entries fit, after sweeping if the table is full. A sweep
    /// scans everything, so a flood triggers at most one a second.
    fn room_for(&mut self, n: usize, now: i64) -> bool {
        if self.entries + n <= self.limits.max_entries {
            return true;
        }
        if self.last_sweep != now {
            self.sweep(now);
        }
        self.entries + n <= self.limits.max_entries
    }

    /// Removes lanes with no failure in the window that are not known, then users
    /// with no lane and a full budget: exactly the entries a fresh table would
    /// behave the same without.
    fn sweep(&mut self, now: i64) {
        self.last_sweep = now;
        let since = now.saturating_sub(self.limits.window);
        let mut entries = 0;
        self.users.retain(|_, user| {
            user.lanes.retain(|_, lane| {
                prune(&mut lane.failures, since);
                !lane.failures.is_empty() || lane.known_until > now
            });
            let keep = !user.lanes.is_empty() || user.budget_full_at > now;
            if keep {
                entries += 1 + user.lanes.len();
            }
            keep
        });
        self.entries = entries;
    }
}

/// The lane an address belongs to: itself, or for IPv6 its /64 (one subscriber's
/// network: rotating through it must not buy fresh lanes).
fn lane_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

fn prune(times: &mut VecDeque<i64>, since: i64) {
    while times.front().is_some_and(|&t| t <= since) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_failures: 5,
            window: 900,
            user_ceiling: 20,
            user_interval: 60,
            known_for: 2_592_000,
            max_entries: MAX_ENTRIES,
        }
    }

    fn throttle() -> Throttle {
        Throttle::new(limits())
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
    fn success_clears_the_lane() {
        let t = throttle();
        for i in 0..4 {
            t.begin("201", ip(1), 1000 + i).unwrap();
        }
        let ok = t.begin("201", ip(1), 1004).unwrap();
        t.succeeded(ok, 1004);
        for i in 0..5 {
            assert!(t.begin("201", ip(1), 1005 + i).is_ok());
        }
        assert!(t.begin("201", ip(1), 1010).is_err());
    }

    #[test]
    fn unknown_addresses_share_a_bounded_budget_and_a_known_one_is_untouched() {
        let t = throttle();
        let home = IpAddr::from([192, 168, 1, 7]);
        let ok = t.begin("201", home, 500).unwrap();
        assert!(!ok.known());
        t.succeeded(ok, 500);

        // An hour of 1 000 addresses guessing every second, ignoring Retry-After.
        let mut granted = 0;
        for now in 1000..4600 {
            for a in 0..4u8 {
                let from = IpAddr::from([10, 1, (now % 250) as u8, a]);
                if t.begin("201", from, now).is_ok() {
                    granted += 1;
                }
            }
            // The real user, from home, every 5 minutes: never refused.
            if now % 300 == 0 {
                let ok = t.begin("201", home, now).unwrap();
                assert!(ok.known());
                t.succeeded(ok, now);
            }
        }
        // 20 at once, then one a minute: the bound, less the minute the hour
        // ends in.
        assert_eq!(limits().shared_checks_per_hour(), 80);
        assert_eq!(granted, 79);
        // Other users are untouched.
        assert!(t.begin("202", ip(1), 4600).is_ok());
    }

    #[test]
    fn refusals_cost_nothing_and_say_when_to_come_back() {
        let t = throttle();
        for i in 0..20u8 {
            t.begin("201", ip(i), 1000).unwrap();
        }
        assert_eq!(t.begin("201", ip(100), 1000).unwrap_err(), 60);
        for _ in 0..1000 {
            assert!(t.begin("201", ip(100), 1030).is_err());
        }
        assert_eq!(t.begin("201", ip(100), 1030).unwrap_err(), 30);
        assert!(t.begin("201", ip(100), 1060).is_ok());
        assert!(t.begin("201", ip(101), 1060).is_err());
    }

    #[test]
    fn an_unchecked_attempt_is_given_back() {
        let t = throttle();
        for _ in 0..100 {
            let a = t.begin("201", ip(1), 1000).unwrap();
            t.abandoned(a);
        }
        for _ in 0..5 {
            assert!(t.begin("201", ip(1), 1000).is_ok());
        }
    }

    #[test]
    fn an_ipv6_subscriber_gets_one_lane_for_its_64() {
        let t = throttle();
        for i in 0..5u16 {
            let from = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i]);
            assert!(t.begin("201", from, 1000).is_ok());
        }
        let other = IpAddr::from([0x2001, 0xdb8, 0, 1, 9, 9, 9, 9]);
        assert!(t.begin("201", other, 1000).is_err());
        let next = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(t.begin("201", next, 1000).is_ok());
    }

    #[test]
    fn a_known_lane_still_has_its_own_limit() {
        let t = throttle();
        let ok = t.begin("201", ip(1), 1000).unwrap();
        t.succeeded(ok, 1000);
        for _ in 0..5 {
            assert!(t.begin("201", ip(1), 1001).unwrap().known());
        }
        assert_eq!(t.begin("201", ip(1), 1002).unwrap_err(), 899);
    }

    #[test]
    fn new_limits_keep_the_counters() {
        let t = throttle();
        let ok = t.begin("201", ip(9), 999).unwrap();
        t.succeeded(ok, 999);
        for _ in 0..5 {
            t.begin("201", ip(1), 1000).unwrap();
        }
        assert!(t.begin("201", ip(1), 1000).is_err());
        t.set_limits(Limits {
            max_failures: 6,
            ..limits()
        });
        assert!(t.begin("201", ip(1), 1000).is_ok());
        assert!(t.begin("201", ip(1), 1000).is_err());
        assert!(t.begin("201", ip(9), 1000).unwrap().known());
    }

    #[test]
    fn a_flood_of_names_cannot_reset_anyone_and_memory_stays_bounded() {
        let t = Throttle::new(Limits {
            max_entries: 1000,
            ..limits()
        });
        // A throttled lane, a spent budget and a known lane.
        for _ in 0..5 {
            t.begin("201", ip(1), 1000).unwrap();
        }
        for i in 2..17u8 {
            t.begin("201", ip(i), 1000).unwrap();
        }
        let ok = t.begin("202", ip(50), 1000).unwrap();
        t.succeeded(ok, 1000);

        for i in 0..100_000u32 {
            let _ = t.begin(&format!("name-{i}"), ip(200), 1000 + i64::from(i / 10_000));
        }
        let (entries, _) = t.entries();
        assert!(entries <= 1000, "{entries}");
        assert!(t.begin("201", ip(1), 1010).is_err());
        assert_eq!(t.begin("201", ip(99), 1010).unwrap_err(), 50);
        assert!(t.begin("202", ip(50), 1010).unwrap().known());

        // Once the flood's entries have nothing left to say, they go.
        t.prune_all(1000 + 20 * 60 + 1);
        let (entries, users) = t.entries();
        assert_eq!(
            (entries, users),
            (2, 1),
            "only 202 and its known lane remain"
        );
    }
}
