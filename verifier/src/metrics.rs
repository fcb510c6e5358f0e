//! The verifier's Prometheus metrics, scraped at `GET /metrics` on its own
//! listeners (nginx routes only the auth paths to it).
//!
//! Counting must not slow the hot path, where a whole decision takes a few
//! hundred nanoseconds: shared atomic counters (one `lock xadd` per counter
//! and request) cost the verifier/bare ratio about 4% in alternating bench
//! runs. So each thread that counts gets a [`Shard`] of its own, registered
//! once, whose slots only it writes: a count is a plain load and store, no
//! lock, no allocation. A scrape adds the shards up. Reason names are
//! [`DenyReason::as_str`]'s, the same the security log writes. What is read
//! at each scrape rather than counted (the sessions known, how the reads of
//! the database go) comes from [`Revocations`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use softphone_shared::token::TokenError;

use crate::decision::{DENY_REASONS, Decision, DenyReason};
use crate::revocations::Revocations;

/// Every metric's name starts with it.
pub const PREFIX: &str = "softphone_verifier";

/// The `Content-Type` of a scrape: Prometheus's text format, 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `reason` of an allowed decision.
const ALLOWED_REASON: &str = "none";

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// One thread's counts. Only that thread writes them; scrapes read them.
#[derive(Debug)]
struct Shard {
    allowed: AtomicU64,
    denied: [AtomicU64; DENY_REASONS],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            allowed: AtomicU64::new(0),
            denied: [const { AtomicU64::new(0) }; DENY_REASONS],
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }

    /// One more in `slot`. A load and a store, not a read-modify-write: this
    /// thread is the slot's only writer, so no count is lost, and a scrape
    /// reads either the old or the new value.
    fn add(slot: &AtomicU64) {
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

/// The shards of every thread that counted, for the scrapes to add up.
type Shards = Arc<Mutex<Vec<Arc<Shard>>>>;

thread_local! {
    /// This thread's shard, and which [`Metrics`] it belongs to (tests run
    /// several verifiers in one process).
    static SHARD: RefCell<Option<(u64, Arc<Shard>)>> = const { RefCell::new(None) };
}

pub struct Metrics {
    /// Tells this instance's shards from another's in [`SHARD`].
    id: u64,
    registry: Registry,
    shards: Shards,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; `revocations` is read at each scrape.
    pub fn new(revocations: Arc<Revocations>) -> Metrics {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut registry = Registry::with_prefix(PREFIX);
        let shards = Shards::default();
        registry.register_collector(Box::new(Counts(Arc::clone(&shards))));
        registry.register_collector(Box::new(Upkeep(revocations)));
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            shards,
        }
    }

    /// Runs `count` on this thread's shard, registering one on first use.
    fn with_shard(&self, count: impl FnOnce(&Shard)) {
        SHARD.with(|cell| {
            let mut cell = cell.borrow_mut();
            match &*cell {
                Some((id, shard)) if *id == self.id => count(shard),
                _ => {
                    let shard = Arc::new(Shard::new());
                    count(&shard);
                    if let Ok(mut shards) = self.shards.lock() {
                        shards.push(Arc::clone(&shard));
                    }
                    *cell = Some((self.id, shard));
                }
            }
        });
    }

    /// Counts one answer to nginx. The one place decisions are counted:
    /// [`crate::conn`] calls it for every answer it writes.
    pub fn count(&self, decision: Decision) {
        let reason = match decision {
            Decision::Allow(_) | Decision::Subscribe(..) => {
                return self.with_shard(|shard| Shard::add(&shard.allowed));
            }
            Decision::Unauthorized(reason) => reason,
            Decision::Forbidden => DenyReason::Token(TokenError::WrongType),
            Decision::Health | Decision::Metrics | Decision::NotFound => return,
        };
        self.with_shard(|shard| {
            if let Some(slot) = shard.denied.get(reason.index()) {
                Shard::add(slot);
            }
        });
    }

    pub fn cache_hit(&self) {
        self.with_shard(|shard| Shard::add(&shard.cache_hits));
    }

    pub fn cache_miss(&self) {
        self.with_shard(|shard| Shard::add(&shard.cache_misses));
    }

    /// The exposition text of a scrape.
    pub fn scrape(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(4096);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The counted metrics: every thread's shard added up at the scrape.
#[derive(Debug)]
struct Counts(Shards);

impl Counts {
    fn sum(&self, slot: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.0.lock().map_or(0, |shards| {
            shards
                .iter()
                .map(|shard| slot(shard).load(Ordering::Relaxed))
                .fold(0, u64::wrapping_add)
        })
    }
}

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut decisions = encoder.encode_descriptor(
            "decisions",
            "Token checks answered, by result (allowed, denied) and reason (none when allowed; denied with wrong_type is the 403 for a refresh token)",
            None,
            MetricType::Counter,
        )?;
        let allowed: Labels<2> = [("result", "allowed"), ("reason", ALLOWED_REASON)];
        ConstCounter::new(self.sum(|s| &s.allowed)).encode(decisions.encode_family(&allowed)?)?;
        for reason in DenyReason::ALL {
            let labels: Labels<2> = [("result", "denied"), ("reason", reason.as_str())];
            let count = self.sum(|s| &s.denied[reason.index()]);
            ConstCounter::new(count).encode(decisions.encode_family(&labels)?)?;
        }
        let mut lookups = encoder.encode_descriptor(
            "token_cache_lookups",
            "Lookups of a presented token among the tokens already verified: a hit skips the HMAC and the JSON",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("hit", self.sum(|s| &s.cache_hits)),
            ("miss", self.sum(|s| &s.cache_misses)),
        ] {
            let labels: Labels<1> = [("result", result)];
            ConstCounter::new(count).encode(lookups.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What a scrape reads from the sessions and the reads that keep them.
#[derive(Debug)]
struct Upkeep(Arc<Revocations>);

impl Collector for Upkeep {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.sync_stats();
        let mut syncs = encoder.encode_descriptor(
            "revocation_syncs",
            "Reads of the sessions table that brought the verifier's view up to date (ok) or failed (failed): about one a second, and one per change announced.",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [("ok", stats.succeeded), ("failed", stats.failed)] {
            let labels: Labels<1> = [("result", result)];
            ConstCounter::new(count).encode(syncs.encode_family(&labels)?)?;
        }
        let known = i64::try_from(self.0.len()).unwrap_or(i64::MAX);
        ConstGauge::new(known).encode(encoder.encode_descriptor(
            "sessions_known",
            "Sessions the verifier holds in memory: every one not expired, revoked or not.",
            None,
            MetricType::Gauge,
        )?)?;
        let shown = i64::try_from(self.0.shown()).unwrap_or(i64::MAX);
        ConstGauge::new(shown).encode(encoder.encode_descriptor(
            "sessions_shown",
            "Changes of a burst (a user's sessions revoked at once, say) that lookups already answer from and the upkeep has not yet settled into the sessions held; 0 otherwise.",
            None,
            MetricType::Gauge,
        )?)?;
        let age = softphone_shared::unix_now().saturating_sub(stats.last_success);
        ConstGauge::new(age.max(0)).encode(encoder.encode_descriptor(
            "revocation_sync_age",
            "Seconds since the last successful read of the sessions table, at the scrape.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;
        let ended = self.0.ended_count();
        ConstCounter::new(ended).encode(encoder.encode_descriptor(
            "sessions_ended",
            "Usable sessions the verifier learnt had ended (logout, revocation, deletion), whoever ended them.",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identities;

    /// The value of one sample line (`name{labels} value`) of a scrape.
    fn sample(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    /// Each decision moves its own counter by one; pages that decide nothing
    /// move none; the upkeep's numbers are read at the scrape.
    #[test]
    fn decisions_are_counted_by_result_and_reason() {
        let dir = softphone_testkit::TestDir::new("verifier-metrics");
        let db = dir.path().join("softphone.db");
        drop(softphone_shared::store::Store::open(&db).unwrap());
        let revocations = Arc::new(Revocations::open(&db, 1_800_000_000, 30).unwrap());
        let metrics = Metrics::new(revocations);
        let identity = Identities::new().get(7, "201", "user").unwrap();
        let series = |result: &str, reason: &str| {
            format!(r#"{PREFIX}_decisions_total{{result="{result}",reason="{reason}"}}"#)
        };
        let before = metrics.scrape().unwrap();
        for reason in DenyReason::ALL {
            assert_eq!(sample(&before, &series("denied", reason.as_str())), Some(0));
        }
        metrics.count(Decision::Allow(identity));
        metrics.count(Decision::Allow(identity));
        metrics.count(Decision::Unauthorized(DenyReason::NoToken));
        metrics.count(Decision::Unauthorized(DenyReason::Token(
            TokenError::Expired,
        )));
        metrics.count(Decision::Forbidden);
        metrics.count(Decision::Health);
        metrics.count(Decision::NotFound);
        metrics.count(Decision::Metrics);
        metrics.cache_hit();
        metrics.cache_miss();
        metrics.cache_miss();
        let text = metrics.scrape().unwrap();
        assert_eq!(sample(&text, &series("allowed", "none")), Some(2), "{text}");
        assert_eq!(sample(&text, &series("denied", "no_token")), Some(1));
        assert_eq!(sample(&text, &series("denied", "expired")), Some(1));
        assert_eq!(sample(&text, &series("denied", "wrong_type")), Some(1));
        assert_eq!(sample(&text, &series("denied", "revoked")), Some(0));
        let lookups =
            |result: &str| format!(r#"{PREFIX}_token_cache_lookups_total{{result="{result}"}}"#);
        assert_eq!(sample(&text, &lookups("hit")), Some(1));
        assert_eq!(sample(&text, &lookups("miss")), Some(2));
        let syncs = format!(r#"{PREFIX}_revocation_syncs_total{{result="ok"}}"#);
        assert_eq!(sample(&text, &syncs), Some(1), "the read at start-up");
        assert_eq!(sample(&text, &format!("{PREFIX}_sessions_known")), Some(0));
        assert_eq!(sample(&text, &format!("{PREFIX}_sessions_shown")), Some(0));
        assert!(
            text.contains(&format!(
                "# TYPE {PREFIX}_revocation_sync_age_seconds gauge\n"
            )),
            "{text}"
        );
    }
}
