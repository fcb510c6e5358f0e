//! The token format: HS256 JWTs with the original module's claims plus `sid` and `jti`.
//!
//! Verification never allocates: segments are decoded into stack buffers and the
//! claims borrow from the caller's buffer. Each failure is a distinct [`TokenError`]
//! kind for logs; clients only ever see one generic answer.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::keys::{Key, KeyRing, NO_DEADLINE, retired};

/// Longest token we look at. Ours are ~350 characters; anything far longer is
/// garbage and is rejected before any decoding work.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Decoded payload buffer: big enough for any token under [`MAX_TOKEN_LEN`].
pub const PAYLOAD_BUF: usize = MAX_TOKEN_LEN * 3 / 4 + 3;
const HEADER_BUF: usize = 192;
const SIGNATURE_LEN: usize = 32;

/// Why a token was refused. Small and `Copy` so the hot path never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three canonical base64url segments, or JSON we cannot read.
    Malformed,
    /// Header names a field we do not accept (`crit`, `jku`, `jwk`, `x5u`, …).
    BadHeader,
    /// `alg` is anything but exactly `HS256`.
    BadAlgorithm,
    /// `kid` names a key we do not have.
    UnknownKey,
    /// The MAC does not match.
    BadSignature,
    /// Claims are missing or of the wrong JSON type (after the MAC was checked).
    BadClaims,
    Expired,
    NotYetValid,
    /// A valid token of the other type (refresh where access is needed, or back).
    WrongType,
    /// The session was logged out or revoked.
    Revoked,
}

impl TokenError {
    /// Every kind, in the order of [`TokenError::index`]: metrics make one
    /// counter per kind up front.
    pub const ALL: [TokenError; 10] = [
        TokenError::Malformed,
        TokenError::BadHeader,
        TokenError::BadAlgorithm,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::BadClaims,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::WrongType,
        TokenError::Revoked,
    ];

    /// Position in [`TokenError::ALL`].
    pub const fn index(self) -> usize {
        match self {
            TokenError::Malformed => 0,
            TokenError::BadHeader => 1,
            TokenError::BadAlgorithm => 2,
            TokenError::UnknownKey => 3,
            TokenError::BadSignature => 4,
            TokenError::BadClaims => 5,
            TokenError::Expired => 6,
            TokenError::NotYetValid => 7,
            TokenError::WrongType => 8,
            TokenError::Revoked => 9,
        }
    }

    /// Short lowercase name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadHeader => "bad_header",
            TokenError::BadAlgorithm => "bad_algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::BadClaims => "bad_claims",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongType => "wrong_type",
            TokenError::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TokenError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Access,
    Refresh,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        }
    }
}

/// The claims, in the order they are written: the original module's six first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<'a> {
    pub sub: u64,
    #[serde(borrow)]
    pub username: &'a str,
    #[serde(borrow)]
    pub role: &'a str,
    pub iat: i64,
    pub exp: i64,
    #[serde(rename = "type")]
    pub kind: TokenType,
    #[serde(borrow)]
    pub sid: &'a str,
    #[serde(borrow)]
    pub jti: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// The header fields we accept; any other field (`crit`, `jku`, `jwk`, `x5u`, `x5c`,
/// `cty`, …) rejects the token, and so does a duplicated field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header<'a> {
    #[serde(borrow)]
    alg: &'a str,
    #[serde(default, borrow)]
    #[allow(dead_code)] // read for validation only: must be a string if present
    typ: Option<&'a str>,
    #[serde(default, borrow)]
    kid: Option<&'a str>,
}

/// Clock and tolerance for a verification: the one home of the time rules.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    pub now: i64,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: i64,
}

impl Validation {
    /// The time rules, in order: the signing key has not been retired, the token
    /// has not expired, and it is valid already. Full verification and the
    /// verifier's cached tokens both come here.
    pub fn check(&self, times: TokenTimes) -> Result<(), TokenError> {
        if retired(times.key_until, self.now) {
            return Err(TokenError::UnknownKey);
        }
        if self.expired(times.exp) {
            return Err(TokenError::Expired);
        }
        if self.now.saturating_add(self.leeway) < times.not_before {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    /// Whether something that expires at `exp` is past it by more than the
    /// leeway: a token, and so also its session and its cache entry.
    pub fn expired(&self, exp: i64) -> bool {
        exp < self.oldest_live_exp()
    }

    /// The earliest expiry that is not [`expired`](Self::expired), for queries
    /// that select what is still live.
    pub fn oldest_live_exp(&self) -> i64 {
        self.now.saturating_sub(self.leeway)
    }
}

/// The times of a verified token that the rules of [`Validation::check`] need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    pub exp: i64,
    /// Not valid before this: `nbf` or the issue time, whichever is later (a
    /// token is never valid before it was issued).
    pub not_before: i64,
    /// From when the signing key verifies nothing ([`NO_DEADLINE`] for the
    /// current key).
    pub key_until: i64,
}

impl TokenTimes {
    fn of(claims: &Claims<'_>, key_until: i64) -> TokenTimes {
        TokenTimes {
            exp: claims.exp,
            not_before: claims.nbf.map_or(claims.iat, |nbf| nbf.max(claims.iat)),
            key_until,
        }
    }
}

impl Claims<'_> {
    /// The typed purpose check: a valid token of the other type (a refresh token
    /// where an access token is needed, or back) is [`TokenError::WrongType`].
    pub fn require(self, kind: TokenType) -> Result<Self, TokenError> {
        if self.kind == kind {
            Ok(self)
        } else {
            Err(TokenError::WrongType)
        }
    }
}

/// The token of an `Authorization` header (or query) value: `Bearer <t>` with the
/// scheme in any case and one space gives `<t>`; any other value is the bare
/// token. `None` for no token at all: an empty value, or `Bearer` with nothing
/// after it.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let token = match value.split_at_checked(SCHEME.len()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(SCHEME) => {
            if rest.is_empty() {
                rest
            } else {
                rest.strip_prefix(b" ").unwrap_or(value)
            }
        }
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// Signs claims with `key`, naming it in the header's `kid`. The output is
/// `header.payload.signature`, base64url without padding.
pub fn sign(claims: &Claims<'_>, key: &Key) -> String {
    // Serialising a struct of integers and strings cannot fail; fall back to an
    // empty payload (which no verifier accepts) rather than panicking.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = String::with_capacity(96 + payload.len() * 4 / 3 + 48);
    out.push_str(key.header_b64());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
    let tag = hmac::sign(key.hmac(), out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
    out
}

/// A verified token: its claims, borrowed from the caller's buffer, and the times
/// [`Validation::check`] judges (again, for a token the verifier cached).
#[derive(Debug)]
pub struct Verified<'b> {
    pub claims: Claims<'b>,
    pub times: TokenTimes,
}

/// Verifies any token of ours: the one entry point for every caller. The caller
/// then states the purpose with [`Claims::require`].
///
/// Order matters: structure and header first (cheap, no secrets), then the MAC in
/// constant time, and only then are claims parsed and trusted.
pub fn verify<'b>(
    token: &(impl AsRef<[u8]> + ?Sized),
    keys: &KeyRing,
    validation: Validation,
    buf: &'b mut [u8; PAYLOAD_BUF],
) -> Result<Verified<'b>, TokenError> {
    let token = token.as_ref();
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };

    // The headers real tokens carry (ours, naming a key we hold, and the original
    // module's without `kid`) are known to be acceptable as they are; anything
    // else is decoded and checked.
    let (key, key_until) = if let Some(found) = keys.by_header(header_b64) {
        found
    } else if KNOWN_HEADERS.contains(&header_b64) {
        (keys.current(), NO_DEADLINE)
    } else {
        check_header(header_b64, keys)?
    };

    let mut signature = [0u8; SIGNATURE_LEN + 3];
    let signature_len =
        decode_segment(signature_b64, &mut signature).map_err(|_| TokenError::BadSignature)?;
    if signature_len != SIGNATURE_LEN {
        return Err(TokenError::BadSignature);
    }
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    hmac::verify(key.hmac(), signed, &signature[..SIGNATURE_LEN])
        .map_err(|_| TokenError::BadSignature)?;

    let payload_len = decode_segment(payload_b64, buf)?;
    let claims: Claims<'b> =
        serde_json::from_slice(&buf[..payload_len]).map_err(|_| TokenError::BadClaims)?;
    // A token issued before 1970 or after its own expiry was not made by us.
    if claims.sid.is_empty() || claims.jti.is_empty() || claims.iat < 0 || claims.iat > claims.exp {
        return Err(TokenError::BadClaims);
    }
    let times = TokenTimes::of(&claims, key_until);
    validation.check(times)?;
    Ok(Verified { claims, times })
}

/// Headers without `kid`, verified with the current key only:
/// `{"alg":"HS256","typ":"JWT"}` and `{"typ":"JWT","alg":"HS256"}`, base64url.
const KNOWN_HEADERS: [&[u8]; 2] = [
    b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    b"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
];

/// Decodes and checks a header we have not seen before: only `alg` (exactly
/// `HS256`), `typ` and `kid` (naming a key we hold; it is only ever compared,
/// never used as a path or address) are accepted. Returns the key to check the
/// MAC with: the one `kid` names, or the current key when there is no `kid`.
fn check_header<'k>(header_b64: &[u8], keys: &'k KeyRing) -> Result<(&'k Key, i64), TokenError> {
    let mut header_buf = [0u8; HEADER_BUF];
    let header_len = decode_segment(header_b64, &mut header_buf)?;
    let header: Header<'_> =
        serde_json::from_slice(&header_buf[..header_len]).map_err(|e| header_error(&e))?;
    if header.alg != "HS256" {
        return Err(TokenError::BadAlgorithm);
    }
    match header.kid {
        Some(kid) => keys.by_kid(kid).ok_or(TokenError::UnknownKey),
        None => Ok((keys.current(), NO_DEADLINE)),
    }
}

/// Strict base64url: no padding, no non-canonical trailing bits, fits `out`.
fn decode_segment(segment: &[u8], out: &mut [u8]) -> Result<usize, TokenError> {
    if segment.is_empty() || segment.len() / 4 * 3 + 3 > out.len() {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode_slice(segment, out)
        .map_err(|_| TokenError::Malformed)
}

fn header_error(e: &serde_json::Error) -> TokenError {
    // An unknown or duplicated field is a header we refuse by policy; anything else
    // is not a JOSE header at all.
    if e.classify() == serde_json::error::Category::Data {
        TokenError::BadHeader
    } else {
        TokenError::Malformed
    }
}

#[cfg(test)]
mod tests;
