//! Running the daemon: bind, serve until SIGTERM/SIGINT (finishing requests in
//! flight), reload on SIGHUP, purge expired sessions every minute, follow the
//! PBX database's credentials; tell systemd when it is ready, reloading or
//! stopping, and ping its watchdog (`watchdog.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use softphone_shared::config::Config;
use softphone_shared::cpu_time;
use softphone_shared::systemd;
use softphone_shared::unix_now;
use tokio::signal::unix::{SignalKind, signal};

use crate::group_commit::Writer;
use crate::pbx_watch;
use crate::refresh_rate;
use crate::routes::routes;
use crate::state::App;
use crate::watchdog;
use crate::{Error, Result};

/// The name this daemon's messages to systemd and stderr go by.
const WHO: &str = "softphone-issuer";

pub async fn serve(config: Config, config_path: Option<PathBuf>) -> Result<()> {
    let addr = config.issuer_listen;
    let app = Arc::new(App::open(config)?);
    app.read_pbx_logins().await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    eprintln!("softphone-issuer: listening on {addr}");

    tokio::spawn(housekeeping(Arc::clone(&app)));
    tokio::spawn(watch_key(Arc::clone(&app)));
    tokio::spawn(pbx_watch::watch(Arc::clone(&app)));
    tokio::spawn(reload_on_hangup(Arc::clone(&app), config_path)?);

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("softphone-issuer: stopping after requests in flight");
        systemd::stopping(WHO);
    };
    // Bound and listening: connections wait in the backlog until warp accepts.
    systemd::ready(WHO);
    watchdog::start(Arc::clone(&app));
    warp::serve(routes(app))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    Ok(())
}

fn reload_on_hangup(
    app: Arc<App>,
    config_path: Option<PathBuf>,
) -> Result<impl Future<Output = ()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            systemd::reloading(WHO);
            let reloaded = Config::load(config_path.as_deref())
                .map_err(Error::from)
                .and_then(|config| app.reload(config));
            match reloaded {
                Ok(notes) => {
                    eprintln!("softphone-issuer: SIGHUP: config and key reloaded");
                    for note in notes {
                        eprintln!("softphone-issuer: SIGHUP: {note}");
                    }
                }
                Err(e) => eprintln!("softphone-issuer: SIGHUP: keeping the running config: {e}"),
            }
            // Serving again either way: with the new config or the old one.
            systemd::ready(WHO);
        }
    })
}

/// About once a second: reloads the key when its file changed on disk, as SIGHUP
/// does, and looks at the epoch file (follows a new doorbell, reports and
/// repairs a damaged file).
async fn watch_key(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        app.reload_keys_if_changed();
        let _ = app
            .write(|store| {
                if let Some(epoch) = store.epoch() {
                    epoch.check_and_report("softphone-issuer");
                }
                Ok(())
            })
            .await;
    }
}

async fn housekeeping(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    // A purge of a large backlog outlasts many ticks: the next pass comes a
    // minute after it, not once for every tick it missed.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = unix_now();
        app.throttle().prune_all(now);
        app.refresh_rate()
            .prune(now, refresh_rate::Limits::from_config(&app.config()));
        let writer = app.writer().clone();
        let purged = on_own_thread("purge", move || purge(&writer, now))
            .await
            .unwrap_or(0);
        if purged > 0 {
            eprintln!("softphone-issuer: purged {purged} expired session(s)");
        }
    }
}

/// How much CPU time one purge step (its deletions and commit) may take.
const PURGE_STEP_TARGET: Duration = Duration::from_micros(150);
/// The pause after a step, in multiples of its CPU time: the purge takes at
/// most a fifth of a core.
const PURGE_PAUSE_PER_WORK: u32 = 4;
/// Rows a purge step starts with, and most it may take.
const PURGE_STEP_FIRST: usize = 50;
const PURGE_STEP_MOST: usize = 2000;

/// Deletes the expired sessions every verifier has forgotten, on the calling
/// thread (its own: see [`Writer::background`]), in steps on the writer
/// connection between the requests' batches, each a transaction whose commit
/// is not synced (a crash only leaves rows for the next pass). A step's size
/// is doubled or halved after each so that it costs about
/// [`PURGE_STEP_TARGET`] of this thread's CPU time (a deleted row costs ten
/// times more in a table of a million random keys than in a small one; CPU
/// time, since requests on the same core stretch a step's wall time, which
/// shrank the steps to a row each), and a pause of [`PURGE_PAUSE_PER_WORK`]
/// times that follows, so a backlog of a million never holds the writer
/// long; then the old tombstones. Returns how many sessions it deleted.
fn purge(writer: &Writer, now: i64) -> usize {
    let mut purged = 0;
    let mut step = PURGE_STEP_FIRST;
    loop {
        let began = cpu_time::this_thread();
        let deleted = match writer.background(|store| store.purge_expired(now, step)) {
            Ok(deleted) => deleted,
            Err(e) => {
                eprintln!("softphone-issuer: the purge stops until the next pass: {e}");
                return purged;
            }
        };
        let work = cpu_time::this_thread().saturating_sub(began);
        purged += deleted;
        if deleted < step {
            break;
        }
        step = if work > PURGE_STEP_TARGET {
            (step / 2).max(1)
        } else {
            (step * 2).min(PURGE_STEP_MOST)
        };
        std::thread::sleep(work * PURGE_PAUSE_PER_WORK);
    }
    if let Err(e) = writer.background(|store| store.purge_tombstones(now)) {
        eprintln!("softphone-issuer: old tombstones stay until the next pass: {e}");
    }
    purged
}

/// Runs `f` on a new thread named `name`, and waits for it without holding
/// an async thread; None when the thread could not start or panicked.
async fn on_own_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = done.send(f());
        })
        .ok()?;
    result.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use softphone_shared::store::Store;
    use softphone_testkit::{TestDir, insert_session};

    /// A backlog of several steps goes in one pass, on the purge's own
    /// thread through the writer's connection; a live session stays, and a
    /// second pass finds nothing.
    #[test]
    fn the_purge_deletes_a_backlog_of_expired_sessions_and_keeps_the_live() {
        let dir = TestDir::new("serve-purge");
        let db = dir.path().join("softphone.db");
        let writer = Writer::start(Store::open(&db).unwrap(), Store::open(&db).unwrap()).unwrap();
        let now = unix_now();
        let backlog = PURGE_STEP_FIRST * 3;
        writer
            .background(|store| {
                for i in 0..backlog {
                    insert_session(store, &format!("old{i}"), now - 3 * 86_400);
                }
                insert_session(store, "live", now);
                Ok(())
            })
            .unwrap();
        assert_eq!(purge(&writer, now), backlog);
        let reader = Store::open_read_only(&db).unwrap();
        assert!(reader.session("live").unwrap().is_some());
        assert!(reader.session("old0").unwrap().is_none());
        assert_eq!(purge(&writer, now), 0);
    }
}
