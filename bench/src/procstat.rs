//! CPU time and memory of processes, from /proc.

use std::time::Duration;

/// Clock ticks per second for /proc's times (Linux uses 100 everywhere we run).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of a process (or `self`), and of its waited-for children.
pub fn cpu_time(pid: &str) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start at ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime, stime, cutime, cstime are fields 14-17 of the full line: 11-14 here.
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let own = get(11)? + get(12)?;
    let children = get(13)? + get(14)?;
    Some((
        Duration::from_secs_f64(own / TICKS_PER_SECOND),
        Duration::from_secs_f64(children / TICKS_PER_SECOND),
    ))
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
