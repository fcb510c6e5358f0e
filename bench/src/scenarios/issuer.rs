//! The issuer against a bare warp handler: profile, refresh and login, login
//! timing for unknown users, and profile latency under a bad-login flood.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use softphone_testkit::BASE;

use crate::load::{self, Outcome, Request};
use crate::report::{Report, Row, Target};
use crate::stack::{PASSWORD, Settings, Stack, USER, get, measure, ok_get, plan};

pub(crate) fn run(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let d = &stack.daemons;
    let outcome = measure(
        "floor: bare warp",
        &plan(settings, stack.warp_addr, vec![ok_get("/")]),
    )?;
    let floor = report.floor("issuer-floor", "warp handler answering 200", &outcome);

    let (access, refresh) = &stack.sessions[0];
    let profile_request = profile_request(access);
    let profile = measure(
        "issuer: profile",
        &plan(settings, d.issuer, vec![profile_request.clone()]),
    )?;
    report.against(
        &floor,
        "issuer-profile",
        "GET profile (token check + session lookup)",
        &profile,
    );

    let refresh_request = refresh_request(refresh);
    let refreshing = measure(
        "issuer: refresh",
        &plan(settings, d.issuer, vec![refresh_request]),
    )?;
    report.against(
        &floor,
        "issuer-refresh",
        "POST refresh (rotation, durable commit)",
        &refreshing,
    );

    let login_request = Request {
        bytes: login_bytes(USER, PASSWORD, &[]),
        expect: Some(200),
    };
    let mut login_plan = plan(settings, d.issuer, vec![login_request]);
    login_plan.connections = login_plan.connections.min(4);
    let login = measure("issuer: login", &login_plan)?;
    let hash_ms = {
        let started = Instant::now();
        let _ = softphone_shared::password::hash("x", softphone_shared::password::MIN_ITERATIONS);
        started.elapsed().as_secs_f64() * 1000.0
    };
    report.against(
        &floor,
        "issuer-login",
        "POST login, PBKDF2-SHA256 600 000 rounds",
        &login,
    );
    report.annotate(format!(
        "one hash costs {hash_ms:.0} ms on the load generator's core"
    ));

    // User enumeration: an unknown user and a wrong password must take the
    // same time (the unknown one is hashed against a dummy).
    let mut medians = Vec::new();
    for (scenario, label, username) in [
        (
            "issuer-login-wrong",
            "POST login, existing user, wrong password",
            USER,
        ),
        (
            "issuer-login-unknown",
            "POST login, unknown user",
            "no-such-user",
        ),
    ] {
        let mut p = plan(
            settings,
            d.issuer,
            vec![Request {
                bytes: login_bytes(username, "not-the-password", &[]),
                expect: Some(401),
            }],
        );
        p.connections = 1;
        let outcome = measure(scenario, &p)?;
        medians.push(outcome.percentile_ms(0.5));
        report.add(Row::new(scenario, label, None, &outcome));
    }
    report.target(Target::at_most(
        "login median, |unknown user / wrong password - 1|",
        (medians[1] / medians[0].max(0.001) - 1.0).abs(),
        0.05,
    ));

    // Profile while 64 connections flood logins with wrong passwords from many
    // (username, address) pairs, so the throttle does not simply answer 429.
    let flood = bad_login_flood("flood", 2000);
    under_flood(
        settings,
        d.issuer,
        report,
        ("issuer-profile", "GET profile", profile_request),
        &flood,
    )?;
    Ok(())
}

/// Rounds of idle and flooded measurement in [`under_flood`].
const FLOOD_ROUNDS: u32 = 3;
/// How long the flood runs before the flooded round is measured.
const FLOOD_HEAD_START: Duration = Duration::from_millis(200);

/// GET profile with `access`, expecting 200.
pub(crate) fn profile_request(access: &str) -> Request {
    Request {
        bytes: get(
            &format!("{BASE}/profile"),
            &[("Authorization", &format!("Bearer {access}"))],
        ),
        expect: Some(200),
    }
}

/// POST refresh with `refresh`, expecting 200: a refresh token whose successor
/// is never used may be presented again and again.
pub(crate) fn refresh_request(refresh: &str) -> Request {
    Request {
        bytes: softphone_testkit::http::build(
            "POST",
            &format!("{BASE}/auth/refresh"),
            &[("Authorization", &format!("Bearer {refresh}"))],
            b"",
        ),
        expect: Some(200),
    }
}

/// `count` logins with wrong passwords, each for its own username (`prefix` +
/// number) from its own address.
pub(crate) fn bad_login_flood(prefix: &str, count: usize) -> Vec<Request> {
    (0..count)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
            Request {
                bytes: login_bytes(&format!("{prefix}{i}"), "wrong", &[("X-Real-IP", &ip)]),
                expect: None,
            }
        })
        .collect()
}

/// Measures `probe` (scenario, label, request) on 8 connections idle and again
/// while 64 connections send `flood` to `addr`, and holds the p99 ratio to 2.
/// Idle and flooded rounds alternate ([`FLOOD_ROUNDS`] of each, the scenario's
/// duration split between them), so a noisy neighbour that comes or goes
/// during the scenario weighs on both sides alike rather than on one.
pub(crate) fn under_flood(
    settings: &Settings,
    addr: std::net::SocketAddr,
    report: &mut Report,
    (scenario, label, probe): (&str, &str, Request),
    flood: &[Request],
) -> Result<(), String> {
    let mut probe_plan = plan(settings, addr, vec![probe]);
    probe_plan.connections = 8;
    probe_plan.duration = (settings.duration / FLOOD_ROUNDS).max(Duration::from_secs(1));
    let mut flood_plan = plan(settings, addr, flood.to_vec());
    flood_plan.connections = 64;
    flood_plan.duration = probe_plan.duration + FLOOD_HEAD_START;
    let mut sides: Option<(Outcome, Outcome, Outcome)> = None;
    for round in 1..=FLOOD_ROUNDS {
        let idle = measure(&format!("{scenario}, idle {round}"), &probe_plan)?;
        let progress = AtomicU64::new(0);
        let (flooded, flood) = std::thread::scope(|scope| {
            let flood = scope.spawn(|| load::run(&flood_plan, &progress));
            std::thread::sleep(FLOOD_HEAD_START);
            let flooded = measure(&format!("{scenario}, flood {round}"), &probe_plan);
            (flooded, flood.join())
        });
        let flooded = flooded?;
        let flood = flood
            .map_err(|_| "flood thread panicked".to_owned())?
            .map_err(|e| e.to_string())?;
        sides = Some(match sides {
            None => (idle, flooded, flood),
            Some((mut all_idle, mut all_flooded, mut all_flood)) => {
                all_idle.then(idle);
                all_flooded.then(flooded);
                all_flood.then(flood);
                (all_idle, all_flooded, all_flood)
            }
        });
    }
    let Some((idle, flooded, flood)) = sides else {
        return Err(format!("{scenario}: no flood round ran"));
    };
    let ratio = flooded.percentile_ms(0.99) / idle.percentile_ms(0.99).max(0.001);
    report.add(Row::new(
        &format!("{scenario}-idle"),
        &format!("{label}, 8 connections"),
        None,
        &idle,
    ));
    report.add(Row::new(
        &format!("{scenario}-flood"),
        &format!("{label}, 8 connections, during a 64-connection bad-login flood"),
        None,
        &flooded,
    ));
    report.annotate(format!(
        "the flood got {} answers ({:.1}/s)",
        flood.requests,
        flood.rate()
    ));
    report.target(Target::at_most(
        &format!("{scenario} p99 under a login flood / idle"),
        ratio,
        2.0,
    ));
    Ok(())
}

/// A login request for `username` and `password`, with `headers` after its
/// `Content-Type`.
pub(crate) fn login_bytes(username: &str, password: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = format!(r#"{{"username":"{username}","password":"{password}"}}"#);
    let headers: Vec<(&str, &str)> = [("Content-Type", "application/json")]
        .iter()
        .chain(headers)
        .copied()
        .collect();
    softphone_testkit::http::build(
        "POST",
        &format!("{BASE}/auth/login"),
        &headers,
        body.as_bytes(),
    )
}
