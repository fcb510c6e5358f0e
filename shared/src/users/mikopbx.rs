//! MikoPBX as the user source, read-only: a login is a SIP peer's extension and
//! secret from `m_Sip`; the user id is `m_Extensions.userid` of that number.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::users::{Credential, Secret, User};
use crate::{Error, Result};

/// Opens the PBX database for each lookup: MikoPBX rewrites it on configuration
/// restores, and a login every few seconds does not need a pooled handle.
pub fn find(path: &Path, username: &str) -> Result<Option<Credential>> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::UserSource(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(2))?;
    let row = conn
        .query_row(
            "SELECT CAST(s.id AS INTEGER),
                    CAST(e.userid AS INTEGER),
                    CAST(s.secret AS TEXT),
                    COALESCE(CAST(s.disabled AS TEXT), '0')
             FROM m_Sip AS s
             LEFT JOIN m_Extensions AS e ON CAST(e.number AS TEXT) = CAST(s.extension AS TEXT)
             WHERE s.type = 'peer' AND CAST(s.extension AS TEXT) = ?1
             ORDER BY s.id LIMIT 1",
            [username],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()
        .map_err(|e| Error::UserSource(format!("{}: {e}", path.display())))?;
    Ok(row.map(|(sip_id, user_id, secret, disabled)| Credential {
        user: User {
            id: user_id.filter(|id| *id > 0).unwrap_or(sip_id),
            username: username.to_owned(),
            role: "user".to_owned(),
        },
        // An empty secret never matches: the login handler refuses empty passwords.
        secret: Secret::Plain(secret.unwrap_or_default()),
        disabled: disabled == "1",
    }))
}
