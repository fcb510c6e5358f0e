//! Every status and message of the API contract (DESIGN §2).

use softphone_testkit::{BASE, Daemons, request};

use crate::{PASSWORD, USER};

fn post_login(d: &Daemons, headers: &[(&str, &str)], body: &[u8]) -> softphone_testkit::Response {
    request(
        d.issuer,
        "POST",
        &format!("{BASE}/auth/login"),
        headers,
        body,
    )
}

fn assert_error(r: &softphone_testkit::Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], message);
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body.as_object().unwrap().len(), 3, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

#[test]
fn login_errors() {
    let d = Daemons::start("login-errors");
    d.add_user(USER, PASSWORD);
    let json = [("Content-Type", "application/json")];
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
            &post_login(&d, &json, body.as_bytes()),
            400,
            "Invalid credentials provided",
        );
    }
    let good = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    // Wrong or missing content type.
    assert_error(
        &post_login(&d, &[], good.as_bytes()),
        400,
        "Invalid credentials provided",
    );
    assert_error(
        &post_login(&d, &[("Content-Type", "text/plain")], good.as_bytes()),
        400,
        "Invalid credentials provided",
    );
    // A content type with parameters is still JSON.
    assert_eq!(
        post_login(
            &d,
            &[("Content-Type", "application/json; charset=utf-8")],
            good.as_bytes()
        )
        .status,
        200
    );

    // Unknown user and wrong password: same status, same body (but the timestamp).
    let unknown = d.login("999", PASSWORD);
    let wrong = d.login(USER, "wrong");
    assert_error(&unknown, 401, "Invalid credentials");
    assert_error(&wrong, 401, "Invalid credentials");
    let names = |r: &softphone_testkit::Response| {
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
}

#[test]
fn token_errors_at_refresh_logout_and_profile() {
    let d = Daemons::start("token-errors");
    d.add_user(USER, PASSWORD);
    let (access, refresh) = d.tokens(USER, PASSWORD);

    assert_error(
        &d.issuer_post("/auth/refresh", None),
        401,
        "Invalid or missing token",
    );
    assert_error(
        &d.issuer_post("/auth/refresh", Some("invalid_token")),
        401,
        "Invalid or missing token",
    );
    assert_error(
        &d.issuer_post("/auth/refresh", Some(&access)),
        403,
        "Invalid token type. Refresh token required",
    );

    assert_error(
        &d.issuer_get("/profile", None),
        401,
        "Unauthorized. Token required",
    );
    assert_error(
        &d.issuer_get("/profile", Some("invalid_token")),
        401,
        "Unauthorized. Token required",
    );
    assert_error(
        &d.issuer_get("/profile", Some(&refresh)),
        403,
        "Invalid token type",
    );

    assert_error(&d.issuer_post("/auth/logout", None), 401, "Unauthorized");
    assert_error(
        &d.issuer_post("/auth/logout", Some("invalid_token")),
        401,
        "Unauthorized",
    );

    // The verifier: 403 for a valid refresh token, 401 with a challenge otherwise.
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

#[test]
fn unknown_paths_wrong_methods_and_health() {
    let d = Daemons::start("paths");
    let r = request(d.issuer, "GET", &format!("{BASE}/health"), &[], b"");
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["status"], "ok");
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert!(
        r.text()
            .starts_with(r#"{"success":true,"status":"ok","timestamp":"#)
    );

    for path in [
        "/",
        "/pbxcore/api/module-softphone-backend/v1/nope",
        &format!("{BASE}/auth"),
        &format!("{BASE}/auth/login/x"),
    ] {
        assert_error(&request(d.issuer, "GET", path, &[], b""), 404, "Not found");
    }
    for (method, path) in [
        ("GET", "/auth/login"),
        ("PUT", "/auth/login"),
        ("GET", "/auth/refresh"),
        ("DELETE", "/auth/logout"),
        ("POST", "/profile"),
        ("POST", "/health"),
    ] {
        assert_error(
            &request(d.issuer, method, &format!("{BASE}{path}"), &[], b""),
            405,
            "Method not allowed",
        );
    }
}
