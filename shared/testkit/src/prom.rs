//! Prometheus for tests: scrape a daemon, read one sample of the text, and
//! have Debian's `promtool` judge the text and our alert rules. Fails loudly
//! when promtool is missing: `deploy/test.sh` installs it (package
//! `prometheus`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::http;

/// What `GET /metrics` answered at `addr`, asserting a 200 in Prometheus's
/// text format.
pub fn scrape(addr: SocketAddr) -> String {
    let r = http::request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "scrape of {addr}: {}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "scrape of {addr}"
    );
    r.text()
}

/// The value of the sample `series` (its name and labels as the encoder
/// writes them, e.g. `x_total{result="ok"}`); panics when there is none.
pub fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in the scrape:\n{text}"))
}

/// As [`value`], `None` when there is no such sample or it is not a number.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))?
        .parse()
        .ok()
}

/// How much `series` grew from scrape `before` to scrape `after`.
pub fn delta(before: &str, after: &str, series: &str) -> f64 {
    value(after, series) - value(before, series)
}

/// Every metric family a scrape describes (`# TYPE <name> …` lines).
pub fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// `promtool` itself, or a loud failure naming the package.
pub fn promtool() -> Command {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "promtool is not installed: run deploy/test.sh, which installs Debian's prometheus package"
    );
    Command::new("promtool")
}

/// Runs `promtool check metrics` on `text`; returns what it said (nothing
/// when the text is clean), asserting it found no problem.
pub fn check_metrics(text: &str) -> String {
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics found problems:\n{said}\nin:\n{text}"
    );
    said
}

/// Runs `promtool <args>` in `dir`; returns (success, stdout + stderr).
pub fn run(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = promtool().current_dir(dir).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
