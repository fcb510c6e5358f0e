//! Errors: [`Error`] for start-up and admin commands, [`ApiError`] for answers.
//!
//! [`ApiError::into_response`] is the one place that maps errors to HTTP, and
//! [`recover`] routes every warp rejection through it, so every error body has the
//! contract's shape: `{"success":false,"error":"<message>","timestamp":<unix>}`.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Rejection, Reply};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Shared(#[from] softphone_shared::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    /// A store call of a background task failed; the cause was logged where it
    /// happened.
    #[error("the session store failed")]
    Store,
}

/// Every error answer of the public API. Messages are the original module's, kept
/// for app compatibility; none carries detail about what went wrong inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiError {
    /// Login: missing or empty fields, bad JSON, wrong content type, body too large.
    BadCredentialsRequest,
    /// Login: unknown user or wrong password (indistinguishable on purpose).
    InvalidCredentials,
    /// Login: throttled; retry after this many seconds.
    TooManyAttempts {
        retry_after: i64,
    },
    /// Login: the password-hashing queue is full.
    Busy,
    /// Refresh: no token, or one that is invalid, expired, revoked or reused.
    RefreshInvalid,
    /// Refresh: this session refreshed too often; retry after this many seconds.
    TooManyRefreshes {
        retry_after: i64,
    },
    /// Refresh: a valid access token was presented.
    RefreshWrongType,
    /// Logout: no valid token.
    LogoutUnauthorized,
    /// Profile, users, history, features: no valid access token.
    ProfileUnauthorized,
    /// Profile, users, history, features: a valid refresh token was presented.
    ProfileWrongType,
    /// History: `date` is not a `YYYY-MM-DD` that exists, or is given twice.
    BadDate,
    NotFound,
    MethodNotAllowed,
    Internal,
}

impl ApiError {
    pub fn status(self) -> StatusCode {
        match self {
            ApiError::BadCredentialsRequest | ApiError::BadDate => StatusCode::BAD_REQUEST,
            ApiError::InvalidCredentials
            | ApiError::RefreshInvalid
            | ApiError::LogoutUnauthorized
            | ApiError::ProfileUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RefreshWrongType | ApiError::ProfileWrongType => StatusCode::FORBIDDEN,
            ApiError::TooManyAttempts { .. } | ApiError::TooManyRefreshes { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ApiError::BadCredentialsRequest => "Invalid credentials provided",
            ApiError::InvalidCredentials => "Invalid credentials",
            ApiError::TooManyAttempts { .. } => "Too many login attempts. Please try again later",
            ApiError::TooManyRefreshes { .. } => {
                "Too many refresh requests. Please try again later"
            }
            ApiError::Busy => "Service temporarily unavailable. Please try again later",
            ApiError::RefreshInvalid => "Invalid or missing token",
            ApiError::RefreshWrongType => "Invalid token type. Refresh token required",
            ApiError::LogoutUnauthorized => "Unauthorized",
            ApiError::ProfileUnauthorized => "Unauthorized. Token required",
            ApiError::ProfileWrongType => "Invalid token type",
            ApiError::BadDate => "Invalid date. Expected YYYY-MM-DD",
            ApiError::NotFound => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Internal => "Internal server error",
        }
    }

    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            success: bool,
            error: &'static str,
            timestamp: i64,
        }
        let mut response = json_response(
            self.status(),
            &Body {
                success: false,
                error: self.message(),
                timestamp: softphone_shared::unix_now(),
            },
        );
        let headers = response.headers_mut();
        match self {
            ApiError::TooManyAttempts { retry_after }
            | ApiError::TooManyRefreshes { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            ApiError::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RefreshInvalid
            | ApiError::LogoutUnauthorized
            | ApiError::ProfileUnauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"softphone\", error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl warp::reject::Reject for ApiError {}

/// A database or file error behind a request: logged (database messages
/// name tables and constraints, never values) and answered as a 500.
pub fn internal(e: &softphone_shared::Error) -> ApiError {
    eprintln!("softphone-issuer: {e}");
    ApiError::Internal
}

/// Serialises `body` compactly with the headers every answer carries.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    // Our bodies are structs of strings and numbers; serialisation cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Tokens must never sit in a cache (RFC 6749 §5.1).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Turns every rejection into the contract's JSON error.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(api) = rejection.find::<ApiError>() {
        *api
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some()
        || rejection.find::<warp::reject::LengthRequired>().is_some()
        || rejection
            .find::<warp::reject::UnsupportedMediaType>()
            .is_some()
        || rejection
            .find::<warp::filters::body::BodyDeserializeError>()
            .is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
    {
        // Only login reads a body or requires headers.
        ApiError::BadCredentialsRequest
    } else {
        ApiError::Internal
    };
    Ok(error.into_response())
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        ApiError::into_response(self)
    }
}
