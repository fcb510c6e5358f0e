//! The `mikopbx:<path>` user source against a fixture with MikoPBX's tables.

use softphone_testkit::mikopbx::{self, Peer};
use std::time::{Duration, Instant};

use softphone_testkit::{Daemons, Options, TestDir, eventually};

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

fn peer(extension: &str, secret: &str) -> Peer<'static> {
    Peer {
        extension: extension.to_owned().leak(),
        secret: secret.to_owned().leak(),
        kind: "peer",
        disabled: "0",
        user_id: None,
    }
}

fn start_on(db: &std::path::Path, name: &str) -> Daemons {
    Daemons::start_with(
        name,
        Options::default().with(
            "SOFTPHONE_USER_SOURCE",
            &format!("mikopbx:{}", db.display()),
        ),
    )
}

/// A changed secret, a disabled peer, a removed peer and a restored (replaced)
/// file each end the affected sessions within 10 s, without waiting for their
/// refresh; other sessions keep working.
#[test]
fn pbx_changes_end_sessions_within_seconds() {
    let fixture = TestDir::new("mikopbx-changes");
    let db = fixture.path().join("mikopbx.db");
    mikopbx::create(
        &db,
        &[
            peer("301", "Secret301"),
            peer("302", "Secret302"),
            peer("303", "Secret303"),
            peer("304", "Secret304"),
            peer("305", "Secret305"),
        ],
    );
    let d = start_on(&db, "mikopbx-changes");
    let access = |ext: &str| d.tokens(ext, &format!("Secret{ext}")).0;
    let (a301, a302, a303, a304, a305) = (
        access("301"),
        access("302"),
        access("303"),
        access("304"),
        access("305"),
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "UPDATE m_Sip SET secret = 'Changed301' WHERE extension = '301';
         UPDATE m_Sip SET disabled = '1' WHERE extension = '302';
         DELETE FROM m_Sip WHERE extension = '303';",
    )
    .unwrap();
    drop(conn);
    let changed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "sessions of changed peers are refused",
        || {
            [&a301, &a302, &a303]
                .iter()
                .all(|a| d.check(Some(a)).status == 401)
        },
    );
    eprintln!(
        "PBX change honoured after {:.1} s",
        changed.elapsed().as_secs_f64()
    );
    for a in [&a304, &a305] {
        assert_eq!(d.check(Some(a)).status, 200);
        assert_eq!(d.issuer_get("/profile", Some(a)).status, 200);
    }

    // A configuration restore replaces the file: 305's secret differs in it.
    let restored = fixture.path().join("restored.db");
    mikopbx::create(
        &restored,
        &[peer("304", "Secret304"), peer("305", "Other305")],
    );
    std::fs::rename(&restored, &db).unwrap();
    let replaced = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the session of a peer changed by a restore is refused",
        || d.check(Some(&a305)).status == 401,
    );
    eprintln!(
        "PBX file replacement honoured after {:.1} s",
        replaced.elapsed().as_secs_f64()
    );
    assert_eq!(d.check(Some(&a304)).status, 200);
    assert_eq!(d.login("305", "Other305").status, 200);
    // A missing PBX database ends nothing.
    std::fs::remove_file(&db).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.check(Some(&a304)).status, 200);
}

/// A PBX database held locked by its writer stalls logins (they wait for it)
/// but not profile, which never waits behind a PBX lookup.
#[test]
fn a_locked_pbx_database_stalls_only_logins() {
    let fixture = TestDir::new("mikopbx-locked");
    let db = fixture.path().join("mikopbx.db");
    mikopbx::create(&db, &[peer("301", "Secret301"), peer("302", "Secret302")]);
    let d = start_on(&db, "mikopbx-locked");
    let (access, _) = d.tokens("301", "Secret301");

    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::scope(|s| {
        let logins: Vec<_> = (0..4)
            .map(|_| s.spawn(|| d.login("302", "Secret302").status))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..5 {
            let started = Instant::now();
            assert_eq!(d.issuer_get("/profile", Some(&access)).status, 200);
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(1000),
                "profile waited {took:?} behind a PBX lookup"
            );
        }
        lock.execute_batch("ROLLBACK").unwrap();
        for login in logins {
            let status = login.join().unwrap();
            assert!(status == 200 || status == 500, "{status}");
        }
    });
}
