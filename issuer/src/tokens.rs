//! Minting token pairs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use softphone_shared::config::Config;
use softphone_shared::keys::Key;
use softphone_shared::token::{self, Claims, TokenType};
use softphone_shared::users::User;

use crate::ApiError;

/// An access and a refresh token of one session.
#[derive(Debug)]
pub struct Pair {
    pub access: String,
    pub refresh: String,
    pub refresh_jti: String,
    pub refresh_exp: i64,
}

/// 128 random bits, base64url: token ids (`jti`).
pub fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Mints a new pair for `user` in session `sid`.
pub fn mint(
    key: &Key,
    config: &Config,
    user: &User,
    sid: &str,
    now: i64,
) -> Result<Pair, ApiError> {
    let sub = u64::try_from(user.id).map_err(|_| ApiError::Internal)?;
    let access_jti = random_id()?;
    let refresh_jti = random_id()?;
    let base = Claims {
        sub,
        username: &user.username,
        role: &user.role,
        iat: now,
        exp: now.saturating_add(config.access_ttl),
        kind: TokenType::Access,
        sid,
        jti: &access_jti,
        nbf: None,
    };
    let access = token::sign(&base, key);
    let refresh_exp = now.saturating_add(config.refresh_ttl);
    let refresh = token::sign(
        &Claims {
            exp: refresh_exp,
            kind: TokenType::Refresh,
            jti: &refresh_jti,
            ..base
        },
        key,
    );
    Ok(Pair {
        access,
        refresh,
        refresh_jti,
        refresh_exp,
    })
}
