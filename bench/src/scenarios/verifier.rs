//! The verifier on its own: valid tokens against the bare may_minihttp floor,
//! the realistic mix with logouts while it runs, and its memory under load.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use softphone_testkit::{BASE, Response, request};

use crate::load::{Outcome, Request};
use crate::procstat;
use crate::report::{Report, Target};
use crate::stack::{
    PASSWORD, Settings, Stack, USER, assert_status, get, measure, per_session, plan,
};

pub(crate) fn run(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let valid = per_session(stack, true, |_| "/auth".to_owned());
    // The floor gets the very same requests and answers them without any work.
    let outcome = measure(
        "floor: bare may_minihttp",
        &plan(settings, stack.bare_addr, valid.clone()),
    )?;
    let floor = report.floor(
        "verifier-floor",
        "bare may_minihttp answering the same requests with 200",
        &outcome,
    );
    let verifier = stack.daemons.verifier;
    let outcome = measure(
        "verifier: valid tokens",
        &plan(settings, verifier, valid.clone()),
    )?;
    let ratio = report.against(
        &floor,
        "verifier-valid",
        "verifier direct, valid tokens, revocation on",
        &outcome,
    );
    report.target(Target::at_least(
        "verifier valid / bare may_minihttp",
        ratio,
        0.95,
    ));
    report.target(Target::at_most(
        "verifier valid p99 (ms)",
        outcome.percentile_ms(0.99),
        1.0,
    ));

    let mixed = mixed_run(settings, stack, valid)?;
    report.against(
        &floor,
        "verifier-mix",
        "90% valid, 5% expired, 3% bad signature, 2% revoked; 20 logouts during the run",
        &mixed,
    );
    report.target(Target::at_most(
        "requests allowed after their logout's 200",
        mixed.wrong as f64,
        0.0,
    ));
    report.target(Target::at_most(
        "wrong answers in the mix",
        mixed.unexpected as f64,
        0.0,
    ));

    let (_, verifier_pid) = stack.daemons.pids();
    if let Some(rss) = procstat::rss_kib(verifier_pid) {
        report.target(Target::at_most(
            "verifier RSS after 64-connection load (MiB)",
            rss as f64 / 1024.0,
            32.0,
        ));
    }
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(verifier).ok())
        .collect();
    for mut conn in idle.iter() {
        let _ = conn.write_all(&get("/health", &[]));
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Some(rss) = procstat::rss_kib(verifier_pid) {
        report.target(Target::at_most(
            &format!("verifier RSS with {} open connections (MiB)", idle.len()),
            rss as f64 / 1024.0,
            100.0,
        ));
    }
    drop(idle);
    Ok(())
}

/// The realistic mix, with logouts of some "valid" sessions while it runs; a
/// request sent after its session's logout answered 200 and allowed is wrong.
fn mixed_run(settings: &Settings, stack: &Stack, valid: Vec<Request>) -> Result<Outcome, String> {
    let d = &stack.daemons;
    let (access, _) = &stack.sessions[0];
    let expired = softphone_testkit::forge::expired_copy(&stack.daemons.key_file(), access);
    let mut bad_signature = access.clone();
    let last = if bad_signature.ends_with('A') {
        "B"
    } else {
        "A"
    };
    bad_signature.replace_range(bad_signature.len() - 1.., last);
    let (revoked, _) = d.tokens(USER, PASSWORD);
    assert_status(&logout(d.issuer, &revoked), 200)?;
    let doomed: Vec<String> = (0..20).map(|_| d.tokens(USER, PASSWORD).0).collect();

    let bearer = |t: &str| get("/auth", &[("Authorization", &format!("Bearer {t}"))]);
    let mut requests = valid;
    let first_doomed = requests.len();
    requests.extend(doomed.iter().map(|t| Request {
        bytes: bearer(t),
        expect: None,
    }));
    let expired_at = requests.len();
    requests.push(Request {
        bytes: bearer(&expired),
        expect: Some(401),
    });
    requests.push(Request {
        bytes: bearer(&bad_signature),
        expect: Some(401),
    });
    requests.push(Request {
        bytes: bearer(&revoked),
        expect: Some(401),
    });
    // 100 slots: 70 stable valid + 20 doomed-valid, 5 expired, 3 bad signature, 2 revoked.
    let mut schedule = Vec::with_capacity(100);
    for i in 0..70 {
        schedule.push(i % first_doomed);
    }
    schedule.extend(first_doomed..first_doomed + 20);
    schedule.extend([expired_at; 5]);
    schedule.extend([expired_at + 1; 3]);
    schedule.extend([expired_at + 2; 2]);

    let epoch = Instant::now();
    let revoked_at: Arc<Vec<AtomicU64>> = Arc::new((0..20).map(|_| AtomicU64::new(0)).collect());
    let judged = Arc::clone(&revoked_at);
    let judge = Arc::new(move |index: usize, sent: Instant, status: u16| {
        let Some(slot) = index.checked_sub(first_doomed).filter(|s| *s < 20) else {
            return false;
        };
        let at = judged[slot].load(Ordering::Acquire);
        status == 200 && at != 0 && sent.duration_since(epoch).as_nanos() as u64 > at
    });
    let mut mix = plan(settings, d.verifier, requests);
    mix.schedule = schedule;
    mix.judge = Some(judge);

    let issuer = d.issuer;
    let duration = settings.duration;
    std::thread::scope(|scope| {
        let logouts = scope.spawn(|| {
            for (i, token) in doomed.iter().enumerate() {
                std::thread::sleep(duration / 22);
                if logout(issuer, token).status == 200 {
                    revoked_at[i].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                }
            }
        });
        let outcome = measure("verifier: realistic mix", &mix);
        let _ = logouts.join();
        outcome
    })
}

/// Logs the session of `access` out at the issuer.
pub(crate) fn logout(issuer: SocketAddr, access: &str) -> Response {
    request(
        issuer,
        "POST",
        &format!("{BASE}/auth/logout"),
        &[("Authorization", &format!("Bearer {access}"))],
        b"",
    )
}
