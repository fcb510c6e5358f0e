//! What the daemons tell systemd under `Type=notify`: ready, reloading,
//! stopping, and the watchdog's pings. Without `NOTIFY_SOCKET` (started by hand,
//! or by a `Type=simple` unit) every call does nothing.
//!
//! Where the pings come from is each daemon's own choice (its `watchdog.rs`): the
//! loop that does the work, so that a daemon alive but stuck stops pinging.

use std::time::Duration;

use sd_notify::NotifyState;

/// Start-up (or a reload) is done: the daemon answers requests.
pub fn ready(who: &str) {
    send(who, &[NotifyState::Ready]);
}

/// A reload (SIGHUP) begins; [`ready`] ends it. systemd 253 and later want the
/// monotonic time with it, to tell this reload from an earlier one.
pub fn reloading(who: &str) {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(who, &[NotifyState::Reloading, now]),
        Err(_) => send(who, &[NotifyState::Reloading]),
    }
}

/// The daemon is shutting down (SIGTERM): a stop, not a crash.
pub fn stopping(who: &str) {
    send(who, &[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half of `WatchdogSec=`, as
/// sd_watchdog_enabled(3) advises, so one late ping is not yet a restart.
/// `None` when systemd set no watchdog for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|timeout| !timeout.is_zero())
        .map(|timeout| timeout / 2)
}

/// Sends `WATCHDOG=1`; a failure is reported once, not at every ping, until a
/// ping goes through again.
#[derive(Debug)]
pub struct Watchdog {
    who: &'static str,
    failing: bool,
}

impl Watchdog {
    pub fn new(who: &'static str) -> Watchdog {
        Watchdog {
            who,
            failing: false,
        }
    }

    pub fn ping(&mut self) {
        match sd_notify::notify(&[NotifyState::Watchdog]) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    eprintln!("{}: cannot ping the systemd watchdog: {e}", self.who);
                }
            }
        }
    }
}

fn send(who: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        eprintln!("{who}: cannot notify systemd: {e}");
    }
}
