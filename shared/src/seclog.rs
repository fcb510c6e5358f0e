//! The security log: one line per event in the original module's format, so
//! existing fail2ban jails keep matching:
//!
//! `[AUTH_FAILED] Failed login attempt for user: 201 | From: 10.0.0.5 | Time: 2026-11-27 10:00:00`
//!
//! Lines go to `<log dir>/security.log` (appended with one `write` each, so the two
//! daemons can share the file) and, when enabled, to syslog at `notice`. Times are
//! UTC. User-supplied text is escaped so it can never start a new line or forge a
//! `| From:` field, and no token, password or key is ever passed in here.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::{Error, Result};

/// The longest username we copy into a line, in bytes (escaped text is longer).
const MAX_USER_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    AuthSuccess,
    AuthFailed,
    AuthRateLimited,
    Logout,
    RefreshReuse,
    MediaAccessDenied,
}

impl Event {
    pub fn tag(self) -> &'static str {
        match self {
            Event::AuthSuccess => "AUTH_SUCCESS",
            Event::AuthFailed => "AUTH_FAILED",
            Event::AuthRateLimited => "AUTH_RATE_LIMITED",
            Event::Logout => "LOGOUT",
            Event::RefreshReuse => "REFRESH_REUSE",
            Event::MediaAccessDenied => "MEDIA_ACCESS_DENIED",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Event::AuthSuccess => "Successful login for user: ",
            Event::AuthFailed => "Failed login attempt for user: ",
            Event::AuthRateLimited => "Too many login attempts for user: ",
            Event::Logout => "User logged out: ",
            Event::RefreshReuse => "Refresh token reuse, session revoked for user: ",
            Event::MediaAccessDenied => "Media access denied for user: ",
        }
    }
}

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

pub struct SecurityLog {
    path: PathBuf,
    file: Mutex<File>,
    syslog: Mutex<Option<Syslog>>,
    limiter: Mutex<Limiter>,
    per_address: Mutex<PerAddress>,
}

impl std::fmt::Debug for SecurityLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityLog")
            .field("path", &self.path)
            .finish()
    }
}

/// A per-second budget for events an attacker can trigger at line rate.
#[derive(Debug, Default)]
struct Limiter {
    second: i64,
    written: u32,
    suppressed: u64,
}

/// Lines per second for rate-limited events; the rest are counted and summarised.
pub const RATE_LIMIT_PER_SECOND: u32 = 20;

/// The addresses given a line in the current minute.
#[derive(Debug, Default)]
struct PerAddress {
    minute: i64,
    logged: HashSet<IpAddr>,
}

/// Distinct addresses given their own line per minute by
/// [`SecurityLog::log_per_address`]; past that, the per-second budget applies.
pub const ADDRESSES_PER_MINUTE: usize = 10_000;

impl SecurityLog {
    /// Opens (creating) the log for appending. `process` names us in syslog.
    pub fn open(path: &Path, use_syslog: bool, process: &str) -> Result<SecurityLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = open_append(path)?;
        let syslog = if use_syslog {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_AUTH,
                hostname: None,
                process: process.to_owned(),
                pid: std::process::id(),
            };
            match syslog::unix(formatter) {
                Ok(logger) => Some(logger),
                Err(e) => {
                    eprintln!(
                        "security log: syslog unavailable ({e}); writing to {} only",
                        path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(SecurityLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            syslog: Mutex::new(syslog),
            limiter: Mutex::new(Limiter::default()),
            per_address: Mutex::new(PerAddress::default()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-opens the file after logrotate moved it (SIGHUP).
    pub fn reopen(&self) -> Result<()> {
        let file = open_append(&self.path)?;
        if let Ok(mut slot) = self.file.lock() {
            *slot = file;
        }
        Ok(())
    }

    /// Writes one event line.
    pub fn log(&self, event: Event, user: &str, from: Option<IpAddr>, now: i64) {
        self.write(&format_line(event, "", user, from, now));
    }

    /// Writes a denial with its reason, at most [`RATE_LIMIT_PER_SECOND`] lines a
    /// second; the excess is counted and reported in one summary line.
    pub fn log_limited(
        &self,
        event: Event,
        reason: &str,
        user: &str,
        from: Option<IpAddr>,
        now: i64,
    ) {
        let summary = {
            let Ok(mut limiter) = self.limiter.lock() else {
                return;
            };
            let mut summary = None;
            if limiter.second != now {
                if limiter.suppressed > 0 {
                    summary = Some(limiter.suppressed);
                }
                *limiter = Limiter {
                    second: now,
                    written: 0,
                    suppressed: 0,
                };
            }
            if limiter.written >= RATE_LIMIT_PER_SECOND {
                limiter.suppressed += 1;
                return;
            }
            limiter.written += 1;
            summary
        };
        if let Some(count) = summary {
            self.write(&format!(
                "[{}] {count} more events suppressed by the rate limit | From: - | Time: {}\n",
                event.tag(),
                timestamp(now)
            ));
        }
        self.write(&format_line(event, reason, user, from, now));
    }

    /// Writes an event an address can repeat at line rate (a refused login) at
    /// most once per address and minute, in the plain format fail2ban matches: every
    /// such address shows up within the minute, and a persistent one once a
    /// minute, enough for the jail's `maxretry` within its `findtime`. Past
    /// [`ADDRESSES_PER_MINUTE`] distinct addresses in a minute, the rest share
    /// the [`RATE_LIMIT_PER_SECOND`] budget (and its summary line).
    pub fn log_per_address(&self, event: Event, user: &str, from: IpAddr, now: i64) {
        let first = {
            let Ok(mut seen) = self.per_address.lock() else {
                return;
            };
            // Only forward: a line stamped late with an earlier minute (a login
            // that waited) must not start that minute over, and the next one
            // after it.
            let minute = now.div_euclid(60);
            if minute > seen.minute {
                seen.minute = minute;
                seen.logged.clear();
            }
            if seen.logged.contains(&from) {
                return;
            }
            seen.logged.len() < ADDRESSES_PER_MINUTE && seen.logged.insert(from)
        };
        if first {
            self.write(&format_line(event, "", user, Some(from), now));
        } else {
            self.log_limited(event, "", user, Some(from), now);
        }
    }

    fn write(&self, line: &str) {
        if let Ok(mut file) = self.file.lock()
            && let Err(e) = file.write_all(line.as_bytes())
        {
            eprintln!("security log {}: write failed: {e}", self.path.display());
        }
        if let Ok(mut slot) = self.syslog.lock()
            && let Some(logger) = slot.as_mut()
            && logger.notice(line.trim_end()).is_err()
        {
            eprintln!("security log: syslog write failed; continuing with the file only");
            *slot = None;
        }
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Builds one line, newline included.
pub fn format_line(
    event: Event,
    reason: &str,
    user: &str,
    from: Option<IpAddr>,
    now: i64,
) -> String {
    let mut line = String::with_capacity(128);
    line.push('[');
    line.push_str(event.tag());
    line.push_str("] ");
    let text = event.text();
    if reason.is_empty() {
        line.push_str(text);
    } else {
        // "Media access denied (expired) for user: "
        let (head, tail) = text.split_once(" for user: ").unwrap_or((text, ""));
        line.push_str(head);
        line.push_str(" (");
        escape_into(&mut line, reason);
        line.push_str(") for user: ");
        line.push_str(tail);
    }
    if user.is_empty() {
        line.push('-');
    } else {
        escape_into(&mut line, user);
    }
    line.push_str(" | From: ");
    match from {
        Some(ip) => line.push_str(&ip.to_string()),
        None => line.push('-'),
    }
    line.push_str(" | Time: ");
    line.push_str(&timestamp(now));
    line.push('\n');
    line
}

/// Copies printable ASCII, except `\` and `|`; every other byte becomes `\xNN`.
/// Long input is cut and marked with `...`.
fn escape_into(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let cut = bytes.len() > MAX_USER_BYTES;
    for &b in &bytes[..bytes.len().min(MAX_USER_BYTES)] {
        if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'|' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        out.push_str("...");
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn timestamp(now: i64) -> String {
    let when = OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    when.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap_or_else(|_| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;

    use super::*;

    #[test]
    fn the_original_format() {
        let line = format_line(
            Event::AuthFailed,
            "",
            "201",
            Some("10.0.0.5".parse().unwrap()),
            1_795_773_600,
        );
        assert_eq!(
            line,
            "[AUTH_FAILED] Failed login attempt for user: 201 | From: 10.0.0.5 | Time: 2026-11-27 10:00:00\n"
        );
    }

    #[test]
    fn hostile_usernames_stay_on_one_line_and_cannot_forge_fields() {
        let line = format_line(
            Event::AuthFailed,
            "",
            "x\r\n[AUTH_SUCCESS] Successful login for user: 201 | From: 8.8.8.8",
            None,
            0,
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches("| From:").count(), 1, "{line}");
        assert!(line.contains("x\\x0d\\x0a[AUTH_SUCCESS]"), "{line}");
    }

    #[test]
    fn long_and_non_ascii_names_are_cut_and_escaped() {
        let line = format_line(Event::AuthFailed, "", &"é".repeat(100), None, 0);
        assert!(line.contains("\\xc3\\xa9") && line.contains("..."));
        assert!(line.len() < 400);
    }

    #[test]
    fn refusals_are_logged_once_per_address_and_minute() {
        let dir = TestDir::new("seclog-per-address");
        let path = dir.path().join("security.log");
        let log = SecurityLog::open(&path, false, "test").unwrap();
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "10.0.0.6".parse().unwrap();
        // 60 s starting on a minute boundary (1_795_773_600 is 10:00:00).
        for now in 1_795_773_600..1_795_773_660 {
            for _ in 0..100 {
                log.log_per_address(Event::AuthRateLimited, "201", a, now);
            }
        }
        log.log_per_address(Event::AuthRateLimited, "201", b, 1_795_773_659);
        log.log_per_address(Event::AuthRateLimited, "201", a, 1_795_773_660);
        // A line stamped late with the minute before (a login that waited)
        // starts no minute over: neither it nor the next one is written.
        log.log_per_address(Event::AuthRateLimited, "201", a, 1_795_773_659);
        log.log_per_address(Event::AuthRateLimited, "201", a, 1_795_773_661);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "[AUTH_RATE_LIMITED] Too many login attempts for user: 201 | From: 10.0.0.5 | Time: 2026-11-27 10:00:00\n\
             [AUTH_RATE_LIMITED] Too many login attempts for user: 201 | From: 10.0.0.6 | Time: 2026-11-27 10:00:59\n\
             [AUTH_RATE_LIMITED] Too many login attempts for user: 201 | From: 10.0.0.5 | Time: 2026-11-27 10:01:00\n"
        );

        // Past the per-minute set, the per-second budget bounds the volume.
        for i in 0..(ADDRESSES_PER_MINUTE as u32 + 100) {
            let from = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            log.log_per_address(Event::AuthRateLimited, "201", from, 1_795_773_720);
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(
            lines,
            3 + ADDRESSES_PER_MINUTE + RATE_LIMIT_PER_SECOND as usize
        );
    }

    #[test]
    fn denials_are_rate_limited_and_summarised() {
        let dir = TestDir::new("seclog");
        let path = dir.path().join("security.log");
        let log = SecurityLog::open(&path, false, "test").unwrap();
        for _ in 0..100 {
            log.log_limited(Event::MediaAccessDenied, "expired", "201", None, 1000);
        }
        log.log_limited(Event::MediaAccessDenied, "expired", "201", None, 1001);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), RATE_LIMIT_PER_SECOND as usize + 2);
        assert!(lines[RATE_LIMIT_PER_SECOND as usize].contains("80 more events suppressed"));
        assert!(lines[0].starts_with(
            "[MEDIA_ACCESS_DENIED] Media access denied (expired) for user: 201 | From: - | Time: "
        ));
    }
}
