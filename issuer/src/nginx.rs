//! Renders the nginx configuration from the templates in `deploy/nginx/`, the one
//! source of truth for every form we ship:
//! - `main`: a whole nginx.conf for an nginx of its own (run.sh, tests);
//! - `site`: a server for a plain Debian nginx (`sites-enabled/`);
//! - `upstreams` + `locations`: the http-level and server-level halves for an
//!   existing server such as MikoPBX's.

use std::net::SocketAddr;
use std::path::PathBuf;

use softphone_shared::config::Config;

use crate::error::ApiError;
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

/// What the site's plain-HTTP server does besides ACME challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlainHttp {
    /// Redirect to HTTPS (308, so a POST stays a POST): bearer tokens travel
    /// only over TLS (RFC 6750 §5.3).
    Redirect,
    /// Serve the API too: for loopback use (run.sh, the seed's examples, tests).
    Serve,
}

/// What the templates leave open.
#[derive(Debug, Clone)]
pub struct Params {
    pub issuer: SocketAddr,
    /// `127.0.0.1:8082` or `unix:/path/verifier.sock`.
    pub verifier: String,
    /// nginx's control server for nchan, where the verifier deletes channels.
    pub nchan_control: SocketAddr,
    /// `listen` argument of the site's plain-HTTP server (`8080`,
    /// `127.0.0.1:8080`, …).
    pub listen: String,
    /// `listen` argument of the site's HTTPS server (`443`, `127.0.0.1:8443`).
    pub tls_listen: String,
    pub tls_certificate: PathBuf,
    pub tls_certificate_key: PathBuf,
    /// Served under `/.well-known/acme-challenge/` on plain HTTP.
    pub acme_webroot: PathBuf,
    /// What the plain-HTTP server does with everything else.
    pub plain_http: PlainHttp,
    /// Directory served under [`softphone_shared::paths::RECORDINGS`].
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
            // The socket when the verifier serves one (the fast path); a
            // relative path is the daemons' working directory's, as here.
            verifier: match config.verifier_socket() {
                Some(path) => format!(
                    "unix:{}",
                    std::path::absolute(&path).unwrap_or(path).display()
                ),
                None => config.verifier_listen.to_string(),
            },
            nchan_control: config.nchan_control_listen,
            listen: "8080".into(),
            tls_listen: "443".into(),
            tls_certificate: config.tls_certificate.clone(),
            tls_certificate_key: config.tls_certificate_key.clone(),
            acme_webroot: config.acme_webroot.clone(),
            plain_http: PlainHttp::Redirect,
            recordings: config.recordings_dir(),
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
        ("tls_listen", p.tls_listen.as_str()),
        ("verifier", p.verifier.as_str()),
        ("ws_upstream", p.ws_upstream.as_str()),
        ("access_log", p.access_log.as_str()),
        ("error_log", p.error_log.as_str()),
        ("workers", p.workers.as_str()),
    ] {
        check_value(name, value)?;
    }
    for (name, path) in [
        ("recordings", &p.recordings),
        ("prefix", &p.prefix),
        ("tls_certificate", &p.tls_certificate),
        ("tls_certificate_key", &p.tls_certificate_key),
        ("acme_webroot", &p.acme_webroot),
    ] {
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
        let mut text = template.to_owned();
        for errors in Errors::ALL {
            text = fill_lines(&text, errors.placeholder(), &errors.directives());
        }
        text.replace("{{error_locations}}", &error_locations(&p.access_log))
            .replace("{{issuer}}", &p.issuer.to_string())
            .replace("{{verifier}}", &p.verifier)
            .replace("{{nchan_control}}", &p.nchan_control.to_string())
            .replace("{{listen}}", &p.listen)
            .replace("{{tls_listen}}", &p.tls_listen)
            .replace(
                "{{tls_certificate}}",
                &p.tls_certificate.display().to_string(),
            )
            .replace(
                "{{tls_certificate_key}}",
                &p.tls_certificate_key.display().to_string(),
            )
            .replace("{{acme_webroot}}", &p.acme_webroot.display().to_string())
            .replace("{{recordings}}", &p.recordings.display().to_string())
            .replace("{{ws_upstream}}", &p.ws_upstream)
            .replace("{{access_log}}", &p.access_log)
            .replace("{{error_log}}", &p.error_log)
            .replace("{{prefix}}", &p.prefix.display().to_string())
            .replace("{{workers}}", &p.workers)
    };
    let upstreams = fill(UPSTREAMS);
    let locations = fill(LOCATIONS);
    let served = format!("{include}{}", indent(&locations, "    "));
    let plain = match p.plain_http {
        PlainHttp::Serve => served.clone(),
        // Its own error pages need their locations too.
        PlainHttp::Redirect => indent(
            &format!(
                "{}\n\n{}",
                redirect(&p.tls_listen),
                error_locations(&p.access_log)
            ),
            "    ",
        ),
    };
    let site = fill(SITE)
        .replace("{{upstreams}}", &upstreams)
        .replace("{{served}}", &served)
        .replace("{{plain_http}}", &plain);
    Ok(match form {
        Form::Upstreams => upstreams,
        Form::Locations => locations,
        Form::Site => site,
        Form::Main => fill(MAIN).replace("{{site}}", &indent(&site, "    ")),
    })
}

/// An answer nginx gives itself, in the contract's JSON error format.
struct Page {
    name: &'static str,
    status: u16,
    message: &'static str,
    /// With `Retry-After` (the app should come back soon).
    retry_after: bool,
}

/// Seconds a `503` from nginx asks the app to wait: a daemon that stalls is
/// restarted by its watchdog within seconds.
const RETRY_AFTER: u32 = 5;

/// Every page, with the contract's message where it has one.
fn pages() -> [Page; 12] {
    let page = |name, status, message| Page {
        name,
        status,
        message,
        retry_after: false,
    };
    [
        page("bad-request", 400, "Bad request"),
        page("header-too-large", 400, "Request header too large"),
        // A login body over client_max_body_size: the contract's 400.
        page(
            "credentials",
            400,
            ApiError::BadCredentialsRequest.message(),
        ),
        page("unauthorized", 401, ApiError::RefreshInvalid.message()),
        page("wrong-type", 403, ApiError::ProfileWrongType.message()),
        page("forbidden", 403, "Forbidden"),
        page("not-found", 404, ApiError::NotFound.message()),
        page("method", 405, ApiError::MethodNotAllowed.message()),
        page("too-large", 413, "Request too large"),
        page("uri-too-long", 414, "Request URI too long"),
        page("internal", 500, ApiError::Internal.message()),
        Page {
            retry_after: true,
            ..page("unavailable", 503, ApiError::Busy.message())
        },
    ]
}

/// Where nginx's own errors happen, and which page each status gets there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Errors {
    /// The whole server (site and main forms): requests that reach no location.
    Server,
    /// The API, proxied to the issuer (whose own JSON errors pass untouched).
    Api,
    /// Locations behind the verifier (media, WebSocket, subscribers): a failed
    /// check is the app's 401/403, a failed verifier (500) is a 503.
    Guarded,
    /// A location that only ever refuses.
    Refusing,
}

impl Errors {
    const ALL: [Errors; 4] = [
        Errors::Server,
        Errors::Api,
        Errors::Guarded,
        Errors::Refusing,
    ];

    fn placeholder(self) -> &'static str {
        match self {
            Errors::Server => "{{error_pages_server}}",
            Errors::Api => "{{error_pages_api}}",
            Errors::Guarded => "{{error_pages_guarded}}",
            Errors::Refusing => "{{error_pages_refusing}}",
        }
    }

    /// (statuses, page): nginx's status codes, the page that answers them.
    fn table(self) -> &'static [(&'static str, &'static str)] {
        const UNAVAILABLE: (&str, &str) = ("500 502 503 504", "unavailable");
        match self {
            Errors::Server => &[
                ("400", "bad-request"),
                ("494", "header-too-large"),
                ("401", "unauthorized"),
                ("403", "forbidden"),
                ("404", "not-found"),
                ("405", "method"),
                ("413", "too-large"),
                ("414", "uri-too-long"),
                ("500", "internal"),
                ("502 503 504", "unavailable"),
            ],
            Errors::Api => &[
                ("403", "forbidden"),
                ("404", "not-found"),
                ("405", "method"),
                ("413", "credentials"),
                UNAVAILABLE,
            ],
            Errors::Guarded => &[
                ("401", "unauthorized"),
                ("403", "wrong-type"),
                ("404", "not-found"),
                ("405", "method"),
                ("413", "too-large"),
                UNAVAILABLE,
            ],
            Errors::Refusing => &[("403", "forbidden"), ("404", "not-found")],
        }
    }

    /// The `error_page` lines.
    fn directives(self) -> Vec<String> {
        let by_name = pages();
        self.table()
            .iter()
            .map(|&(codes, name)| {
                let status = by_name
                    .iter()
                    .find(|p| p.name == name)
                    .map_or(500, |p| p.status);
                // `=N` where nginx's code is not the page's (494 → 400).
                let shown = if codes.split(' ').all(|c| c == status.to_string()) {
                    String::new()
                } else {
                    format!("={status} ")
                };
                format!("error_page {codes} {shown}{ERROR_PREFIX}{name};")
            })
            .collect()
    }
}

/// Internal URIs of the pages.
const ERROR_PREFIX: &str = "/_softphone_error/";

/// The internal location that answers every page.
fn error_locations(access_log: &str) -> String {
    let mut out = format!(
        "# nginx's own errors, in the contract's JSON (the `error_page` lines point here).\n\
         location ^~ {ERROR_PREFIX} {{\n    \
             internal;\n    \
             access_log {access_log} softphone_masked;\n    \
             default_type application/json;\n"
    );
    for page in pages() {
        let retry = if page.retry_after {
            format!("add_header Retry-After {RETRY_AFTER} always;\n        ")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "    location = {ERROR_PREFIX}{name} {{\n        \
                 add_header Cache-Control no-store always;\n        \
                 add_header Strict-Transport-Security $softphone_hsts always;\n        \
                 {retry}return {status} '{{\"success\":false,\"error\":\"{message}\",\"timestamp\":$softphone_unix_time}}';\n    \
             }}\n",
            name = page.name,
            status = page.status,
            message = page.message,
        ));
    }
    out.push_str("}\n");
    out
}

/// Replaces each line that holds only `placeholder` by `lines`, indented alike.
fn fill_lines(template: &str, placeholder: &str, lines: &[String]) -> String {
    template
        .split_inclusive('\n')
        .map(|line| match line.trim_end().strip_suffix(placeholder) {
            Some(indent) if indent.trim().is_empty() => lines
                .iter()
                .map(|l| format!("{indent}{l}\n"))
                .collect::<String>(),
            _ => line.to_owned(),
        })
        .collect()
}

/// The plain-HTTP server's answer to everything but ACME challenges.
fn redirect(tls_listen: &str) -> String {
    let port = tls_listen.rsplit(':').next().unwrap_or(tls_listen);
    let authority = if port == "443" {
        "$host".to_owned()
    } else {
        format!("$host:{port}")
    };
    format!(
        "# Tokens travel only over TLS: everything else moves to HTTPS (308 keeps\n\
         # the method, so a login is not turned into a GET).\n\
         location / {{\n    return 308 https://{authority}$request_uri;\n}}"
    )
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

    /// The installed system's: the packaged config file (deploy/softphone.toml).
    fn params() -> Params {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/softphone.toml");
        let config = Config::load_with_env(Some(&file), &Default::default()).unwrap();
        Params::new(&config)
    }

    #[test]
    fn every_placeholder_is_filled() {
        for form in [Form::Main, Form::Site, Form::Upstreams, Form::Locations] {
            let text = render(form, &params()).unwrap();
            assert!(!text.contains("{{"), "{form:?}: {text}");
        }
        let main = render(Form::Main, &params()).unwrap();
        // The verifier over its socket, by default under the data directory.
        assert!(
            main.contains("server unix:/var/lib/softphone-backend/run/verifier.sock;")
                && main.contains("server 127.0.0.1:8081;"),
            "{main}"
        );
        assert!(main.contains("load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"));
    }

    /// The links `history` makes are the URLs the rendered location serves,
    /// from the configured directory.
    #[test]
    fn recordings_are_served_where_history_links_to() {
        let location = format!("location ^~ {} {{", softphone_shared::paths::RECORDINGS);
        assert!(LOCATIONS.contains(&location), "{location}");
        assert!(LOCATIONS.contains("alias {{recordings}}/;"));
        let dir = softphone_testkit::TestDir::new("nginx-recordings");
        let env = std::collections::HashMap::from([
            (
                "SOFTPHONE_DATA".to_owned(),
                dir.path().display().to_string(),
            ),
            (
                "SOFTPHONE_RECORDINGS_DIR".to_owned(),
                "/srv/calls".to_owned(),
            ),
        ]);
        let config = Config::load_with_env(None, &env).unwrap();
        let text = render(Form::Locations, &Params::new(&config)).unwrap();
        assert!(text.contains("alias /srv/calls/;"), "{text}");
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
