//! The route table. Paths first, then methods, so a known path with the wrong
//! method is a 405 and an unknown path a 404; every rejection ends in
//! [`recover`](crate::error::recover). Beside it, [`Route`]: what the metrics
//! call each request.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use softphone_shared::paths::API_BASE;
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply, Stream};

use crate::ApiError;
use crate::error::recover;
use crate::handlers::{self, Meta};
use crate::state::App;
use crate::{directory, history};

/// Where Prometheus scrapes the issuer: at the root, outside [`API_BASE`],
/// the only prefix the rendered nginx passes to the issuer.
pub const METRICS_PATH: &str = "/metrics";

crate::metrics::label_values! {
    /// What the metrics call a request, by its path: one value per route of
    /// the table below, and `other` for any other path, so no path a client
    /// makes up becomes a label value.
    pub enum Route {
        Login => "login",
        Refresh => "refresh",
        Logout => "logout",
        Profile => "profile",
        Users => "users",
        History => "history",
        Features => "features",
        Health => "health",
        Metrics => "metrics",
        Other => "other",
    }
}

impl Route {
    /// The route's path under [`API_BASE`] (the scrape's is [`METRICS_PATH`]).
    pub const fn under_base(self) -> Option<&'static str> {
        match self {
            Route::Login => Some("/auth/login"),
            Route::Refresh => Some("/auth/refresh"),
            Route::Logout => Some("/auth/logout"),
            Route::Profile => Some("/profile"),
            Route::Users => Some("/users"),
            Route::History => Some("/history"),
            Route::Features => Some("/features"),
            Route::Health => Some("/health"),
            Route::Metrics | Route::Other => None,
        }
    }

    /// The route a request path belongs to.
    pub fn of(path: &str) -> Route {
        if path == METRICS_PATH {
            return Route::Metrics;
        }
        path.strip_prefix(API_BASE)
            .and_then(|rest| {
                Route::ALL
                    .iter()
                    .copied()
                    .find(|route| route.under_base() == Some(rest))
            })
            .unwrap_or(Route::Other)
    }
}

/// Login bodies are two short strings; anything bigger is a 400 (the contract's
/// answer for a body too large, not 413: apps only know the original's messages).
pub const MAX_LOGIN_BODY: u64 = 8 * 1024;

/// Every route, with errors already turned into responses, each answer
/// counted by the metrics.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let base = warp::path("pbxcore")
        .and(warp::path("api"))
        .and(warp::path("module-softphone-backend"))
        .and(warp::path("v1"));

    let login = warp::path!("auth" / "login")
        .and(warp::post())
        .and(with_app(&app))
        .and(meta())
        .and(login_body())
        .then(handlers::login)
        .map(respond);
    let refresh = warp::path!("auth" / "refresh")
        .and(warp::post())
        .and(with_app(&app))
        .and(meta())
        .then(handlers::refresh)
        .map(respond);
    let logout = warp::path!("auth" / "logout")
        .and(warp::post())
        .and(with_app(&app))
        .and(meta())
        .then(handlers::logout)
        .map(respond);
    let profile = warp::path!("profile")
        .and(warp::get())
        .and(with_app(&app))
        .and(meta())
        .then(handlers::profile)
        .map(respond);
    let users = warp::path!("users")
        .and(warp::get())
        .and(with_app(&app))
        .and(meta())
        .then(directory::users)
        .map(respond);
    let history = warp::path!("history")
        .and(warp::get())
        .and(with_app(&app))
        .and(meta())
        .and(raw_query())
        .then(history::history)
        .map(respond);
    let features = warp::path!("features")
        .and(warp::get())
        .and(with_app(&app))
        .and(meta())
        .then(directory::features)
        .map(respond);
    let health = warp::path!("health")
        .and(warp::get())
        .then(handlers::health);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app(&app))
        .then(handlers::metrics)
        .map(respond);

    // Every answer, errors included, passes here once: its route's latency
    // and status class.
    let counted = Arc::clone(&app);
    let count = warp::log::custom(move |info| {
        counted
            .metrics()
            .answered(Route::of(info.path()), info.status(), info.elapsed());
    });
    metrics
        .or(base.and(
            login
                .or(refresh)
                .unify()
                .or(logout)
                .unify()
                .or(profile)
                .unify()
                .or(users)
                .unify()
                .or(history)
                .unify()
                .or(features)
                .unify()
                .or(health)
                .unify(),
        ))
        .unify()
        .recover(recover)
        .unify()
        .with(count)
        .map(Reply::into_response)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

fn with_app(
    app: &Arc<App>,
) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone + use<> {
    let app = Arc::clone(app);
    warp::any().map(move || Arc::clone(&app))
}

/// The login body, at most [`MAX_LOGIN_BODY`] bytes. A `Content-Length` over the
/// limit is refused before any byte is read. A chunked body (HTTP/1.1 clients that
/// stream, e.g. OkHttp with an unknown length, send one; every HTTP/1.1 server must
/// parse it) is read only up to the limit: the client that keeps sending gets its
/// 400 after 8 KiB and the connection is dropped. A request with both framings
/// never gets here as such: hyper drops the `Content-Length`, reads it as chunked
/// and closes the connection after answering (RFC 9112 §6.1), so nothing sent
/// after it is ever read as a request.
fn login_body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|length: Option<u64>| async move {
            match length {
                Some(length) if length > MAX_LOGIN_BODY => {
                    Err(warp::reject::custom(ApiError::BadCredentialsRequest))
                }
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(|body| async move {
            read_limited(body, MAX_LOGIN_BODY)
                .await
                .map_err(warp::reject::custom)
        })
}

/// Collects `body`, failing as soon as it passes `limit` bytes or breaks off.
async fn read_limited<S, B>(body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let mut chunk = chunk.map_err(|_| ApiError::BadCredentialsRequest)?;
        if (collected.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::BadCredentialsRequest);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// The request's query string as sent (none: empty).
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Client address and the headers the handlers read. Header values are taken raw,
/// so a non-UTF-8 `Authorization` is an invalid token (401), not a 400.
fn meta() -> impl Filter<Extract = (Meta,), Error = Infallible> + Clone {
    warp::addr::remote()
        .and(warp::header::headers_cloned())
        .map(|peer: Option<SocketAddr>, headers: HeaderMap| Meta {
            from: client_ip(peer, &headers),
            authorization: single(&headers, "authorization"),
            content_type: single(&headers, "content-type"),
            if_none_match: single(&headers, "if-none-match"),
        })
}

/// A header that may appear once. Two copies (which could disagree, and which a
/// proxy and we might read differently) count as none: no token, no JSON.
fn single(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.clone()),
        _ => None,
    }
}

/// `X-Real-IP` is believed only from a loopback peer (our nginx). Addresses are
/// canonical: on a dual-stack listener an IPv4 peer arrives as `::ffff:a.b.c.d`,
/// and must be judged, throttled and logged as `a.b.c.d`.
fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let peer_ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip().to_canonical());
    if !peer_ip.is_loopback() {
        return peer_ip;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer_ip, |ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str, real_ip: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(ip) = real_ip {
            headers.insert("x-real-ip", HeaderValue::from_str(ip).unwrap());
        }
        client_ip(Some(peer.parse().unwrap()), &headers).to_string()
    }

    #[test]
    fn x_real_ip_is_believed_from_loopback_peers_only_in_any_spelling() {
        assert_eq!(from("127.0.0.1:5000", Some("10.0.0.7")), "10.0.0.7");
        assert_eq!(from("[::1]:5000", Some("10.0.0.7")), "10.0.0.7");
        // An IPv4 loopback peer on a dual-stack listener.
        assert_eq!(
            from("[::ffff:127.0.0.1]:5000", Some("10.0.0.7")),
            "10.0.0.7"
        );
        assert_eq!(from("[::ffff:127.0.0.1]:5000", None), "127.0.0.1");
        // Not loopback: the peer, canonical, whatever the header says.
        assert_eq!(
            from("[::ffff:10.0.0.1]:5000", Some("127.0.0.1")),
            "10.0.0.1"
        );
        assert_eq!(from("192.0.2.9:5000", Some("10.0.0.7")), "192.0.2.9");
        // nginx's spelling of a mapped address counts as the IPv4 one.
        assert_eq!(from("127.0.0.1:5000", Some("::ffff:10.0.0.7")), "10.0.0.7");
        assert_eq!(from("127.0.0.1:5000", Some("garbage")), "127.0.0.1");
    }
}
