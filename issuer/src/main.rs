//! `softphone-issuer`: run the daemon (the default) or an admin command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use softphone_issuer::{Result, admin, nginx, serve};
use softphone_shared::config::Config;
use softphone_shared::paths::SYSTEM_CONFIG;

/// Login, refresh, logout, profile and health for softphone apps.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (default: /etc/softphone-backend/softphone.toml if it exists,
    /// else built-in defaults; `SOFTPHONE_*` variables override)
    #[arg(long, env = "SOFTPHONE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (what happens without a command)
    Serve,
    /// Manage built-in users
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect and revoke sessions
    #[command(subcommand)]
    Session(SessionCommand),
    /// Rotate or list the token signing keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print the nginx configuration, rendered from deploy/nginx/*.in
    NginxConfig(Box<NginxArgs>),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make a new signing key; the old one verifies its tokens until they expire
    Rotate,
    /// List the current and previous keys by kid
    List,
}

#[derive(clap::Args)]
struct NginxArgs {
    /// main: a whole nginx.conf; site: a server for sites-enabled/;
    /// upstreams / locations: the two halves for an existing server (MikoPBX)
    #[arg(value_enum)]
    form: NginxForm,
    /// The plain-HTTP server's `listen` (site and main)
    #[arg(long, default_value = "8080")]
    listen: String,
    /// The HTTPS server's `listen` (site and main)
    #[arg(long, default_value = "443")]
    tls_listen: String,
    /// Certificate chain (PEM); default: tls_certificate
    #[arg(long)]
    tls_certificate: Option<PathBuf>,
    /// Private key (PEM); default: tls_certificate_key
    #[arg(long)]
    tls_certificate_key: Option<PathBuf>,
    /// Directory served under /.well-known/acme-challenge/; default: acme_webroot
    #[arg(long)]
    acme_webroot: Option<PathBuf>,
    /// Plain HTTP redirects to HTTPS, or also serves the API (loopback use)
    #[arg(long, value_enum, default_value = "redirect")]
    plain_http: nginx::PlainHttp,
    /// Directory served under /pbxcore/softphone/recordings/; default:
    /// recordings_dir (where `history` links to)
    #[arg(long)]
    recordings: Option<PathBuf>,
    /// Upstream URL of /pbxcore/softphone/ws (Asterisk's WebSocket)
    #[arg(long, default_value = "http://127.0.0.1:8088/asterisk/ws")]
    ws_upstream: String,
    /// Access log path (the log format masks query strings)
    #[arg(long, default_value = "/var/log/nginx/softphone-access.log")]
    access_log: String,
    /// Error log of the locations whose URLs carry tokens (level crit)
    #[arg(long, default_value = "/var/log/nginx/softphone-error.log")]
    error_log: String,
    /// nginx prefix for pid, error log and temp files (main)
    #[arg(long, default_value = "/var/lib/softphone-backend/nginx")]
    prefix: PathBuf,
    /// worker_processes (main)
    #[arg(long, default_value = "auto")]
    workers: String,
    /// A file of extra server-level directives to include (site and main)
    #[arg(long)]
    include: Option<PathBuf>,
    /// The verifier upstream (`127.0.0.1:8082`, `unix:/run/softphone/verifier.sock`);
    /// default: verifier_socket if configured, else verifier_listen
    #[arg(long)]
    verifier: Option<String>,
    /// Where nginx's nchan control server listens (loopback); default:
    /// nchan_control_listen. Two nginx for one verifier need two; the verifier
    /// reaches only the configured one.
    #[arg(long)]
    nchan_control: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NginxForm {
    Main,
    Site,
    Upstreams,
    Locations,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input or a prompt
    Add {
        username: String,
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// Set a new password (read from standard input or a prompt); revokes the user's sessions
    Passwd { username: String },
    /// Disable a user; revokes its sessions
    Disable { username: String },
    /// Enable a disabled user
    Enable { username: String },
    /// Set the name the directory (GET users) shows for a user; "" removes it
    Name { username: String, name: String },
    /// List users
    List,
    /// Print the number of users (for scripts)
    Count,
}

#[derive(Subcommand)]
enum SessionCommand {
    /// List active sessions
    List,
    /// Revoke all sessions of a user, or one session by id
    Revoke {
        #[arg(long, conflicts_with = "sid")]
        user: Option<String>,
        #[arg(long)]
        sid: Option<String>,
    },
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any thread or connection.
    #[allow(unsafe_code)]
    let applied = unsafe { softphone_shared::sqlite_setup::apply() };
    debug_assert!(applied, "SQLite started before main");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("softphone-issuer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let config_file = Config::locate(args.config.as_deref(), Path::new(SYSTEM_CONFIG));
    let config = Config::load(config_file.as_deref())?;
    let output = match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            return runtime.block_on(serve::serve(config, config_file));
        }
        Command::User(UserCommand::Add { username, role }) => {
            admin::user_add(&config, &username, &role)
        }
        Command::User(UserCommand::Passwd { username }) => admin::user_passwd(&config, &username),
        Command::User(UserCommand::Disable { username }) => {
            admin::user_set_disabled(&config, &username, true)
        }
        Command::User(UserCommand::Enable { username }) => {
            admin::user_set_disabled(&config, &username, false)
        }
        Command::User(UserCommand::Name { username, name }) => {
            admin::user_name(&config, &username, &name)
        }
        Command::User(UserCommand::List) => admin::user_list(&config),
        Command::User(UserCommand::Count) => admin::user_count(&config).map(|n| n.to_string()),
        Command::Session(SessionCommand::List) => admin::session_list(&config),
        Command::Key(KeyCommand::Rotate) => admin::key_rotate(&config),
        Command::Key(KeyCommand::List) => admin::key_list(&config),
        Command::NginxConfig(a) => {
            let form = match a.form {
                NginxForm::Main => nginx::Form::Main,
                NginxForm::Site => nginx::Form::Site,
                NginxForm::Upstreams => nginx::Form::Upstreams,
                NginxForm::Locations => nginx::Form::Locations,
            };
            let defaults = nginx::Params::new(&config);
            let params = nginx::Params {
                verifier: a.verifier.unwrap_or(defaults.verifier.clone()),
                nchan_control: a.nchan_control.unwrap_or(defaults.nchan_control),
                listen: a.listen,
                tls_listen: a.tls_listen,
                tls_certificate: a
                    .tls_certificate
                    .unwrap_or(defaults.tls_certificate.clone()),
                tls_certificate_key: a
                    .tls_certificate_key
                    .unwrap_or(defaults.tls_certificate_key.clone()),
                acme_webroot: a.acme_webroot.unwrap_or(defaults.acme_webroot.clone()),
                plain_http: a.plain_http,
                recordings: a.recordings.unwrap_or(defaults.recordings.clone()),
                ws_upstream: a.ws_upstream,
                access_log: a.access_log,
                error_log: a.error_log,
                prefix: a.prefix,
                workers: a.workers,
                include: a.include,
                ..defaults
            };
            print!("{}", nginx::render(form, &params)?);
            return Ok(());
        }
        Command::Session(SessionCommand::Revoke { user, sid }) => {
            admin::session_revoke(&config, user.as_deref(), sid.as_deref())
        }
    };
    // Also after a failed command: it may have created a file before failing.
    admin::settle_ownership(&config);
    println!("{}", output?.trim_end());
    Ok(())
}
