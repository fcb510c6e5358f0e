//! What the app shows besides calls, through nginx on a MikoPBX fixture (its
//! tables and call records with their real layouts): the directory with its
//! 304, the feature codes, the user's own history, and the recordings its
//! links lead to, fetched with the same access token.

use std::path::Path;

use serde_json::Value;
use softphone_testkit::mikopbx::{self, Cdr, Peer};
use softphone_testkit::nginx::Nginx;
use softphone_testkit::{BASE, Daemons, Options, Response, request};

use crate::{PASSWORD, USER, assert_no_secrets};

/// 201 is the seed's user: its SIP secret is the seed's password.
fn pbx(db: &Path) {
    let peer = |extension, secret, user_id| Peer {
        extension,
        secret,
        kind: "peer",
        disabled: "0",
        user_id: Some(user_id),
    };
    mikopbx::create(
        db,
        &[
            peer(USER, PASSWORD, 7),
            peer("202", "Secret202", 8),
            peer("203", "Secret203", 9),
        ],
    );
}

/// The day's calls, with recordings under `root`; a secret beside `root`.
fn calls(cdr: &Path, root: &Path) {
    let hour = root.join("2024/01/15/10");
    std::fs::create_dir_all(&hour).unwrap();
    for (file, bytes) in [
        ("in-201.mp3", &b"ID3 incoming to 201"[..]),
        ("201-202.mp3", b"ID3 201 calls 202"),
        ("202-203.mp3", b"ID3 202 calls 203"),
    ] {
        std::fs::write(hour.join(file), bytes).unwrap();
    }
    std::fs::write(root.parent().unwrap().join("secret.mp3"), b"not yours").unwrap();
    let rec = |file: &str| format!("{}/2024/01/15/10/{file}", root.display());
    let (r1, r2, r3, r4) = (
        rec("201-202.mp3"),
        rec("in-201.mp3"),
        rec("202-203.mp3"),
        rec("../../../../../secret.mp3"),
    );
    let call = |start, src, dst, file, linkedid| Cdr {
        start,
        answer: start,
        endtime: start,
        src_num: src,
        dst_num: dst,
        disposition: "ANSWERED",
        recordingfile: file,
        linkedid,
        duration: 60,
        billsec: 55,
        transfer: 0,
    };
    mikopbx::create_cdr(cdr);
    mikopbx::insert_calls(
        cdr,
        &[
            call("2024-01-15 10:00:00.000", USER, "202", &r1, "l1"),
            call("2024-01-15 10:05:00.000", "79001234567", USER, &r2, "l2"),
            call("2024-01-15 10:10:00.000", "202", "203", &r3, "l3"),
            Cdr {
                disposition: "NO ANSWER",
                answer: "",
                ..call("2024-01-15 10:15:00.000", USER, "79005556677", "", "l4")
            },
            call("2024-01-15 10:20:00.000", "203", USER, &r4, "l5"),
        ],
    );
}

fn get(nginx: &Nginx, path: &str, headers: &[(&str, &str)]) -> Response {
    request(nginx.addr, "GET", path, headers, b"")
}

fn login(nginx: &Nginx, user: &str, password: &str) -> (String, String) {
    let body = format!(r#"{{"username":"{user}","password":"{password}"}}"#);
    let r = request(
        nginx.addr,
        "POST",
        &format!("{BASE}/auth/login"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    (r.json_str("access_token"), r.json_str("refresh_token"))
}

#[test]
fn the_seed_user_lists_the_directory_reads_its_history_and_plays_its_recordings() {
    let d = Daemons::start_with(
        "pbx-data",
        Options::default()
            .with("SOFTPHONE_USER_SOURCE", "mikopbx:{dir}/mikopbx.db")
            .with("SOFTPHONE_CDR_DATABASE", "{dir}/cdr.db")
            .with("SOFTPHONE_RECORDINGS_DIR", "{dir}/recordings")
            .with("TZ", "MSK-3"),
    );
    pbx(&d.dir.path().join("mikopbx.db"));
    let nginx = Nginx::start(&d, "http://127.0.0.1:9/");
    calls(&d.dir.path().join("cdr.db"), &nginx.recordings);
    let (access, refresh) = login(&nginx, USER, PASSWORD);
    let bearer = format!("Bearer {access}");
    let auth = [("Authorization", bearer.as_str())];

    // The directory, then its 304 through nginx.
    let users = get(&nginx, &format!("{BASE}/users"), &auth);
    assert_eq!(users.status, 200, "{}", users.text());
    assert_eq!(
        users.text(),
        r#"{"success":true,"users":[{"id":7,"number":"201","name":"User 7"},{"id":8,"number":"202","name":"User 8"},{"id":9,"number":"203","name":"User 9"}]}"#
    );
    let etag = users.header("ETag").unwrap().to_owned();
    let again = get(
        &nginx,
        &format!("{BASE}/users"),
        &[auth[0], ("If-None-Match", &etag)],
    );
    assert_eq!(again.status, 304, "{}", again.text());
    assert!(again.body.is_empty());
    assert_eq!(again.header("ETag"), Some(etag.as_str()));
    let r = get(
        &nginx,
        &format!("{BASE}/users"),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(
        (r.status, r.error()),
        (401, "Unauthorized. Token required".to_owned())
    );

    let features = get(&nginx, &format!("{BASE}/features"), &auth);
    assert_eq!(features.status, 200, "{}", features.text());
    assert_eq!(features.json()["features"]["pickup"], "*8");

    // The history: 201's calls only, newest first.
    let history = get(&nginx, &format!("{BASE}/history?date=2024-01-15"), &auth);
    assert_eq!(history.status, 200, "{}", history.text());
    let body = history.json();
    let list = body["calls"].as_array().unwrap();
    let ids: Vec<i64> = list.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [5, 4, 2, 1]);
    // 10:00 in UTC+3 is 07:00 UTC.
    assert_eq!(list[3]["start"], 1_705_302_000);
    let links: Vec<&str> = list
        .iter()
        .filter_map(|c| c["recording"].as_str())
        .collect();
    assert_eq!(
        links,
        [
            "/pbxcore/softphone/recordings/2024/01/15/10/in-201.mp3",
            "/pbxcore/softphone/recordings/2024/01/15/10/201-202.mp3",
        ]
    );
    assert_eq!(list[0]["recording"], Value::Null, "the escaping path");
    assert_eq!(list[1]["recording"], Value::Null, "no recording");

    // Each link plays with the same token, in the header or the query.
    for (link, audio) in links
        .iter()
        .zip([&b"ID3 incoming to 201"[..], b"ID3 201 calls 202"])
    {
        let r = get(&nginx, link, &auth);
        assert_eq!(r.status, 200, "{link}");
        assert_eq!(r.body, audio);
        assert_eq!(r.header("Content-Type"), Some("audio/mpeg"));
        let r = get(&nginx, &format!("{link}?token={access}"), &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, audio), "{link}");
        let r = get(&nginx, link, &[]);
        assert_eq!(r.status, 401, "{link}");
        assert_eq!(r.json()["success"], false);
        assert_eq!(
            get(&nginx, &format!("{link}?token={refresh}"), &[]).status,
            403
        );
    }

    // Nothing outside the directory, however the path is spelled.
    for path in [
        "/pbxcore/softphone/recordings/../secret.mp3",
        "/pbxcore/softphone/recordings/%2e%2e/secret.mp3",
        "/pbxcore/softphone/recordings/2024/01/15/10/../../../../../secret.mp3",
        "/pbxcore/softphone/recordings/2024/01/15/10/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.mp3",
        "/pbxcore/softphone/recordings/..%2fsecret.mp3",
        "/pbxcore/softphone/recordings//../secret.mp3",
    ] {
        let r = get(&nginx, path, &auth);
        assert_ne!(r.status, 200, "{path}");
        assert!(!r.text().contains("not yours"), "{path}");
    }

    // Another user: 202 sees its own calls, never 201's alone.
    let (access202, _) = login(&nginx, "202", "Secret202");
    let bearer202 = format!("Bearer {access202}");
    let theirs = get(
        &nginx,
        &format!("{BASE}/history?date=2024-01-15&user=201&extension=201"),
        &[("Authorization", &bearer202)],
    );
    let ids: Vec<i64> = theirs.json()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 1]);
    assert!(!theirs.text().contains("in-201.mp3"));
    let bad = get(&nginx, &format!("{BASE}/history?date=15-01-2024"), &auth);
    assert_eq!(
        (bad.status, bad.error()),
        (400, "Invalid date. Expected YYYY-MM-DD".to_owned())
    );

    assert_no_secrets(&d, &nginx, &[&access, &refresh, &access202]);
}
