//! Running the daemon: bind, serve until SIGTERM/SIGINT (finishing requests in
//! flight), reload on SIGHUP, purge expired sessions every minute, follow the
//! PBX database's credentials; tell systemd when it is ready, reloading or
//! stopping, and ping its watchdog (`watchdog.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use softphone_shared::config::Config;
use softphone_shared::store::PURGE_BATCH;
use softphone_shared::systemd;
use softphone_shared::unix_now;
use tokio::signal::unix::{SignalKind, signal};

use crate::pbx_watch;
use crate::refresh_rate;
use crate::routes::routes;
use crate::state::App;
use crate::watchdog;
use crate::{Error, Result};

/// How long expired sessions are kept after they expire (beyond any leeway).
const WHO: &str = "softphone-issuer";

pub async fn serve(config: Config, config_path: Option<PathBuf>) -> Result<()> {
    let addr = config.issuer_listen;
    let app = Arc::new(App::open(config)?);
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
    loop {
        tick.tick().await;
        let now = unix_now();
        app.throttle().prune_all(now);
        app.refresh_rate()
            .prune(now, refresh_rate::Limits::from_config(&app.config()));
        // In bounded steps, each one write among the requests' (a million
        // expired sessions must not hold the writer for seconds).
        let mut purged = 0;
        while let Ok(step) = app.write(move |store| store.purge_expired(now)).await {
            purged += step;
            if step < PURGE_BATCH {
                break;
            }
        }
        if purged > 0 {
            eprintln!("softphone-issuer: purged {purged} expired session(s)");
        }
    }
}
