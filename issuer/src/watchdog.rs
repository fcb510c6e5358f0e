//! The systemd watchdog's pings (`WatchdogSec=`), from a task on the async
//! runtime that, before each ping, takes the store's write lock and lets it go
//! through `App::write`: the connection, its mutex and the blocking pool that
//! every login, refresh and logout goes through.
//!
//! A timer thread of its own would keep pinging an issuer that answers nobody.
//! This task stops pinging when the runtime is blocked, when the writer
//! connection is held by a write that never returns (a hung fsync or disk), or
//! when the blocking pool is wedged, and systemd restarts us. A lock another
//! process holds on the database only delays a ping by SQLite's busy timeout
//! (5 s): the round trip then fails, is logged, and the ping goes out, since a
//! restart would not release that lock (and reads, health and profile, still
//! work meanwhile).

use std::sync::Arc;

use softphone_shared::systemd;

use crate::state::App;

const WHO: &str = "softphone-issuer";

/// Starts pinging when systemd asked for a watchdog; does nothing otherwise.
pub fn start(app: Arc<App>) {
    let Some(period) = systemd::watchdog_period() else {
        return;
    };
    tokio::spawn(async move {
        let mut watchdog = systemd::Watchdog::new(WHO);
        loop {
            // Its failure is logged inside; the ping says the round trip ended.
            let _ = app.write(|store| store.take_write_lock()).await;
            watchdog.ping();
            tokio::time::sleep(period).await;
        }
    });
}
