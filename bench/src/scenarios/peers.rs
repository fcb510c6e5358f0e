//! The same media request against the baselines of bench/peers/: in-nginx Lua
//! (FFI and luaossl HMAC) and PHP-FPM behind auth_request. The headline holds
//! our deploy defaults against the peers at the same worker count
//! (`worker_processes auto`, as run.sh renders it), both with access logs on;
//! a second row does the same with one worker.

use softphone_testkit::request;

use crate::load::Outcome;
use crate::peers::{self, Peers};
use crate::report::{Report, Target};
use crate::scenarios::media::Fronts;
use crate::stack::{SERVER_CPU, Settings, Stack, measure, ok_get, per_session, plan};

pub(crate) fn run(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
    ours: &Fronts,
) -> Result<(), String> {
    let Some(baselines) = start(settings, stack, report, "auto")? else {
        return Ok(());
    };
    let outcome = measure(
        "peer floor: nginx+lua static",
        &plan(settings, baselines.addr, vec![ok_get("/static.mp3")]),
    )?;
    let floor = report.floor(
        "peer-floor",
        "peer nginx (workers auto, Lua module loaded) serving the file without auth",
        &outcome,
    );
    let mut rates = Vec::new();
    for (scenario, label, path) in [
        (
            "peer-lua-ffi",
            "in-nginx Lua HS256, HMAC via LuaJIT FFI to libcrypto (no revocation), workers auto",
            "/lua-ffi.mp3",
        ),
        (
            "peer-lua-luaossl",
            "in-nginx Lua HS256, HMAC via lua-luaossl (no revocation), workers auto",
            "/lua-luaossl.mp3",
        ),
        (
            "peer-php-fpm",
            "auth_request -> PHP-FPM 8.2, 4 children, opcache (no revocation)",
            "/php.mp3",
        ),
    ] {
        let outcome = measure_peer(settings, stack, &baselines, scenario, path)?;
        report.against(&floor, scenario, label, &outcome);
        rates.push(outcome.rate());
    }
    drop(baselines);
    let rate = |o: &Outcome| o.rate();
    report.target(Target::at_least(
        "media auth_request, deploy defaults / Lua FFI check, same workers (auto)",
        rate(&ours.defaults) / rates[0],
        0.9,
    ));
    report.target(Target::reported(
        "media auth_request, deploy defaults / Lua luaossl check (auto)",
        rate(&ours.defaults) / rates[1],
    ));
    report.target(Target::at_least(
        "media auth_request, deploy defaults / PHP-FPM check",
        rate(&ours.defaults) / rates[2],
        5.0,
    ));

    // The second row: one worker each.
    let Some(baselines) = start(settings, stack, report, "1")? else {
        return Ok(());
    };
    let outcome = measure_peer(
        settings,
        stack,
        &baselines,
        "peer-lua-ffi-1w",
        "/lua-ffi.mp3",
    )?;
    report.against(
        &floor,
        "peer-lua-ffi-1w",
        "in-nginx Lua HS256 via FFI, one worker",
        &outcome,
    );
    report.target(Target::reported(
        "media auth_request, one worker / Lua FFI check, one worker",
        rate(&ours.one_worker) / outcome.rate(),
    ));
    Ok(())
}

/// Starts the peers with `workers` and checks that they really check: a
/// tampered token and no token are refused. `None` (noted in the report) when
/// the peers' packages are missing.
fn start(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
    workers: &str,
) -> Result<Option<Peers>, String> {
    let prefix = stack.daemons.dir.path().join(format!("peers-{workers}"));
    std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
    let pin = settings.pin.then_some(SERVER_CPU);
    let baselines = match peers::start(
        &prefix,
        &stack.nginx.recordings,
        &stack.daemons.key_file(),
        pin,
        workers,
    ) {
        Ok(baselines) => baselines,
        Err(e) => {
            report.note(&format!("comparison peers not run: {e}"));
            return Ok(None);
        }
    };
    let (access, _) = &stack.sessions[0];
    let tampered = format!(
        "Bearer {}{}",
        &access[..access.len() - 2],
        if access.ends_with("AA") { "BA" } else { "AA" }
    );
    for path in ["/lua-ffi.mp3", "/lua-luaossl.mp3", "/php.mp3"] {
        for auth in [&[("Authorization", tampered.as_str())][..], &[]] {
            let r = request(baselines.addr, "GET", path, auth, b"");
            if r.status != 401 {
                return Err(format!(
                    "peer {path} answered {} to a bad or missing token",
                    r.status
                ));
            }
        }
    }
    Ok(Some(baselines))
}

fn measure_peer(
    settings: &Settings,
    stack: &Stack,
    baselines: &Peers,
    scenario: &str,
    path: &str,
) -> Result<Outcome, String> {
    let mut p = plan(
        settings,
        baselines.addr,
        per_session(stack, true, |_| path.to_owned()),
    );
    if scenario == "peer-php-fpm" {
        // PHP-FPM answers a few thousand a second; fewer connections keep its
        // queue (and the run) sane without changing its throughput.
        p.connections = p.connections.min(16);
    }
    measure(scenario, &p)
}
