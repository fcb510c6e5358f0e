//! `GET users` (the directory) and `GET features` (the feature codes) on the
//! real daemon, over both user sources: MikoPBX's tables in a fixture with
//! their real layouts, and our own users named with `user name`.

use std::time::Duration;

use serde_json::json;
use softphone_testkit::mikopbx::{self, Peer};
use softphone_testkit::{BASE, Daemons, Options, Response, TestDir, eventually, request};

use crate::{PASSWORD, USER};

/// A PBX of several users: enabled, disabled, hidden from the phonebook,
/// without a user card, a trunk, and a number two peers share.
fn pbx(dir: &TestDir) -> std::path::PathBuf {
    let db = dir.path().join("mikopbx.db");
    let peer = |extension, secret, disabled, user_id| Peer {
        extension,
        secret,
        kind: "peer",
        disabled,
        user_id,
    };
    mikopbx::create(
        &db,
        &[
            peer("201", "Secret201", "0", Some(7)),
            peer("1001", "Secret1001", "0", Some(9)),
            peer("99", "Secret99", "0", Some(10)),
            peer("202", "Secret202", "1", Some(8)),
            peer("203", "Secret203", "0", None),
            peer("205", "Secret205", "0", Some(11)),
            Peer {
                extension: "SIP-TRUNK",
                secret: "TrunkSecret",
                kind: "friend",
                disabled: "0",
                user_id: None,
            },
            // A second peer of 201, disabled: the first (the one logins use) decides.
            peer("201", "Other201", "1", None),
        ],
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "UPDATE m_Users SET username = 'Alice Smith' WHERE id = 7;
         UPDATE m_Users SET username = '' WHERE id = 9;
         UPDATE m_Extensions SET callerid = 'Front Desk' WHERE userid = 9;
         INSERT INTO m_Extensions (number, type, callerid, userid, show_in_phonebook)
             VALUES ('203', 'SIP', 'Lobby Phone', NULL, '1');
         UPDATE m_Extensions SET show_in_phonebook = '0' WHERE userid = 11;",
    )
    .unwrap();
    db
}

fn get(d: &Daemons, route: &str, access: &str, headers: &[(&str, &str)]) -> Response {
    let bearer = format!("Bearer {access}");
    let mut all = vec![("Authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    request(d.issuer, "GET", &format!("{BASE}{route}"), &all, b"")
}

#[test]
fn the_pbx_directory_lists_enabled_extensions_by_number_with_an_etag() {
    let fixture = TestDir::new("directory-pbx");
    let db = pbx(&fixture);
    let d = Daemons::start_with(
        "directory-pbx",
        Options::default().with(
            "SOFTPHONE_USER_SOURCE",
            &format!("mikopbx:{}", db.display()),
        ),
    );
    let (access, refresh) = d.tokens("201", "Secret201");

    let r = get(&d, "/users", &access, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Cache-Control"), Some("private, no-cache"));
    // Numbers by value; names from the user card, else the caller id; the ids
    // profile reports (m_Sip.id for 203, which has no user); no disabled
    // (202), hidden (205) or trunk entries, 201 once.
    assert_eq!(
        r.json(),
        json!({"success": true, "users": [
            {"id": 10, "number": "99", "name": "User 10"},
            {"id": 7, "number": "201", "name": "Alice Smith"},
            {"id": 104, "number": "203", "name": "Lobby Phone"},
            {"id": 9, "number": "1001", "name": "Front Desk"},
        ]})
    );
    assert!(!r.text().contains(": "), "compact JSON");
    // The ids are those of the users' tokens.
    let (access203, _) = d.tokens("203", "Secret203");
    assert_eq!(
        d.issuer_get("/profile", Some(&access203)).json()["user"]["id"],
        104
    );

    // A repeat with the tag: 304, no body, the same tag.
    let etag = r.header("ETag").unwrap().to_owned();
    let again = get(&d, "/users", &access, &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("ETag"), Some(etag.as_str()));
    assert_eq!(
        get(&d, "/users", &access, &[("If-None-Match", "\"other\"")]).status,
        200
    );

    // A change in the PBX: a new tag within a second or two, and the change.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "UPDATE m_Sip SET disabled = '0' WHERE extension = '202' AND id = 103;
         UPDATE m_Users SET username = 'Bob Jones' WHERE id = 8;",
    )
    .unwrap();
    let changed = eventually(Duration::from_secs(5), "the directory changes", || {
        let r = get(&d, "/users", &access, &[("If-None-Match", &etag)]);
        (r.status == 200).then_some(r)
    });
    assert_ne!(changed.header("ETag"), Some(etag.as_str()));
    assert!(
        changed.json()["users"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": 8, "number": "202", "name": "Bob Jones"})),
        "{}",
        changed.text()
    );

    // Like profile: no token 401, a refresh token 403, a logged-out one 401.
    assert_eq!(d.issuer_get("/users", None).status, 401);
    assert_eq!(
        d.issuer_get("/users", None).error(),
        "Unauthorized. Token required"
    );
    let r = d.issuer_get("/users", Some(&refresh));
    assert_eq!(
        (r.status, r.error()),
        (403, "Invalid token type".to_owned())
    );
    // The 304 path checks the token too.
    let r = request(
        d.issuer,
        "GET",
        &format!("{BASE}/users"),
        &[("If-None-Match", "*")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(d.issuer_post("/auth/logout", Some(&access)).status, 200);
    assert_eq!(
        get(&d, "/users", &access, &[("If-None-Match", "*")]).status,
        401
    );
}

#[test]
fn the_builtin_directory_lists_our_enabled_users_with_their_names() {
    let d = Daemons::start("directory-builtin");
    for user in [USER, "202", "1001", "99"] {
        d.add_user(user, PASSWORD);
    }
    let (ok, out) = d.admin(&["user", "name", USER, "Alice Smith"], "");
    assert!(ok, "{out}");
    let (ok, out) = d.admin(&["user", "name", "1001", "Front Desk"], "");
    assert!(ok, "{out}");
    let (ok, out) = d.admin(&["user", "disable", "99"], "");
    assert!(ok, "{out}");
    // Names are checked; unknown users are an error.
    let (ok, _) = d.admin(&["user", "name", "202", "Line\nbreak"], "");
    assert!(!ok);
    let (ok, _) = d.admin(&["user", "name", "nobody", "Name"], "");
    assert!(!ok);

    let (access, _) = d.tokens(USER, PASSWORD);
    let r = get(&d, "/users", &access, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"success":true,"users":[{"id":1,"number":"201","name":"Alice Smith"},{"id":2,"number":"202","name":""},{"id":3,"number":"1001","name":"Front Desk"}]}"#
    );
    let etag = r.header("ETag").unwrap().to_owned();
    assert_eq!(
        get(&d, "/users", &access, &[("If-None-Match", &etag)]).status,
        304
    );
    // A name removed reaches the directory within a second or two.
    let (ok, out) = d.admin(&["user", "name", "1001", ""], "");
    assert!(ok, "{out}");
    eventually(Duration::from_secs(5), "the directory changes", || {
        get(&d, "/users", &access, &[])
            .text()
            .contains(r#"{"id":3,"number":"1001","name":""}"#)
    });
}

#[test]
fn feature_codes_come_from_the_pbx_settings_or_the_configuration() {
    // builtin: the configuration, MikoPBX's defaults unless set.
    let d = Daemons::start_with(
        "features-builtin",
        Options::default().with("SOFTPHONE_FEATURE_PICKUP", "*9"),
    );
    d.add_user(USER, PASSWORD);
    let (access, refresh) = d.tokens(USER, PASSWORD);
    let r = get(&d, "/features", &access, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r###"{"success":true,"features":{"pickup":"*9","attended_transfer":"##","blind_transfer":"**"}}"###
    );
    let etag = r.header("ETag").unwrap().to_owned();
    assert_eq!(
        get(&d, "/features", &access, &[("If-None-Match", &etag)]).status,
        304
    );
    assert_eq!(d.issuer_get("/features", None).status, 401);
    assert_eq!(d.issuer_get("/features", Some(&refresh)).status, 403);
    drop(d);

    // mikopbx: m_PbxSettings, MikoPBX's defaults for keys it does not hold,
    // and an emptied setting (the feature turned off) as null.
    let fixture = TestDir::new("features-pbx");
    let db = pbx(&fixture);
    mikopbx::set_setting(&db, "PBXFeatureAttendedTransfer", "*3");
    mikopbx::set_setting(&db, "PBXFeatureBlindTransfer", "");
    mikopbx::set_setting(&db, "PBXFeatureDigitTimeout", "2500");
    let d = Daemons::start_with(
        "features-pbx",
        Options::default().with(
            "SOFTPHONE_USER_SOURCE",
            &format!("mikopbx:{}", db.display()),
        ),
    );
    let (access, _) = d.tokens("201", "Secret201");
    let r = get(&d, "/features", &access, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"success": true, "features": {"pickup": "*8", "attended_transfer": "*3", "blind_transfer": null}})
    );
    mikopbx::set_setting(&db, "PBXFeaturePickupExten", "*7");
    eventually(Duration::from_secs(5), "the new pickup code", || {
        get(&d, "/features", &access, &[]).json()["features"]["pickup"] == "*7"
    });
}
