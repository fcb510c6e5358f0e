//! A stand-in for systemd's notification socket: a daemon started with
//! `NOTIFY_SOCKET` set to [`NotifySocket::path`] (and `WATCHDOG_USEC`) sends its
//! `READY=1`, `WATCHDOG=1`, … here, and the test reads them with the time each
//! arrived.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The watchdog the tests ask for (`WATCHDOG_USEC`): one second, so a ping every
/// half second.
pub const WATCHDOG_USEC: &str = "1000000";
pub const PING_EVERY: Duration = Duration::from_millis(500);
/// The longest gap between pings tolerated on a loaded machine: three intervals
/// (systemd would already have restarted the daemon at two).
pub const LATE: Duration = Duration::from_millis(1500);

/// One datagram: its lines, and when it arrived.
#[derive(Debug, Clone)]
pub struct Message {
    pub at: Instant,
    pub text: String,
}

impl Message {
    pub fn has_line(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    pub fn is_ping(&self) -> bool {
        self.has_line("WATCHDOG=1")
    }
}

pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Listens on `dir/notify.sock`.
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next message, if one arrives before `deadline`.
    pub fn recv_until(&self, deadline: Instant) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Zero would mean "no timeout".
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    return Some(Message {
                        at: Instant::now(),
                        text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Every message that arrives before `deadline`.
    pub fn all_until(&self, deadline: Instant) -> Vec<Message> {
        std::iter::from_fn(|| self.recv_until(deadline)).collect()
    }

    /// Waits for a message with the line `line`, passing over others (pings);
    /// panics, with what did arrive, when none comes within `timeout`.
    pub fn expect(&self, line: &str, timeout: Duration) -> Message {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(message) = self.recv_until(deadline) {
            if message.has_line(line) {
                return message;
            }
            seen.push(message.text);
        }
        panic!("no {line} within {timeout:?}; received {seen:?}")
    }

    /// The next watchdog ping within `timeout`, passing over other messages.
    pub fn next_ping(&self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        std::iter::from_fn(|| self.recv_until(deadline))
            .find(Message::is_ping)
            .map(|m| m.at)
    }

    /// When the watchdog pings that arrive before `deadline` came.
    pub fn pings_until(&self, deadline: Instant) -> Vec<Instant> {
        self.all_until(deadline)
            .iter()
            .filter(|m| m.is_ping())
            .map(|m| m.at)
            .collect()
    }
}

impl NotifySocket {
    /// Watches the pings for `window`; asserts they keep coming, none later
    /// than [`LATE`] after the one before. Returns the gaps between them.
    pub fn steady(&self, window: Duration) -> Vec<Duration> {
        let start = Instant::now();
        let mut pings = vec![start];
        pings.extend(self.pings_until(start + window));
        pings.push(Instant::now());
        let gaps = gaps(&pings);
        let longest = gaps.iter().max().copied().unwrap_or_default();
        assert!(
            gaps.len() >= 4 && longest <= LATE,
            "pings not steady over {window:?}: gaps {gaps:?}"
        );
        // The first and last gaps are cut by the window.
        gaps[1..gaps.len() - 1].to_vec()
    }

    /// Right after a ping, makes the daemon stuck with `stick`, keeps it so
    /// for `hold`, lets it go with `release`, and asserts the pings stopped
    /// while it was stuck and came back promptly once it was let go.
    pub fn stall<T>(
        &self,
        hold: Duration,
        stick: impl FnOnce() -> T,
        release: impl FnOnce(T),
    ) -> Stall {
        let before = self
            .next_ping(LATE)
            .unwrap_or_else(|| panic!("no ping within {LATE:?} before the stall"));
        let stuck_at = Instant::now();
        let stuck = stick();
        let during = self.pings_until(stuck_at + hold);
        let released_at = Instant::now();
        release(stuck);
        let resumed = self
            .next_ping(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no ping within 10 s after the stall ended"));
        let last = during.last().copied().unwrap_or(before);
        let stall = Stall {
            last_ping: last.saturating_duration_since(stuck_at),
            silence: resumed - last,
            resumed: resumed - released_at,
        };
        assert!(
            released_at - last >= hold.saturating_sub(LATE),
            "pings went on while the daemon was stuck ({hold:?}): {} during it, {stall:?}",
            during.len()
        );
        assert!(
            stall.resumed <= LATE,
            "pings slow to resume after the stall: {stall:?}"
        );
        stall
    }
}

/// What the pings did around a stall.
#[derive(Debug)]
pub struct Stall {
    /// From the moment the daemon was made stuck to its last ping then (zero
    /// when the last one came before).
    pub last_ping: Duration,
    /// The longest time without a ping.
    pub silence: Duration,
    /// From the end of the stall to the first ping after it.
    pub resumed: Duration,
}

/// The time between consecutive pings.
pub fn gaps(pings: &[Instant]) -> Vec<Duration> {
    pings.windows(2).map(|w| w[1] - w[0]).collect()
}
