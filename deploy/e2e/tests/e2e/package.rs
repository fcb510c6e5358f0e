//! The Debian package, installed on this machine as an operator would: lintian
//! judges it, `dpkg -i` installs it, both daemons start exactly as the
//! installed units say (their ExecStart=, User=, Group=, UMask= and the notify
//! socket of Type=notify; systemd is not PID 1 here), an nginx loads the
//! installed site, and the seed's examples run through it over HTTPS. Then a
//! reinstall keeps the key, the users, the sessions and an edited config,
//! `dpkg -r` keeps them too, and `dpkg -P` leaves nothing behind.
//!
//! dpkg is global: one test does the whole lifecycle, refuses to start on a
//! machine that already has any of it, and a guard stops what it started and
//! purges the package on every way out.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use softphone_testkit::notify::NotifySocket;
use softphone_testkit::prom;
use softphone_testkit::{BASE, TestDir, eventually, poll_until, request};

use crate::seed::{SCRIPT, access_token, assert_seed_statuses, run_with_env};
use crate::{PASSWORD, USER};

const PACKAGE: &str = "softphone-backend";
const CONFIG: &str = "/etc/softphone-backend/softphone.toml";
const DATA: &str = "/var/lib/softphone-backend";
const LOGS: &str = "/var/log/softphone-backend";
const SITE: &str = "/etc/nginx/sites-available/softphone-backend";
const UNIT_DIR: &str = "/lib/systemd/system";
const UNITS: [&str; 2] = ["softphone-issuer.service", "softphone-verifier.service"];
/// The site's default TLS pair (package ssl-cert).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// What the packaged defaults listen on: nginx's HTTPS and plain HTTP, the
/// issuer, the verifier, nginx's nchan control server. The other tests take
/// theirs from 20000-32000.
const PORTS: [u16; 5] = [443, 8080, 8081, 8082, 8083];
/// systemd's PATH for services.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// lintian tags (warning, info) accepted, each with its reason. Errors are
/// never accepted. An entry lintian no longer reports fails the test too, so
/// the list stays true.
const LINTIAN_ACCEPTED: [(&str, &str); 4] = [
    (
        "initial-upload-closes-no-bugs",
        "not uploaded to Debian's archive: there is no ITP bug to close",
    ),
    (
        "hardening-no-fortify-functions",
        "Rust calls no glibc string functions that have _chk variants; the bundled SQLite is built by cc without _FORTIFY_SOURCE",
    ),
    (
        "package-supports-alternative-init-but-no-init.d-script",
        "systemd only: the units are Type=notify with a watchdog, which no init.d script can give",
    ),
    (
        "spelling-error-in-binary",
        "byte runs in linked code that read as words (ment, thIk), not text of ours",
    ),
];

/// Unit settings that change what runs and that [`Unit::start`] does not
/// reproduce: a unit that gains one fails here until the test learns it.
const NOT_REPRODUCED: [&str; 13] = [
    "Environment",
    "EnvironmentFile",
    "PassEnvironment",
    "WorkingDirectory",
    "RootDirectory",
    "ExecStartPre",
    "ExecStartPost",
    "ExecCondition",
    "DynamicUser",
    "SupplementaryGroups",
    "Nice",
    "CPUSchedulingPolicy",
    "StandardInput",
];

/// Paths the package, its scripts or its site can leave on the machine.
fn paths_of_the_package() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [
        "/etc/softphone-backend",
        DATA,
        LOGS,
        SITE,
        "/etc/nginx/sites-enabled/softphone-backend",
        "/etc/fail2ban/filter.d/softphone-backend.conf",
        "/etc/fail2ban/jail.d/softphone-backend.conf",
        "/etc/logrotate.d/softphone-backend",
        "/usr/bin/softphone-issuer",
        "/usr/bin/softphone-verifier",
        "/usr/share/doc/softphone-backend",
        "/usr/share/man/man1/softphone-issuer.1.gz",
        "/usr/share/man/man1/softphone-verifier.1.gz",
        "/var/log/nginx/softphone-access.log",
        "/var/log/nginx/softphone-error.log",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for unit in UNITS {
        paths.push(Path::new(UNIT_DIR).join(unit));
        // deb-systemd-helper's masks after `dpkg -r`.
        paths.push(Path::new("/etc/systemd/system").join(unit));
    }
    paths
}

/// What of the package is on this machine: paths, deb-systemd-helper's state,
/// the user and group, dpkg's record. Empty before the test and after purge.
fn traces() -> Vec<String> {
    let mut found: Vec<String> = paths_of_the_package()
        .into_iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    for dir in [
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
        "/etc/systemd/system",
    ] {
        found.extend(files_naming_the_units(Path::new(dir)));
    }
    for database in ["passwd", "group"] {
        if command("getent", &[database, "softphone"]).status.success() {
            found.push(format!("{database} entry softphone"));
        }
    }
    if let Some(status) = dpkg_status() {
        found.push(format!("dpkg: {PACKAGE} {status}"));
    }
    found
}

/// Files under `dir` (any depth) named after one of our units: enable links,
/// masks and deb-systemd-helper's records of them.
fn files_naming_the_units(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if UNITS.iter().any(|u| name.starts_with(u)) {
            found.push(path.display().to_string());
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_naming_the_units(&path));
        }
    }
    found
}

/// dpkg's status of the package (`install ok installed`, `deinstall ok
/// config-files`, …), `None` when dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = command("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.is_empty() && !status.ends_with("not-installed"))
        .then_some(status)
}

fn command(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs dpkg, waiting while another dpkg or apt holds its lock (a CI run's
/// package installs on the same machine); stdout and stderr together.
fn dpkg(args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = command("dpkg", args);
        let text = text(&out);
        if out.status.success() {
            return text;
        }
        assert!(
            text.contains("lock") && Instant::now() < deadline,
            "dpkg {args:?} failed:\n{text}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The package deploy/package.sh built for this workspace's version.
fn find_package() -> PathBuf {
    // Test binaries run from <target>/debug/deps; cargo-deb writes <target>/debian.
    let target = softphone_testkit::bin_dir().parent().unwrap().to_path_buf();
    let dir = target.join("debian");
    let prefix = format!("{PACKAGE}_{}-", env!("CARGO_PKG_VERSION"));
    let found: Vec<PathBuf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .collect();
    // The newest, should an older revision lie beside it.
    found
        .into_iter()
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*.deb in {}: run deploy/package.sh (deploy/test.sh does)",
                dir.display()
            )
        })
}

/// lintian's tags as (severity letter, tag, context).
fn lintian(deb: &Path) -> Vec<(char, String, String)> {
    let out = Command::new("lintian")
        .args(["--display-info", "--fail-on", "none"])
        .arg(deb)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("lintian: {e} (deploy/test.sh installs it)"));
    let text = text(&out);
    assert!(out.status.success(), "lintian failed to run:\n{text}");
    text.lines()
        .filter_map(|line| {
            // `W: softphone-backend: tag-name context…`
            let (severity, rest) = line.split_once(": ")?;
            let severity = severity.chars().next().filter(|_| severity.len() == 1)?;
            let rest = rest.strip_prefix(PACKAGE)?.split_once(": ")?.1;
            let (tag, context) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((severity, tag.to_owned(), context.to_owned()))
        })
        .collect()
}

/// How an installed unit runs its daemon.
struct Unit {
    name: &'static str,
    exec_start: Vec<String>,
    user: String,
    group: String,
    umask: String,
    watchdog_usec: String,
    state_directory_mode: u32,
    logs_directory_mode: u32,
}

impl Unit {
    /// Reads the installed unit file's [Service] section.
    fn installed(name: &'static str) -> Unit {
        let path = Path::new(UNIT_DIR).join(name);
        let file = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut section = "";
        let mut settings = Vec::new();
        for line in file.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section == "[Service]" {
                let (key, value) = line.split_once('=').unwrap();
                assert!(
                    !NOT_REPRODUCED.contains(&key),
                    "{name} sets {key}=, which this test does not reproduce yet"
                );
                settings.push((key.to_owned(), value.to_owned()));
            }
        }
        let get = |key: &str| -> String {
            settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{name} has no {key}="))
        };
        let exec_start = get("ExecStart");
        // Prefixes (`-`, `@`, `+`, …), quoting and specifiers would need
        // systemd's own parser; ours use none of them.
        assert!(
            exec_start.starts_with('/') && !exec_start.contains(['"', '\'', '%', '$', '\\']),
            "{name}: ExecStart={exec_start} needs systemd's parser"
        );
        let seconds: u64 = get("WatchdogSec")
            .parse()
            .unwrap_or_else(|e| panic!("{name}: WatchdogSec in plain seconds: {e}"));
        let mode = |key: &str| u32::from_str_radix(&get(key), 8).unwrap();
        Unit {
            name,
            exec_start: exec_start.split_whitespace().map(str::to_owned).collect(),
            user: get("User"),
            group: get("Group"),
            umask: get("UMask"),
            watchdog_usec: (seconds * 1_000_000).to_string(),
            state_directory_mode: mode("StateDirectoryMode"),
            logs_directory_mode: mode("LogsDirectoryMode"),
        }
    }

    /// Starts the daemon as systemd would: its user and group with their
    /// supplementary groups, its umask, systemd's environment and a notify
    /// socket; returns once it sent READY=1.
    fn start(&self, dir: &Path) -> Child {
        let notify_dir = dir.join(format!("notify-{}", self.name));
        fs::create_dir_all(&notify_dir).unwrap();
        fs::set_permissions(&notify_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let _ = fs::remove_file(notify_dir.join("notify.sock"));
        let notify = NotifySocket::bind(&notify_dir);
        // The daemon sends as its own user.
        fs::set_permissions(notify.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let home = String::from_utf8(command("getent", &["passwd", &self.user]).stdout)
            .unwrap()
            .split(':')
            .nth(5)
            .unwrap_or_else(|| panic!("no user {}", self.user))
            .to_owned();
        let stderr = fs::File::create(dir.join(format!("{}.stderr", self.name))).unwrap();
        let mut child = Command::new("sh")
            // setpriv execs the daemon, so the child's pid is the daemon's.
            .args([
                "-c",
                r#"umask "$1" && shift && exec "$@""#,
                "sh",
                &self.umask,
            ])
            .args([
                "setpriv",
                &format!("--reuid={}", self.user),
                &format!("--regid={}", self.group),
                "--init-groups",
                "--",
            ])
            .args(&self.exec_start)
            .env_clear()
            .env("PATH", SERVICE_PATH)
            .env("HOME", &home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("NOTIFY_SOCKET", notify.path())
            .env("WATCHDOG_USEC", &self.watchdog_usec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stderr = || fs::read_to_string(dir.join(format!("{}.stderr", self.name))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    stderr()
                );
            }
            let slice = (Instant::now() + Duration::from_millis(100)).min(deadline);
            if notify
                .recv_until(slice)
                .is_some_and(|m| m.has_line("READY=1"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} sent no READY=1 in 20 s:\n{}",
                self.name,
                stderr()
            );
        }
        // The daemon itself, as the unit's user.
        let pid = child.id();
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, Path::new(&self.exec_start[0]), "{}", self.name);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let expected = String::from_utf8(command("id", &["-u", &self.user]).stdout).unwrap();
        assert_eq!(uid, expected.trim(), "{} runs as {}", self.name, self.user);
        child
    }
}

/// Everything this test started; dropping it stops the processes and purges
/// the package, so the machine is left as it was found.
struct Machine {
    dir: TestDir,
    processes: Vec<(&'static str, Child)>,
}

impl Machine {
    /// Both daemons from their installed units, then nginx with the installed
    /// site.
    fn start_all(&mut self) {
        for name in UNITS {
            let child = Unit::installed(name).start(self.dir.path());
            self.processes.push((name, child));
        }
        let nginx = start_nginx(self.dir.path());
        self.processes.push(("nginx", nginx));
    }

    /// Stops the processes as `systemctl stop` would (SIGTERM; nginx's
    /// graceful SIGQUIT), newest first, then SIGKILL after the units' 15 s.
    fn stop_all(&mut self) {
        while let Some((name, mut child)) = self.processes.pop() {
            let signal = if name == "nginx" { "-QUIT" } else { "-TERM" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            if poll_until(Duration::from_secs(15), || {
                child.try_wait().ok().flatten().is_some()
            })
            .is_none()
            {
                eprintln!("{name} ignored {signal}; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop_all();
        if dpkg_status().is_some() {
            let out = command("dpkg", &["-P", PACKAGE]);
            if !out.status.success() {
                eprintln!("cleanup: dpkg -P {PACKAGE} failed:\n{}", text(&out));
            }
        }
        let left = traces();
        if !left.is_empty() {
            eprintln!("cleanup: still on this machine: {left:?}");
        }
    }
}

/// nginx with a throwaway main configuration around the installed site: what
/// Debian's nginx.conf does (its modules, workers as www-data), with the pid
/// and error log in `dir`, so the system's nginx setup is not touched.
fn start_nginx(dir: &Path) -> Child {
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "user www-data;\n\
             worker_processes 1;\n\
             daemon off;\n\
             pid {dir}/nginx.pid;\n\
             include /etc/nginx/modules-enabled/*.conf;\n\
             events {{}}\n\
             http {{\n\
             \x20   include /etc/nginx/mime.types;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   include {SITE};\n\
             }}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let error_log = dir.join("nginx-error.log");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "-c".to_owned(),
            conf.display().to_string(),
            "-e".to_owned(),
            error_log.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let test = Command::new("nginx")
        .args(args(&["-t", "-q"]))
        .output()
        .unwrap();
    assert!(test.status.success(), "nginx -t: {}", text(&test));
    let mut child = Command::new("nginx")
        .args(args(&[]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let plain = SocketAddr::from(([127, 0, 0, 1], 8080));
    eventually(Duration::from_secs(20), "nginx comes up on 8080", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "nginx exited ({status}):\n{}",
                fs::read_to_string(&error_log).unwrap_or_default()
            );
        }
        softphone_testkit::http::try_request(plain, "GET", &format!("{BASE}/health"), &[], b"")
            .is_ok()
    });
    child
}

/// The name the snakeoil certificate is for (its first DNS name).
fn certificate_name() -> String {
    let out = command(
        "openssl",
        &["x509", "-in", SNAKEOIL, "-noout", "-ext", "subjectAltName"],
    );
    let text = text(&out);
    text.split([' ', ',', '\n'])
        .find_map(|w| w.strip_prefix("DNS:"))
        .unwrap_or_else(|| panic!("{SNAKEOIL} names no DNS host: {text}"))
        .to_owned()
}

/// curl over HTTPS to the installed site, trusting the snakeoil certificate
/// and resolving its name to this host, through `CURL_HOME`'s .curlrc (as the
/// seed script is run); returns (status, body).
fn curl(curl_home: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .env("CURL_HOME", curl_home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// `softphone-issuer <args>` as root, with the installed config (the
/// default, as an admin runs it); asserts success, returns stdout.
fn admin(args: &[&str], stdin: &str) -> String {
    let mut cmd = Command::new("/usr/bin/softphone-issuer");
    cmd.args(args).env_clear().env("PATH", SERVICE_PATH);
    let (ok, out) = softphone_testkit::run_with_input(&mut cmd, stdin);
    assert!(ok, "softphone-issuer {args:?}: {out}");
    out
}

fn mode_and_owner(path: &str) -> (u32, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.permissions().mode() & 0o7777, meta.uid())
}

fn uid_of(user: &str) -> u32 {
    let out = command("id", &["-u", user]);
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Asserts the data and log directories are as postinst makes them and as the
/// units' StateDirectoryMode= and LogsDirectoryMode= keep them.
fn assert_directories(units: &[Unit]) {
    let softphone = uid_of("softphone");
    for unit in units {
        assert_eq!(mode_and_owner(DATA), (unit.state_directory_mode, softphone));
        assert_eq!(mode_and_owner(LOGS), (unit.logs_directory_mode, softphone));
    }
    // nginx's workers pass through the data directory to the verifier's socket.
    assert_eq!(mode_and_owner(DATA).0 & 0o001, 0o001);
    assert_eq!(mode_and_owner(&format!("{DATA}/db")), (0o700, softphone));
    // Present for fail2ban's jail before the daemons first write to it.
    assert_eq!(
        mode_and_owner(&format!("{LOGS}/security.log")),
        (0o640, softphone)
    );
}

/// lintian finds no error, and only the warnings and notes we accept.
fn assert_lintian_accepts(deb: &Path) {
    let tags = lintian(deb);
    let errors: Vec<_> = tags.iter().filter(|(s, _, _)| *s == 'E').collect();
    assert!(errors.is_empty(), "lintian errors: {errors:?}");
    let unaccepted: Vec<_> = tags
        .iter()
        .filter(|(_, tag, _)| !LINTIAN_ACCEPTED.iter().any(|(t, _)| t == tag))
        .collect();
    assert!(unaccepted.is_empty(), "lintian: {unaccepted:?}");
    for (accepted, _) in LINTIAN_ACCEPTED {
        assert!(
            tags.iter().any(|(_, tag, _)| tag == accepted),
            "lintian no longer reports {accepted}: drop it from LINTIAN_ACCEPTED"
        );
    }
}

/// What `dpkg -i` (its output `installed`) must have done, and not done.
fn assert_fresh_install(installed: &str, units: &[Unit]) {
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
    // postinst says how to go live, and enabled and started nothing.
    assert!(
        installed.contains("nothing was enabled or started")
            && installed.contains("/etc/nginx/sites-enabled/"),
        "{installed}"
    );
    let enabled = files_naming_the_units(Path::new("/etc/systemd/system"));
    assert!(enabled.is_empty(), "enabled on install: {enabled:?}");
    assert!(!Path::new("/etc/nginx/sites-enabled/softphone-backend").exists());
    assert_directories(units);
    // Every installed file matches the package's md5sums (which package.sh
    // adds: cargo-deb writes none).
    let verify = command("dpkg", &["--verify", PACKAGE]);
    assert!(
        verify.status.success() && text(&verify).is_empty(),
        "dpkg --verify: {}",
        text(&verify)
    );
    assert!(
        Path::new(&format!("/var/lib/dpkg/info/{PACKAGE}.md5sums")).is_file(),
        "no md5sums: dpkg --verify checked nothing"
    );
    let conffiles =
        String::from_utf8(command("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]).stdout)
            .unwrap();
    for conffile in [
        CONFIG,
        SITE,
        "/etc/fail2ban/jail.d/softphone-backend.conf",
        "/etc/logrotate.d/softphone-backend",
    ] {
        assert!(
            conffiles.contains(conffile),
            "{conffile} is no conffile: {conffiles}"
        );
    }
}

fn step(started: Instant, what: &str) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

#[test]
fn the_package_installs_serves_the_seed_examples_and_purges_clean() {
    let started = Instant::now();
    let deb = find_package();
    let before = traces();
    assert!(
        before.is_empty(),
        "this test installs {PACKAGE} and purges it at the end; this machine already has: {before:?}"
    );
    for port in PORTS {
        assert!(
            TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "port {port} is taken: the packaged defaults need it"
        );
    }

    assert_lintian_accepts(&deb);
    step(started, "lintian");

    let mut machine = Machine {
        dir: TestDir::new("package"),
        processes: Vec::new(),
    };
    let deb = deb.to_str().unwrap();
    let installed = dpkg(&["-i", deb]);
    step(started, "dpkg -i");
    let units = UNITS.map(Unit::installed);
    assert_fresh_install(&installed, &units);

    // The operator's first user, then the units, then the site.
    admin(&["user", "add", USER], &format!("{PASSWORD}\n"));
    machine.start_all();
    step(started, "daemons (READY=1) and nginx up");
    let key_file = format!("{DATA}/db/secret.key");
    assert_eq!(mode_and_owner(&key_file), (0o600, uid_of("softphone")));
    assert_eq!(
        mode_and_owner(&format!("{DATA}/db/softphone.db")),
        (0o600, uid_of("softphone"))
    );

    // Plain HTTP only redirects to HTTPS.
    let r = request(
        SocketAddr::from(([127, 0, 0, 1], 8080)),
        "GET",
        &format!("{BASE}/health"),
        &[],
        b"",
    );
    assert_eq!(r.status, 308);
    assert!(
        r.header("Location")
            .is_some_and(|l| l.starts_with("https://")),
        "{:?}",
        r.header("Location")
    );

    // The seed's examples, verbatim, over HTTPS to port 443: curl trusts the
    // snakeoil certificate and resolves its name here through a .curlrc.
    let host = certificate_name();
    let curl_home = machine.dir.path().join("curl");
    fs::create_dir_all(&curl_home).unwrap();
    fs::write(
        curl_home.join(".curlrc"),
        format!("cacert = \"{SNAKEOIL}\"\nresolve = \"{host}:443:127.0.0.1\"\n"),
    )
    .unwrap();
    let base = format!("https://{host}{BASE}");
    let (statuses, out) =
        run_with_env(SCRIPT, &base, &[("CURL_HOME", curl_home.to_str().unwrap())]);
    step(started, "the seed script");
    // As over plain HTTP.
    assert_seed_statuses(&statuses, &out);
    let seed_token = access_token(&out);

    // What an operator's Prometheus sees after the seed's examples, from the
    // packaged daemons' loopback listeners (the packaged config's defaults):
    // valid to promtool, and counting the seed's one login and its refusals.
    let issuer_metrics = prom::scrape(SocketAddr::from(([127, 0, 0, 1], 8081)));
    let verifier_metrics = prom::scrape(SocketAddr::from(([127, 0, 0, 1], 8082)));
    prom::check_metrics(&issuer_metrics);
    prom::check_metrics(&verifier_metrics);
    eprintln!("issuer /metrics after the seed script:\n{issuer_metrics}");
    eprintln!("verifier /metrics after the seed script:\n{verifier_metrics}");
    assert_eq!(
        prom::value(
            &issuer_metrics,
            r#"softphone_issuer_logins_total{outcome="success"}"#
        ),
        1.0
    );
    assert!(
        prom::value(
            &verifier_metrics,
            r#"softphone_verifier_decisions_total{result="denied",reason="revoked"}"#
        ) >= 1.0,
        "the seed's check after its logout: {verifier_metrics}"
    );

    // A session that must survive the reinstall; the media check passes
    // through nginx's workers (www-data) to the verifier's unix socket.
    let login = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    let (status, body) = curl(
        &curl_home,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &login,
            &format!("{base}/auth/login"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let tokens: serde_json::Value = serde_json::from_str(&body).unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let bearer = format!("Authorization: Bearer {access}");
    let (status, body) = curl(
        &curl_home,
        &["-H", &bearer, &format!("{base}/check-media-access")],
    );
    assert_eq!(status, 200, "{body}");

    // No token and no password in the logs our site and daemons wrote.
    let access_log = fs::read_to_string("/var/log/nginx/softphone-access.log").unwrap();
    assert!(access_log.contains("/auth/login"), "{access_log}");
    let security_log = fs::read_to_string(format!("{LOGS}/security.log")).unwrap();
    assert!(security_log.contains("[AUTH_SUCCESS]"), "{security_log}");
    for log in [&access_log, &security_log] {
        for secret in ["eyJ", PASSWORD, &seed_token, &access, &refresh] {
            assert!(!log.contains(secret), "a secret reached a log");
        }
    }

    // Reinstall over an edited config, as an upgrade would.
    let key = fs::read(&key_file).unwrap();
    let keys = admin(&["key", "list"], "");
    let users = admin(&["user", "list"], "");
    assert!(users.contains(USER), "{users}");
    let shipped = fs::read_to_string(CONFIG).unwrap();
    assert!(shipped.contains("\nleeway = 30\n"), "{shipped}");
    let edited = shipped.replace("\nleeway = 30\n", "\nleeway = 25\n");
    fs::write(CONFIG, &edited).unwrap();
    machine.stop_all();
    dpkg(&["-i", deb]);
    step(started, "reinstalled");
    assert_eq!(
        fs::read_to_string(CONFIG).unwrap(),
        edited,
        "the edit was lost"
    );
    assert!(fs::read(&key_file).unwrap() == key, "the key changed");
    assert_eq!(admin(&["key", "list"], ""), keys);
    assert_eq!(admin(&["user", "list"], ""), users);
    assert_directories(&units);
    // The daemons carry on with the kept key and sessions.
    machine.start_all();
    let bearer = format!("Authorization: Bearer {refresh}");
    let (status, body) = curl(
        &curl_home,
        &["-X", "POST", "-H", &bearer, &format!("{base}/auth/refresh")],
    );
    assert_eq!(
        status, 200,
        "the session did not survive the reinstall: {body}"
    );
    machine.stop_all();
    step(started, "restarted after the reinstall");

    // Remove: the programs go; key, database, users and settings stay.
    dpkg(&["-r", PACKAGE]);
    step(started, "dpkg -r");
    assert_eq!(dpkg_status().as_deref(), Some("deinstall ok config-files"));
    for gone in ["/usr/bin/softphone-issuer", "/usr/bin/softphone-verifier"] {
        assert!(!Path::new(gone).exists(), "{gone} stayed");
    }
    for unit in UNITS {
        assert!(!Path::new(UNIT_DIR).join(unit).exists(), "{unit} stayed");
    }
    assert!(fs::read(&key_file).unwrap() == key, "the key changed");
    assert!(Path::new(&format!("{DATA}/db/softphone.db")).is_file());
    // Conffiles stay until purge.
    assert_eq!(fs::read_to_string(CONFIG).unwrap(), edited);
    assert!(Path::new(SITE).is_file());
    // The user stays, owning what was kept.
    assert_eq!(
        mode_and_owner(&format!("{DATA}/db")),
        (0o700, uid_of("softphone"))
    );

    // Purge: nothing of it is left.
    dpkg(&["-P", PACKAGE]);
    step(started, "dpkg -P");
    let left = traces();
    assert!(left.is_empty(), "left after purge: {left:?}");
}

/// The README's install command names the package this workspace builds.
#[test]
fn the_readme_installs_the_package_of_this_version() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let line = format!(
        "apt install ./target/debian/{PACKAGE}_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    );
    assert!(readme.contains(&line), "README.md lacks `{line}`");
}
