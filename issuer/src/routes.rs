//! The route table. Paths first, then methods, so a known path with the wrong
//! method is a 405 and an unknown path a 404; every rejection ends in
//! [`recover`](crate::error::recover).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use warp::Filter;
use warp::http::HeaderMap;
use warp::reply::Response;

use crate::ApiError;
use crate::error::recover;
use crate::handlers::{self, Meta};
use crate::state::App;

/// Login bodies are two short strings; anything bigger is refused unread.
pub const MAX_LOGIN_BODY: u64 = 8 * 1024;

/// Every route, with errors already turned into responses.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let base = warp::path("pbxcore")
        .and(warp::path("api"))
        .and(warp::path("module-softphone-backend"))
        .and(warp::path("v1"));

    let login = warp::path!("auth" / "login")
        .and(warp::post())
        .and(with_app(&app))
        .and(meta())
        .and(warp::body::content_length_limit(MAX_LOGIN_BODY))
        .and(warp::body::bytes())
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
    let health = warp::path!("health")
        .and(warp::get())
        .then(handlers::health);

    base.and(
        login
            .or(refresh)
            .unify()
            .or(logout)
            .unify()
            .or(profile)
            .unify()
            .or(health)
            .unify(),
    )
    .recover(recover)
    .unify()
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

/// Client address and the headers the handlers read. Header values are taken raw,
/// so a non-UTF-8 `Authorization` is an invalid token (401), not a 400.
fn meta() -> impl Filter<Extract = (Meta,), Error = Infallible> + Clone {
    warp::addr::remote()
        .and(warp::header::headers_cloned())
        .map(|peer: Option<SocketAddr>, headers: HeaderMap| Meta {
            from: client_ip(peer, &headers),
            authorization: headers.get("authorization").cloned(),
            content_type: headers.get("content-type").cloned(),
        })
}

/// `X-Real-IP` is believed only from a loopback peer (our nginx).
fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let peer_ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
    if !peer_ip.is_loopback() {
        return peer_ip;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer_ip)
}
