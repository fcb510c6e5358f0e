//! The verifier's metrics on the real daemon: known traffic moves each
//! decision counter by exactly its share, the cache counters by what can be
//! told, both listeners serve the same scrape, and promtool finds nothing
//! wrong with it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use softphone_testkit::forge::{self, Forge};
use softphone_testkit::{eventually, prom};

use crate::logged_in;

fn decisions(result: &str, reason: &str) -> String {
    format!(r#"softphone_verifier_decisions_total{{result="{result}",reason="{reason}"}}"#)
}

fn lookups(result: &str) -> String {
    format!(r#"softphone_verifier_token_cache_lookups_total{{result="{result}"}}"#)
}

/// A scrape over the unix socket: its body.
fn scrape_unix(path: &std::path::Path) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed mid-scrape");
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if body.len() >= length {
                return body.to_owned();
            }
        }
    }
}

#[test]
fn known_traffic_moves_each_counter_by_its_share() {
    let (d, access, refresh) = logged_in("verifier-metrics");
    let before = prom::scrape(d.verifier);
    prom::check_metrics(&before);

    const VALID: usize = 20;
    const NO_TOKEN: usize = 4;
    const EXPIRED: usize = 3;
    for _ in 0..VALID {
        assert_eq!(d.check(Some(&access)).status, 200);
    }
    for _ in 0..NO_TOKEN {
        assert_eq!(d.check(None).status, 401);
    }
    let expired = forge::expired_copy(&d.key_file(), &access);
    for _ in 0..EXPIRED {
        assert_eq!(d.check(Some(&expired)).status, 401);
    }
    assert_eq!(d.check(Some(&refresh)).status, 403);
    assert_eq!(d.check(Some("abc")).status, 401);
    // Signed with our key, for a session the database never had.
    let stranger = Forge {
        sid: "never-made".to_owned(),
        ..Forge::for_session(&d, &access)
    }
    .valid();
    assert_eq!(d.check(Some(&stranger)).status, 401);
    assert_eq!(d.issuer_post("/auth/logout", Some(&access)).status, 200);
    assert_eq!(d.check(Some(&access)).status, 401);

    let after = prom::scrape(d.verifier);
    prom::check_metrics(&after);
    let moved = |series: &str| prom::delta(&before, &after, series);
    assert_eq!(moved(&decisions("allowed", "none")), VALID as f64);
    assert_eq!(moved(&decisions("denied", "no_token")), NO_TOKEN as f64);
    assert_eq!(moved(&decisions("denied", "expired")), EXPIRED as f64);
    assert_eq!(moved(&decisions("denied", "wrong_type")), 1.0);
    assert_eq!(moved(&decisions("denied", "malformed")), 1.0);
    assert_eq!(moved(&decisions("denied", "unknown_session")), 1.0);
    assert_eq!(moved(&decisions("denied", "revoked")), 1.0);
    assert_eq!(moved(&decisions("denied", "bad_signature")), 0.0);
    // Verified once and then served from the cache: the access token (its
    // first check missed), the check after the logout. Refused tokens are
    // never cached: each of their checks missed.
    assert_eq!(moved(&lookups("hit")), (VALID - 1 + 1) as f64);
    assert_eq!(moved(&lookups("miss")), (1 + EXPIRED + 1 + 1 + 1) as f64);
    assert_eq!(
        moved("softphone_verifier_sessions_ended_total"),
        1.0,
        "the logout"
    );
    // A revoked session is still known until it expires.
    assert_eq!(
        prom::value(&after, "softphone_verifier_sessions_known"),
        1.0
    );

    // The upkeep reads the database about once a second, and the scrape
    // says how long ago the last good read was.
    let ok = r#"softphone_verifier_revocation_syncs_total{result="ok"}"#;
    eventually(Duration::from_secs(10), "the upkeep reads again", || {
        prom::value(&prom::scrape(d.verifier), ok) >= prom::value(&after, ok) + 2.0
    });
    let now = prom::scrape(d.verifier);
    assert_eq!(
        prom::value(
            &now,
            r#"softphone_verifier_revocation_syncs_total{result="failed"}"#
        ),
        0.0
    );
    assert!(prom::value(&now, "softphone_verifier_revocation_sync_age_seconds") <= 2.0);

    // The unix socket serves the same process's numbers.
    let socket = d.config().verifier_socket().unwrap();
    let unix = scrape_unix(&socket);
    prom::check_metrics(&unix);
    assert_eq!(
        prom::value(&unix, &decisions("allowed", "none")),
        prom::value(&after, &decisions("allowed", "none"))
    );
}
