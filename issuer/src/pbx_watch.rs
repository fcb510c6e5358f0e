//! With the `mikopbx` user source the PBX database is the truth about who may log
//! in. When it changes (a secret changed, a peer disabled or removed), the
//! sessions opened with the old credential end within [`INTERVAL`] plus a sweep,
//! not at their next refresh: the watcher compares each active session's
//! credential tag with the PBX's current credential and revokes those that no
//! longer match, which the verifier honours from its next request.
//!
//! A change is noticed through SQLite's `data_version` (another connection
//! committed) or a replaced file, so an idle PBX costs one pragma per tick. The
//! sweep reads the PBX's peers once, not once per user with active sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use softphone_shared::keys::KeyRing;
use softphone_shared::store::RevokeReason;
use softphone_shared::thread_priority;
use softphone_shared::unix_now;
use softphone_shared::users::TagMatch;

use crate::state::{App, Pbx};
use crate::{Error, Result};
use tokio::task::spawn_blocking;

/// How often the PBX database is looked at.
pub const INTERVAL: Duration = Duration::from_secs(2);

pub async fn watch(app: Arc<App>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let lowers = thread_priority::may_raise();
    loop {
        tick.tick().await;
        match sweep(&app, lowers).await {
            Ok(revoked) => {
                if failing {
                    eprintln!("softphone-issuer: the PBX database is readable again");
                }
                failing = false;
                if revoked > 0 {
                    eprintln!(
                        "softphone-issuer: the PBX database changed: {revoked} session(s) revoked"
                    );
                }
            }
            // Said once, not every tick while the file is missing.
            Err(e) if !failing => {
                failing = true;
                eprintln!(
                    "softphone-issuer: cannot follow the PBX database, no session revoked: {e}"
                );
            }
            Err(_) => {}
        }
    }
}

/// Revokes the active sessions whose credential the PBX no longer has; returns
/// how many. Nothing is revoked when the PBX database cannot be read: a missing
/// file must not end every session.
///
/// The comparison runs under SCHED_IDLE when `lowers`
/// ([`thread_priority::when_idle`]): after a start it reads every peer
/// (100 000 in the bench's PBX, 29 ms of a core with a hundred users in
/// session, as it copies only theirs) and checks every active session, within the issuer's first second, when requests may already be
/// waiting. On a core that requests keep busy it waits until they leave one
/// free; meanwhile a refresh of a stale session is refused all the same, as
/// every refresh compares the credential itself.
pub async fn sweep(app: &App, lowers: bool) -> Result<usize> {
    let Some(pbx) = app.pbx() else {
        return Ok(0);
    };
    let changed = {
        let pbx = Arc::clone(&pbx);
        spawn_blocking(move || pbx.others.changed())
            .await
            .map_err(joined)??
    };
    if !changed {
        return Ok(0);
    }
    let now = unix_now();
    let pairs = app
        .read(move |store| store.active_credentials(now))
        .await
        .map_err(|_| Error::Store)?;
    let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (username, tag) in pairs {
        by_user.entry(username).or_default().push(tag);
    }
    let keys = app.keys();
    let stale = spawn_blocking(move || {
        thread_priority::when_idle(lowers, || stale_credentials(&pbx, by_user, &keys, now))
    })
    .await
    .map_err(joined)??;
    let mut revoked = 0;
    for (username, tag, reason) in stale {
        let n = app
            .write(move |store| store.revoke_credential(&username, &tag, reason, now))
            .await
            .map_err(|_| Error::Store)?;
        app.metrics().revoked(reason, n);
        revoked += n;
    }
    Ok(revoked)
}

/// The active credentials (by user) that the PBX no longer has, and why.
fn stale_credentials(
    pbx: &Pbx,
    by_user: BTreeMap<String, Vec<String>>,
    keys: &KeyRing,
    now: i64,
) -> softphone_shared::Result<Vec<(String, String, RevokeReason)>> {
    let peers = pbx
        .sweeps
        .credentials_of(|name| by_user.contains_key(name))?;
    let mut stale = Vec::new();
    for (username, tags) in by_user {
        let current = peers.get(&username).filter(|c| !c.disabled);
        for tag in tags {
            let reason = match &current {
                None => RevokeReason::UserDisabled,
                Some(c) if c.tag_match(keys, &tag, now) == TagMatch::NoMatch => {
                    RevokeReason::CredentialsChanged
                }
                Some(_) => continue,
            };
            stale.push((username.clone(), tag, reason));
        }
    }
    Ok(stale)
}

fn joined(e: tokio::task::JoinError) -> Error {
    Error::Io(std::io::Error::other(e))
}
