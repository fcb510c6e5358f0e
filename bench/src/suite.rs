//! The scenario suite: starts the real stack (issuer, verifier, nginx with our
//! deploy configuration) and the floors, drives each scenario, and returns every
//! number as a ratio against a floor measured in the same run.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use softphone_testkit::nginx::Nginx;
use softphone_testkit::{BASE, Daemons, Options, free_port, pinned, request};

use crate::load::{self, Outcome, Plan, Request};
use crate::procstat;
use crate::report::{Report, Row, Target};

/// CPUs when pinning: servers on one core, the load generator on the other.
const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";
const USER: &str = "201";
const PASSWORD: &str = "bench-password-201";

#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub connections: usize,
    pub threads: usize,
    pub pin: bool,
    /// Scenario names to run (all when empty).
    pub only: Vec<String>,
}

/// Everything a scenario can talk to.
struct Stack {
    daemons: Daemons,
    nginx: Nginx,
    nginx_unix: Nginx,
    bare: Child,
    bare_addr: SocketAddr,
    warp: Child,
    warp_addr: SocketAddr,
    /// Access/refresh pairs of live sessions.
    sessions: Vec<(String, String)>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [&mut self.bare, &mut self.warp] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(settings: &Settings) -> Result<Report, String> {
    if settings.pin {
        let ok = Command::new("taskset")
            .args(["-pc", CLIENT_CPU, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        if !ok.success() {
            return Err("taskset could not pin the load generator".into());
        }
    }
    let stack = Stack::start(settings)?;
    let mut report = Report::new(settings);
    let wanted = |name: &str| {
        settings.only.is_empty() || settings.only.iter().any(|o| name.starts_with(o.as_str()))
    };

    if wanted("verifier") {
        verifier_scenarios(settings, &stack, &mut report)?;
    }
    if wanted("media") {
        media_scenarios(settings, &stack, &mut report)?;
    }
    if wanted("nchan") {
        nchan_scenarios(settings, &stack, &mut report)?;
    }
    if wanted("issuer") {
        issuer_scenarios(settings, &stack, &mut report)?;
    }
    if wanted("generator") {
        generator_scenario(settings, &stack, &mut report)?;
    }
    Ok(report)
}

impl Stack {
    fn start(settings: &Settings) -> Result<Stack, String> {
        let pin = settings.pin.then(|| SERVER_CPU.to_owned());
        let daemons = Daemons::start_with(
            "bench",
            Options {
                env: vec![
                    (
                        "SOFTPHONE_VERIFIER_SOCKET".to_owned(),
                        "{dir}/run/verifier.sock".to_owned(),
                    ),
                    // The enumeration scenario sends thousands of failed logins
                    // for one user: measure the hash, not the throttle's 429.
                    (
                        "SOFTPHONE_LOGIN_MAX_FAILURES".to_owned(),
                        "1000000".to_owned(),
                    ),
                    (
                        "SOFTPHONE_LOGIN_USER_CEILING".to_owned(),
                        "1000000".to_owned(),
                    ),
                ],
                pin: pin.clone(),
            },
        );
        daemons.add_user(USER, PASSWORD);

        let include = daemons.dir.path().join("bench-locations.conf");
        std::fs::write(
            &include,
            format!(
                "# Floors for the bench: the same file without auth, nchan without auth.\n\
                 location = /bench/static.mp3 {{\n    alias {rec}/a.mp3;\n    default_type audio/mpeg;\n}}\n\
                 location ~ \"^/bench/sub-noauth/([a-z0-9-]+)$\" {{\n    nchan_subscriber;\n    nchan_channel_id $1;\n}}\n",
                rec = daemons.dir.path().join("recordings").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // Two fronts from the same templates: the verifier over TCP and over its
        // unix socket.
        let verifier_tcp = daemons.verifier.to_string();
        let nginx = Nginx::start_with(
            &daemons,
            "http://127.0.0.1:9/",
            Some(&include),
            Some(&verifier_tcp),
            "nginx",
        );
        let nginx_unix = Nginx::start_with(
            &daemons,
            "http://127.0.0.1:9/",
            Some(&include),
            None,
            "nginx-unix",
        );
        std::fs::write(nginx.recordings.join("a.mp3"), vec![0x55u8; 1024])
            .map_err(|e| e.to_string())?;

        let own = std::env::current_exe().map_err(|e| e.to_string())?;
        let bare_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let bare = spawn(
            pin.as_deref(),
            &own,
            &["bare", "--listen", &bare_addr.to_string()],
        )?;
        let warp_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let warp = spawn(
            pin.as_deref(),
            &own,
            &["warp", "--listen", &warp_addr.to_string()],
        )?;
        wait_listening(bare_addr)?;
        wait_listening(warp_addr)?;

        let sessions = (0..8).map(|_| daemons.tokens(USER, PASSWORD)).collect();
        Ok(Stack {
            daemons,
            nginx,
            nginx_unix,
            bare,
            bare_addr,
            warp,
            warp_addr,
            sessions,
        })
    }
}

pub(crate) fn spawn(
    pin: Option<&str>,
    program: &std::path::Path,
    args: &[&str],
) -> Result<Child, String> {
    pinned(pin, program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))
}

fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    softphone_testkit::http::build("GET", path, headers, b"")
}

fn plan(settings: &Settings, addr: SocketAddr, requests: Vec<Request>) -> Plan {
    let schedule = (0..requests.len()).collect();
    Plan {
        addr,
        connections: settings.connections,
        duration: settings.duration,
        threads: settings.threads,
        requests,
        schedule,
        judge: None,
    }
}

/// A GET of `path` that must answer 200.
fn ok_get(path: &str) -> Request {
    Request {
        bytes: get(path, &[]),
        expect: Some(200),
    }
}

/// One request per live session: `path(access token)` with the token also in
/// the `Authorization` header when `header` is set; each must answer 200.
fn per_session(stack: &Stack, header: bool, path: impl Fn(&str) -> String) -> Vec<Request> {
    stack
        .sessions
        .iter()
        .map(|(access, _)| {
            let bearer = format!("Bearer {access}");
            let headers: &[(&str, &str)] = if header {
                &[("Authorization", &bearer)]
            } else {
                &[]
            };
            Request {
                bytes: get(&path(access), headers),
                expect: Some(200),
            }
        })
        .collect()
}

/// Runs a plan with a progress line on a terminal.
fn measure(name: &str, plan: &Plan) -> Result<Outcome, String> {
    let progress = AtomicU64::new(0);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let done = std::sync::atomic::AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        let reporter = scope.spawn(|| {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                if tty {
                    let secs = started.elapsed().as_secs_f64();
                    let n = progress.load(Ordering::Relaxed);
                    eprint!(
                        "\r  {name:<28} {secs:5.1} s  {:>9.0} req/s   ",
                        n as f64 / secs.max(0.001)
                    );
                }
            }
        });
        let result = load::run(plan, &progress);
        done.store(true, Ordering::Relaxed);
        let _ = reporter.join();
        result
    });
    let outcome = outcome.map_err(|e| format!("{name}: {e}"))?;
    eprintln!(
        "{}  {name:<28} {:>9.0} req/s  p99 {:.2} ms  non-2xx {}  errors {}",
        if tty { "\r" } else { "" },
        outcome.rate(),
        outcome.percentile_ms(0.99),
        outcome.non_2xx,
        outcome.errors
    );
    Ok(outcome)
}

fn verifier_scenarios(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
) -> Result<(), String> {
    let valid = per_session(stack, true, |_| "/auth".to_owned());
    // The floor gets the very same requests and answers them without any work.
    let floor = measure(
        "floor: bare may_minihttp",
        &plan(settings, stack.bare_addr, valid.clone()),
    )?;
    report.add(Row::new(
        "verifier-floor",
        "bare may_minihttp answering the same requests with 200",
        None,
        &floor,
    ));
    let verifier = stack.daemons.verifier;
    let outcome = measure(
        "verifier: valid tokens",
        &plan(settings, verifier, valid.clone()),
    )?;
    let ratio = outcome.rate() / floor.rate();
    report.add(Row::new(
        "verifier-valid",
        "verifier direct, valid tokens, revocation on",
        Some(("verifier-floor", ratio)),
        &outcome,
    ));
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
    let ratio = mixed.rate() / floor.rate();
    report.add(Row::new(
        "verifier-mix",
        "90% valid, 5% expired, 3% bad signature, 2% revoked; 20 logouts during the run",
        Some(("verifier-floor", ratio)),
        &mixed,
    ));
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
    let keys = softphone_shared::keyfile::load(&d.data_dir().join("db/secret.key"))
        .map_err(|e| e.to_string())?;
    let key = keys.current();
    let now = softphone_shared::unix_now();
    let (access, _) = &stack.sessions[0];
    let mut buf = [0u8; softphone_shared::token::PAYLOAD_BUF];
    let claims = softphone_shared::token::verify(
        access,
        &keys,
        softphone_shared::token::Validation { now, leeway: 30 },
        &mut buf,
    )
    .map_err(|e| e.to_string())?
    .claims;
    let expired = softphone_shared::token::sign(
        &softphone_shared::token::Claims {
            iat: now - 7200,
            exp: now - 3600,
            ..claims.clone()
        },
        key,
    );
    let mut bad_signature = access.clone();
    let last = if bad_signature.ends_with('A') {
        "B"
    } else {
        "A"
    };
    bad_signature.replace_range(bad_signature.len() - 1.., last);
    let (revoked, _) = d.tokens(USER, PASSWORD);
    assert_status(
        &request(
            d.issuer,
            "POST",
            &format!("{BASE}/auth/logout"),
            &[("Authorization", &format!("Bearer {revoked}"))],
            b"",
        ),
        200,
    )?;
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
                let r = request(
                    issuer,
                    "POST",
                    &format!("{BASE}/auth/logout"),
                    &[("Authorization", &format!("Bearer {token}"))],
                    b"",
                );
                if r.status == 200 {
                    revoked_at[i].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                }
            }
        });
        let outcome = measure("verifier: realistic mix", &mix);
        let _ = logouts.join();
        outcome
    })
}

fn assert_status(r: &softphone_testkit::Response, status: u16) -> Result<(), String> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!("expected {status}, got {}: {}", r.status, r.text()))
    }
}

fn media_scenarios(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let nginx = stack.nginx.addr;
    let floor = measure(
        "floor: nginx static file",
        &plan(settings, nginx, vec![ok_get("/bench/static.mp3")]),
    )?;
    report.add(Row::new(
        "media-floor",
        "nginx serving the file without auth",
        None,
        &floor,
    ));
    let requests = per_session(stack, true, |_| {
        "/pbxcore/softphone/recordings/a.mp3".to_owned()
    });
    let outcome = measure("media: auth_request", &plan(settings, nginx, requests))?;
    let ratio = outcome.rate() / floor.rate();
    report.add(Row::new(
        "media-auth",
        "nginx auth_request -> verifier (deploy config)",
        Some(("media-floor", ratio)),
        &outcome,
    ));
    report.target(Target::reported("media auth_request / nginx static", ratio));

    // The same through the verifier's unix socket (nginx-unix renders it as
    // `server unix:...`); the same static file is its floor.
    let unix_requests = per_session(stack, true, |_| {
        "/pbxcore/softphone/recordings/a.mp3".to_owned()
    });
    let unix = measure(
        "media: auth_request, unix",
        &plan(settings, stack.nginx_unix.addr, unix_requests),
    )?;
    let ratio = unix.rate() / floor.rate();
    report.add(Row::new(
        "media-auth-unix",
        "nginx auth_request -> verifier over its unix socket",
        Some(("media-floor", ratio)),
        &unix,
    ));
    report.target(Target::reported(
        "media auth_request over unix / nginx static",
        ratio,
    ));
    let best = if unix.rate() > outcome.rate() {
        &unix
    } else {
        &outcome
    };
    peer_scenarios(settings, stack, report, best)
}

/// The same media request against the baselines of bench/peers/: in-nginx Lua
/// (FFI and luaossl HMAC) and PHP-FPM behind auth_request.
fn peer_scenarios(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
    ours: &Outcome,
) -> Result<(), String> {
    let d = &stack.daemons;
    let prefix = d.dir.path().join("peers");
    std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
    let pin = settings.pin.then_some(SERVER_CPU);
    let peers = match crate::peers::start(
        &prefix,
        &stack.nginx.recordings,
        &d.data_dir().join("db/secret.key"),
        pin,
    ) {
        Ok(peers) => peers,
        Err(e) => {
            report.note(&format!("comparison peers not run: {e}"));
            return Ok(());
        }
    };
    let floor = measure(
        "peer floor: nginx+lua static",
        &plan(settings, peers.addr, vec![ok_get("/static.mp3")]),
    )?;
    report.add(Row::new(
        "peer-floor",
        "peer nginx (Lua module loaded) serving the file without auth",
        None,
        &floor,
    ));
    // The baselines must really check: a tampered token and no token are refused.
    let (access, _) = &stack.sessions[0];
    let tampered = format!(
        "Bearer {}{}",
        &access[..access.len() - 2],
        if access.ends_with("AA") { "BA" } else { "AA" }
    );
    for path in ["/lua-ffi.mp3", "/lua-luaossl.mp3", "/php.mp3"] {
        for auth in [&[("Authorization", tampered.as_str())][..], &[]] {
            let r = request(peers.addr, "GET", path, auth, b"");
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
            peers.addr,
            per_session(stack, true, |_| path.to_owned()),
        );
        if scenario == "peer-php-fpm" {
            // PHP-FPM answers a few thousand a second; fewer connections keep its
            // queue (and the run) sane without changing its throughput.
            p.connections = p.connections.min(16);
        }
        let outcome = measure(scenario, &p)?;
        let ratio = outcome.rate() / floor.rate();
        report.add(Row::new(
            scenario,
            label,
            Some(("peer-floor", ratio)),
            &outcome,
        ));
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
    drop(peers);
    Ok(())
}

fn nchan_scenarios(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let nginx = stack.nginx.addr;
    // One buffered message: a long-poll subscriber without a message id gets it at once.
    let r = request(
        nginx,
        "POST",
        &format!("{BASE}/pub/bench-lp"),
        &[],
        br#"{"event":"users-state-update"}"#,
    );
    if !(r.status == 201 || r.status == 202) {
        return Err(format!("publish: {}", r.status));
    }
    let floor = measure(
        "floor: nchan without auth",
        &plan(settings, nginx, vec![ok_get("/bench/sub-noauth/bench-lp")]),
    )?;
    report.add(Row::new(
        "nchan-floor",
        "nchan long-poll subscribe, no authorization",
        None,
        &floor,
    ));
    let requests = per_session(stack, false, |access| {
        format!("{BASE}/sub/bench-lp?authorization={access}")
    });
    let outcome = measure(
        "nchan: authorized subscribe",
        &plan(settings, nginx, requests),
    )?;
    let ratio = outcome.rate() / floor.rate();
    report.add(Row::new(
        "nchan-auth",
        "nchan long-poll subscribe authorized by the verifier",
        Some(("nchan-floor", ratio)),
        &outcome,
    ));
    report.target(Target::reported("nchan authorized / unauthorized", ratio));
    Ok(())
}

fn issuer_scenarios(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let d = &stack.daemons;
    let floor = measure(
        "floor: bare warp",
        &plan(settings, stack.warp_addr, vec![ok_get("/")]),
    )?;
    report.add(Row::new(
        "issuer-floor",
        "warp handler answering 200",
        None,
        &floor,
    ));

    let (access, refresh) = &stack.sessions[0];
    let profile_request = Request {
        bytes: get(
            &format!("{BASE}/profile"),
            &[("Authorization", &format!("Bearer {access}"))],
        ),
        expect: Some(200),
    };
    let profile = measure(
        "issuer: profile",
        &plan(settings, d.issuer, vec![profile_request.clone()]),
    )?;
    let ratio = profile.rate() / floor.rate();
    report.add(Row::new(
        "issuer-profile",
        "GET profile (token check + session lookup)",
        Some(("issuer-floor", ratio)),
        &profile,
    ));

    // A refresh token whose successor is never used may be presented again and again.
    let refresh_request = Request {
        bytes: softphone_testkit::http::build(
            "POST",
            &format!("{BASE}/auth/refresh"),
            &[("Authorization", &format!("Bearer {refresh}"))],
            b"",
        ),
        expect: Some(200),
    };
    let refreshing = measure(
        "issuer: refresh",
        &plan(settings, d.issuer, vec![refresh_request]),
    )?;
    let ratio = refreshing.rate() / floor.rate();
    report.add(Row::new(
        "issuer-refresh",
        "POST refresh (rotation, durable commit)",
        Some(("issuer-floor", ratio)),
        &refreshing,
    ));

    let body = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    let login_request = Request {
        bytes: softphone_testkit::http::build(
            "POST",
            &format!("{BASE}/auth/login"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        ),
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
    let ratio = login.rate() / floor.rate();
    let mut row = Row::new(
        "issuer-login",
        "POST login, PBKDF2-SHA256 600 000 rounds",
        Some(("issuer-floor", ratio)),
        &login,
    );
    row.note = Some(format!(
        "one hash costs {hash_ms:.0} ms on the load generator's core"
    ));
    report.add(row);

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
        let body = format!(r#"{{"username":"{username}","password":"not-the-password"}}"#);
        let mut p = plan(
            settings,
            d.issuer,
            vec![Request {
                bytes: softphone_testkit::http::build(
                    "POST",
                    &format!("{BASE}/auth/login"),
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                ),
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
    let mut idle_plan = plan(settings, d.issuer, vec![profile_request.clone()]);
    idle_plan.connections = 8;
    let idle = measure("issuer: profile, idle", &idle_plan)?;
    let flood_requests: Vec<Request> = (0..2000)
        .map(|i| {
            let body = format!(r#"{{"username":"flood{i}","password":"wrong"}}"#);
            let ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
            Request {
                bytes: softphone_testkit::http::build(
                    "POST",
                    &format!("{BASE}/auth/login"),
                    &[("Content-Type", "application/json"), ("X-Real-IP", &ip)],
                    body.as_bytes(),
                ),
                expect: None,
            }
        })
        .collect();
    let mut flood_plan = plan(settings, d.issuer, flood_requests);
    flood_plan.connections = 64;
    let progress = AtomicU64::new(0);
    let (flooded, flood) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| load::run(&flood_plan, &progress));
        std::thread::sleep(Duration::from_millis(200));
        let flooded = measure("issuer: profile, login flood", &idle_plan);
        (flooded, flood.join())
    });
    let flooded = flooded?;
    let flood = flood
        .map_err(|_| "flood thread panicked".to_owned())?
        .map_err(|e| e.to_string())?;
    let ratio = flooded.percentile_ms(0.99) / idle.percentile_ms(0.99).max(0.001);
    report.add(Row::new(
        "issuer-profile-idle",
        "GET profile, 8 connections",
        None,
        &idle,
    ));
    let mut row = Row::new(
        "issuer-profile-flood",
        "GET profile, 8 connections, during a 64-connection bad-login flood",
        None,
        &flooded,
    );
    row.note = Some(format!(
        "the flood got {} answers ({:.1}/s)",
        flood.requests,
        flood.rate()
    ));
    report.add(row);
    report.target(Target::at_most(
        "profile p99 under a login flood / idle",
        ratio,
        2.0,
    ));
    Ok(())
}

/// Our generator against wrk, same target, same connections and time: CPU per
/// request of the load generator itself.
fn generator_scenario(
    settings: &Settings,
    stack: &Stack,
    report: &mut Report,
) -> Result<(), String> {
    let floor_plan = plan(settings, stack.bare_addr, vec![ok_get("/")]);
    let before = procstat::cpu_time("self").map(|(own, _)| own);
    let ours = measure("generator: softphone-bench", &floor_plan)?;
    let after = procstat::cpu_time("self").map(|(own, _)| own);
    let our_cpu = match (before, after) {
        (Some(b), Some(a)) => (a - b).as_secs_f64() * 1e6 / ours.requests.max(1) as f64,
        _ => f64::NAN,
    };
    let mut row = Row::new(
        "generator-ours",
        "softphone-bench against the bare floor",
        None,
        &ours,
    );
    row.note = Some(format!("{our_cpu:.2} µs of generator CPU per request"));
    report.add(row);

    let Ok(wrk) = which_wrk() else {
        report.note(
            "wrk is not installed (apt-get install wrk): the generator comparison was not run",
        );
        return Ok(());
    };
    let duration = format!("{}s", settings.duration.as_secs().max(1));
    let url = format!("http://{}/", stack.bare_addr);
    let script = format!(
        "{} {} -t{} -c{} -d{duration} {url}; cat /proc/$$/stat",
        if settings.pin {
            format!("taskset -c {CLIENT_CPU}")
        } else {
            String::new()
        },
        wrk.display(),
        settings.threads,
        settings.connections
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read wrk's output:\n{text}"))?;
    let stat_line = text.lines().last().unwrap_or_default();
    let child_ticks: f64 = {
        let rest = stat_line
            .rfind(')')
            .map(|i| &stat_line[i + 2..])
            .unwrap_or_default();
        let f: Vec<&str> = rest.split(' ').collect();
        f.get(13)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            + f.get(14)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
    };
    let wrk_requests = rate * settings.duration.as_secs_f64();
    let wrk_cpu = child_ticks / 100.0 * 1e6 / wrk_requests.max(1.0);
    report.note(&format!(
        "wrk -t{} -c{} on the same target: {rate:.0} req/s, {wrk_cpu:.2} µs of generator CPU per request (ours: {:.0} req/s, {our_cpu:.2} µs)",
        settings.threads,
        settings.connections,
        ours.rate()
    ));
    report.target(Target::at_most(
        "generator CPU per request, ours / wrk",
        our_cpu / wrk_cpu,
        1.0,
    ));
    Ok(())
}

fn which_wrk() -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join("wrk"))
        .find(|p| p.exists())
        .ok_or(())
}
