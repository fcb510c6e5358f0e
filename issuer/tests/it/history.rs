//! `GET history` on the real daemon over MikoPBX's call records: a fixture
//! `cdr_general` with MikoPBX's columns and indexes, realistic rows (calls in
//! both directions, a transfer, calls without recordings, records whose
//! `recordingfile` points out of the recordings directory), a fixed time
//! zone, and attempts to see another user's calls.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use softphone_testkit::mikopbx::{self, Cdr, Peer};
use softphone_testkit::{BASE, Daemons, Options, Response, TestDir, request};

use crate::{PASSWORD, USER};

/// UTC+3 without DST, as a POSIX TZ string (no zone database needed): a
/// record's local `10:00:00` is `07:00:00` UTC.
const TZ: &str = "MSK-3";
/// 2024-01-15 00:00:00 UTC.
const DAY_UTC: i64 = 1_705_276_800;
/// Unix time of `hh:mm:ss` local on 2024-01-15 in [`TZ`].
fn at(h: i64, m: i64, s: i64) -> i64 {
    DAY_UTC + (h - 3) * 3600 + m * 60 + s
}

const RECORDINGS: &str = "/pbxcore/softphone/recordings";

/// The recordings directory with the files the records name, and a secret
/// beside it; returns the directory.
fn recordings(dir: &Path) -> PathBuf {
    let root = dir.join("monitor");
    let hour = root.join("2024/01/15/10");
    std::fs::create_dir_all(&hour).unwrap();
    for file in ["in-201.mp3", "201-202.mp3", "202-203.mp3", "xfer.mp3"] {
        std::fs::write(hour.join(file), b"ID3 audio").unwrap();
    }
    std::fs::write(dir.join("secret.mp3"), b"not yours").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.mp3"), hour.join("link-out.mp3")).unwrap();
    root
}

/// The day's calls at the PBX, in the order MikoPBX appends them.
fn records(cdr: &Path, root: &Path) -> Vec<i64> {
    let rec = |file: &str| format!("{}/2024/01/15/10/{file}", root.display());
    let (r1, r2, r3, r5, r6, r7) = (
        rec("201-202.mp3"),
        rec("in-201.mp3"),
        rec("202-203.mp3"),
        rec("xfer.mp3"),
        rec("../../../../../secret.mp3"),
        rec("link-out.mp3"),
    );
    let answered = |start, answer, end, src, dst, file, linkedid, billsec| Cdr {
        start,
        answer,
        endtime: end,
        src_num: src,
        dst_num: dst,
        disposition: "ANSWERED",
        recordingfile: file,
        linkedid,
        duration: 60,
        billsec,
        transfer: 0,
    };
    mikopbx::create_cdr(cdr);
    mikopbx::insert_calls(
        cdr,
        &[
            // 1: the day before, last millisecond.
            answered(
                "2024-01-14 23:59:59.999",
                "2024-01-15 00:00:01.000",
                "2024-01-15 00:00:59.000",
                "201",
                "202",
                "",
                "mikopbx-1705265999.1",
                58,
            ),
            // 2: 201 calls 202, recorded.
            answered(
                "2024-01-15 10:00:00.000",
                "2024-01-15 10:00:05.000",
                "2024-01-15 10:01:00.000",
                "201",
                "202",
                &r1,
                "mikopbx-1705302000.2",
                55,
            ),
            // 3: an outside caller reaches 201, recorded.
            answered(
                "2024-01-15 10:05:00.123",
                "2024-01-15 10:05:03.000",
                "2024-01-15 10:06:00.500",
                "79001234567",
                "201",
                &r2,
                "mikopbx-1705302300.3",
                57,
            ),
            // 4: 201 calls out, nobody answers, no recording.
            Cdr {
                disposition: "NO ANSWER",
                billsec: 0,
                duration: 30,
                ..answered(
                    "2024-01-15 10:10:00.000",
                    "",
                    "2024-01-15 10:10:30.000",
                    "201",
                    "79005556677",
                    "",
                    "mikopbx-1705302600.4",
                    0,
                )
            },
            // 5: 202 calls 203: not 201's.
            answered(
                "2024-01-15 10:15:00.000",
                "2024-01-15 10:15:02.000",
                "2024-01-15 10:16:00.000",
                "202",
                "203",
                &r3,
                "mikopbx-1705302900.5",
                58,
            ),
            // 6 and 7: an outside call to 202, transferred to 201 (same linkedid).
            answered(
                "2024-01-15 10:20:00.000",
                "2024-01-15 10:20:02.000",
                "2024-01-15 10:21:00.000",
                "79001112233",
                "202",
                "",
                "mikopbx-1705303200.6",
                58,
            ),
            Cdr {
                transfer: 1,
                ..answered(
                    "2024-01-15 10:21:00.000",
                    "2024-01-15 10:21:01.000",
                    "2024-01-15 10:25:00.000",
                    "79001112233",
                    "201",
                    &r5,
                    "mikopbx-1705303200.6",
                    239,
                )
            },
            // 8: a record whose file path climbs out of the directory.
            answered(
                "2024-01-15 10:30:00.000",
                "2024-01-15 10:30:01.000",
                "2024-01-15 10:31:00.000",
                "203",
                "201",
                &r6,
                "mikopbx-1705303800.8",
                59,
            ),
            // 9: a record whose file is a symlink out of the directory.
            answered(
                "2024-01-15 10:35:00.000",
                "2024-01-15 10:35:01.000",
                "2024-01-15 10:36:00.000",
                "201",
                "203",
                &r7,
                "mikopbx-1705304100.9",
                59,
            ),
            // 10: a record naming a file outside any recordings directory.
            Cdr {
                disposition: "BUSY",
                billsec: 0,
                duration: 3,
                ..answered(
                    "2024-01-15 10:40:00.000",
                    "",
                    "2024-01-15 10:40:03.000",
                    "201",
                    "202",
                    "/etc/passwd",
                    "mikopbx-1705304400.10",
                    0,
                )
            },
            // 11: 202 calls 1201 (a number that contains 201).
            answered(
                "2024-01-15 10:45:00.000",
                "2024-01-15 10:45:01.000",
                "2024-01-15 10:46:00.000",
                "202",
                "1201",
                "",
                "mikopbx-1705304700.11",
                59,
            ),
            // 12: the next day, first millisecond.
            answered(
                "2024-01-16 00:00:00.000",
                "2024-01-16 00:00:01.000",
                "2024-01-16 00:01:00.000",
                "202",
                "201",
                "",
                "mikopbx-1705352400.12",
                59,
            ),
        ],
    )
}

fn history(d: &Daemons, access: &str, query: &str) -> Response {
    let bearer = format!("Bearer {access}");
    request(
        d.issuer,
        "GET",
        &format!("{BASE}/history{query}"),
        &[("Authorization", &bearer)],
        b"",
    )
}

fn ids(r: &Response) -> Vec<i64> {
    r.json()["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text()))
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

/// A PBX with 201 and 202, its call records and recordings; the daemons in TZ.
fn pbx_with_calls(name: &str) -> (Daemons, TestDir) {
    let fixture = TestDir::new(name);
    let db = fixture.path().join("mikopbx.db");
    let peer = |extension, secret, user_id| Peer {
        extension,
        secret,
        kind: "peer",
        disabled: "0",
        user_id: Some(user_id),
    };
    mikopbx::create(
        &db,
        &[
            peer("201", "Secret201", 7),
            peer("202", "Secret202", 8),
            peer("203", "Secret203", 9),
        ],
    );
    let root = recordings(fixture.path());
    let cdr = fixture.path().join("cdr.db");
    records(&cdr, &root);
    let d = Daemons::start_with(
        name,
        Options::default()
            .with(
                "SOFTPHONE_USER_SOURCE",
                &format!("mikopbx:{}", db.display()),
            )
            .with("SOFTPHONE_CDR_DATABASE", cdr.to_str().unwrap())
            .with("SOFTPHONE_RECORDINGS_DIR", root.to_str().unwrap())
            .with("TZ", TZ),
    );
    (d, fixture)
}

#[test]
fn history_is_the_users_own_calls_of_the_day_newest_first() {
    let (d, _fixture) = pbx_with_calls("history-pbx");
    let (access, _) = d.tokens("201", "Secret201");
    let r = history(&d, &access, "?date=2024-01-15");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["date"], "2024-01-15");
    assert_eq!(body["truncated"], false);
    // Not 5 and 11 (202's), not 1 and 12 (other days).
    assert_eq!(ids(&r), [10, 9, 8, 7, 4, 3, 2]);
    let calls = body["calls"].as_array().unwrap();
    let call = |id: i64| -> &Value { calls.iter().find(|c| c["id"] == id).unwrap() };
    assert_eq!(
        call(2),
        &json!({"id": 2, "linkedid": "mikopbx-1705302000.2", "start": at(10, 0, 0),
                "answer": at(10, 0, 5), "end": at(10, 1, 0), "duration": 60, "billsec": 55,
                "direction": "outgoing", "peer": "202", "disposition": "ANSWERED",
                "transfer": false,
                "recording": format!("{RECORDINGS}/2024/01/15/10/201-202.mp3")})
    );
    assert_eq!(call(3)["direction"], "incoming");
    assert_eq!(call(3)["peer"], "79001234567");
    assert_eq!(call(3)["start"], at(10, 5, 0), "milliseconds dropped");
    assert_eq!(
        call(3)["recording"],
        format!("{RECORDINGS}/2024/01/15/10/in-201.mp3")
    );
    // Unanswered: no answer time, no recording.
    assert_eq!(call(4)["disposition"], "NO ANSWER");
    assert_eq!(call(4)["answer"], Value::Null);
    assert_eq!(call(4)["billsec"], 0);
    assert_eq!(call(4)["recording"], Value::Null);
    // The transferred leg.
    assert_eq!(call(7)["transfer"], true);
    assert_eq!(call(7)["linkedid"], "mikopbx-1705303200.6");
    assert_eq!(call(7)["peer"], "79001112233");
    assert_eq!(call(7)["billsec"], 239);
    // Files outside the directory, by `..`, symlink or absolute path: no link.
    for id in [8, 9, 10] {
        assert_eq!(call(id)["recording"], Value::Null, "call {id}");
    }
    assert!(!r.text().contains("secret") && !r.text().contains("passwd"));

    // The day boundaries are the local day's.
    let before = history(&d, &access, "?date=2024-01-14");
    assert_eq!(ids(&before), [1]);
    assert_eq!(before.json()["calls"][0]["start"], at(23, 59, 59) - 86_400);
    assert_eq!(ids(&history(&d, &access, "?date=2024-01-16")), [12]);
    let empty = history(&d, &access, "?date=2023-01-15");
    assert_eq!(
        empty.text(),
        r#"{"success":true,"date":"2023-01-15","calls":[],"truncated":false}"#
    );
}

#[test]
fn nobody_sees_anyone_elses_calls() {
    let (d, _fixture) = pbx_with_calls("history-others");
    let (access202, _) = d.tokens("202", "Secret202");
    let (access203, _) = d.tokens("203", "Secret203");
    // 202 took the outside call (6) that was then transferred to 201 (7): the
    // transferred leg is 201's alone.
    let r = history(&d, &access202, "?date=2024-01-15");
    assert_eq!(ids(&r), [11, 10, 6, 5, 2]);
    assert_eq!(ids(&history(&d, &access203, "?date=2024-01-15")), [9, 8, 5]);
    // 201's own calls, asked for by 202 any way a query can say it.
    for query in [
        "?date=2024-01-15&user=201",
        "?date=2024-01-15&extension=201",
        "?date=2024-01-15&src_num=201&dst_num=201",
        "?date=2024-01-15&username=201&id=7",
    ] {
        assert_eq!(
            ids(&history(&d, &access202, query)),
            [11, 10, 6, 5, 2],
            "{query}"
        );
    }
    // 202's token with its username changed to 201 no longer verifies.
    let parts: Vec<&str> = access202.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.replace(r#""username":"202""#, r#""username":"201""#)),
        parts[2]
    );
    assert_ne!(tampered, access202);
    assert_eq!(history(&d, &tampered, "?date=2024-01-15").status, 401);
}

#[test]
fn history_without_a_date_is_today_in_the_pbx_time_zone() {
    let (d, fixture) = pbx_with_calls("history-today");
    // Today and yesterday in UTC+3, as MikoPBX would write them.
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let (today, now_local, yesterday): (String, String, String) = conn
        .query_row(
            "SELECT date('now', '+3 hours'), datetime('now', '+3 hours'),
                    date('now', '+3 hours', '-1 day')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let cdr = fixture.path().join("cdr.db");
    let ids = mikopbx::insert_calls(
        &cdr,
        &[
            Cdr {
                start: &format!("{now_local}.000"),
                src_num: "202",
                dst_num: "201",
                disposition: "ANSWERED",
                ..Cdr::default()
            },
            Cdr {
                start: &format!("{yesterday} 12:00:00.000"),
                src_num: "201",
                dst_num: "202",
                disposition: "ANSWERED",
                ..Cdr::default()
            },
        ],
    );
    let (access, _) = d.tokens("201", "Secret201");
    let r = history(&d, &access, "");
    assert_eq!(r.status, 200, "{}", r.text());
    // Unless the day turned between the two reads.
    if r.json()["date"] == today {
        assert_eq!(self::ids(&r), [ids[0]]);
    }
    // Other parameters change nothing, whatever they name.
    for query in [
        "?_=1",
        "?user=202",
        "?extension=202&src_num=202",
        "?username=202&date",
    ] {
        let r = history(&d, &access, query);
        if query.ends_with("&date") {
            assert_eq!(r.status, 400, "{query}");
        } else {
            assert_eq!(r.status, 200, "{query}");
            assert!(
                self::ids(&r).iter().all(|id| *id == ids[0]),
                "{query}: {}",
                r.text()
            );
        }
    }
    let r = history(
        &d,
        &access,
        "?date=2024-01-15&user=202&src_num=202&dst_num=202",
    );
    assert_eq!(self::ids(&r), [10, 9, 8, 7, 4, 3, 2]);
}

#[test]
fn malformed_dates_and_tokens_are_refused_like_the_contract_says() {
    let (d, _fixture) = pbx_with_calls("history-refused");
    let (access, refresh) = d.tokens("201", "Secret201");
    for query in [
        "?date=",
        "?date=2024-1-15",
        "?date=15.01.2024",
        "?date=2023-02-29",
        "?date=2024-01-15%27%20OR%201=1--",
        "?date=2024-01-15&date=2024-01-16",
        "?date=today",
    ] {
        let r = history(&d, &access, query);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let body = r.json();
        assert_eq!(body["success"], false);
        assert_eq!(body["error"], "Invalid date. Expected YYYY-MM-DD");
        assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
    }
    // Token first: without one, a bad date is still a 401.
    let r = request(d.issuer, "GET", &format!("{BASE}/history?date=x"), &[], b"");
    assert_eq!(
        (r.status, r.error()),
        (401, "Unauthorized. Token required".to_owned())
    );
    let r = history(&d, &refresh, "?date=2024-01-15");
    assert_eq!(
        (r.status, r.error()),
        (403, "Invalid token type".to_owned())
    );
}

#[test]
fn builtin_users_have_no_history_unless_call_records_are_configured() {
    let d = Daemons::start("history-builtin");
    d.add_user(USER, PASSWORD);
    let (access, _) = d.tokens(USER, PASSWORD);
    let r = history(&d, &access, "?date=2024-01-15");
    assert_eq!(
        r.text(),
        r#"{"success":true,"date":"2024-01-15","calls":[],"truncated":false}"#
    );
    let today = history(&d, &access, "");
    assert_eq!(today.status, 200);
    assert_eq!(today.json()["date"].as_str().unwrap().len(), 10);
    drop(d);

    // With call records configured, a built-in user's calls are those of its
    // name as an extension.
    let fixture = TestDir::new("history-builtin-cdr");
    let root = recordings(fixture.path());
    let cdr = fixture.path().join("cdr.db");
    records(&cdr, &root);
    let d = Daemons::start_with(
        "history-builtin-cdr",
        Options::default()
            .with("SOFTPHONE_CDR_DATABASE", cdr.to_str().unwrap())
            .with("SOFTPHONE_RECORDINGS_DIR", root.to_str().unwrap())
            .with("TZ", TZ),
    );
    d.add_user(USER, PASSWORD);
    let (access, _) = d.tokens(USER, PASSWORD);
    assert_eq!(
        ids(&history(&d, &access, "?date=2024-01-15")),
        [10, 9, 8, 7, 4, 3, 2]
    );
}
