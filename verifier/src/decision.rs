//! How the verifier decides about one request, and what it decided: from the
//! request head and the [`Verifier`]'s state to a [`Decision`], without I/O of
//! its own (the security log aside) and without allocating for a valid token.

use std::net::IpAddr;

use softphone_shared::paths::CHECK_MEDIA_ACCESS;
use softphone_shared::seclog::Event;
use softphone_shared::token::{
    self, MAX_TOKEN_LEN, PAYLOAD_BUF, TokenError, TokenType, Validation,
};

use crate::cache::CachedToken;
use crate::identity::Identity;
use crate::request::{AUTH_PATH, Found, HEALTH_PATH, Head, METRICS_PATH, find_token};
use crate::revocations::Standing;
use crate::state::Verifier;

/// Why access was refused, for the security log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    NoToken,
    /// Two sources carried different tokens.
    Conflict,
    /// The request carried a body; nginx never sends one to us.
    UnexpectedBody,
    /// Not GET or HEAD.
    UnexpectedMethod,
    Token(TokenError),
    /// A validly signed token of a session the database does not know.
    UnknownSession,
    /// The revocation list could not be brought up to date: fail closed.
    StoreUnavailable,
    /// The identity could not be expressed as response headers.
    Identity,
    /// A subscription's session id cannot name an nchan channel.
    SessionChannel,
}

/// The reasons of the verifier's own, ahead of the token errors in [`DenyReason::ALL`].
const OWN_REASONS: [DenyReason; 8] = [
    DenyReason::NoToken,
    DenyReason::Conflict,
    DenyReason::UnexpectedBody,
    DenyReason::UnexpectedMethod,
    DenyReason::UnknownSession,
    DenyReason::StoreUnavailable,
    DenyReason::Identity,
    DenyReason::SessionChannel,
];

/// How many reasons there are.
pub const DENY_REASONS: usize = OWN_REASONS.len() + TokenError::ALL.len();

impl DenyReason {
    /// Every reason, in the order of [`DenyReason::index`]: the metrics make
    /// one counter per reason at start-up, so counting a refusal is one add.
    /// (Built at compile time: a slot out of range does not compile.)
    pub const ALL: [DenyReason; DENY_REASONS] = {
        let mut all = [DenyReason::NoToken; DENY_REASONS];
        let mut i = 0;
        while i < OWN_REASONS.len() {
            all[i] = OWN_REASONS[i];
            i += 1;
        }
        let mut j = 0;
        while j < TokenError::ALL.len() {
            all[OWN_REASONS.len() + j] = DenyReason::Token(TokenError::ALL[j]);
            j += 1;
        }
        all
    };

    /// Position in [`DenyReason::ALL`].
    pub const fn index(self) -> usize {
        match self {
            DenyReason::NoToken => 0,
            DenyReason::Conflict => 1,
            DenyReason::UnexpectedBody => 2,
            DenyReason::UnexpectedMethod => 3,
            DenyReason::UnknownSession => 4,
            DenyReason::StoreUnavailable => 5,
            DenyReason::Identity => 6,
            DenyReason::SessionChannel => 7,
            DenyReason::Token(e) => OWN_REASONS.len() + e.index(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoToken => "no_token",
            DenyReason::Conflict => "conflicting_tokens",
            DenyReason::UnexpectedBody => "unexpected_body",
            DenyReason::UnexpectedMethod => "unexpected_method",
            DenyReason::Token(e) => e.as_str(),
            DenyReason::UnknownSession => "unknown_session",
            DenyReason::StoreUnavailable => "store_unavailable",
            DenyReason::Identity => "bad_identity",
            DenyReason::SessionChannel => "bad_session_channel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A valid, unrevoked access token.
    Allow(&'static Identity),
    /// The same for an nchan subscriber, with the channels that end it.
    Subscribe(&'static Identity, Channels),
    /// 401: no token or an invalid one.
    Unauthorized(DenyReason),
    /// 403: a valid refresh token where an access token is needed.
    Forbidden,
    /// The verifier's own liveness probe.
    Health,
    /// A scrape of the verifier's metrics (loopback only: nginx never routes it).
    Metrics,
    NotFound,
}

/// Longest session id a subscription's channel can carry (the issuer's are 22
/// characters; nginx's control location takes up to 64).
pub const MAX_SID_LEN: usize = 32;

/// Whole seconds before `exp + leeway` from which a token opens no new
/// subscription: the expiry channel of `exp` is deleted once, at `exp +
/// leeway`, and a subscriber admitted just before must have joined it by then
/// (nchan 1.3.6 leaves subscribers of a channel deleted a second time
/// behind, so it is never deleted twice).
pub const SUBSCRIBE_MARGIN: i64 = 2;

/// What ends a subscription: the channel of its session (deleted at logout or
/// revocation) and the channel of its token's expiry second (deleted when that
/// time is up). Copied out of the token, so deciding allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    sid: [u8; MAX_SID_LEN],
    sid_len: u8,
    pub expiry: i64,
}

impl Channels {
    /// `None` when `sid` cannot name a channel: empty, too long, or outside
    /// `[A-Za-z0-9_-]` (the control location's pattern, and header-safe).
    pub fn new(sid: &str, expiry: i64) -> Option<Channels> {
        let bytes = sid.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_SID_LEN
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            return None;
        }
        let mut channels = Channels {
            sid: [0; MAX_SID_LEN],
            sid_len: bytes.len() as u8,
            expiry,
        };
        channels.sid[..bytes.len()].copy_from_slice(bytes);
        Some(channels)
    }

    pub fn sid(&self) -> &[u8] {
        &self.sid[..usize::from(self.sid_len)]
    }
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("sid", &String::from_utf8_lossy(self.sid()))
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// Per-connection working memory for decisions, made once per connection so no
/// request zeroes or allocates buffers.
pub struct Scratch {
    token: [u8; MAX_TOKEN_LEN],
    payload: [u8; PAYLOAD_BUF],
}

impl Scratch {
    pub fn new() -> Box<Scratch> {
        Box::new(Scratch {
            token: [0; MAX_TOKEN_LEN],
            payload: [0; PAYLOAD_BUF],
        })
    }
}

impl Verifier {
    /// Decides one request. Never panics, never allocates for a valid token.
    pub fn decide(&self, head: &Head<'_>, now: i64, scratch: &mut Scratch) -> Decision {
        let path = head.path();
        if path != CHECK_MEDIA_ACCESS && path != AUTH_PATH {
            return match path {
                HEALTH_PATH => Decision::Health,
                METRICS_PATH => Decision::Metrics,
                _ => Decision::NotFound,
            };
        }
        if head.has_body {
            return self.deny(head, DenyReason::UnexpectedBody, "", now);
        }
        if head.other_method {
            return self.deny(head, DenyReason::UnexpectedMethod, "", now);
        }
        let Scratch {
            token: token_buf,
            payload,
        } = scratch;
        let token = match find_token(head, token_buf) {
            Found::One(token) => token,
            Found::None => return self.deny(head, DenyReason::NoToken, "", now),
            Found::Conflict => return self.deny(head, DenyReason::Conflict, "", now),
            Found::Unreadable => {
                return self.deny(head, DenyReason::Token(TokenError::Malformed), "", now);
            }
        };
        // A token seen before skips the HMAC and the JSON (see cache.rs).
        if let Some(decision) = self.cache.with(token, |v| self.judge(head, v, now)) {
            self.metrics.cache_hit();
            return decision;
        }
        self.metrics.cache_miss();
        // Read before the keys: a key reload in between keeps this token out
        // of the cache (see TokenCache::insert).
        let generation = self.cache.generation();
        let validation = self.validation(now);
        let verified = match token::verify(token, &self.keys.ring(), validation, payload) {
            Ok(verified) => verified,
            Err(e) => return self.deny(head, DenyReason::Token(e), "", now),
        };
        let claims = &verified.claims;
        let identity = match claims.kind {
            TokenType::Access => self
                .identities
                .get(claims.sub, claims.username, claims.role),
            TokenType::Refresh => None,
        };
        let cached = CachedToken::new(&verified, identity);
        let decision = self.judge(head, &cached, now);
        self.cache.insert(token, cached, generation);
        decision
    }

    fn validation(&self, now: i64) -> Validation {
        Validation {
            now,
            leeway: self.leeway,
        }
    }

    /// The checks every request gets, cached token or not: the time rules (a
    /// cached token may have expired, or its key been retired, since it was
    /// verified), revocation, purpose, identity. A refresh token is 403 only
    /// after all the others.
    fn judge(&self, head: &Head<'_>, v: &CachedToken, now: i64) -> Decision {
        if let Err(e) = self.validation(now).check(v.times) {
            return self.deny(head, DenyReason::Token(e), &v.username, now);
        }
        let refused = match self.revocations.standing(&v.sid, &v.memo, now) {
            Ok(Standing::Usable) => None,
            Ok(Standing::Revoked) => Some(DenyReason::Token(TokenError::Revoked)),
            Ok(Standing::Unknown) => Some(DenyReason::UnknownSession),
            Err(_) => Some(DenyReason::StoreUnavailable),
        };
        if let Some(reason) = refused {
            return self.deny(head, reason, &v.username, now);
        }
        if v.kind != TokenType::Access {
            self.note(
                head,
                DenyReason::Token(TokenError::WrongType),
                &v.username,
                now,
            );
            return Decision::Forbidden;
        }
        let Some(identity) = v.identity else {
            return self.deny(head, DenyReason::Identity, "", now);
        };
        if !head.subscription() {
            return Decision::Allow(identity);
        }
        // The second whose channel ends the subscription: its token's last
        // valid second, `exp + leeway`, or the signing key's, whichever is first.
        let expiry = v
            .times
            .exp
            .min(v.times.key_until.saturating_sub(self.leeway + 1));
        if now > expiry + self.leeway - SUBSCRIBE_MARGIN {
            return self.deny(
                head,
                DenyReason::Token(TokenError::Expired),
                &v.username,
                now,
            );
        }
        match Channels::new(&v.sid, expiry) {
            Some(channels) => Decision::Subscribe(identity, channels),
            None => self.deny(head, DenyReason::SessionChannel, &v.username, now),
        }
    }

    #[cold]
    fn deny(&self, head: &Head<'_>, reason: DenyReason, user: &str, now: i64) -> Decision {
        self.note(head, reason, user, now);
        Decision::Unauthorized(reason)
    }

    #[cold]
    fn note(&self, head: &Head<'_>, reason: DenyReason, user: &str, now: i64) {
        if let Some(log) = &self.log {
            let from = head
                .real_ip
                .and_then(|ip| std::str::from_utf8(ip).ok())
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
            log.log_limited(Event::MediaAccessDenied, reason.as_str(), user, from, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use softphone_shared::keyfile;
    use softphone_shared::live_keys::LiveKeys;
    use softphone_shared::store::{RevokeReason, Store};
    use softphone_testkit::TestDir;

    use super::*;
    use crate::revocations::Revocations;
    use softphone_shared::paths::SUBSCRIBE;

    struct Fixture {
        _dir: TestDir,
        store: Store,
        verifier: Verifier,
        /// An access token of the live session `sid-1`.
        token: String,
    }

    /// A verifier over a new key file and database holding the session `sid-1`,
    /// with the token's key rotated out (verifying until `previous_until`) if given.
    fn fixture(name: &str, now: i64, previous_until: Option<i64>) -> Fixture {
        let dir = TestDir::new(name);
        let key_path = dir.path().join("secret.key");
        let db = dir.path().join("softphone.db");
        let keys = keyfile::load_or_create(&key_path).unwrap();
        let token = softphone_testkit::access_token(keys.current(), "sid-1", now);
        let mut store = Store::open(&db).unwrap();
        softphone_testkit::insert_session(&mut store, "sid-1", now);
        if let Some(until) = previous_until {
            keyfile::rotate(&key_path, until, now).unwrap();
        }
        let revocations = Revocations::open(&db, now, 30).unwrap();
        let keys = LiveKeys::open(&key_path, "test").unwrap();
        let verifier = Verifier::new(keys, 30, revocations, None);
        Fixture {
            _dir: dir,
            store,
            verifier,
            token,
        }
    }

    /// A cached token is still checked for expiry and revocation on every use.
    #[test]
    fn cached_tokens_still_expire_and_get_revoked() {
        let now = 1_800_000_000;
        let Fixture {
            _dir,
            mut store,
            verifier,
            token,
        } = fixture("decision", now, None);
        let auth = format!("Bearer {token}");
        let mut head = Head::new("/auth");
        head.add_header("Authorization", auth.as_bytes());
        let mut scratch = Scratch::new();

        assert!(matches!(
            verifier.decide(&head, now, &mut scratch),
            Decision::Allow(_)
        ));
        assert_eq!(verifier.cache.len(), 1);
        assert!(matches!(
            verifier.decide(&head, now + 3630, &mut scratch),
            Decision::Allow(_)
        ));
        assert_eq!(
            verifier.decide(&head, now + 3631, &mut scratch),
            Decision::Unauthorized(DenyReason::Token(TokenError::Expired))
        );
        store
            .revoke_session("sid-1", RevokeReason::Logout, now)
            .unwrap();
        assert_eq!(
            verifier.decide(&head, now + 10, &mut scratch),
            Decision::Unauthorized(DenyReason::Token(TokenError::Revoked))
        );
        // A tampered copy of a cached token is not served from the cache.
        let tampered = format!("Bearer {}x", &token[..token.len() - 1]);
        let mut head = Head::new("/auth");
        head.add_header("Authorization", tampered.as_bytes());
        assert!(matches!(
            verifier.decide(&head, now, &mut scratch),
            Decision::Unauthorized(DenyReason::Token(_))
        ));
    }

    /// A subscriber's check names the channels that end it, and a token opens
    /// no subscription in its last [`SUBSCRIBE_MARGIN`] seconds, nor past its
    /// key's deadline, while media still pass.
    #[test]
    fn subscriptions_get_their_channels_and_stop_early() {
        let now = 1_800_000_000;
        let exp = now + 3600; // testkit::access_token
        let Fixture {
            _dir,
            verifier,
            token,
            ..
        } = fixture("subscribe", now, Some(now + 600));
        let uri = format!("{SUBSCRIBE}users-state?authorization={token}");
        let mut sub = Head::new("/auth");
        sub.add_header("X-Original-URI", uri.as_bytes());
        let auth = format!("Bearer {token}");
        let mut media = Head::new("/auth");
        media.add_header("Authorization", auth.as_bytes());
        let mut scratch = Scratch::new();

        // The key retires at now + 600: the last second a token of it is
        // valid is now + 599, so its expiry channel is the one cut then.
        let last_valid = now + 599;
        match verifier.decide(&sub, now, &mut scratch) {
            Decision::Subscribe(_, channels) => {
                assert_eq!(channels.sid(), b"sid-1");
                assert_eq!(channels.expiry + 30, last_valid);
                assert!(channels.expiry < exp);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verifier.decide(&sub, last_valid - SUBSCRIBE_MARGIN, &mut scratch),
            Decision::Subscribe(..)
        ));
        assert_eq!(
            verifier.decide(&sub, last_valid - SUBSCRIBE_MARGIN + 1, &mut scratch),
            Decision::Unauthorized(DenyReason::Token(TokenError::Expired))
        );
        assert!(matches!(
            verifier.decide(&media, last_valid, &mut scratch),
            Decision::Allow(_)
        ));
        // Spelled otherwise than nginx's subscriber location: no channels.
        let other =
            format!("/pbxcore/api/module-softphone-backend/v1/%73ub/x?authorization={token}");
        let mut head = Head::new("/auth");
        head.add_header("X-Original-URI", other.as_bytes());
        assert!(matches!(
            verifier.decide(&head, now, &mut scratch),
            Decision::Allow(_)
        ));
    }

    /// The metrics count refusals in an array by [`DenyReason::index`], named
    /// by [`DenyReason::as_str`]: each reason has its own slot and name.
    #[test]
    fn every_reason_has_its_index_and_a_name_of_its_own() {
        let mut names = std::collections::HashSet::new();
        for (i, reason) in DenyReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
            assert!(names.insert(reason.as_str()), "{reason:?}");
        }
        assert_eq!(names.len(), DENY_REASONS);
    }

    /// A validly signed token of a session the database never had is refused
    /// as an unknown session, one of a revoked session as revoked.
    #[test]
    fn unknown_sessions_are_told_apart_from_revoked_ones() {
        let now = 1_800_000_000;
        let Fixture {
            _dir,
            verifier,
            token,
            ..
        } = fixture("unknown-session", now, None);
        let key =
            softphone_shared::keyfile::load_or_create(&_dir.path().join("secret.key")).unwrap();
        let stranger = softphone_testkit::access_token(key.current(), "never-made", now);
        let mut scratch = Scratch::new();
        for (token, expected) in [
            (&stranger, Some(DenyReason::UnknownSession)),
            (&token, None),
        ] {
            let auth = format!("Bearer {token}");
            let mut head = Head::new("/auth");
            head.add_header("Authorization", auth.as_bytes());
            match (verifier.decide(&head, now, &mut scratch), expected) {
                (Decision::Unauthorized(reason), Some(expected)) => assert_eq!(reason, expected),
                (Decision::Allow(_), None) => {}
                (other, _) => panic!("{other:?}"),
            }
        }
    }

    /// A token of a rotated-out key, cached while it was good, is refused from
    /// the previous key's deadline on.
    #[test]
    fn cached_tokens_of_a_previous_key_stop_at_its_deadline() {
        let now = 1_800_000_000;
        let Fixture {
            _dir,
            verifier,
            token,
            ..
        } = fixture("retired", now, Some(now + 100));
        let auth = format!("Bearer {token}");
        let mut head = Head::new("/auth");
        head.add_header("Authorization", auth.as_bytes());
        let mut scratch = Scratch::new();
        assert!(matches!(
            verifier.decide(&head, now + 99, &mut scratch),
            Decision::Allow(_)
        ));
        assert_eq!(verifier.cache.len(), 1);
        assert_eq!(
            verifier.decide(&head, now + 100, &mut scratch),
            Decision::Unauthorized(DenyReason::Token(TokenError::UnknownKey))
        );
    }
}
