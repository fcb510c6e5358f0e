//! A MikoPBX configuration database fixture with the real table layout's relevant
//! columns (`m_Sip`, `m_Extensions`, `m_Users`).

use std::path::Path;

use rusqlite::Connection;

/// A SIP peer row.
pub struct Peer<'a> {
    pub extension: &'a str,
    pub secret: &'a str,
    pub kind: &'a str,
    pub disabled: &'a str,
    /// `m_Users.id` linked through `m_Extensions.userid`, if any.
    pub user_id: Option<i64>,
}

/// Creates the tables (as MikoPBX declares them: mostly untyped text columns),
/// in one transaction: the bench's fixture holds 100 000 peers.
pub fn create(path: &Path, peers: &[Peer<'_>]) {
    let mut conn = Connection::open(path).unwrap();
    let conn = conn.transaction().unwrap();
    conn.execute_batch(
        "CREATE TABLE m_Users (id INTEGER PRIMARY KEY AUTOINCREMENT, email VARCHAR(255), username VARCHAR(100), avatar TEXT);
         CREATE TABLE m_Extensions (id INTEGER PRIMARY KEY AUTOINCREMENT, number VARCHAR(255), type VARCHAR(255),
             callerid VARCHAR(255), userid INTEGER, show_in_phonebook VARCHAR(1), public_access VARCHAR(1), is_general_user_number VARCHAR(1));
         CREATE TABLE m_Sip (id INTEGER PRIMARY KEY AUTOINCREMENT, uniqid VARCHAR(255), disabled VARCHAR(1) DEFAULT '0',
             extension VARCHAR(255), type VARCHAR(255), host VARCHAR(255), port INTEGER, username VARCHAR(255),
             secret VARCHAR(255), defaultuser VARCHAR(255), fromuser VARCHAR(255), fromdomain VARCHAR(255),
             nat VARCHAR(255), dtmfmode VARCHAR(255), qualifyfreq INTEGER, qualify VARCHAR(255),
             networkfilterid VARCHAR(255), manualattributes TEXT, description VARCHAR(255), transport VARCHAR(255));",
    )
    .unwrap();
    for (i, peer) in peers.iter().enumerate() {
        if let Some(user_id) = peer.user_id {
            conn.execute(
                "INSERT INTO m_Users (id, email, username) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    user_id,
                    format!("user{user_id}@example.com"),
                    format!("User {user_id}")
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO m_Extensions (number, type, callerid, userid, is_general_user_number)
                 VALUES (?1, 'SIP', ?2, ?3, '1')",
                rusqlite::params![peer.extension, format!("User {user_id}"), user_id],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO m_Sip (id, uniqid, disabled, extension, type, secret, transport)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'udp')",
            rusqlite::params![
                100 + i as i64,
                format!("SIP-PHONE-{i}"),
                peer.disabled,
                peer.extension,
                peer.kind,
                peer.secret
            ],
        )
        .unwrap();
    }
    conn.commit().unwrap();
}

/// Adds `count` tables unrelated to logins, so that opening the file parses a
/// schema the size of a real MikoPBX database's (63 tables).
pub fn pad_schema(path: &Path, count: usize) {
    let conn = Connection::open(path).unwrap();
    for i in 0..count {
        conn.execute_batch(&format!(
            "CREATE TABLE m_Padding{i} (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(255),
                 description TEXT, value VARCHAR(255), priority INTEGER, disabled VARCHAR(1));
             CREATE INDEX m_Padding{i}_name ON m_Padding{i} (name);"
        ))
        .unwrap();
    }
}
