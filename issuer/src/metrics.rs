//! The issuer's Prometheus metrics, scraped at `GET /metrics` on
//! `issuer_listen`: at the root, outside the API base path, which is all the
//! rendered nginx passes to the issuer.
//!
//! Every labelled counter and histogram is made at start-up, one per label
//! value, so a request only adds to what exists and no request can make a
//! new series: routes are labelled by [`Route`] (unknown paths are `other`),
//! outcomes by the enums below. What is read at each scrape (live sessions
//! from the database, the hashing queues) is set just before the encoder
//! runs.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use softphone_shared::store::RevokeReason;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::ApiError;
use crate::hashing::MAX_WAITING;
use crate::routes::Route;

/// Every metric's name starts with it.
pub const PREFIX: &str = "softphone_issuer";

/// The `Content-Type` of a scrape: Prometheus's text format, 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds: API answers take
/// milliseconds, a login's password check 0.1–0.4 s, and a refused login is
/// held back for `login_failure_delay_ms` (1 s); nginx gives up at 2.5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// An enum whose variants are label values: `ALL` in declaration order,
/// `index` into it (the discriminant), `as_str` the value.
macro_rules! label_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Position in `ALL`.
            pub const fn index(self) -> usize {
                self as usize
            }

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}
pub(crate) use label_values;

label_values! {
    /// How a login ended.
    pub enum Login {
        Success => "success",
        /// Unknown user or wrong password (one outcome, as for the app).
        WrongCredentials => "wrong_credentials",
        Throttled => "throttled",
        /// The hashing queue was full or the check waited too long (503).
        Busy => "busy",
        BadRequest => "bad_request",
        Error => "error",
    }
}

label_values! {
    /// How a refresh ended.
    pub enum Refresh {
        Rotated => "rotated",
        /// An older refresh token came back: the session is revoked.
        ReuseDetected => "reuse_detected",
        /// No token, an invalid, expired or revoked one, an access token, or a
        /// user whose credentials changed.
        Refused => "refused",
        RateLimited => "rate_limited",
        Error => "error",
    }
}

label_values! {
    /// How a logout ended.
    pub enum Logout {
        Success => "success",
        Refused => "refused",
        Error => "error",
    }
}

impl Login {
    pub fn of(result: &Result<Response, ApiError>) -> Login {
        match result {
            Ok(_) => Login::Success,
            Err(ApiError::InvalidCredentials) => Login::WrongCredentials,
            Err(ApiError::TooManyAttempts { .. }) => Login::Throttled,
            Err(ApiError::Busy) => Login::Busy,
            Err(ApiError::BadCredentialsRequest) => Login::BadRequest,
            Err(_) => Login::Error,
        }
    }
}

impl Refresh {
    /// The outcome of any refresh but a detected reuse (which the handler
    /// names itself: its answer is an ordinary refusal).
    pub fn of(result: &Result<Response, ApiError>) -> Refresh {
        match result {
            Ok(_) => Refresh::Rotated,
            Err(ApiError::TooManyRefreshes { .. }) => Refresh::RateLimited,
            Err(ApiError::Internal) => Refresh::Error,
            Err(_) => Refresh::Refused,
        }
    }
}

impl Logout {
    pub fn of(result: &Result<Response, ApiError>) -> Logout {
        match result {
            Ok(_) => Logout::Success,
            Err(ApiError::Internal) => Logout::Error,
            Err(_) => Logout::Refused,
        }
    }
}

/// The revocations this daemon makes. The admin commands (`session revoke`,
/// `user passwd`, `user disable`) run in processes of their own and are not
/// counted here; the verifier's `sessions_ended` sees every revocation.
const DAEMON_REVOCATIONS: [RevokeReason; 5] = [
    RevokeReason::Logout,
    RevokeReason::RefreshReuse,
    RevokeReason::SessionLimit,
    RevokeReason::CredentialsChanged,
    RevokeReason::UserDisabled,
];

/// Status classes, by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The hashing queues, as [`crate::hashing::Hasher::waiting`] gives them.
const QUEUES: [&str; 2] = ["known", "other"];

type Labels<const N: usize> = [(&'static str, &'static str); N];
type Histograms = Family<Labels<1>, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    logins: Vec<Counter>,
    refreshes: Vec<Counter>,
    logouts: Vec<Counter>,
    revocations: [Counter; DAEMON_REVOCATIONS.len()],
    /// By route, then status class.
    responses: Vec<[Counter; CLASSES.len()]>,
    /// By route.
    latency: Vec<Histogram>,
    live_sessions: Gauge,
    waiting: [Gauge; QUEUES.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let logins = outcomes(
            &mut registry,
            "logins",
            "Logins by outcome",
            Login::ALL.iter().map(|o| o.as_str()),
        );
        let refreshes = outcomes(
            &mut registry,
            "refreshes",
            "Refreshes by outcome",
            Refresh::ALL.iter().map(|o| o.as_str()),
        );
        let logouts = outcomes(
            &mut registry,
            "logouts",
            "Logouts by outcome",
            Logout::ALL.iter().map(|o| o.as_str()),
        );
        let revocations = Family::<Labels<1>, Counter>::default();
        registry.register(
            "revocations",
            "Sessions this daemon revoked, by reason (admin commands run in their own process and are not counted here)",
            revocations.clone(),
        );
        let revocations = DAEMON_REVOCATIONS
            .map(|reason| revocations.get_or_create_owned(&[("reason", reason.as_str())]));
        let responses = Family::<Labels<2>, Counter>::default();
        registry.register(
            "responses",
            "Responses by route (other for paths no route serves) and status class",
            responses.clone(),
        );
        let responses = Route::ALL
            .iter()
            .map(|route| {
                CLASSES.map(|class| {
                    responses.get_or_create_owned(&[("route", route.as_str()), ("class", class)])
                })
            })
            .collect();
        let latency: Histograms = Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its answer, by route",
            Unit::Seconds,
            latency.clone(),
        );
        let latency = Route::ALL
            .iter()
            .map(|route| latency.get_or_create_owned(&[("route", route.as_str())]))
            .collect();
        let live_sessions = Gauge::default();
        registry.register(
            "live_sessions",
            "Sessions neither revoked nor expired, counted in the database at the scrape",
            live_sessions.clone(),
        );
        let waiting_family = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "hashing_queue_depth",
            "Logins waiting for a password-hashing thread, by queue (known: addresses the user logged in from before)",
            waiting_family.clone(),
        );
        let waiting = QUEUES.map(|queue| waiting_family.get_or_create_owned(&[("queue", queue)]));
        let limit = Gauge::<i64>::default();
        limit.set(i64::try_from(MAX_WAITING).unwrap_or(i64::MAX));
        registry.register(
            "hashing_queue_limit",
            "Logins each hashing queue holds; beyond it a login is answered 503",
            limit,
        );
        Metrics {
            registry,
            logins,
            refreshes,
            logouts,
            revocations,
            responses,
            latency,
            live_sessions,
            waiting,
        }
    }

    pub fn login(&self, outcome: Login) {
        inc(&self.logins, outcome.index());
    }

    pub fn refresh(&self, outcome: Refresh) {
        inc(&self.refreshes, outcome.index());
    }

    pub fn logout(&self, outcome: Logout) {
        inc(&self.logouts, outcome.index());
    }

    /// `count` sessions revoked by this daemon for `reason`.
    pub fn revoked(&self, reason: RevokeReason, count: usize) {
        if let Some(i) = DAEMON_REVOCATIONS.iter().position(|r| *r == reason) {
            inc_by(&self.revocations, i, count);
        }
    }

    /// One answer: its route's latency and status class.
    pub fn answered(&self, route: Route, status: StatusCode, elapsed: std::time::Duration) {
        if let Some(histogram) = self.latency.get(route.index()) {
            histogram.observe(elapsed.as_secs_f64());
        }
        let class = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        if let Some(by_class) = self.responses.get(route.index()) {
            inc(by_class, class);
        }
    }

    /// The exposition text, with the gauges read at the scrape: `live`
    /// sessions and the logins `waiting` in each hashing queue.
    pub fn scrape(
        &self,
        live: u64,
        waiting: [usize; QUEUES.len()],
    ) -> Result<String, std::fmt::Error> {
        self.live_sessions
            .set(i64::try_from(live).unwrap_or(i64::MAX));
        for (gauge, n) in self.waiting.iter().zip(waiting) {
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A counter family with one label, `outcome`, made for every value up front.
fn outcomes<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl Iterator<Item = &'static str> + 'a,
) -> Vec<Counter> {
    let family = Family::<Labels<1>, Counter>::default();
    registry.register(name, help, family.clone());
    values
        .map(|value| family.get_or_create_owned(&[("outcome", value)]))
        .collect()
}

fn inc(counters: &[Counter], i: usize) {
    inc_by(counters, i, 1);
}

fn inc_by(counters: &[Counter], i: usize, n: usize) {
    if let Some(counter) = counters.get(i) {
        counter.inc_by(n as u64);
    }
}
