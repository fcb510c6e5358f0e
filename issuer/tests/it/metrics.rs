//! The issuer's metrics on the real daemon: known traffic moves each counter
//! by exactly its share, and promtool finds nothing wrong with the scrape.

use softphone_testkit::{BASE, Daemons, prom, request};

use crate::{PASSWORD, USER};

fn series(name: &str, labels: &str) -> String {
    format!("softphone_issuer_{name}{{{labels}}}")
}

#[test]
fn known_traffic_moves_each_counter_by_its_share() {
    let d = Daemons::start("issuer-metrics");
    d.add_user(USER, PASSWORD);
    let before = prom::scrape(d.issuer);
    prom::check_metrics(&before);

    let (_, refresh) = d.tokens(USER, PASSWORD);
    let (access, _) = d.tokens(USER, PASSWORD);
    for _ in 0..3 {
        assert_eq!(d.login(USER, "wrong password").status, 401);
    }
    let r = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.issuer_post("/auth/logout", Some(&access)).status, 200);
    // A body that is not JSON, and a path nobody serves.
    let r = request(
        d.issuer,
        "POST",
        &format!("{BASE}/auth/login"),
        &[("Content-Type", "application/json")],
        b"{",
    );
    assert_eq!(r.status, 400);
    assert_eq!(d.issuer_get("/nope", None).status, 404);

    let after = prom::scrape(d.issuer);
    prom::check_metrics(&after);
    let moved = |name: &str, labels: &str| prom::delta(&before, &after, &series(name, labels));
    for (outcome, n) in [
        ("success", 2.0),
        ("wrong_credentials", 3.0),
        ("bad_request", 1.0),
        ("throttled", 0.0),
        ("busy", 0.0),
        ("error", 0.0),
    ] {
        assert_eq!(
            moved("logins_total", &format!(r#"outcome="{outcome}""#)),
            n,
            "{outcome}"
        );
    }
    assert_eq!(moved("refreshes_total", r#"outcome="rotated""#), 1.0);
    assert_eq!(moved("refreshes_total", r#"outcome="refused""#), 0.0);
    assert_eq!(moved("logouts_total", r#"outcome="success""#), 1.0);
    assert_eq!(moved("revocations_total", r#"reason="logout""#), 1.0);
    assert_eq!(moved("revocations_total", r#"reason="session_limit""#), 0.0);
    // Six logins reached the login route; one refresh, one logout.
    assert_eq!(
        moved("request_duration_seconds_count", r#"route="login""#),
        6.0
    );
    assert_eq!(
        moved("responses_total", r#"route="login",class="2xx""#),
        2.0
    );
    assert_eq!(
        moved("responses_total", r#"route="login",class="4xx""#),
        4.0
    );
    assert_eq!(
        moved("responses_total", r#"route="refresh",class="2xx""#),
        1.0
    );
    assert_eq!(
        moved("responses_total", r#"route="logout",class="2xx""#),
        1.0
    );
    assert_eq!(
        moved("responses_total", r#"route="other",class="4xx""#),
        1.0
    );
    assert_eq!(
        moved("responses_total", r#"route="login",class="5xx""#),
        0.0
    );
    // The scrape before this one was counted when it was answered.
    assert_eq!(
        moved("responses_total", r#"route="metrics",class="2xx""#),
        1.0
    );
    // Two sessions opened, one logged out.
    assert_eq!(prom::value(&after, "softphone_issuer_live_sessions"), 1.0);
    assert_eq!(
        prom::value(&after, &series("hashing_queue_depth", r#"queue="other""#)),
        0.0
    );
    assert_eq!(
        prom::value(&after, "softphone_issuer_hashing_queue_limit"),
        256.0
    );
}

/// A reused refresh token and a login beyond the session cap are counted as
/// the revocations they cause.
#[test]
fn revocations_are_counted_by_reason() {
    let d = Daemons::start_with(
        "issuer-metrics-revocations",
        softphone_testkit::Options::default().with("SOFTPHONE_MAX_SESSIONS_PER_USER", "1"),
    );
    d.add_user(USER, PASSWORD);
    let before = prom::scrape(d.issuer);
    let (_, first) = d.tokens(USER, PASSWORD);
    let (_, second) = d.tokens(USER, PASSWORD);
    // `first`'s session ended at the second login: refused.
    assert_eq!(d.issuer_post("/auth/refresh", Some(&first)).status, 401);
    let r = d.issuer_post("/auth/refresh", Some(&second));
    assert_eq!(r.status, 200, "{}", r.text());
    let third = r.json_str("refresh_token");
    assert_eq!(d.issuer_post("/auth/refresh", Some(&third)).status, 200);
    // `second`'s successor was used: presenting it again is theft.
    assert_eq!(d.issuer_post("/auth/refresh", Some(&second)).status, 401);
    let after = prom::scrape(d.issuer);
    let moved = |name: &str, labels: &str| prom::delta(&before, &after, &series(name, labels));
    assert_eq!(moved("revocations_total", r#"reason="session_limit""#), 1.0);
    assert_eq!(moved("revocations_total", r#"reason="refresh_reuse""#), 1.0);
    assert_eq!(moved("refreshes_total", r#"outcome="rotated""#), 2.0);
    assert_eq!(moved("refreshes_total", r#"outcome="refused""#), 1.0);
    assert_eq!(moved("refreshes_total", r#"outcome="reuse_detected""#), 1.0);
    assert_eq!(prom::value(&after, "softphone_issuer_live_sessions"), 0.0);
}
