//! How the verifier decides about one request, and what it decided.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use softphone_shared::keyfile::{self, KeyRing, KeyWatch};
use softphone_shared::seclog::{Event, SecurityLog};
use softphone_shared::token::{self, PAYLOAD_BUF, TokenError, TokenType, Validation};

use crate::cache::{TokenCache, Verified};
use crate::identity::{Identities, Identity};
use crate::request::{AUTH_PATH, CHECK_PATH, Found, HEALTH_PATH, Head, find_token};
use crate::revocations::Revocations;
use softphone_shared::token::MAX_TOKEN_LEN;

/// Why access was refused, for the security log.
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
    /// The revocation list could not be brought up to date: fail closed.
    StoreUnavailable,
    /// The identity could not be expressed as response headers.
    Identity,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoToken => "no_token",
            DenyReason::Conflict => "conflicting_tokens",
            DenyReason::UnexpectedBody => "unexpected_body",
            DenyReason::UnexpectedMethod => "unexpected_method",
            DenyReason::Token(e) => e.as_str(),
            DenyReason::StoreUnavailable => "store_unavailable",
            DenyReason::Identity => "bad_identity",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A valid, unrevoked access token.
    Allow(&'static Identity),
    /// 401: no token or an invalid one.
    Unauthorized(DenyReason),
    /// 403: a valid refresh token where an access token is needed.
    Forbidden,
    /// The verifier's own liveness probe.
    Health,
    NotFound,
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

/// Everything a decision needs, shared by all connections.
pub struct Verifier {
    keys: RwLock<KeyRing>,
    key_path: PathBuf,
    leeway: i64,
    revocations: Revocations,
    identities: Identities,
    cache: TokenCache,
    key_watch: Mutex<KeyWatch>,
    log: Option<SecurityLog>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key_path", &self.key_path)
            .field("leeway", &self.leeway)
            .field("revocations", &self.revocations)
            .finish()
    }
}

impl Verifier {
    pub fn new(
        keys: KeyRing,
        key_path: PathBuf,
        leeway: i64,
        revocations: Revocations,
        log: Option<SecurityLog>,
    ) -> Verifier {
        Verifier {
            keys: RwLock::new(keys),
            key_watch: Mutex::new(KeyWatch::new(&key_path)),
            key_path,
            leeway,
            revocations,
            identities: Identities::new(),
            cache: TokenCache::new(),
            log,
        }
    }

    /// Re-reads the key file and the previous keys (SIGHUP, or a file changed).
    /// On failure the keys in use stay.
    pub fn reload_key(&self) -> crate::Result<()> {
        let keys = KeyRing::load(&self.key_path)?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = keys;
        }
        // Tokens verified with the old key must be verified again.
        self.cache.clear();
        Ok(())
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub fn log(&self) -> Option<&SecurityLog> {
        self.log.as_ref()
    }

    /// Decides one request. Never panics, never allocates for a valid token.
    pub fn decide(&self, head: &Head<'_>, now: i64, scratch: &mut Scratch) -> Decision {
        let path = head.path();
        if path != CHECK_PATH && path != AUTH_PATH {
            return if path == HEALTH_PATH {
                Decision::Health
            } else {
                Decision::NotFound
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
            return decision;
        }
        let generation = self.cache.generation();
        let decoded = match self.keys.read() {
            Ok(keys) => token::verify(
                token,
                &keys,
                Validation {
                    now,
                    leeway: self.leeway,
                },
                payload,
            ),
            Err(_) => Err(TokenError::BadSignature),
        };
        let (claims, key_until) = match decoded {
            Ok(v) => (v.claims, v.key_until),
            Err(e) => return self.deny(head, DenyReason::Token(e), "", now),
        };
        let identity = match claims.kind {
            TokenType::Access => self
                .identities
                .get(claims.sub, claims.username, claims.role),
            TokenType::Refresh => None,
        };
        let verified = Verified::new(&claims, key_until, identity);
        let decision = self.judge(head, &verified, now);
        self.cache.insert(token, verified, generation);
        decision
    }

    /// The checks every request gets, cached token or not: time, revocation,
    /// type, identity. A refresh token is 403 only after all the others.
    fn judge(&self, head: &Head<'_>, v: &Verified, now: i64) -> Decision {
        // A rotated-out key's deadline passed while its tokens sat in the cache.
        if keyfile::retired(v.key_until, now) {
            return self.deny(
                head,
                DenyReason::Token(TokenError::UnknownKey),
                &v.username,
                now,
            );
        }
        if now > v.exp.saturating_add(self.leeway) {
            return self.deny(
                head,
                DenyReason::Token(TokenError::Expired),
                &v.username,
                now,
            );
        }
        if now.saturating_add(self.leeway) < v.not_before {
            return self.deny(
                head,
                DenyReason::Token(TokenError::NotYetValid),
                &v.username,
                now,
            );
        }
        match self.revocations.is_revoked_memo(&v.sid, &v.memo, now) {
            Ok(false) => {}
            Ok(true) => {
                return self.deny(
                    head,
                    DenyReason::Token(TokenError::Revoked),
                    &v.username,
                    now,
                );
            }
            Err(_) => return self.deny(head, DenyReason::StoreUnavailable, &v.username, now),
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
        match v.identity {
            Some(identity) => Decision::Allow(identity),
            None => self.deny(head, DenyReason::Identity, "", now),
        }
    }

    /// Background upkeep, about once a second: revocations, the token cache,
    /// and a key file changed on disk (reloaded as on SIGHUP).
    pub fn maintain(&self, now: i64) {
        self.revocations.maintain(now);
        self.cache.prune(now, self.leeway);
        let changed = self.key_watch.lock().is_ok_and(|mut w| w.changed());
        if changed {
            match self.reload_key() {
                Ok(()) => eprintln!("softphone-verifier: key file changed: reloaded"),
                Err(e) => eprintln!(
                    "softphone-verifier: key file changed but unusable, keeping the old key: {e}"
                ),
            }
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
    use softphone_shared::store::{RevokeReason, Store};

    use super::*;

    struct Fixture {
        dir: std::path::PathBuf,
        store: Store,
        verifier: Verifier,
        /// An access token of the live session `sid-1`.
        token: String,
    }

    /// A verifier over a new key file and database holding the session `sid-1`,
    /// with the token's key rotated out (verifying until `previous_until`) if given.
    fn fixture(name: &str, now: i64, previous_until: Option<i64>) -> Fixture {
        let dir = std::env::temp_dir().join(format!("softphone-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key_path = dir.join("secret.key");
        let db = dir.join("softphone.db");
        let key = keyfile::load_or_create(&key_path).unwrap();
        let token = softphone_testkit::access_token(&key, "sid-1", now);
        let mut store = Store::open(&db).unwrap();
        softphone_testkit::insert_session(&mut store, "sid-1", now);
        if let Some(until) = previous_until {
            keyfile::rotate(&key_path, until, now).unwrap();
        }
        let revocations = Revocations::open(&db, now, 30).unwrap();
        let keys = KeyRing::load(&key_path).unwrap();
        let verifier = Verifier::new(keys, key_path, 30, revocations, None);
        Fixture {
            dir,
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
            dir,
            mut store,
            verifier,
            token,
        } = fixture("decision", now, None);
        let auth = format!("Bearer {token}");
        let mut head = Head::new("/auth");
        head.header("Authorization", auth.as_bytes());
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
        head.header("Authorization", tampered.as_bytes());
        assert!(matches!(
            verifier.decide(&head, now, &mut scratch),
            Decision::Unauthorized(DenyReason::Token(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A token of a rotated-out key, cached while it was good, is refused from
    /// the previous key's deadline on.
    #[test]
    fn cached_tokens_of_a_previous_key_stop_at_its_deadline() {
        let now = 1_800_000_000;
        let Fixture {
            dir,
            verifier,
            token,
            ..
        } = fixture("retired", now, Some(now + 100));
        let auth = format!("Bearer {token}");
        let mut head = Head::new("/auth");
        head.header("Authorization", auth.as_bytes());
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
        let _ = std::fs::remove_dir_all(dir);
    }
}
