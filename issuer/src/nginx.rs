//! Renders the nginx configuration from the templates in `deploy/nginx/`, the one
//! source of truth for every form we ship:
//! - `main`: a whole nginx.conf for an nginx of its own (run.sh, tests);
//! - `site`: a server for a plain Debian nginx (`sites-enabled/`);
//! - `upstreams` + `locations`: the http-level and server-level halves for an
//!   existing server such as MikoPBX's.

use std::net::SocketAddr;
use std::path::PathBuf;

use softphone_shared::config::Config;

use crate::{Error, Result};

const MAIN: &str = include_str!("../../deploy/nginx/main.conf.in");
const SITE: &str = include_str!("../../deploy/nginx/site.conf.in");
const UPSTREAMS: &str = include_str!("../../deploy/nginx/upstreams.conf.in");
const LOCATIONS: &str = include_str!("../../deploy/nginx/locations.conf.in");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Main,
    Site,
    Upstreams,
    Locations,
}

/// What the templates leave open.
#[derive(Debug, Clone)]
pub struct Params {
    pub issuer: SocketAddr,
    /// `127.0.0.1:8082` or `unix:/path/verifier.sock`.
    pub verifier: String,
    /// nginx's control server for nchan, where the verifier deletes channels.
    pub nchan_control: SocketAddr,
    /// `listen` argument of the site's server (`8080`, `127.0.0.1:8080`, …).
    pub listen: String,
    /// Directory served under `/pbxcore/softphone/recordings/`.
    pub recordings: PathBuf,
    /// Where `/pbxcore/softphone/ws` goes: Asterisk's HTTP server on a PBX.
    pub ws_upstream: String,
    pub access_log: String,
    /// Error log of the token-carrying locations (they log only `crit`).
    pub error_log: String,
    /// nginx prefix for the `main` form: pid, error log, temp directories.
    pub prefix: PathBuf,
    pub workers: String,
    /// A file of extra server-level directives (the site and main forms include it).
    pub include: Option<PathBuf>,
}

impl Params {
    /// Defaults for a Debian host, with the daemons' addresses from `config`.
    pub fn new(config: &Config) -> Params {
        Params {
            issuer: config.issuer_listen,
            verifier: match &config.verifier_socket {
                Some(path) => format!("unix:{}", path.display()),
                None => config.verifier_listen.to_string(),
            },
            nchan_control: config.nchan_control_listen,
            listen: "8080".into(),
            recordings: "/var/spool/asterisk/monitor".into(),
            ws_upstream: "http://127.0.0.1:8088/asterisk/ws".into(),
            access_log: "/var/log/nginx/softphone-access.log".into(),
            error_log: "/var/log/nginx/softphone-error.log".into(),
            prefix: "/var/lib/softphone-backend/nginx".into(),
            workers: "auto".into(),
            include: None,
        }
    }
}

pub fn render(form: Form, p: &Params) -> Result<String> {
    for (name, value) in [
        ("listen", p.listen.as_str()),
        ("verifier", p.verifier.as_str()),
        ("ws_upstream", p.ws_upstream.as_str()),
        ("access_log", p.access_log.as_str()),
        ("error_log", p.error_log.as_str()),
        ("workers", p.workers.as_str()),
    ] {
        check_value(name, value)?;
    }
    for (name, path) in [("recordings", &p.recordings), ("prefix", &p.prefix)] {
        let text = path.to_str().ok_or_else(|| bad(name, "is not UTF-8"))?;
        check_value(name, text)?;
        if !path.is_absolute() {
            return Err(bad(name, "must be an absolute path"));
        }
    }
    let include = match &p.include {
        Some(path) => {
            let text = path
                .to_str()
                .ok_or_else(|| bad("include", "is not UTF-8"))?;
            check_value("include", text)?;
            format!("    include {text};\n")
        }
        None => String::new(),
    };
    if !(p.ws_upstream.starts_with("http://") || p.ws_upstream.starts_with("https://")) {
        return Err(bad("ws_upstream", "must be an http:// or https:// URL"));
    }
    let fill = |template: &str| {
        template
            .replace("{{issuer}}", &p.issuer.to_string())
            .replace("{{verifier}}", &p.verifier)
            .replace("{{nchan_control}}", &p.nchan_control.to_string())
            .replace("{{listen}}", &p.listen)
            .replace("{{recordings}}", &p.recordings.display().to_string())
            .replace("{{ws_upstream}}", &p.ws_upstream)
            .replace("{{access_log}}", &p.access_log)
            .replace("{{error_log}}", &p.error_log)
            .replace("{{prefix}}", &p.prefix.display().to_string())
            .replace("{{workers}}", &p.workers)
    };
    let upstreams = fill(UPSTREAMS);
    let locations = fill(LOCATIONS);
    let site = fill(SITE)
        .replace("{{include}}\n", &include)
        .replace("{{upstreams}}", &upstreams)
        .replace("{{locations}}", &indent(&locations, "    "));
    Ok(match form {
        Form::Upstreams => upstreams,
        Form::Locations => locations,
        Form::Site => site,
        Form::Main => fill(MAIN).replace("{{site}}", &indent(&site, "    ")),
    })
}

/// Values land inside nginx directives: nothing that could end or open one.
fn check_value(name: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || ";{}'\"#$\\".contains(c))
    {
        return Err(bad(
            name,
            "must be non-empty, without spaces, quotes, `;`, `{`, `}`, `#`, `$` or `\\`",
        ));
    }
    Ok(())
}

fn bad(name: &str, reason: &str) -> Error {
    Error::Usage(format!("nginx-config: {name} {reason}"))
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{by}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        let config = Config::load_with_env(None, &Default::default()).unwrap();
        Params::new(&config)
    }

    #[test]
    fn every_placeholder_is_filled() {
        for form in [Form::Main, Form::Site, Form::Upstreams, Form::Locations] {
            let text = render(form, &params()).unwrap();
            assert!(!text.contains("{{"), "{form:?}: {text}");
        }
        let main = render(Form::Main, &params()).unwrap();
        assert!(main.contains("server 127.0.0.1:8082;") && main.contains("server 127.0.0.1:8081;"));
        assert!(main.contains("load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"));
    }

    #[test]
    fn values_cannot_inject_directives() {
        let mut p = params();
        p.recordings = "/srv/rec; }  location / { root /".into();
        assert!(render(Form::Site, &p).is_err());
        let mut p = params();
        p.ws_upstream = "ftp://x".into();
        assert!(render(Form::Site, &p).is_err());
        let mut p = params();
        p.recordings = "relative/dir".into();
        assert!(render(Form::Site, &p).is_err());
    }

    /// The fail2ban jail bans on every port the rendered site listens on, so a
    /// banned guesser cannot keep going on the port the app actually uses.
    #[test]
    fn the_fail2ban_jail_covers_the_ports_nginx_listens_on() {
        let jail = include_str!("../../deploy/fail2ban/jail.d/softphone-backend.conf");
        let ports: Vec<u16> = jail
            .lines()
            .find_map(|l| l.strip_prefix("port ="))
            .expect("the jail has a port line")
            .split(',')
            .flat_map(|p| match p.trim() {
                "http" => vec![80],
                "https" => vec![443],
                range => match range.split_once(':') {
                    Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect(),
                    None => vec![range.parse().unwrap()],
                },
            })
            .collect();
        let site = render(Form::Site, &params()).unwrap();
        let listening: Vec<u16> = site
            .lines()
            .filter_map(|l| l.trim().strip_prefix("listen "))
            .map(|l| l.trim_end_matches(';').split_whitespace().next().unwrap())
            // Loopback servers (the nchan control) are not the app's ports.
            .filter(|addr| !addr.starts_with("127.") && !addr.starts_with("[::1]"))
            .map(|addr| addr.rsplit(':').next().unwrap().parse().unwrap())
            .collect();
        assert!(!listening.is_empty(), "{site}");
        for port in listening {
            assert!(
                ports.contains(&port),
                "the jail does not ban port {port}: {ports:?}"
            );
        }
    }

    /// The rendered files in deploy/nginx/ are what the templates give today.
    #[test]
    fn committed_renderings_match_the_templates() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx");
        for (file, form) in [
            ("softphone-site.conf", Form::Site),
            ("mikopbx/softphone-upstreams.conf", Form::Upstreams),
            ("mikopbx/softphone-locations.conf", Form::Locations),
        ] {
            let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            let rendered = render(form, &params()).unwrap();
            assert!(
                committed == rendered,
                "deploy/nginx/{file} is stale: run deploy/nginx/render-examples.sh"
            );
        }
    }
}
