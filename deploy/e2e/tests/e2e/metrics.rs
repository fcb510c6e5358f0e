//! The daemons' metrics stay on loopback: nginx routes no spelling of
//! `/metrics` to either daemon (each is the contract's JSON 404), while both
//! daemons serve it directly. And the alert rules we ship pass promtool,
//! fire in its unit tests, and name only metrics the daemons export.

use std::collections::BTreeSet;
use std::path::Path;

use softphone_testkit::{BASE, Daemons, Response, prom, request};

use crate::{PASSWORD, USER, stack};

fn assert_not_found(what: &str, r: &Response) {
    assert_eq!(r.status, 404, "{what}: {}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
    assert_eq!(r.json()["error"], "Not found", "{what}");
    assert!(!r.text().contains("softphone_"), "{what}: {}", r.text());
}

#[test]
fn nginx_routes_no_metrics_path_to_the_daemons() {
    let (d, nginx) = stack("metrics-front", "http://127.0.0.1:9/");
    let (access, _) = d.tokens(USER, PASSWORD);
    let allowed = |text: &str| {
        prom::value(
            text,
            r#"softphone_verifier_decisions_total{result="allowed",reason="none"}"#,
        )
    };
    let before = prom::scrape(d.verifier);
    let issuer_before = prom::scrape(d.issuer);

    let check = format!("{BASE}/check-media-access");
    for path in [
        "/metrics".to_owned(),
        "/metrics/".to_owned(),
        "/metrics?format=prometheus".to_owned(),
        "//metrics".to_owned(),
        "/./metrics".to_owned(),
        "/%6detrics".to_owned(),
        format!("{BASE}/metrics"),
        format!("{BASE}/../metrics"),
        format!("{BASE}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/metrics"),
        format!("{BASE}/x/%2e%2e/metrics"),
        format!("{check}/metrics"),
        format!("{check}/../metrics"),
        // The verifier's own paths: its auth location is internal.
        "/_softphone_auth".to_owned(),
        "/_softphone_auth/metrics".to_owned(),
        "/auth".to_owned(),
        "/health".to_owned(),
    ] {
        for headers in [vec![], vec![("Authorization", format!("Bearer {access}"))]] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let r = request(nginx.addr, "GET", &path, &headers, b"");
            assert_not_found(&path, &r);
        }
    }
    // No scrape reached the issuer (its own count of answers on the metrics
    // route moved only by the scrape above), and no token check reached the
    // verifier, though half the requests carried a valid token.
    let after = prom::scrape(d.verifier);
    assert_eq!(allowed(&after), allowed(&before));
    let issuer_after = prom::scrape(d.issuer);
    let metrics_route = |text: &str| {
        prom::value(
            text,
            r#"softphone_issuer_responses_total{route="metrics",class="2xx"}"#,
        )
    };
    assert_eq!(
        metrics_route(&issuer_after),
        metrics_route(&issuer_before) + 1.0
    );
    // The check itself still goes through nginx to the verifier.
    let r = request(
        nginx.addr,
        "GET",
        &check,
        &[("Authorization", &format!("Bearer {access}"))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(allowed(&prom::scrape(d.verifier)), allowed(&after) + 1.0);
}

/// `deploy/prometheus/`, from this crate's directory.
fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../prometheus"))
}

#[test]
fn the_alert_rules_pass_promtool_and_name_exported_metrics() {
    let dir = rules_dir();
    let (ok, said) = prom::run(dir, &["check", "rules", "softphone-alerts.yml"]);
    assert!(ok, "promtool check rules:\n{said}");
    assert!(said.contains("SUCCESS: 4 rules found"), "{said}");
    let (ok, said) = prom::run(dir, &["test", "rules", "softphone-alerts.test.yml"]);
    assert!(ok, "promtool test rules:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");

    // Every metric name in the rules and their tests is one the daemons
    // export, so the unit tests prove the rules fire on the real names.
    let d = Daemons::start("metrics-rules");
    let mut exported = BTreeSet::new();
    for text in [prom::scrape(d.issuer), prom::scrape(d.verifier)] {
        prom::check_metrics(&text);
        exported.extend(prom::families(&text));
    }
    let mut named = BTreeSet::new();
    for file in ["softphone-alerts.yml", "softphone-alerts.test.yml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for (at, _) in text.match_indices("softphone_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            named.insert(name);
        }
    }
    assert!(named.len() >= 5, "{named:?}");
    let unknown: Vec<&String> = named.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the rules name metrics nobody exports: {unknown:?}; exported: {exported:?}"
    );
}
