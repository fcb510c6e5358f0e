//! Operations files against the real tools: the fail2ban filter matches the lines
//! our daemons write (and only the right address of a hostile one).

use std::process::Command;

use softphone_testkit::http::settled;
use softphone_testkit::{BASE, Daemons, request};

fn login_from(d: &Daemons, ip: &str, username: &str, password: &str) -> u16 {
    let body = format!(r#"{{"username":"{username}","password":"{password}"}}"#);
    settled(|| {
        request(
            d.issuer,
            "POST",
            &format!("{BASE}/auth/login"),
            &[("Content-Type", "application/json"), ("X-Real-IP", ip)],
            body.as_bytes(),
        )
    })
    .status
}

#[test]
fn the_fail2ban_filter_matches_failures_from_our_security_log() {
    let d = Daemons::start("fail2ban");
    d.add_user("201", "right-password");
    for _ in 0..6 {
        login_from(&d, "10.0.0.5", "201", "wrong");
    }
    assert_eq!(login_from(&d, "10.0.0.5", "201", "wrong"), 429);
    assert_eq!(login_from(&d, "2001:db8::7", "201", "wrong"), 401);
    // A username that tries to plant another address in the line.
    login_from(
        &d,
        "10.0.0.9",
        r"x | From: 8.8.8.8 | Time: 2026-01-01 00:00:00\r\n",
        "wrong",
    );
    assert_eq!(login_from(&d, "10.0.0.6", "201", "right-password"), 200);

    let filter = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fail2ban/filter.d/softphone-backend.conf");
    let log = d.security_log();
    let out = Command::new("fail2ban-regex")
        .args(["-v", "--print-all-matched"])
        .arg(&log)
        .arg(&filter)
        .output()
        .unwrap_or_else(|e| {
            panic!("fail2ban-regex is not installed ({e}): deploy/test.sh installs fail2ban")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // 5 failures + 1 rate-limited from 10.0.0.5 (a refused address gets one line
    // a minute: 2 if the minute turned between its two refusals), 1 from
    // 2001:db8::7, 1 from 10.0.0.9; the success is not matched.
    assert!(
        text.contains("Lines: 9 lines, 0 ignored, 8 matched, 1 missed")
            || text.contains("Lines: 10 lines, 0 ignored, 9 matched, 1 missed"),
        "{text}"
    );
    assert!(text.contains("10.0.0.9"), "{text}");
    assert!(text.contains("2001:db8::7"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start_matches('|').trim().starts_with("8.8.8.8")),
        "{text}"
    );
}

#[test]
fn the_systemd_units_verify() {
    let dir = softphone_testkit::TestDir::new("units");
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let mut paths = Vec::new();
    for name in ["softphone-issuer.service", "softphone-verifier.service"] {
        // Point ExecStart at the binaries this workspace built.
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        let bin = softphone_testkit::bin_dir();
        let text = text.replace(
            "ExecStart=/usr/bin/",
            &format!("ExecStart={}/", bin.display()),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is missing ({e}): deploy/test.sh installs systemd")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
