//! The systemd watchdog's pings (`WatchdogSec=`), from a may coroutine that,
//! before each ping, goes through the state a request needs
//! ([`Verifier::probe`]).
//!
//! Why a coroutine: it runs on the worker threads that serve nginx's
//! connections, and only when one of them is free. A thread of its own would
//! keep pinging while every worker is blocked (in a write that never returns, on
//! a lock a stuck thread holds, in SQLite on a hung disk): a verifier alive but
//! answering nobody, and nginx refusing every media and WebSocket request. This
//! coroutine then does not run, the pings stop, and systemd restarts us.

use std::sync::Arc;

use may::go;
use softphone_shared::systemd;
use softphone_shared::unix_now;

use crate::state::Verifier;

const WHO: &str = "softphone-verifier";

/// Starts pinging when systemd asked for a watchdog; does nothing otherwise.
/// Call after `may::config()`: the coroutine takes the workers and the stack
/// size the requests have.
pub fn start(verifier: Arc<Verifier>) {
    let Some(period) = systemd::watchdog_period() else {
        return;
    };
    go!(move || {
        let mut watchdog = systemd::Watchdog::new(WHO);
        loop {
            verifier.probe(unix_now());
            watchdog.ping();
            may::coroutine::sleep(period);
            // may resumes a sleeping coroutine on its timer thread, which never
            // serves a connection: go back to the workers' queue first.
            may::coroutine::yield_now();
        }
    });
}
