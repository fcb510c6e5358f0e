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
    Next::new(config, now)?.mint(key, config, user, sid)
}

/// A pair whose refresh token's id and expiry are chosen before it is
/// signed: a refresh records them in its write, which also reads the user
/// the tokens name.
#[derive(Debug)]
pub struct Next {
    refresh_jti: String,
    refresh_exp: i64,
    now: i64,
}

impl Next {
    pub fn new(config: &Config, now: i64) -> Result<Next, ApiError> {
        Ok(Next {
            refresh_jti: random_id()?,
            refresh_exp: now.saturating_add(config.refresh_ttl),
            now,
        })
    }

    pub fn refresh_jti(&self) -> &str {
        &self.refresh_jti
    }

    pub fn refresh_exp(&self) -> i64 {
        self.refresh_exp
    }

    /// Signs the pair for `user` in session `sid`.
    pub fn mint(
        self,
        key: &Key,
        config: &Config,
        user: &User,
        sid: &str,
    ) -> Result<Pair, ApiError> {
        let Next {
            refresh_jti,
            refresh_exp,
            now,
        } = self;
        let sub = u64::try_from(user.id).map_err(|_| ApiError::Internal)?;
        let access_jti = random_id()?;
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
}
