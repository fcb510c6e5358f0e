//! The five authentication operations, and the metrics' scrape. Each returns
//! a response or an [`ApiError`]; the mapping of errors to HTTP lives in
//! `error.rs` alone. Each operation tells the metrics how it ended, once, as
//! it returns. [`authorize`] is the access-token check of every route that
//! needs one (profile here; the directory, history and features beside).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use softphone_shared::keys::KeyRing;
use softphone_shared::password;
use softphone_shared::seclog::Event;
use softphone_shared::store::{Created, NewSession, RevokeReason, Rotation, Store};
use softphone_shared::token::{self, Claims, PAYLOAD_BUF, TokenError, TokenType, Validation};
use softphone_shared::users::{self, Credential, Secret, TagMatch};
use softphone_shared::{session_id, unix_now, unix_now_ms};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use crate::ApiError;
use crate::error::{self, json_response};
use crate::hashing::Queue;
use crate::metrics::{self, Login, Logout, Refresh};
use crate::state::{App, Pbx, RefreshUser};
use crate::{refresh_rate, tokens};

/// What the handlers need from a request besides its body.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The client: `X-Real-IP` when nginx (a loopback peer) sent it, else the peer.
    pub from: IpAddr,
    pub authorization: Option<HeaderValue>,
    pub content_type: Option<HeaderValue>,
    pub if_none_match: Option<HeaderValue>,
}

impl Meta {
    /// The token of the `Authorization` header, as [`token::bearer`] reads it.
    fn bearer(&self) -> Option<&[u8]> {
        token::bearer(self.authorization.as_ref()?.as_bytes())
    }

    fn is_json(&self) -> bool {
        self.content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    }
}

/// Where a login's credential comes from.
enum Lookup {
    /// Already looked up (built-in users, or a name too long to be one).
    Found(Option<Credential>),
    /// To be read from the PBX database on the hashing thread.
    Pbx(Arc<Pbx>, String),
}

/// Longest username and password we look at; longer ones simply fail.
const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    success: bool,
    access_token: &'a str,
    refresh_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
}

/// A refused login is answered `login_failure_delay_ms` after it arrived at the
/// earliest. Waiting costs nothing, so a flood of cheap failures (the `mikopbx`
/// source checks a password in microseconds) holds each attacking connection
/// to about one attempt per delay instead of taking the cores profile and
/// refresh need; and an answer's timing tells nothing about why it failed.
pub async fn login(app: Arc<App>, meta: Meta, body: Bytes) -> Result<Response, ApiError> {
    let arrived = tokio::time::Instant::now();
    let delay = std::time::Duration::from_millis(app.config().login_failure_delay_ms);
    let answer = check_login(&app, meta, body).await;
    app.metrics().login(Login::of(&answer));
    if answer.is_err() {
        tokio::time::sleep_until(arrived + delay).await;
    }
    answer
}

async fn check_login(app: &Arc<App>, meta: Meta, body: Bytes) -> Result<Response, ApiError> {
    if !meta.is_json() {
        return Err(ApiError::BadCredentialsRequest);
    }
    let request: LoginRequest =
        serde_json::from_slice(&body).map_err(|_| ApiError::BadCredentialsRequest)?;
    if request.username.is_empty() || request.password.is_empty() {
        return Err(ApiError::BadCredentialsRequest);
    }
    let config = app.config();
    let now = unix_now();
    let username = request.username;

    // The throttle keeps the names it sees for the whole window. No user's name is
    // longer than MAX_USERNAME, so that much of a name is key enough, and a flood of
    // 8 KiB names costs the throttle no more memory than one of short names.
    let throttle_key = prefix(&username, MAX_USERNAME);
    let attempt = match app.throttle().begin(throttle_key, meta.from, now) {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            // Once per address and minute: a guesser hammering past its 429s must
            // not fill the disk, and fail2ban still sees every throttled address.
            app.log()
                .log_per_address(Event::AuthRateLimited, &username, meta.from, now);
            return Err(ApiError::TooManyAttempts { retry_after });
        }
    };
    let queue = if attempt.known() {
        Queue::Known
    } else {
        Queue::Other
    };

    // Built-in users are looked up here (a quick read of our own database),
    // PBX users on the hashing thread with the check (see `state::Pbx`).
    let lookup = match app.pbx() {
        _ if username.len() > MAX_USERNAME => Lookup::Found(None),
        None => match app.find_user(username.clone()).await {
            Ok(found) => Lookup::Found(found),
            Err(e) => {
                app.throttle().abandoned(attempt);
                return Err(e);
            }
        },
        Some(pbx) => Lookup::Pbx(pbx, username.clone()),
    };
    let password = request.password;
    let source = config.user_source.clone();
    let iterations = config.pbkdf2_iterations;
    // PBKDF2-HMAC pads a short password with zero bytes to make its HMAC key, so
    // "secret" and "secret\0" hash alike: a password with a NUL is simply wrong
    // (after the same dummy work as an unknown user).
    let checked = app
        .check_password(queue, move || {
            let credential = match lookup {
                Lookup::Found(credential) => credential,
                Lookup::Pbx(pbx, name) => pbx.logins.find(&name)?,
            };
            Ok(match &credential {
                Some(found) if password.len() <= MAX_PASSWORD && !password.contains('\0') => {
                    let accepted = found.check(&password, iterations);
                    // A hash of another cost than the configured one is re-made
                    // while the password is at hand.
                    let rehashed = found
                        .password_hash()
                        .filter(|stored| accepted && password::needs_rehash(stored, iterations))
                        .and_then(|_| password::hash(&password, iterations).ok());
                    (credential, accepted, rehashed)
                }
                _ => {
                    users::check_missing(&source, &password, iterations);
                    (credential, false, None)
                }
            })
        })
        .await;
    let (credential, accepted, rehashed) = match checked {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => {
            // The PBX database could not be read: nothing was checked.
            app.throttle().abandoned(attempt);
            let e: softphone_shared::Error = e;
            eprintln!("softphone-issuer: {e}");
            return Err(ApiError::Internal);
        }
        Err(e) => {
            // No password was checked: the attempt costs nothing. A full queue is
            // a refusal like a 429, logged the same way.
            app.throttle().abandoned(attempt);
            if e == ApiError::Busy {
                app.log()
                    .log_per_address(Event::AuthRateLimited, &username, meta.from, unix_now());
            }
            return Err(e);
        }
    };

    let Some(checked) = credential.filter(|_| accepted) else {
        app.log()
            .log(Event::AuthFailed, &username, Some(meta.from), unix_now());
        return Err(ApiError::InvalidCredentials);
    };
    let now = unix_now();
    app.throttle().succeeded(attempt, now);
    let keys = app.keys();
    // The credential the session is bound to: the re-made hash if there is one.
    let (credential, rehash) = match rehashed {
        Some(new_hash) => {
            let old_tags = checked.live_tags(&keys, now);
            let old_hash = checked.password_hash().unwrap_or_default().to_owned();
            let fresh = Credential {
                secret: Secret::Hash(new_hash.clone()),
                ..checked
            };
            (fresh, Some((old_hash, new_hash, old_tags)))
        }
        None => (checked, None),
    };
    let sid = session_id::text(&session_id::new(unix_now_ms()).map_err(|e| error::internal(&e))?);
    let pair = tokens::mint(keys.current(), &config, &credential.user, &sid, now)?;
    let cred_tag = credential.tag(keys.current());
    let bound_hash = credential.password_hash().map(str::to_owned);
    let user = credential.user.clone();
    let refresh_jti = pair.refresh_jti.clone();
    let expires = pair.refresh_exp;
    let max_sessions = config.max_sessions_per_user;
    let created = app
        .write(move |store| {
            if let Some((old_hash, new_hash, old_tags)) = &rehash {
                // False when the password changed meanwhile: then the session
                // below is refused as well.
                store.rehash_user(&user.username, old_hash, new_hash, old_tags, &cred_tag)?;
            }
            store.create_session(
                &NewSession {
                    sid: &sid,
                    user_id: user.id,
                    username: &user.username,
                    role: &user.role,
                    cred_tag: &cred_tag,
                    created: now,
                    expires,
                    refresh_jti: &refresh_jti,
                    password_hash: bound_hash.as_deref(),
                },
                max_sessions,
            )
        })
        .await?;
    match created {
        Created::Session { revoked: 0 } => {}
        Created::Session { revoked } => {
            app.metrics().revoked(RevokeReason::SessionLimit, revoked);
            eprintln!(
                "softphone-issuer: a login beyond max_sessions_per_user ({max_sessions}) revoked {revoked} older session(s)"
            );
        }
        Created::CredentialChanged => {
            // `user passwd` or `user disable` committed while the password was
            // being checked: the old password no longer opens a session.
            app.log()
                .log(Event::AuthFailed, &username, Some(meta.from), now);
            return Err(ApiError::InvalidCredentials);
        }
    }
    app.log()
        .log(Event::AuthSuccess, &username, Some(meta.from), now);
    Ok(tokens_response(&pair, config.access_ttl))
}

pub async fn refresh(app: Arc<App>, meta: Meta) -> Result<Response, ApiError> {
    let (answer, reused) = match rotate(&app, meta).await {
        Err(Refused::Reused) => (Err(ApiError::RefreshInvalid), true),
        Err(Refused::Api(e)) => (Err(e), false),
        Ok(response) => (Ok(response), false),
    };
    let outcome = if reused {
        Refresh::ReuseDetected
    } else {
        Refresh::of(&answer)
    };
    app.metrics().refresh(outcome);
    answer
}

/// Why a refresh was refused: a reused refresh token answers like any
/// invalid one, but the metrics tell it apart.
enum Refused {
    Reused,
    Api(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused::Api(e)
    }
}

async fn rotate(app: &Arc<App>, meta: Meta) -> Result<Response, Refused> {
    let token = meta.bearer().ok_or(ApiError::RefreshInvalid)?;
    let config = app.config();
    let keys = app.keys();
    let now = unix_now();
    let mut buf = [0u8; PAYLOAD_BUF];
    let claims = verify(app, token, &mut buf, now)
        .map_err(|_| ApiError::RefreshInvalid)?
        .require(TokenType::Refresh)
        .map_err(|_| ApiError::RefreshWrongType)?;
    let user = app.refresh_user(claims.username).await?;
    let next = tokens::Next::new(&config, now)?;
    let asked = Presented {
        sid: claims.sid.to_owned(),
        jti: claims.jti.to_owned(),
        username: claims.username.to_owned(),
        new_jti: next.refresh_jti().to_owned(),
        new_expires: next.refresh_exp(),
        now,
        limits: refresh_rate::Limits::from_config(&config),
    };
    // One trip to the writer: the session is read and checked, and rotated,
    // on the connection that writes it.
    let decided = {
        let (app, keys) = (Arc::clone(app), Arc::clone(&keys));
        move |store: &mut Store| decide(&app, &keys, store, &asked, user)
    };
    let decided = app.write(decided).await?;
    let sid = claims.sid;
    match decided {
        Decision::Rotated(credential) => {
            let pair = next.mint(keys.current(), &config, &credential.user, sid)?;
            Ok(tokens_response(&pair, config.access_ttl))
        }
        Decision::Invalid => Err(ApiError::RefreshInvalid.into()),
        Decision::TooMany(retry_after) => Err(ApiError::TooManyRefreshes { retry_after }.into()),
        Decision::Ended { reason, revoked } => {
            if revoked {
                app.metrics().revoked(reason, 1);
            }
            Err(ApiError::RefreshInvalid.into())
        }
        Decision::Reused => {
            app.metrics().revoked(RevokeReason::RefreshReuse, 1);
            app.log()
                .log(Event::RefreshReuse, claims.username, Some(meta.from), now);
            Err(Refused::Reused)
        }
    }
}

/// A refresh token as presented, with what its rotation records.
struct Presented {
    sid: String,
    jti: String,
    username: String,
    new_jti: String,
    new_expires: i64,
    now: i64,
    limits: refresh_rate::Limits,
}

/// What a refresh's write decided.
enum Decision {
    /// Rotated: the new pair names this user.
    Rotated(Credential),
    /// An unknown or revoked session.
    Invalid,
    /// The session's refreshes are used up for now: again in this many seconds.
    TooMany(i64),
    /// The user is gone, disabled or has other credentials: the session ends
    /// (`revoked`: by this refresh).
    Ended { reason: RevokeReason, revoked: bool },
    /// An older generation came back: the session was revoked just now.
    Reused,
}

/// A refresh's checks and writes, on the writer thread in its batch.
fn decide(
    app: &App,
    keys: &KeyRing,
    store: &mut Store,
    asked: &Presented,
    user: RefreshUser,
) -> softphone_shared::Result<Decision> {
    // A token of a revoked or unknown session, as every route refuses it.
    let Some(session) = store.session(&asked.sid)?.filter(|s| !s.revoked) else {
        return Ok(Decision::Invalid);
    };
    if let Err(retry_after) = app.refresh_rate().take(&asked.sid, asked.now, asked.limits) {
        return Ok(Decision::TooMany(retry_after));
    }
    // The user must still exist, be enabled and have the credentials the
    // session was opened with; otherwise the session ends here.
    let current = user
        .resolve(store, &asked.username)?
        .filter(|c| !c.disabled);
    let tag_match = match &current {
        Some(c) => c.tag_match(keys, &session.cred_tag, asked.now),
        None => TagMatch::NoMatch,
    };
    let credential = match current {
        Some(credential) if tag_match != TagMatch::NoMatch => credential,
        current => {
            let reason = if current.is_none() {
                RevokeReason::UserDisabled
            } else {
                RevokeReason::CredentialsChanged
            };
            let revoked = store.revoke_session(&asked.sid, reason, asked.now)?;
            return Ok(Decision::Ended { reason, revoked });
        }
    };
    // A session opened before a key rotation: tag it with the current key, so
    // it keeps working after the previous key's deadline.
    if tag_match == TagMatch::Previous {
        store.set_cred_tag(&asked.sid, &credential.tag(keys.current()))?;
    }
    let rotation = store.rotate_refresh(
        &asked.sid,
        &asked.jti,
        &asked.new_jti,
        asked.new_expires,
        asked.now,
    )?;
    Ok(match rotation {
        Rotation::Rotated => Decision::Rotated(credential),
        Rotation::ReuseDetected => Decision::Reused,
        Rotation::Invalid => Decision::Invalid,
    })
}

pub async fn logout(app: Arc<App>, meta: Meta) -> Result<Response, ApiError> {
    let answer = end_session(&app, meta).await;
    app.metrics().logout(Logout::of(&answer));
    answer
}

async fn end_session(app: &Arc<App>, meta: Meta) -> Result<Response, ApiError> {
    let token = meta.bearer().ok_or(ApiError::LogoutUnauthorized)?;
    let now = unix_now();
    let mut buf = [0u8; PAYLOAD_BUF];
    let claims = decode(app, token, &mut buf, now)
        .await
        .map_err(|_| ApiError::LogoutUnauthorized)?;
    let sid = claims.sid.to_owned();
    // The 200 goes out only after the revocation is committed (synchronous=FULL)
    // and the epoch bumped, so the verifier refuses the very next request.
    let revoked = app
        .write(move |store| store.revoke_session(&sid, RevokeReason::Logout, now))
        .await?;
    if !revoked {
        return Err(ApiError::LogoutUnauthorized);
    }
    app.metrics().revoked(RevokeReason::Logout, 1);
    app.log()
        .log(Event::Logout, claims.username, Some(meta.from), now);

    #[derive(Serialize)]
    struct LoggedOut {
        success: bool,
        message: &'static str,
    }
    Ok(json_response(
        StatusCode::OK,
        &LoggedOut {
            success: true,
            message: "Logged out successfully",
        },
    ))
}

/// The claims of a valid access token of an active session, or the answer of
/// every route that needs one: 401 without, 403 for a refresh token.
pub async fn authorize<'b>(
    app: &App,
    meta: &Meta,
    buf: &'b mut [u8; PAYLOAD_BUF],
) -> Result<Claims<'b>, ApiError> {
    let token = meta.bearer().ok_or(ApiError::ProfileUnauthorized)?;
    decode(app, token, buf, unix_now())
        .await
        .map_err(|_| ApiError::ProfileUnauthorized)?
        .require(TokenType::Access)
        .map_err(|_| ApiError::ProfileWrongType)
}

pub async fn profile(app: Arc<App>, meta: Meta) -> Result<Response, ApiError> {
    let mut buf = [0u8; PAYLOAD_BUF];
    let claims = authorize(&app, &meta, &mut buf).await?;

    #[derive(Serialize)]
    struct Profile<'a> {
        success: bool,
        user: ProfileUser<'a>,
    }
    #[derive(Serialize)]
    struct ProfileUser<'a> {
        id: u64,
        username: &'a str,
        role: &'a str,
    }
    Ok(json_response(
        StatusCode::OK,
        &Profile {
            success: true,
            user: ProfileUser {
                id: claims.sub,
                username: claims.username,
                role: claims.role,
            },
        },
    ))
}

pub async fn health() -> Response {
    #[derive(Serialize)]
    struct Health {
        success: bool,
        status: &'static str,
        timestamp: i64,
    }
    json_response(
        StatusCode::OK,
        &Health {
            success: true,
            status: "ok",
            timestamp: unix_now(),
        },
    )
}

/// A Prometheus scrape: the counters, and the gauges read now (live sessions
/// from the database on a connection of their own, the hashing queues).
pub async fn metrics(app: Arc<App>) -> Result<Response, ApiError> {
    let now = unix_now();
    let live = app
        .scrape_read(move |store| store.live_session_count(now))
        .await?;
    let text = app
        .metrics()
        .scrape(live, app.hashing_waiting())
        .map_err(|_| ApiError::Internal)?;
    let mut response = Response::new(text.into());
    let headers = response.headers_mut();
    headers.insert(
        warp::http::header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    headers.insert(
        warp::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// Verifies a token of either type and checks its session is still active.
async fn decode<'b>(
    app: &App,
    token: &[u8],
    buf: &'b mut [u8; PAYLOAD_BUF],
    now: i64,
) -> Result<Claims<'b>, TokenError> {
    let claims = verify(app, token, buf, now)?;
    let sid = claims.sid.to_owned();
    let active = app
        .read(move |store| store.session_active(&sid))
        .await
        .map_err(|_| TokenError::Revoked)?;
    if active {
        Ok(claims)
    } else {
        Err(TokenError::Revoked)
    }
}

/// The token's claims when its signature and times are good; its session is
/// not looked at (see [`decode`]).
fn verify<'b>(
    app: &App,
    token: &[u8],
    buf: &'b mut [u8; PAYLOAD_BUF],
    now: i64,
) -> Result<Claims<'b>, TokenError> {
    let config = app.config();
    let keys = app.keys();
    Ok(token::verify(
        token,
        &keys,
        Validation {
            now,
            leeway: config.leeway,
        },
        buf,
    )?
    .claims)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn tokens_response(pair: &tokens::Pair, expires_in: i64) -> Response {
    json_response(
        StatusCode::OK,
        &TokenResponse {
            success: true,
            access_token: &pair.access,
            refresh_token: &pair.refresh,
            token_type: "Bearer",
            expires_in,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_cuts_on_a_character_boundary() {
        assert_eq!(prefix("201", MAX_USERNAME), "201");
        assert_eq!(prefix("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(prefix("jos\u{e9}", 4), "jos");
        assert_eq!(prefix("\u{e9}", 1), "");
        let long = "9".repeat(10_000);
        assert_eq!(prefix(&long, MAX_USERNAME).len(), MAX_USERNAME);
    }
}
