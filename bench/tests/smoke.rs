//! CI's short run of the whole suite: every scenario for a second against the
//! real stack (debug builds, so the numbers mean nothing), checking that it
//! produces its reports without errors or wrong answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// Process ids of PHP-FPM pool workers of the bench's pool.
fn php_workers() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"php-fpm: pool bench"))
        })
        .collect()
}

/// Runs the suite for one second per scenario with `extra` arguments; asserts
/// it succeeded and returns its report directory and standard output.
fn suite(name: &str, extra: &[&str]) -> (softphone_testkit::TestDir, String) {
    let out_dir = softphone_testkit::TestDir::new(name);
    let out = Command::new(env!("CARGO_BIN_EXE_softphone-bench"))
        .args([
            "suite",
            "--duration",
            "1",
            "--connections",
            "16",
            "--strict",
            // The directory family's call records: enough for its queries
            // and links, seeded in a moment by a debug build.
            "--cdr-rows",
            "20000",
            // The scale family at 1 000 and 10 000 sessions, not a million.
            "--scale-max",
            "10000",
        ])
        .args(extra)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (out_dir, stdout)
}

#[test]
fn the_suite_runs_every_scenario_and_writes_its_reports() {
    let before = php_workers();
    let (out_dir, stdout) = suite("bench-smoke", &[]);
    // The peers are stopped with everything they started.
    let left: Vec<u32> = php_workers()
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    assert!(left.is_empty(), "PHP-FPM workers left running: {left:?}");
    for scenario in [
        "verifier-floor",
        "verifier-valid",
        "verifier-mix",
        "media-floor",
        "media-auth",
        "media-auth-tcp",
        "media-auth-1w",
        "nchan-floor",
        "nchan-auth",
        "issuer-floor",
        "issuer-profile",
        "issuer-refresh",
        "issuer-login",
        "issuer-login-wrong",
        "issuer-login-unknown",
        "issuer-profile-flood",
        "mikopbx-profile-idle",
        "mikopbx-profile-flood",
        "mikopbx-refresh-idle",
        "mikopbx-refresh-flood",
        "directory-profile",
        "directory-users-304",
        "directory-users",
        "directory-history",
        "generator-ours",
        "peer-floor",
        "peer-lua-ffi",
        "peer-lua-luaossl",
        "peer-php-fpm",
        "peer-lua-ffi-1w",
        "scale-verifier-1000",
        "scale-verifier-10000",
        "scale-verifier-reference-10000",
        "scale-floor-10000",
        "scale-refresh-10000",
        "scale-refresh-reference-10000",
        "scale-login-10000",
        "scale-login-reference-10000",
        "scale-purge-profile-10000",
        "scale-purge-refresh-10000",
        "scale-burst",
    ] {
        assert!(
            stdout.contains(&format!("| {scenario} — ")),
            "{scenario} missing:\n{stdout}"
        );
    }
    for target in [
        "| requests allowed after their logout's 200 | 0.000 | <= 0 | yes |",
        "| scale: logouts among 10000 sessions allowed on the next request | 0.000 | <= 0 | yes |",
    ] {
        assert!(stdout.contains(target), "{target} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("| cost, by live sessions | 1000 | 10000 |"),
        "{stdout}"
    );
    let files: Vec<String> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for ext in [".md", ".json", ".svg", "-curves.svg"] {
        assert!(
            files.iter().any(|f| f.ends_with(ext)),
            "no {ext} in {files:?}"
        );
    }
    let json = files.iter().find(|f| f.ends_with(".json")).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join(json)).unwrap()).unwrap();
    assert!(report["rows"].as_array().unwrap().len() >= 17);
    assert!(!stdout.contains("comparison peers not run"), "{stdout}");
    assert!(
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["requests"].as_u64().unwrap() > 0)
    );
}

#[test]
fn only_takes_families_comma_separated() {
    let (_out_dir, stdout) = suite("bench-smoke-only", &["--only", "verifier,nchan"]);
    for scenario in ["verifier-floor", "verifier-mix", "nchan-auth"] {
        assert!(
            stdout.contains(&format!("| {scenario} — ")),
            "{scenario} missing:\n{stdout}"
        );
    }
    for scenario in [
        "media-floor",
        "peer-floor",
        "issuer-floor",
        "generator-ours",
        "scale-verifier-1000",
    ] {
        assert!(
            !stdout.contains(&format!("| {scenario} — ")),
            "{scenario} ran although not asked for:\n{stdout}"
        );
    }
}
