//! `softphone-verifier`: load the config, the key and the revocation list, then
//! answer nginx until SIGTERM. SIGHUP reloads the key and reopens the log. Each
//! step is told to systemd (`Type=notify`), and a watchdog coroutine pings it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use softphone_shared::config::Config;
use softphone_shared::live_keys::LiveKeys;
use softphone_shared::paths::SYSTEM_CONFIG;
use softphone_shared::seclog::SecurityLog;
use softphone_shared::store::Store;
use softphone_shared::systemd;
use softphone_shared::unix_now;
use softphone_verifier::revocations::Revocations;
use softphone_verifier::state::Verifier;
use softphone_verifier::{Error, Result, listener, watchdog};

const WHO: &str = "softphone-verifier";

/// Token verifier for nginx `auth_request` and nchan subscriber authorization.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (default: /etc/softphone-backend/softphone.toml if it exists,
    /// else built-in defaults; `SOFTPHONE_*` variables override)
    #[arg(long, env = "SOFTPHONE_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any thread or connection.
    #[allow(unsafe_code)]
    let applied = unsafe { softphone_shared::sqlite_setup::apply() };
    debug_assert!(applied, "SQLite started before main");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("softphone-verifier: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let config_file = Config::locate(args.config.as_deref(), Path::new(SYSTEM_CONFIG));
    let config = Config::load(config_file.as_deref())?;
    // First, so that every thread started below inherits it.
    let sched = softphone_verifier::sched::batch();
    let keys = LiveKeys::open(&config.key_file(), "softphone-verifier")?;
    // Whichever daemon starts first creates the database; the verifier then only
    // ever reads it.
    let database = config.database();
    drop(Store::open(&database)?);
    let revocations = Revocations::open(&database, unix_now(), config.leeway)?;
    let log = SecurityLog::open(&config.security_log(), config.syslog, "softphone-verifier")?;
    let verifier = Arc::new(Verifier::new(keys, config.leeway, revocations, Some(log)));

    // 64 KiB coroutine stacks: a request that finds the epoch moved runs a SQLite
    // query on its own stack (measured to need more than 8 KiB).
    may::config()
        .set_workers(config.verifier_workers)
        .set_stack_size(0x2000);

    spawn_signal_thread(Arc::clone(&verifier))?;
    spawn_maintenance_thread(Arc::clone(&verifier));
    // Subscriptions live at most as long as a token: that far back is what a
    // verifier that starts must still end.
    let lookback = config.access_ttl + config.leeway;
    softphone_verifier::subscriptions::start(
        Arc::clone(&verifier),
        config.nchan_control_listen,
        lookback,
    )
    .map_err(|source| Error::Thread {
        name: "subscriptions",
        source,
    })?;
    if let Some(path) = &config.verifier_socket() {
        listener::start_unix(Arc::clone(&verifier), path)?;
        eprintln!("softphone-verifier: listening on unix:{}", path.display());
    }
    let server = listener::start_tcp(Arc::clone(&verifier), config.verifier_listen)?;
    eprintln!(
        "softphone-verifier: listening on {} ({} worker(s), {sched})",
        config.verifier_listen, config.verifier_workers
    );
    // The key, the sessions and every listener are up.
    systemd::ready(WHO);
    watchdog::start(verifier);
    let _ = server.join();
    Ok(())
}

fn spawn_signal_thread(verifier: Arc<Verifier>) -> Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(Error::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    systemd::reloading(WHO);
                    verifier.reload();
                    systemd::ready(WHO);
                } else {
                    // Every answer is a few microseconds and nginx retries a dropped
                    // keep-alive connection, so stopping at once is clean.
                    eprintln!("softphone-verifier: stopping");
                    systemd::stopping(WHO);
                    std::process::exit(0);
                }
            }
        })
        .map_err(Error::Signals)?;
    Ok(())
}

fn spawn_maintenance_thread(verifier: Arc<Verifier>) {
    let spawned = std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || {
            loop {
                verifier.wait_for_upkeep();
                verifier.maintain(unix_now());
            }
        });
    if let Err(e) = spawned {
        eprintln!(
            "softphone-verifier: no maintenance thread ({e}); revocations still work per request"
        );
    }
}
