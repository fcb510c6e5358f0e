//! Test fixtures shared by the integration tests of every crate: a temporary data
//! directory, free loopback ports, the real daemons started as child processes
//! (and killed on drop) with the paths of their files, one way to wait for a
//! condition ([`eventually`]), a raw HTTP/1.1 client for exact bytes on the wire,
//! a MikoPBX fixture database, a stand-in for systemd's notify socket, and
//! scrapes of the daemons' metrics judged by promtool.
//!
//! Test code: failing loudly (panicking) is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod counting;
pub mod forge;
pub mod http;
pub mod mikopbx;
pub mod nginx;
pub mod notify;
pub mod prom;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use http::{Response, request, send_raw};

use softphone_shared::config::Config;
use softphone_shared::epoch::Epoch;
use softphone_shared::keyfile;

pub use softphone_shared::paths::{API_BASE as BASE, CHECK_MEDIA_ACCESS as CHECK};

/// Key file texts for tests that write keys of their own. Not runs of one
/// character: the log sweep looks for every key the suite wrote, and a run of
/// `a`s also stands in logs of long test names.
pub const TEST_KEYS: [&str; 3] = [
    "9c41e07b2fd85a36c1e94b70d23f8a5e6b0c17d9e24f3a8b5c6d71e09f2a4b3c",
    "27d9b4e1a6c03f85e2b7d94c10a5f36e8d2c7b41f09e5a3d6c8b2e7f14a0d95b",
    "e5a0c3d7f19b42e86a1d5c0b3f7e92a4d6c8e1b05f3a7d92c4e6b8a10d3f5c7e9",
];

/// A directory under the system temp dir, removed on drop when the test passed
/// (kept when `SOFTPHONE_KEEP_TEST_DIRS` is set).
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "softphone-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("SOFTPHONE_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!("test data kept in {}", self.path.display());
        }
    }
}

/// What a condition polled by [`eventually`] gives: `true`, or `Some(value)`,
/// once it holds.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// How often a condition is polled.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Polls `f` (at once, then every few milliseconds) until it holds, for at most
/// `timeout`; `None` when time ran out. For waits whose end is not a failure;
/// tests wait with [`eventually`].
pub fn poll_until<R: Ready>(timeout: Duration, mut f: impl FnMut() -> R) -> Option<R::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f().ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Waits until `f` holds (returns `true` or `Some(value)`) and returns its value;
/// panics with `what` and the timeout when it has not within `timeout`. `f` may
/// panic itself when waiting longer is pointless (a daemon exited).
pub fn eventually<R: Ready>(
    timeout: Duration,
    what: impl fmt::Display,
    f: impl FnMut() -> R,
) -> R::Value {
    poll_until(timeout, f).unwrap_or_else(|| panic!("not within {timeout:?}: {what}"))
}

/// A message for [`eventually`] made only if it fails, from the state then (a
/// log, what a stream delivered so far).
pub fn lazily<F: Fn() -> String>(f: F) -> impl fmt::Display {
    struct Lazily<F>(F);
    impl<F: Fn() -> String> fmt::Display for Lazily<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&(self.0)())
        }
    }
    Lazily(f)
}

/// The product's default configuration with its data in `data_dir`. Tests take
/// the paths of the key, the database and the logs from its methods, so each
/// path rule lives only in `softphone_shared::config`.
pub fn config(data_dir: &Path) -> Config {
    let env = HashMap::from([(Config::env_name("data_dir"), data_dir.display().to_string())]);
    Config::load_with_env(None, &env).unwrap_or_else(|e| panic!("test configuration: {e}"))
}

/// Ports [`free_port`] hands out: below Linux's ephemeral range (32768 and up),
/// so no outgoing connection takes one before its server binds it.
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A loopback port that was free a moment ago and that this process has not
/// handed out before. (Asking the kernel for port 0 can return the same port
/// twice while nothing is bound to it yet: CI once rendered nginx's TLS server
/// onto the nchan control server's port.) Each process starts at its own
/// place in [`TEST_PORTS`], so concurrent test binaries rarely meet, and a
/// port something else holds is skipped.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7919) % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = TEST_PORTS.start + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("TEST_PORTS lies below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// Where the workspace's binaries are: `SOFTPHONE_BIN_DIR`, or the target
/// directory this test binary was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SOFTPHONE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    // Test binaries live in target/<profile>/deps/, binaries one level up.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo test --workspace` builds every binary)",
        path.display()
    );
    path
}

/// How to start the daemons.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra `SOFTPHONE_*` variables.
    pub env: Vec<(String, String)>,
    /// CPUs (a `taskset -c` list) the daemons and nginx run on.
    pub pin: Option<String>,
}

impl Options {
    pub fn with(mut self, name: &str, value: &str) -> Options {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The issuer and the verifier, running on free ports over one data directory.
pub struct Daemons {
    pub dir: TestDir,
    pub issuer: SocketAddr,
    pub verifier: SocketAddr,
    /// Where the rendered nginx's nchan control server listens.
    pub nchan_control: SocketAddr,
    options: Options,
    issuer_child: Option<Child>,
    verifier_child: Option<Child>,
}

impl Daemons {
    pub fn start(name: &str) -> Daemons {
        Daemons::start_with(name, Options::default())
    }

    pub fn start_with(name: &str, options: Options) -> Daemons {
        let dir = TestDir::new(name);
        let mut daemons = Daemons {
            issuer: SocketAddr::from(([127, 0, 0, 1], free_port())),
            verifier: SocketAddr::from(([127, 0, 0, 1], free_port())),
            nchan_control: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            options,
            issuer_child: None,
            verifier_child: None,
        };
        daemons.start_issuer();
        daemons.start_verifier();
        daemons
    }

    /// The environment every command of this fixture runs with.
    pub fn command(&self, binary_name: &str) -> Command {
        let mut cmd = pinned(self.options.pin.as_deref(), &binary(binary_name));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env());
        cmd
    }

    /// The variables the daemons and commands run with: this fixture's directory
    /// and ports, then the options' (`{dir}` in a value standing for the
    /// fixture's directory).
    fn env(&self) -> Vec<(String, String)> {
        let dir = self.dir.path().display().to_string();
        let own = [
            (
                "SOFTPHONE_DATA",
                self.dir.path().join("var").display().to_string(),
            ),
            ("SOFTPHONE_ISSUER_LISTEN", self.issuer.to_string()),
            ("SOFTPHONE_VERIFIER_LISTEN", self.verifier.to_string()),
            (
                "SOFTPHONE_NCHAN_CONTROL_LISTEN",
                self.nchan_control.to_string(),
            ),
            // Tests send hundreds of refused logins; they wait for the delay
            // only where it is what they test (`Options::with` overrides).
            ("SOFTPHONE_LOGIN_FAILURE_DELAY_MS", "0".to_owned()),
            // Not the installed system's config (the binaries' default when
            // it exists, as while the package test has it installed): the
            // built-in defaults and the variables above.
            ("SOFTPHONE_CONFIG", "/dev/null".to_owned()),
        ];
        own.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                self.options
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.replace("{dir}", &dir))),
            )
            .collect()
    }

    /// The configuration the daemons run with (the files' paths come from it).
    pub fn config(&self) -> Config {
        let env: HashMap<String, String> = self.env().into_iter().collect();
        Config::load_with_env(None, &env)
            .unwrap_or_else(|e| panic!("the daemons' configuration: {e}"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config().data_dir
    }

    /// The HMAC key file.
    pub fn key_file(&self) -> PathBuf {
        self.config().key_file()
    }

    /// The previous keys, beside the key file.
    pub fn previous_keys_file(&self) -> PathBuf {
        keyfile::previous_path(&self.key_file())
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.config().database()
    }

    /// The revocation epoch, beside the database.
    pub fn epoch_file(&self) -> PathBuf {
        Epoch::path_for(&self.database())
    }

    /// Runs SQL on the database over a connection of its own, as an operator
    /// would in `sqlite3`.
    pub fn sql(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.database()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of every row `query` returns, as text.
    pub fn sql_strings(&self, query: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.database()).unwrap();
        let mut stmt = conn.prepare(query).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    pub fn log_dir(&self) -> PathBuf {
        self.config().log_dir()
    }

    pub fn security_log(&self) -> PathBuf {
        self.config().security_log()
    }

    /// The daemon's standard error (`"issuer"` or `"verifier"`), as a file.
    pub fn stderr_file(&self, daemon: &str) -> PathBuf {
        self.dir.path().join(format!("{daemon}.stderr"))
    }

    fn spawn(&self, binary_name: &str, daemon: &str) -> Child {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_file(daemon))
            .unwrap();
        self.command(binary_name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    pub fn start_issuer(&mut self) {
        self.issuer_child = Some(self.spawn("softphone-issuer", "issuer"));
        wait_healthy(
            self.issuer,
            &format!("{BASE}/health"),
            self.issuer_child.as_mut().unwrap(),
        );
    }

    pub fn start_verifier(&mut self) {
        self.verifier_child = Some(self.spawn("softphone-verifier", "verifier"));
        wait_healthy(
            self.verifier,
            "/health",
            self.verifier_child.as_mut().unwrap(),
        );
    }

    /// Sets a variable for the daemons and commands started from now on (the
    /// running ones keep theirs).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.options.env.push((name.to_owned(), value.to_owned()));
    }

    pub fn issuer_child(&mut self) -> &mut Child {
        self.issuer_child.as_mut().unwrap()
    }

    pub fn verifier_child(&mut self) -> &mut Child {
        self.verifier_child.as_mut().unwrap()
    }

    /// Runs `softphone-issuer <args>` with `stdin` and returns (success, stdout+stderr).
    pub fn admin(&self, args: &[&str], stdin: &str) -> (bool, String) {
        run_with_input(self.command("softphone-issuer").args(args), stdin)
    }

    pub fn add_user(&self, username: &str, password: &str) {
        let (ok, out) = self.admin(&["user", "add", username], &format!("{password}\n"));
        assert!(ok, "user add failed: {out}");
    }

    /// POST login; returns the response, settled (see [`http::settled`]).
    pub fn login(&self, username: &str, password: &str) -> Response {
        let body = format!(r#"{{"username":"{username}","password":"{password}"}}"#);
        http::settled(|| {
            request(
                self.issuer,
                "POST",
                &format!("{BASE}/auth/login"),
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
        })
    }

    /// Logs in and returns (access, refresh), asserting success.
    pub fn tokens(&self, username: &str, password: &str) -> (String, String) {
        let r = self.login(username, password);
        assert_eq!(r.status, 200, "login failed: {}", r.text());
        (r.json_str("access_token"), r.json_str("refresh_token"))
    }

    pub fn issuer_get(&self, path: &str, bearer: Option<&str>) -> Response {
        self.issuer_call("GET", path, bearer)
    }

    pub fn issuer_post(&self, path: &str, bearer: Option<&str>) -> Response {
        self.issuer_call("POST", path, bearer)
    }

    fn issuer_call(&self, method: &str, path: &str, bearer: Option<&str>) -> Response {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(self.issuer, method, &format!("{BASE}{path}"), &headers, b"")
    }

    /// GET on the verifier's check path with a bearer header.
    pub fn check(&self, bearer: Option<&str>) -> Response {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(self.verifier, "GET", CHECK, &headers, b"")
    }

    /// Every log file the daemons wrote, concatenated.
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        for path in [
            self.security_log(),
            self.stderr_file("issuer"),
            self.stderr_file("verifier"),
        ] {
            text.push_str(&fs::read_to_string(path).unwrap_or_default());
        }
        text
    }

    /// Process ids of the issuer and the verifier.
    pub fn pids(&self) -> (u32, u32) {
        (
            self.issuer_child.as_ref().map_or(0, Child::id),
            self.verifier_child.as_ref().map_or(0, Child::id),
        )
    }

    /// Asserts that no token, no given secret and not the key appear in any log.
    pub fn assert_logs_clean(&self, secrets: &[&str]) {
        let logs = self.all_logs();
        let key = fs::read_to_string(self.key_file()).unwrap();
        assert!(!logs.contains("eyJ"), "a token reached a log:\n{logs}");
        assert!(!logs.contains(key.trim()), "the key reached a log");
        for secret in secrets {
            assert!(!logs.contains(secret), "a secret reached a log: {secret}");
        }
    }

    /// `kill -9` the issuer (and reap it).
    pub fn kill_issuer(&mut self) {
        if let Some(child) = self.issuer_child.take() {
            kill(child);
        }
    }

    /// `kill -9` the verifier (and reap it).
    pub fn kill_verifier(&mut self) {
        if let Some(child) = self.verifier_child.take() {
            kill(child);
        }
    }

    pub fn stop(&mut self) {
        for child in [self.issuer_child.take(), self.verifier_child.take()]
            .into_iter()
            .flatten()
        {
            kill(child);
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends signal `name` (`HUP`, `TERM`, …) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Runs `cmd` with `stdin` as its input; returns (success, stdout + stderr).
pub fn run_with_input(cmd: &mut Command, stdin: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails early does not read its input: ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A command for `program`, run under `taskset -c cpus` when pinned.
pub fn pinned(cpus: Option<&str>, program: &Path) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpus]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

impl Daemons {
    pub fn pin(&self) -> Option<&str> {
        self.options.pin.as_deref()
    }
}

/// Polls `path` until it answers 200; fails at once when the daemon exits.
pub fn wait_healthy(addr: SocketAddr, path: &str, child: &mut Child) {
    eventually(
        Duration::from_secs(20),
        format_args!("daemon on {addr} becomes healthy"),
        || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("daemon on {addr} exited during start-up: {status}");
            }
            http::try_request(addr, "GET", path, &[], b"").is_ok_and(|r| r.status == 200)
        },
    );
}

/// A live session row for user 7, `201`, expiring an hour after `now`, for tests
/// that exercise the store and the verifier in-process.
pub fn insert_session(store: &mut softphone_shared::store::Store, sid: &str, now: i64) {
    insert_session_of(store, sid, (7, "201"), now);
}

/// As [`insert_session`], for the user (id, username) given.
pub fn insert_session_of(
    store: &mut softphone_shared::store::Store,
    sid: &str,
    (user_id, username): (i64, &str),
    now: i64,
) {
    store
        .create_session(
            &softphone_shared::store::NewSession {
                sid,
                user_id,
                username,
                role: "user",
                cred_tag: "t",
                created: now,
                expires: now + 3600,
                refresh_jti: "r",
                password_hash: None,
            },
            usize::MAX,
        )
        .unwrap();
}

/// An access token for the session [`insert_session`] makes (user 7, `201`),
/// valid for an hour from `now`.
pub fn access_token(key: &softphone_shared::keys::Key, sid: &str, now: i64) -> String {
    softphone_shared::token::sign(
        &softphone_shared::token::Claims {
            sub: 7,
            username: "201",
            role: "user",
            iat: now,
            exp: now + 3600,
            kind: softphone_shared::token::TokenType::Access,
            sid,
            jti: "j",
            nbf: None,
        },
        key,
    )
}
