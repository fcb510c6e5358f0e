//! The same media request against the baselines of bench/peers/: in-nginx Lua
//! (FFI and luaossl HMAC) and PHP-FPM behind auth_request, held against our
//! faster media front.

use softphone_testkit::request;

use crate::load::Outcome;
use crate::peers;
use crate::report::{Report, Target};
use crate::stack::{SERVER_CPU, Settings, Stack, measure, ok_get, per_session, plan};

/// `ours` is the media family's faster front (TCP or unix socket).
pub(crate) fn run(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
    ours: &Outcome,
) -> Result<(), String> {
    let prefix = stack.daemons.dir.path().join("peers");
    std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
    let pin = settings.pin.then_some(SERVER_CPU);
    let baselines = match peers::start(
        &prefix,
        &stack.nginx.recordings,
        &stack.daemons.key_file(),
        pin,
    ) {
        Ok(baselines) => baselines,
        Err(e) => {
            report.note(&format!("comparison peers not run: {e}"));
            return Ok(());
        }
    };
    let outcome = measure(
        "peer floor: nginx+lua static",
        &plan(settings, baselines.addr, vec![ok_get("/static.mp3")]),
    )?;
    let floor = report.floor(
        "peer-floor",
        "peer nginx (Lua module loaded) serving the file without auth",
        &outcome,
    );
    // The baselines must really check: a tampered token and no token are refused.
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
    let mut rates = Vec::new();
    for (scenario, label, path) in [
        (
            "peer-lua-ffi",
            "in-nginx Lua HS256, HMAC via LuaJIT FFI to libcrypto (no revocation)",
            "/lua-ffi.mp3",
        ),
        (
            "peer-lua-luaossl",
            "in-nginx Lua HS256, HMAC via lua-luaossl (no revocation)",
            "/lua-luaossl.mp3",
        ),
        (
            "peer-php-fpm",
            "auth_request -> PHP-FPM 8.2, 4 children, opcache (no revocation)",
            "/php.mp3",
        ),
    ] {
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
        let outcome = measure(scenario, &p)?;
        report.against(&floor, scenario, label, &outcome);
        rates.push(outcome.rate());
    }
    report.target(Target::at_least(
        "media auth_request (faster of tcp, unix) / Lua FFI check",
        ours.rate() / rates[0],
        0.8,
    ));
    report.target(Target::reported(
        "media auth_request (faster of tcp, unix) / Lua luaossl check",
        ours.rate() / rates[1],
    ));
    report.target(Target::at_least(
        "media auth_request (faster of tcp, unix) / PHP-FPM check",
        ours.rate() / rates[2],
        5.0,
    ));
    drop(baselines);
    Ok(())
}
