//! Key rotation: `softphone-issuer key rotate` under load logs nobody out; tokens
//! of a previous key stop verifying at its deadline; tokens without `kid` are
//! checked against the current key only.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use softphone_testkit::http::{Conn, build};
use softphone_testkit::{CHECK, Daemons, eventually};

use crate::{PASSWORD, USER, logged_in, signal};

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    json["kid"].as_str().unwrap_or_default().to_owned()
}

/// Counts of what keep-alive clients saw while keys rotated.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    wrong: AtomicU64,
}

/// Clients that ask the verifier about a valid token (must stay 200) and a
/// revoked one (must stay 401) until `stop`.
fn load(
    d: &Daemons,
    valid: &str,
    revoked: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Arc<Tally>>> {
    (0..3)
        .map(|i| {
            let addr = d.verifier;
            let stop = Arc::clone(stop);
            let cases = [
                (format!("Bearer {valid}"), 200),
                (format!("Bearer {revoked}"), 401),
                ("Bearer not.a.token".to_owned(), 401),
            ];
            thread::spawn(move || {
                let tally = Arc::new(Tally::default());
                let mut conn = Conn::open(addr).unwrap();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let (auth, want) = &cases[n % cases.len()];
                    n += 1;
                    conn.send(&build("GET", CHECK, &[("Authorization", auth)], b""))
                        .unwrap();
                    let status = conn.read_response().unwrap().status;
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    if status != *want {
                        tally.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tally
            })
        })
        .collect()
}

#[test]
fn rotation_under_load_and_sighup_logs_nobody_out() {
    let (d, access, refresh) = logged_in("rotation");
    let key_path = d.key_file();
    let first_kid = kid_of(&access);
    assert_eq!(first_kid.len(), 16, "tokens name their key");
    let (revoked, _) = d.tokens(USER, PASSWORD);
    assert_eq!(d.issuer_post("/auth/logout", Some(&revoked)).status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&d, &access, &revoked, &stop);
    let (issuer_pid, verifier_pid) = d.pids();
    for round in 0..4 {
        let (ok, out) = d.admin(&["key", "rotate"], "");
        assert!(ok && out.contains("key rotated"), "{out}");
        // Every other round the daemons are told at once; otherwise they notice.
        if round % 2 == 0 {
            signal(issuer_pid, "HUP");
            signal(verifier_pid, "HUP");
        }
        thread::sleep(Duration::from_millis(600));
    }
    thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    let (mut requests, mut wrong) = (0, 0);
    for client in clients {
        let tally = client.join().unwrap();
        requests += tally.requests.load(Ordering::Relaxed);
        wrong += tally.wrong.load(Ordering::Relaxed);
    }
    assert!(requests > 300, "the load ran: {requests} requests");
    assert_eq!(
        wrong, 0,
        "wrong answers among {requests} during 4 rotations"
    );

    // Four previous keys are listed by kid, never by value.
    let (ok, list) = d.admin(&["key", "list"], "");
    assert!(ok, "{list}");
    assert_eq!(list.matches("previous").count(), 4, "{list}");
    assert!(list.contains(&first_kid), "{list}");
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    let previous_path = d.previous_keys_file();
    let previous = std::fs::read_to_string(&previous_path).unwrap();
    for (path, text) in [(&key_path, &key_text), (&previous_path, &previous)] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let secret = text
            .lines()
            .next_back()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap();
        assert!(!list.contains(secret));
    }

    // Old tokens still work everywhere; new ones name the new key.
    assert_eq!(d.check(Some(&access)).status, 200);
    assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
    let (fresh, _) = d.tokens(USER, PASSWORD);
    let current_kid = kid_of(&fresh);
    assert_ne!(current_kid, first_kid);
    assert_eq!(d.check(Some(&fresh)).status, 200);
    let r = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(r.status, 200, "{}", r.text());
    let (access2, refresh2) = (r.json_str("access_token"), r.json_str("refresh_token"));
    assert_eq!(kid_of(&access2), current_kid);

    // The previous keys' deadline passes (written as the admin would see it
    // after 30 days): their tokens stop verifying, within about a second.
    let expired: String = previous
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((_, key)) if !line.starts_with('#') => format!("1 {key}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&previous_path, expired).unwrap();
    eventually(
        Duration::from_secs(3),
        "verifier refuses a retired key's token",
        || d.check(Some(&access)).status == 401,
    );
    eventually(
        Duration::from_secs(3),
        "issuer refuses a retired key's token",
        || d.issuer_get("/profile", Some(&access)).status == 401,
    );
    // The session opened under the first key was re-tagged by its refresh: it
    // lives on with tokens of the current key.
    assert_eq!(d.check(Some(&access2)).status, 200);
    let r = d.issuer_post("/auth/refresh", Some(&refresh2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.check(Some(&r.json_str("access_token"))).status, 200);

    // The next rotation drops the retired keys from the file.
    let (ok, out) = d.admin(&["key", "rotate"], "");
    assert!(
        ok && out.contains("4 expired previous key(s) dropped"),
        "{out}"
    );
    d.assert_logs_clean(&[PASSWORD, key_text.trim()]);
}

#[test]
fn tokens_without_kid_are_checked_against_the_current_key_only() {
    let (d, access, _) = logged_in("rotation-no-kid");
    let key_path = d.key_file();
    // The same claims the original module's way: no kid, `typ` first.
    let resign = |key: &str| {
        let payload = access.split('.').nth(1).unwrap();
        let mut out = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"HS256"}"#);
        out.push('.');
        out.push_str(payload);
        let k = hmac::Key::new(hmac::HMAC_SHA256, key.trim().as_bytes());
        let tag = hmac::sign(&k, out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        out
    };
    let old_key = std::fs::read_to_string(&key_path).unwrap();
    let no_kid_old = resign(&old_key);
    assert_eq!(d.check(Some(&no_kid_old)).status, 200);

    let (ok, out) = d.admin(&["key", "rotate"], "");
    assert!(ok, "{out}");
    let new_key = std::fs::read_to_string(&key_path).unwrap();
    eventually(
        Duration::from_secs(3),
        "verifier reloads the rotated key",
        || d.check(Some(&no_kid_old)).status == 401,
    );
    // With kid, the old key still verifies; without, only the current key does.
    assert_eq!(d.check(Some(&access)).status, 200);
    assert_eq!(d.check(Some(&resign(&new_key))).status, 200);
    eventually(
        Duration::from_secs(3),
        "issuer reloads the rotated key",
        || d.issuer_get("/profile", Some(&no_kid_old)).status == 401,
    );
    assert_eq!(
        d.issuer_get("/profile", Some(&resign(&new_key))).status,
        200
    );
}
