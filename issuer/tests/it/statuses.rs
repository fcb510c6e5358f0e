//! Every status and message of the API contract (the README's API table), route
//! by route. The issuer's routes run in-process: `warp::test` requests against
//! `routes::routes`, at paths built from `paths::API_BASE`, so these tests also
//! prove that the routes live under the shared base path. The verifier's answers
//! need the real daemon and run against the real binaries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use softphone_issuer::routes::{METRICS_PATH, Route, routes};
use softphone_issuer::state::App;
use softphone_shared::paths::API_BASE;
use softphone_shared::store::Store;
use softphone_shared::{password, unix_now};
use softphone_testkit::{Daemons, Response, TestDir, prom};

use crate::{PASSWORD, USER};

/// The issuer's peer when nginx forwards a request: loopback, so `X-Real-IP` is
/// believed.
const NGINX: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// The issuer's state over a fresh data directory holding the built-in user
/// `201`, added the way `softphone-issuer user add` adds it.
struct Issuer {
    app: Arc<App>,
    _dir: TestDir,
}

impl Issuer {
    fn open(name: &str) -> Issuer {
        let dir = TestDir::new(name);
        let config = softphone_testkit::config(dir.path());
        let hash = password::hash(PASSWORD, config.pbkdf2_iterations).unwrap();
        Store::open(&config.database())
            .unwrap()
            .add_user(USER, &hash, "user", unix_now())
            .unwrap();
        Issuer {
            app: Arc::new(App::open(config).unwrap()),
            _dir: dir,
        }
    }

    /// `method path` through every route, from nginx.
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut request = warp::test::request()
            .method(method)
            .path(path)
            .remote_addr(NGINX);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request
            .body(body)
            .reply(&routes(Arc::clone(&self.app)))
            .await;
        Response {
            status: reply.status().as_u16(),
            headers: reply
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: reply.body().to_vec(),
        }
    }

    /// `method` on the route `route` under [`API_BASE`], with a bearer token.
    async fn call(&self, method: &str, route: &str, bearer: Option<&str>) -> Response {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.request(method, &format!("{API_BASE}{route}"), &headers, b"")
            .await
    }

    async fn post_login(&self, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.request("POST", &format!("{API_BASE}/auth/login"), headers, body)
            .await
    }

    async fn login(&self, username: &str, password: &str) -> Response {
        let body = format!(r#"{{"username":"{username}","password":"{password}"}}"#);
        self.post_login(&[JSON], body.as_bytes()).await
    }

    /// Logs `201` in: (access, refresh).
    async fn tokens(&self) -> (String, String) {
        let r = self.login(USER, PASSWORD).await;
        assert_eq!(r.status, 200, "login failed: {}", r.text());
        (r.json_str("access_token"), r.json_str("refresh_token"))
    }
}

/// The contract's error: the status, and a body of exactly
/// `{"success":false,"error":<message>,"timestamp":<unix>}` as JSON.
fn assert_error(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], message);
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body.as_object().unwrap().len(), 3, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

/// A 401 of a token route: the error and the bearer challenge.
fn assert_unauthorized(r: &Response, message: &str) {
    assert_error(r, 401, message);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="softphone", error="invalid_token""#)
    );
}

/// The success body of login and refresh.
fn assert_token_pair(r: &Response) {
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["success"], true);
    assert!(r.json_str("access_token").starts_with("eyJ"));
    assert!(r.json_str("refresh_token").starts_with("eyJ"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body.as_object().unwrap().len(), 5, "{}", r.text());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
}

/// `POST auth/login`: 200; 400 `Invalid credentials provided`; 401 `Invalid
/// credentials`, the same for an unknown user and a wrong password; 429 `Too many
/// login attempts. Please try again later` with `Retry-After`.
#[tokio::test]
async fn login() {
    let issuer = Issuer::open("statuses-login");
    assert_token_pair(&issuer.login(USER, PASSWORD).await);

    for body in [
        r#"{"username":"","password":""}"#,
        r#"{"username":"201","password":""}"#,
        r#"{"username":"","password":"x"}"#,
        r#"{"username":"201"}"#,
        r#"{}"#,
        r#"{"username":201,"password":"x"}"#,
        r#"{"username":"201","password":"x""#,
        r#"not json"#,
        r#"[]"#,
        r#"{"username":"201","username":"202","password":"x"}"#,
        "",
    ] {
        assert_error(
            &issuer.post_login(&[JSON], body.as_bytes()).await,
            400,
            "Invalid credentials provided",
        );
    }
    let good = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    // Wrong or missing content type.
    assert_error(
        &issuer.post_login(&[], good.as_bytes()).await,
        400,
        "Invalid credentials provided",
    );
    assert_error(
        &issuer
            .post_login(&[("Content-Type", "text/plain")], good.as_bytes())
            .await,
        400,
        "Invalid credentials provided",
    );
    // A content type with parameters is still JSON.
    assert_eq!(
        issuer
            .post_login(
                &[("Content-Type", "application/json; charset=utf-8")],
                good.as_bytes()
            )
            .await
            .status,
        200
    );

    // Unknown user and wrong password: same status, same body (but the timestamp).
    let unknown = issuer.login("999", PASSWORD).await;
    let wrong = issuer.login(USER, "wrong").await;
    assert_error(&unknown, 401, "Invalid credentials");
    assert_error(&wrong, 401, "Invalid credentials");
    let names = |r: &Response| {
        let mut n: Vec<String> = r
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&unknown), names(&wrong));
    assert_eq!(unknown.body.len(), wrong.body.len());

    // Five failures from one client (nginx passes its address): the next attempt
    // is throttled, whatever its password.
    let client = ("X-Real-IP", "10.0.0.9");
    let wrong_body = format!(r#"{{"username":"{USER}","password":"wrong"}}"#);
    for _ in 0..5 {
        let r = issuer
            .post_login(&[JSON, client], wrong_body.as_bytes())
            .await;
        assert_error(&r, 401, "Invalid credentials");
    }
    let limited = issuer.post_login(&[JSON, client], good.as_bytes()).await;
    assert_error(
        &limited,
        429,
        "Too many login attempts. Please try again later",
    );
    let retry: i64 = limited.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
}

/// `POST auth/refresh`: 200 with a new pair; 401 `Invalid or missing token`; 403
/// `Invalid token type. Refresh token required` for an access token.
#[tokio::test]
async fn refresh() {
    let issuer = Issuer::open("statuses-refresh");
    let (access, refresh) = issuer.tokens().await;

    let r = issuer.call("POST", "/auth/refresh", Some(&refresh)).await;
    assert_token_pair(&r);
    assert_ne!(r.json_str("access_token"), access);
    assert_ne!(r.json_str("refresh_token"), refresh);

    assert_unauthorized(
        &issuer.call("POST", "/auth/refresh", None).await,
        "Invalid or missing token",
    );
    assert_unauthorized(
        &issuer
            .call("POST", "/auth/refresh", Some("invalid_token"))
            .await,
        "Invalid or missing token",
    );
    assert_error(
        &issuer.call("POST", "/auth/refresh", Some(&access)).await,
        403,
        "Invalid token type. Refresh token required",
    );
}

/// `POST auth/logout`: 200 `Logged out successfully`; 401 `Unauthorized`, also
/// for a session already ended.
#[tokio::test]
async fn logout() {
    let issuer = Issuer::open("statuses-logout");
    let (access, refresh) = issuer.tokens().await;

    assert_unauthorized(
        &issuer.call("POST", "/auth/logout", None).await,
        "Unauthorized",
    );
    assert_unauthorized(
        &issuer
            .call("POST", "/auth/logout", Some("invalid_token"))
            .await,
        "Unauthorized",
    );

    let r = issuer.call("POST", "/auth/logout", Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"success":true,"message":"Logged out successfully"}"#
    );
    assert_unauthorized(
        &issuer.call("POST", "/auth/logout", Some(&refresh)).await,
        "Unauthorized",
    );
}

/// `GET profile`: 200 with the user; 401 `Unauthorized. Token required`; 403
/// `Invalid token type` for a refresh token.
#[tokio::test]
async fn profile() {
    let issuer = Issuer::open("statuses-profile");
    let (access, refresh) = issuer.tokens().await;

    let r = issuer.call("GET", "/profile", Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"success":true,"user":{"id":1,"username":"201","role":"user"}}"#
    );

    assert_unauthorized(
        &issuer.call("GET", "/profile", None).await,
        "Unauthorized. Token required",
    );
    assert_unauthorized(
        &issuer.call("GET", "/profile", Some("invalid_token")).await,
        "Unauthorized. Token required",
    );
    assert_error(
        &issuer.call("GET", "/profile", Some(&refresh)).await,
        403,
        "Invalid token type",
    );
}

/// `GET users`, `GET history`, `GET features`: 200 for an access token; 401
/// `Unauthorized. Token required` and 403 `Invalid token type` exactly like
/// profile; `history`'s malformed date 400 `Invalid date. Expected
/// YYYY-MM-DD`, checked after the token.
#[tokio::test]
async fn users_history_and_features() {
    let issuer = Issuer::open("statuses-pbx-routes");
    let (access, refresh) = issuer.tokens().await;
    for route in [
        "/users",
        "/history",
        "/history?date=2024-01-15",
        "/features",
    ] {
        let r = issuer.call("GET", route, Some(&access)).await;
        assert_eq!(r.status, 200, "{route}: {}", r.text());
        assert_eq!(r.json()["success"], true, "{route}");
        assert_unauthorized(
            &issuer.call("GET", route, None).await,
            "Unauthorized. Token required",
        );
        assert_unauthorized(
            &issuer.call("GET", route, Some("invalid_token")).await,
            "Unauthorized. Token required",
        );
        assert_error(
            &issuer.call("GET", route, Some(&refresh)).await,
            403,
            "Invalid token type",
        );
    }
    assert_error(
        &issuer
            .call("GET", "/history?date=2024-13-01", Some(&access))
            .await,
        400,
        "Invalid date. Expected YYYY-MM-DD",
    );
    assert_unauthorized(
        &issuer.call("GET", "/history?date=2024-13-01", None).await,
        "Unauthorized. Token required",
    );
    for (method, route) in [
        ("POST", "/users"),
        ("PUT", "/history"),
        ("DELETE", "/features"),
    ] {
        assert_error(
            &issuer.call(method, route, Some(&access)).await,
            405,
            "Method not allowed",
        );
    }
}

/// `GET health`: 200 `{"success":true,"status":"ok","timestamp":…}`.
#[tokio::test]
async fn health() {
    let issuer = Issuer::open("statuses-health");
    let r = issuer.call("GET", "/health", None).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["status"], "ok");
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert!(
        r.text()
            .starts_with(r#"{"success":true,"status":"ok","timestamp":"#)
    );
}

/// Unknown paths are 404 `Not found`, a wrong method on a known path 405 `Method
/// not allowed`; the routes live under the original module's base path.
#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    assert_eq!(API_BASE, "/pbxcore/api/module-softphone-backend/v1");
    let issuer = Issuer::open("statuses-paths");
    for path in [
        "/".to_owned(),
        format!("{API_BASE}/nope"),
        format!("{API_BASE}/auth"),
        format!("{API_BASE}/auth/login/x"),
    ] {
        assert_error(
            &issuer.request("GET", &path, &[], b"").await,
            404,
            "Not found",
        );
    }
    for (method, route) in [
        ("GET", "/auth/login"),
        ("PUT", "/auth/login"),
        ("GET", "/auth/refresh"),
        ("DELETE", "/auth/logout"),
        ("POST", "/profile"),
        ("POST", "/health"),
    ] {
        assert_error(
            &issuer.call(method, route, None).await,
            405,
            "Method not allowed",
        );
    }
}

/// The metrics' route labels and the route table agree: each label's path is
/// served (a wrong method is a 405, never a 404) and counted under that
/// label; the scrape lives at the root, not under the base path; and no path
/// a scanner makes up becomes a label value (they all count as `other`).
#[tokio::test]
async fn every_route_is_counted_under_its_own_label() {
    let issuer = Issuer::open("statuses-routes");
    let served: Vec<Route> = Route::ALL
        .iter()
        .copied()
        .filter(|r| r.under_base().is_some())
        .collect();
    assert_eq!(
        served.len(),
        Route::ALL.len() - 2,
        "all but metrics and other"
    );
    for &route in &served {
        let path = format!("{API_BASE}{}", route.under_base().unwrap());
        assert_eq!(Route::of(&path), route);
        let r = issuer.request("OPTIONS", &path, &[], b"").await;
        assert_error(&r, 405, "Method not allowed");
    }
    assert_eq!(Route::of(METRICS_PATH), Route::Metrics);
    let scanned: Vec<String> = (0..50)
        .map(|i| format!("/scan-{i}"))
        .chain([
            format!("{API_BASE}{METRICS_PATH}"),
            format!("{METRICS_PATH}/x"),
            format!("{API_BASE}/auth/login/x"),
        ])
        .collect();
    for path in &scanned {
        assert_eq!(Route::of(path), Route::Other, "{path}");
        assert_error(
            &issuer.request("GET", path, &[], b"").await,
            404,
            "Not found",
        );
    }
    let r = issuer.request("POST", METRICS_PATH, &[], b"").await;
    assert_error(&r, 405, "Method not allowed");
    let r = issuer.request("GET", METRICS_PATH, &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let responses = |route: &str, class: &str| {
        prom::value(
            &text,
            &format!(r#"softphone_issuer_responses_total{{route="{route}",class="{class}"}}"#),
        )
    };
    for &route in &served {
        assert_eq!(responses(route.as_str(), "4xx"), 1.0, "{route:?}");
    }
    assert_eq!(responses("other", "4xx"), scanned.len() as f64);
    assert_eq!(responses("metrics", "4xx"), 1.0, "the POST");
    // One series per route and class, however many paths were asked for.
    let series = text
        .lines()
        .filter(|l| l.starts_with("softphone_issuer_responses_total{"))
        .count();
    assert_eq!(series, Route::ALL.len() * 5, "{text}");
}

/// `GET check-media-access` at the real verifier, with tokens of the real issuer:
/// 403 for a valid refresh token, 401 with a challenge otherwise.
#[test]
fn the_verifiers_refusals_and_challenges() {
    let d = Daemons::start("statuses-verifier");
    d.add_user(USER, PASSWORD);
    let (_, refresh) = d.tokens(USER, PASSWORD);

    let r = d.check(Some(&refresh));
    assert_eq!(r.status, 403);
    let r = d.check(Some("invalid_token"));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="softphone", error="invalid_token""#)
    );
    let r = d.check(None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="softphone""#)
    );
}
