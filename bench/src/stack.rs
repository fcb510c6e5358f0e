//! The running stack every scenario talks to (issuer, verifier, nginx with our
//! deploy configuration, the floors), the run's settings, and the few helpers
//! the scenario families share to build and measure plans against it.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use softphone_testkit::nginx::{Front, Nginx};
use softphone_testkit::{Daemons, Options, free_port, pinned};

use crate::load::{self, Outcome, Plan, Request};

/// CPUs when pinning: servers on one core, the load generator on the other.
pub(crate) const SERVER_CPU: &str = "0";
pub(crate) const CLIENT_CPU: &str = "1";
pub(crate) const USER: &str = "201";
pub(crate) const PASSWORD: &str = "bench-password-201";
/// The WebSocket upstream: nothing (the bench does not measure it).
const NO_WS: &str = "http://127.0.0.1:9/";

#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub connections: usize,
    pub threads: usize,
    pub pin: bool,
    /// Scenario names to run (all when empty).
    pub only: Vec<String>,
    /// Call records the `directory` family seeds.
    pub cdr_rows: usize,
    /// The largest number of live sessions the scale family seeds.
    pub scale_max: usize,
}

/// Everything a scenario can talk to.
pub(crate) struct Stack {
    pub(crate) daemons: Daemons,
    /// The deploy defaults: `worker_processes auto` (as run.sh renders it),
    /// the verifier over its unix socket.
    pub(crate) nginx: Nginx,
    /// The same over the verifier's TCP listener.
    pub(crate) nginx_tcp: Nginx,
    /// The defaults with one worker.
    pub(crate) nginx_one: Nginx,
    bare: Child,
    pub(crate) bare_addr: SocketAddr,
    warp: Child,
    pub(crate) warp_addr: SocketAddr,
    /// Access/refresh pairs of live sessions.
    pub(crate) sessions: Vec<(String, String)>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [&mut self.bare, &mut self.warp] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Stack {
    pub(crate) fn start(settings: &Settings) -> Result<Stack, String> {
        let pin = settings.pin.then(|| SERVER_CPU.to_owned());
        let daemons = Daemons::start_with("bench", daemon_options(settings));
        daemons.add_user(USER, PASSWORD);

        let include = daemons.dir.path().join("bench-locations.conf");
        std::fs::write(
            &include,
            format!(
                "# Floors for the bench: the same file without auth (cached open as in the\n\
                 # recordings location), nchan without auth.\n\
                 location = /bench/static.mp3 {{\n    alias {rec}/a.mp3;\n    default_type audio/mpeg;\n    open_file_cache max=1000 inactive=30s;\n    open_file_cache_valid 5s;\n}}\n\
                 location ~ \"^/bench/sub-noauth/([a-z0-9-]+)$\" {{\n    nchan_subscriber;\n    nchan_channel_id $1;\n}}\n",
                rec = daemons.dir.path().join("recordings").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // Three fronts from the same templates: the deploy defaults (auto
        // workers, unix socket), over TCP, and with one worker.
        let verifier_tcp = daemons.verifier.to_string();
        let front = |name, verifier, workers| Front {
            include: Some(&include),
            verifier,
            name,
            workers: Some(workers),
            redirect: false,
        };
        let nginx = Nginx::start_with(&daemons, NO_WS, &front(None, None, "auto"));
        let nginx_tcp = Nginx::start_with(
            &daemons,
            NO_WS,
            &front(Some("nginx-tcp"), Some(&verifier_tcp), "auto"),
        );
        let nginx_one = Nginx::start_with(&daemons, NO_WS, &front(Some("nginx-one"), None, "1"));
        std::fs::write(nginx.recordings.join("a.mp3"), vec![0x55u8; 1024])
            .map_err(|e| e.to_string())?;

        let own = std::env::current_exe().map_err(|e| e.to_string())?;
        let (bare, bare_addr) = spawn_floor(pin.as_deref(), &own, "bare")?;
        let (warp, warp_addr) = spawn_floor(pin.as_deref(), &own, "warp")?;
        wait_listening(bare_addr)?;
        wait_listening(warp_addr)?;

        let sessions = (0..8).map(|_| daemons.tokens(USER, PASSWORD)).collect();
        Ok(Stack {
            daemons,
            nginx,
            nginx_tcp,
            nginx_one,
            bare,
            bare_addr,
            warp,
            warp_addr,
            sessions,
        })
    }
}

/// How the bench starts the daemons: pinned when the run is, and with the
/// bounds that would turn its floods into 429s lifted.
pub(crate) fn daemon_options(settings: &Settings) -> Options {
    Options {
        env: vec![
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
            // One user logs in thousands of times (login throughput,
            // the mixed run's logouts), while the sessions opened first
            // must stay valid for the verifier scenarios.
            (
                "SOFTPHONE_MAX_SESSIONS_PER_USER".to_owned(),
                "1000000".to_owned(),
            ),
            // The refresh scenario presents one session's token as fast
            // as it can: it measures the rotation, not the bound.
            (
                "SOFTPHONE_REFRESH_BURST".to_owned(),
                "4000000000".to_owned(),
            ),
        ],
        pin: settings.pin.then(|| SERVER_CPU.to_owned()),
    }
}

/// Moves this process, the load generator, to its own CPU; the stack's
/// processes are pinned to the other one as they are spawned.
pub(crate) fn pin_generator() -> Result<(), String> {
    let ok = Command::new("taskset")
        .args(["-pc", CLIENT_CPU, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if ok.success() {
        Ok(())
    } else {
        Err("taskset could not pin the load generator".into())
    }
}

pub(crate) fn spawn(pin: Option<&str>, program: &Path, args: &[&str]) -> Result<Child, String> {
    pinned(pin, program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))
}

/// Starts this binary's floor `command` (`bare` or `warp`) on a free port.
fn spawn_floor(
    pin: Option<&str>,
    own: &Path,
    command: &str,
) -> Result<(Child, SocketAddr), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = spawn(pin, own, &[command, "--listen", &addr.to_string()])?;
    Ok((child, addr))
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

pub(crate) fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    softphone_testkit::http::build("GET", path, headers, b"")
}

pub(crate) fn plan(settings: &Settings, addr: SocketAddr, requests: Vec<Request>) -> Plan {
    let schedule = (0..requests.len()).collect();
    Plan {
        addr,
        connections: settings.connections,
        duration: settings.duration,
        threads: settings.threads,
        requests,
        schedule,
        sticky: false,
        until: None,
        judge: None,
    }
}

/// A GET of `path` that must answer 200.
pub(crate) fn ok_get(path: &str) -> Request {
    Request {
        bytes: get(path, &[]),
        expect: Some(200),
    }
}

/// One request per live session: `path(access token)` with the token also in
/// the `Authorization` header when `header` is set; each must answer 200.
pub(crate) fn per_session(
    stack: &Stack,
    header: bool,
    path: impl Fn(&str) -> String,
) -> Vec<Request> {
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
pub(crate) fn measure(name: &str, plan: &Plan) -> Result<Outcome, String> {
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

pub(crate) fn assert_status(r: &softphone_testkit::Response, status: u16) -> Result<(), String> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!("expected {status}, got {}: {}", r.status, r.text()))
    }
}
