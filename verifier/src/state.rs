//! What the verifier holds, shared by every connection: the live keys, the
//! sessions and their revocations, the interned identities, the cache of tokens
//! already verified, the security log and the metrics; and its upkeep (about
//! once a second, and on SIGHUP). How a request is decided from it is
//! [`crate::decision`].

use std::sync::Arc;

use softphone_shared::live_keys::LiveKeys;
use softphone_shared::seclog::SecurityLog;

use crate::cache::TokenCache;
use crate::identity::Identities;
use crate::metrics::Metrics;
use crate::revocations::Revocations;

/// How often the upkeep runs when nobody asks it to.
pub const UPKEEP_ROUND: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Verifier {
    pub(crate) keys: LiveKeys,
    pub(crate) leeway: i64,
    /// Shared with the metrics, which read it at each scrape.
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) identities: Identities,
    pub(crate) cache: TokenCache,
    pub(crate) log: Option<SecurityLog>,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("leeway", &self.leeway)
            .field("revocations", &self.revocations)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(
        keys: LiveKeys,
        leeway: i64,
        revocations: Revocations,
        log: Option<SecurityLog>,
    ) -> Verifier {
        let revocations = Arc::new(revocations);
        Verifier {
            keys,
            leeway,
            metrics: Metrics::new(Arc::clone(&revocations)),
            revocations,
            identities: Identities::new(),
            cache: TokenCache::new(),
            log,
        }
    }

    /// The metrics: what conn.rs counts into and a scrape reads.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// SIGHUP: re-reads the key files (a broken file keeps the keys in use) and
    /// reopens the security log.
    pub fn reload(&self) {
        if self.keys.reload_and_report("SIGHUP") {
            self.cache.clear();
        }
        if let Some(Err(e)) = self.log.as_ref().map(SecurityLog::reopen) {
            eprintln!("softphone-verifier: SIGHUP: {e}");
        }
    }

    /// What the watchdog goes through before each ping ([`crate::watchdog`]):
    /// the locks a request takes (the token cache's, the sessions'), and the
    /// read of the database a request makes when the doorbell rang since the
    /// last one. The answers do not matter: a database that cannot be read
    /// fails requests closed and is reported, and would fail a restart too.
    pub fn probe(&self, now: i64) {
        let _ = self.cache.with(b"", |_| ());
        let _ = self.revocations.is_revoked("", now);
    }

    /// Waits for the next round of [`Verifier::maintain`]: a second, or less
    /// when a request left a burst of changes to it, or showed one for it to
    /// settle.
    pub fn wait_for_upkeep(&self) {
        self.revocations.wait_for_upkeep(UPKEEP_ROUND);
    }

    /// Background upkeep, about once a second: revocations, the token cache,
    /// and a key file changed on disk (reloaded as on SIGHUP).
    pub fn maintain(&self, now: i64) {
        self.revocations.maintain(now);
        self.cache.prune(now, self.leeway);
        if self.keys.reload_if_changed() {
            // Tokens verified with the old keys must be verified again.
            self.cache.clear();
        }
    }
}
