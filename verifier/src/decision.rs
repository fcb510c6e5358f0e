//! How the verifier decides about one request, and what it decided.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::RwLock;

use softphone_shared::keyfile::{self, Key};
use softphone_shared::seclog::{Event, SecurityLog};
use softphone_shared::token::{self, PAYLOAD_BUF, TokenError, TokenType, Validation};

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
    key: RwLock<Key>,
    key_path: PathBuf,
    leeway: i64,
    revocations: Revocations,
    identities: Identities,
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
        key: Key,
        key_path: PathBuf,
        leeway: i64,
        revocations: Revocations,
        log: Option<SecurityLog>,
    ) -> Verifier {
        Verifier {
            key: RwLock::new(key),
            key_path,
            leeway,
            revocations,
            identities: Identities::new(),
            log,
        }
    }

    /// Re-reads the key file (SIGHUP). On failure the old key stays in use.
    pub fn reload_key(&self) -> crate::Result<()> {
        let key = keyfile::load(&self.key_path)?;
        if let Ok(mut slot) = self.key.write() {
            *slot = key;
        }
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
        let verified = match self.key.read() {
            Ok(key) => token::decode(
                token,
                &key,
                Validation {
                    now,
                    leeway: self.leeway,
                },
                payload,
            ),
            Err(_) => Err(TokenError::BadSignature),
        };
        let claims = match verified {
            Ok(claims) => claims,
            Err(e) => return self.deny(head, DenyReason::Token(e), "", now),
        };
        match self.revocations.is_revoked(claims.sid, now) {
            Ok(false) => {}
            Ok(true) => {
                return self.deny(
                    head,
                    DenyReason::Token(TokenError::Revoked),
                    claims.username,
                    now,
                );
            }
            Err(_) => return self.deny(head, DenyReason::StoreUnavailable, claims.username, now),
        }
        if claims.kind != TokenType::Access {
            self.note(
                head,
                DenyReason::Token(TokenError::WrongType),
                claims.username,
                now,
            );
            return Decision::Forbidden;
        }
        match self
            .identities
            .get(claims.sub, claims.username, claims.role)
        {
            Some(identity) => Decision::Allow(identity),
            None => self.deny(head, DenyReason::Identity, "", now),
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
