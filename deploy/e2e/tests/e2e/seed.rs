//! The seed README's shell examples, run verbatim with bash against our nginx.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use softphone_testkit::{BASE, eventually};

use crate::{assert_no_secrets, stack};

pub const SCRIPT: &str = include_str!("../../seed-examples.sh");

/// The logout step, to move it to the end for the second run.
pub const LOGOUT_STEP: &str = "# 5) Выход\ncurl -sS -X POST \"$BASE_URL/auth/logout\" \\\n  -H \"Authorization: Bearer $ACCESS_TOKEN\"\n";

/// Runs `script` with bash; each curl call also prints `@@<status>@@` after its
/// body, so the statuses can be read in order without touching the script.
fn run(script: &str, base_url: &str) -> (Vec<u16>, String) {
    run_with_env(script, base_url, &[])
}

/// As [`run`], with more environment (curl reads `CURL_CA_BUNDLE`).
pub fn run_with_env(script: &str, base_url: &str, env: &[(&str, &str)]) -> (Vec<u16>, String) {
    let prelude = "curl() { command curl -w '\\n@@%{http_code}@@\\n' \"$@\"; }\n";
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .env("BASE_URL", base_url)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the seed script finishes (it hung)",
        || child.try_wait().unwrap(),
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let statuses = out
        .split("@@")
        .skip(1)
        .step_by(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (statuses, out)
}

/// The token the script extracted with its own sed line, from its echo of the login.
/// Asserts the statuses of the seed's examples as written (logout before the
/// checks): login, profile, refresh, logout, health, check-media-access,
/// invalid token, refresh-as-access, empty credentials, publish (from
/// 127.0.0.1: 201, or 202 without subscribers), subscribe. The 401s after the
/// logout come from the daemons through nginx: a verifier nginx could not
/// reach would be a 503.
pub fn assert_seed_statuses(statuses: &[u16], out: &str) {
    let publish = statuses.get(9).copied().unwrap_or(0);
    assert!(publish == 201 || publish == 202, "publish {publish}: {out}");
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 401, 401, 401, 400, publish, 401],
        "{out}"
    );
}

pub fn access_token(out: &str) -> String {
    let start = out.find(r#""access_token":""#).unwrap() + 16;
    out[start..].split('"').next().unwrap().to_owned()
}

#[test]
fn the_committed_script_is_the_seed_verbatim() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/seed/ModuleSoftphoneBackend-README.md");
    match std::fs::read_to_string(&seed) {
        Ok(readme) => {
            let body = SCRIPT
                .split_once("BASE_URL=\"${BASE_URL:?set BASE_URL}\"\n")
                .unwrap()
                .1;
            assert!(
                readme.contains(body),
                "deploy/e2e/seed-examples.sh differs from the seed README"
            );
        }
        // The seed sits beside the repository on our machines and in CI; a
        // checkout elsewhere still runs the script itself below.
        Err(_) => eprintln!("note: {} not found; compared nothing", seed.display()),
    }
    assert!(SCRIPT.contains(LOGOUT_STEP));
}

#[test]
fn the_seed_examples_as_written_logout_before_the_checks() {
    let (d, nginx) = stack("seed-verbatim", "http://127.0.0.1:9/");
    let base = format!("http://{}{BASE}", nginx.addr);
    let (statuses, out) = run(SCRIPT, &base);
    assert_seed_statuses(&statuses, &out);
    // Our logout revokes the session, so the checks after it are refused.
    assert!(out.contains(r#"{"success":true,"message":"Logged out successfully"}"#));
    assert!(out.contains(r#"{"success":false,"error":"Invalid credentials provided""#));
    assert_no_secrets(&d, &nginx, &[&access_token(&out)]);
}

#[test]
fn the_seed_examples_with_the_logout_moved_to_the_end() {
    let (d, nginx) = stack("seed-logout-last", "http://127.0.0.1:9/");
    let base = format!("http://{}{BASE}", nginx.addr);
    let script = format!("{}\n{LOGOUT_STEP}", SCRIPT.replace(LOGOUT_STEP, ""));
    let started = Instant::now();
    let (statuses, out) = run(&script, &base);
    // login, profile, refresh, health, check, invalid, refresh-as-access, empty,
    // publish, subscribe, logout
    let publish = statuses[8];
    assert!(publish == 201 || publish == 202, "publish {publish}");
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 200, 401, 403, 400, publish, 200, 200],
        "{out}"
    );
    // The subscriber got the message just published, at once (not after a poll timeout).
    assert!(
        out.contains("{\"event\":\"users-state-update\"}\n@@200@@"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_no_secrets(&d, &nginx, &[&access_token(&out)]);
}
