//! The real nginx (Debian's, with nchan) in front of [`Daemons`], configured by
//! rendering our deploy templates for temporary ports and directories. Fails
//! loudly when nginx or nchan is missing: `deploy/test.sh` installs them.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{BASE, Daemons, eventually, free_port, http, lazily, poll_until};

/// What a front may do differently from [`Nginx::start`]'s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Front<'a> {
    /// A file of extra server-level directives.
    pub include: Option<&'a Path>,
    /// A verifier upstream other than the configured one.
    pub verifier: Option<&'a str>,
    /// Another front for the same daemons, by this name: its own prefix and
    /// its own nchan control port (the verifier ends subscriptions on the
    /// first front only).
    pub name: Option<&'a str>,
    /// `worker_processes` (default 1: tests and the bench's one-worker rows).
    pub workers: Option<&'a str>,
    /// Plain HTTP redirects to HTTPS, as on an installed host (by default it
    /// serves the API, as `deploy/run.sh` renders it for loopback use).
    pub redirect: bool,
}

pub struct Nginx {
    /// Plain HTTP.
    pub addr: SocketAddr,
    /// HTTPS, with the self-signed certificate [`Nginx::ca_file`].
    pub tls_addr: SocketAddr,
    /// Served under `/.well-known/acme-challenge/` on plain HTTP.
    pub acme_webroot: PathBuf,
    pub prefix: PathBuf,
    pub recordings: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx for `daemons`, serving `recordings` and proxying the WebSocket
    /// location to `ws_upstream`.
    pub fn start(daemons: &Daemons, ws_upstream: &str) -> Nginx {
        Nginx::start_with(daemons, ws_upstream, &Front::default())
    }

    /// As [`Nginx::start`], with the choices of `front`.
    pub fn start_with(daemons: &Daemons, ws_upstream: &str, front: &Front<'_>) -> Nginx {
        let Front {
            include,
            verifier,
            name,
            workers,
            redirect,
        } = *front;
        let second = name.is_some();
        let name = name.unwrap_or("nginx");
        let nginx = which("nginx").unwrap_or_else(|| {
            panic!("nginx is not installed: run deploy/test.sh, which installs nginx and libnginx-mod-nchan")
        });
        let prefix = daemons.dir.path().join(name);
        let recordings = daemons.dir.path().join("recordings");
        fs::create_dir_all(&prefix).unwrap();
        fs::create_dir_all(&recordings).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let tls_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let tls = prefix.join("tls");
        let made = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tls-selfsigned.sh"))
            .arg(&tls)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "deploy/tls-selfsigned.sh failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let acme_webroot = daemons.dir.path().join("acme");
        fs::create_dir_all(&acme_webroot).unwrap();
        let mut args: Vec<String> = [
            "nginx-config",
            "main",
            "--listen",
            &addr.to_string(),
            "--tls-listen",
            &tls_addr.to_string(),
            "--tls-certificate",
            tls.join("cert.pem").to_str().unwrap(),
            "--tls-certificate-key",
            tls.join("key.pem").to_str().unwrap(),
            "--acme-webroot",
            acme_webroot.to_str().unwrap(),
            "--plain-http",
            if redirect { "redirect" } else { "serve" },
            "--prefix",
            prefix.to_str().unwrap(),
            "--recordings",
            recordings.to_str().unwrap(),
            "--access-log",
            prefix.join("access.log").to_str().unwrap(),
            "--error-log",
            prefix.join("error.log").to_str().unwrap(),
            "--ws-upstream",
            ws_upstream,
            "--workers",
            workers.unwrap_or("1"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(include) = include {
            args.extend(["--include".to_owned(), include.display().to_string()]);
        }
        if let Some(verifier) = verifier {
            args.extend(["--verifier".to_owned(), verifier.to_owned()]);
        }
        if second {
            // The configured control port is the first front's.
            let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
            args.extend(["--nchan-control".to_owned(), control.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, conf) = daemons.admin(&args, "");
        assert!(ok, "nginx-config failed: {conf}");
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();

        let args = |extra: &[&str]| {
            let mut a = vec![
                "-p".to_owned(),
                prefix.display().to_string(),
                "-c".to_owned(),
                conf_path.display().to_string(),
                "-e".to_owned(),
                prefix.join("error.log").display().to_string(),
            ];
            a.extend(extra.iter().map(|s| (*s).to_owned()));
            a
        };
        let test = Command::new(&nginx)
            .args(args(&["-t", "-q"]))
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t failed (is libnginx-mod-nchan installed? deploy/test.sh installs it):\n{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = crate::pinned(daemons.pin(), &nginx)
            .args(args(&[]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx {
            addr,
            tls_addr,
            acme_webroot,
            prefix,
            recordings,
            child: Some(child),
        };
        nginx.wait_ready();
        nginx
    }

    fn wait_ready(&mut self) {
        let (addr, error_log) = (self.addr, self.prefix.join("error.log"));
        let read_error_log = || fs::read_to_string(&error_log).unwrap_or_default();
        let child = self.child.as_mut().unwrap();
        eventually(
            Duration::from_secs(20),
            lazily(|| format!("nginx comes up; its error log:\n{}", read_error_log())),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "nginx exited during start-up ({status}):\n{}",
                        read_error_log()
                    );
                }
                http::try_request(addr, "GET", &format!("{BASE}/health"), &[], b"")
                    // 308: a front whose plain HTTP redirects to HTTPS.
                    .is_ok_and(|r| r.status == 200 || r.status == 308)
            },
        );
    }

    /// The self-signed certificate of the HTTPS server (`curl --cacert`).
    pub fn ca_file(&self) -> PathBuf {
        self.prefix.join("tls/cert.pem")
    }

    /// The HTTPS base URL of the API.
    pub fn https_base(&self) -> String {
        format!("https://{}{BASE}", self.tls_addr)
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    /// Stops nginx the graceful way (SIGQUIT to the master), so no worker is left.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        if poll_until(Duration::from_secs(10), || child.try_wait().ok().flatten()).is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
