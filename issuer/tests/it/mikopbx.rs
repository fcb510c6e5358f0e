//! The `mikopbx:<path>` user source against a fixture with MikoPBX's tables.

use softphone_testkit::mikopbx::{self, Peer};
use softphone_testkit::{Daemons, Options, TestDir};

#[test]
fn sip_peers_log_in_with_their_secret() {
    let fixture = TestDir::new("mikopbx-fixture");
    let db = fixture.path().join("mikopbx.db");
    mikopbx::create(
        &db,
        &[
            Peer {
                extension: "201",
                secret: "Secret201",
                kind: "peer",
                disabled: "0",
                user_id: Some(7),
            },
            Peer {
                extension: "202",
                secret: "Secret202",
                kind: "peer",
                disabled: "1",
                user_id: Some(8),
            },
            Peer {
                extension: "SIP-TRUNK",
                secret: "TrunkSecret",
                kind: "friend",
                disabled: "0",
                user_id: None,
            },
            Peer {
                extension: "204",
                secret: "Secret204",
                kind: "peer",
                disabled: "0",
                user_id: None,
            },
        ],
    );
    let d = Daemons::start_with(
        "mikopbx",
        Options::default().with(
            "SOFTPHONE_USER_SOURCE",
            &format!("mikopbx:{}", db.display()),
        ),
    );

    let (access, refresh) = d.tokens("201", "Secret201");
    let profile = d.issuer_get("/profile", Some(&access));
    assert_eq!(
        profile.json()["user"],
        serde_json::json!({"id": 7, "username": "201", "role": "user"})
    );
    assert_eq!(
        d.check(Some(&access)).header("X-Softphone-User-Id"),
        Some("7")
    );

    // Without an m_Extensions row the id falls back to m_Sip.id.
    let (access204, _) = d.tokens("204", "Secret204");
    assert_eq!(
        d.issuer_get("/profile", Some(&access204)).json()["user"]["id"],
        103
    );

    for (user, password) in [
        ("201", "secret201"),         // wrong case
        ("201", "Secret201 "),        // trailing space
        ("202", "Secret202"),         // disabled peer
        ("SIP-TRUNK", "TrunkSecret"), // not a peer
        ("205", "Secret205"),         // unknown
    ] {
        let r = d.login(user, password);
        assert_eq!(r.status, 401, "{user}");
        assert_eq!(r.error(), "Invalid credentials");
    }

    // Changing the secret on the PBX ends existing sessions at their next refresh.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE m_Sip SET secret = 'Changed201' WHERE extension = '201'",
        [],
    )
    .unwrap();
    let r = d.issuer_post("/auth/refresh", Some(&refresh));
    assert_eq!(r.status, 401);
    assert_eq!(d.check(Some(&access)).status, 401);
    assert_eq!(d.login("201", "Secret201").status, 401);
    assert_eq!(d.login("201", "Changed201").status, 200);
    d.assert_logs_clean(&["Secret201", "Secret204", "Changed201"]);
}
