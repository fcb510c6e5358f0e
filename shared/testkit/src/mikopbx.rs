//! MikoPBX database fixtures with the real table layouts: the configuration
//! database's relevant columns (`m_Sip`, `m_Extensions`, `m_Users`,
//! `m_PbxSettings`), and the call records' `cdr_general` with every column and
//! index MikoPBX's `CallDetailRecords` model declares.

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

/// `count` extensions numbered from `first`, each with a secret of its own:
/// (number, secret) pairs for [`enabled_peers`] and for logging in.
pub fn numbered(first: usize, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| ((first + i).to_string(), format!("Secret{i}-x7Qz")))
        .collect()
}

/// Enabled SIP peers of `numbered`'s pairs; with `users`, each linked to a
/// `m_Users` row of its own (ids from 1).
pub fn enabled_peers(numbered: &[(String, String)], users: bool) -> Vec<Peer<'_>> {
    numbered
        .iter()
        .enumerate()
        .map(|(i, (extension, secret))| Peer {
            extension,
            secret,
            kind: "peer",
            disabled: "0",
            user_id: users.then_some(i as i64 + 1),
        })
        .collect()
}

/// Creates the tables (as MikoPBX declares them: mostly untyped text columns),
/// in one transaction: the bench's fixture holds 100 000 peers.
pub fn create(path: &Path, peers: &[Peer<'_>]) {
    let mut conn = Connection::open(path).unwrap();
    // One transaction: thousands of peers (the bench's directory) in one commit.
    let conn = conn.transaction().unwrap();
    conn.execute_batch(
        "CREATE TABLE m_Users (id INTEGER PRIMARY KEY AUTOINCREMENT, email VARCHAR(255), username VARCHAR(100), avatar TEXT);
         CREATE TABLE m_Extensions (id INTEGER PRIMARY KEY AUTOINCREMENT, number VARCHAR(255), type VARCHAR(255),
             callerid VARCHAR(255), userid INTEGER, show_in_phonebook VARCHAR(1), public_access VARCHAR(1), is_general_user_number VARCHAR(1));
         CREATE TABLE m_Sip (id INTEGER PRIMARY KEY AUTOINCREMENT, uniqid VARCHAR(255), disabled VARCHAR(1) DEFAULT '0',
             extension VARCHAR(255), type VARCHAR(255), host VARCHAR(255), port INTEGER, username VARCHAR(255),
             secret VARCHAR(255), defaultuser VARCHAR(255), fromuser VARCHAR(255), fromdomain VARCHAR(255),
             nat VARCHAR(255), dtmfmode VARCHAR(255), qualifyfreq INTEGER, qualify VARCHAR(255),
             networkfilterid VARCHAR(255), manualattributes TEXT, description VARCHAR(255), transport VARCHAR(255));
         CREATE TABLE m_PbxSettings (key VARCHAR(255) PRIMARY KEY, value TEXT);",
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

/// Sets a MikoPBX setting (`m_PbxSettings`), as its web interface does.
pub fn set_setting(path: &Path, key: &str, value: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute(
        "INSERT INTO m_PbxSettings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value],
    )
    .unwrap();
}

/// A `cdr_general` row: one leg of a call, as MikoPBX's call-event worker
/// writes it (times are local-time text, `answer` empty when nobody answered).
#[derive(Debug, Clone, Default)]
pub struct Cdr<'a> {
    pub start: &'a str,
    pub answer: &'a str,
    pub endtime: &'a str,
    pub src_num: &'a str,
    pub dst_num: &'a str,
    pub disposition: &'a str,
    pub recordingfile: &'a str,
    pub linkedid: &'a str,
    pub duration: i64,
    pub billsec: i64,
    pub transfer: i64,
}

/// Creates MikoPBX's call records database (`cdr_general`, its columns and
/// its indexes, as the `CallDetailRecords` model declares them).
pub fn create_cdr(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE cdr_general (id INTEGER PRIMARY KEY AUTOINCREMENT, start VARCHAR(255), endtime VARCHAR(255),
             answer VARCHAR(255), src_chan VARCHAR(255), src_num VARCHAR(255), dst_chan VARCHAR(255),
             dst_num VARCHAR(255), UNIQUEID VARCHAR(255), linkedid VARCHAR(255), did VARCHAR(255),
             disposition VARCHAR(255), recordingfile VARCHAR(255), from_account VARCHAR(255),
             to_account VARCHAR(255), dialstatus VARCHAR(255), appname VARCHAR(255), transfer INTEGER,
             is_app VARCHAR(1), duration INTEGER, billsec INTEGER, work_completed VARCHAR(1),
             src_call_id VARCHAR(255), dst_call_id VARCHAR(255), verbose_call_id VARCHAR(255),
             a_transfer INTEGER, rec_src_channel VARCHAR(255), dtmf_digits VARCHAR(255));
         CREATE INDEX i_cdr_general_UNIQUEID ON cdr_general (UNIQUEID);
         CREATE INDEX i_cdr_general_start ON cdr_general (start);
         CREATE INDEX i_cdr_general_src_chan ON cdr_general (src_chan);
         CREATE INDEX i_cdr_general_dst_chan ON cdr_general (dst_chan);
         CREATE INDEX i_cdr_general_src_num ON cdr_general (src_num);
         CREATE INDEX i_cdr_general_dst_num ON cdr_general (dst_num);
         CREATE INDEX i_cdr_general_linkedid ON cdr_general (linkedid);",
    )
    .unwrap();
}

/// Appends call records in one transaction; returns their ids.
pub fn insert_calls(path: &Path, calls: &[Cdr<'_>]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(calls.len());
    insert_generated(path, calls.len(), |i, sink| {
        ids.push(sink(calls[i].clone()))
    });
    ids
}

/// Appends `count` generated call records in one transaction: `make(i, sink)`
/// hands record `i` to `sink`, which stores it and returns its id (so a
/// million records need not be held at once).
pub fn insert_generated(
    path: &Path,
    count: usize,
    mut make: impl FnMut(usize, &mut dyn FnMut(Cdr<'_>) -> i64),
) {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO cdr_general (start, answer, endtime, src_chan, src_num, dst_chan, dst_num,
                     UNIQUEID, linkedid, disposition, recordingfile, transfer, is_app, duration, billsec,
                     work_completed, a_transfer)
                 VALUES (?1, ?2, ?3, 'PJSIP/' || ?4 || '-0000001', ?4, 'PJSIP/' || ?5 || '-0000002', ?5,
                     ?6 || '.' || ?12, ?6, ?7, ?8, ?9, '0', ?10, ?11, '1', '0')",
            )
            .unwrap();
        for i in 0..count {
            let mut sink = |c: Cdr<'_>| {
                stmt.execute(rusqlite::params![
                    c.start,
                    c.answer,
                    c.endtime,
                    c.src_num,
                    c.dst_num,
                    c.linkedid,
                    c.disposition,
                    c.recordingfile,
                    c.transfer,
                    c.duration,
                    c.billsec,
                    i as i64
                ])
                .unwrap();
                tx.last_insert_rowid()
            };
            make(i, &mut sink);
        }
    }
    tx.commit().unwrap();
}
