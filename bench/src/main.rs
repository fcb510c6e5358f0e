//! `softphone-bench`: load tests for softphone-backend. `suite` runs every scenario
//! against the real stack and writes a report; `load` drives one URL like wrk;
//! `bare` and `warp` are the floors the suite compares against.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::{Parser, Subcommand};
use softphone_bench::load::{self, Plan, Request};
use softphone_bench::stack::Settings;
use softphone_bench::{floors, suite};

#[derive(Parser)]
#[command(version, about = "Load tests for softphone-backend")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenario suite against the real stack and write md/json/svg reports
    Suite {
        /// Seconds per scenario
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Keep-alive connections
        #[arg(long, short = 'c', default_value_t = 64)]
        connections: usize,
        /// Load generator threads
        #[arg(long, short = 't', default_value_t = 1)]
        threads: usize,
        /// Pin the servers to CPU 0 and the load generator to CPU 1
        #[arg(long)]
        pin: bool,
        /// Only scenarios whose names start with these (verifier, media, nchan, issuer, mikopbx,
        /// directory, scale, generator), comma-separated or repeated
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Directory for the reports
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Exit non-zero when a request errored or got a wrong answer
        #[arg(long)]
        strict: bool,
        /// Call records the directory family seeds (history's bound is for 1 000 000)
        #[arg(long, default_value_t = 1_000_000)]
        cdr_rows: usize,
        /// The scale family's largest number of live sessions (it measures
        /// 1 000, 10 000, … up to this)
        #[arg(long, default_value_t = 1_000_000)]
        scale_max: usize,
    },
    /// Drive one URL with keep-alive load and print req/s and latency percentiles
    Load {
        /// Target, http://host:port/path (plain HTTP/1.1 on loopback)
        url: String,
        #[arg(long, short = 'c', default_value_t = 64)]
        connections: usize,
        #[arg(long, short = 'd', default_value_t = 10)]
        duration: u64,
        #[arg(long, short = 't', default_value_t = 1)]
        threads: usize,
        /// Extra request header, `Name: value` (repeatable)
        #[arg(long, short = 'H')]
        header: Vec<String>,
    },
    /// Serve 200 with a bare may_minihttp (the verifier's floor)
    Bare {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Serve 200 with a bare warp handler (the issuer's floor)
    Warp {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("softphone-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    match args.command {
        Command::Suite {
            duration,
            connections,
            threads,
            pin,
            only,
            out,
            strict,
            cdr_rows,
            scale_max,
        } => {
            let settings = Settings {
                duration: Duration::from_secs(duration.max(1)),
                connections,
                threads,
                pin,
                only,
                cdr_rows,
                scale_max,
            };
            let report = suite::run(&settings)?;
            let path = report
                .write(&out)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            println!("{}", report.markdown());
            println!("report written to {} (+ .json, .svg)", path.display());
            if strict && report.failures() > 0 {
                eprintln!(
                    "softphone-bench: {} requests errored or got a wrong answer",
                    report.failures()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Load {
            url,
            connections,
            duration,
            threads,
            header,
        } => {
            let (addr, path) = parse_url(&url)?;
            let headers: Vec<(String, String)> = header
                .iter()
                .map(|h| {
                    h.split_once(':')
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        .ok_or_else(|| format!("header {h:?} is not `Name: value`"))
                })
                .collect::<Result<_, _>>()?;
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let plan = Plan {
                addr,
                connections,
                duration: Duration::from_secs(duration.max(1)),
                threads,
                requests: vec![Request {
                    bytes: softphone_testkit::http::build("GET", &path, &headers, b""),
                    expect: None,
                }],
                schedule: vec![0],
                sticky: false,
                until: None,
                judge: None,
            };
            let outcome = load::run(&plan, &AtomicU64::new(0)).map_err(|e| e.to_string())?;
            println!(
                "{} requests in {:.1} s: {:.0} req/s\nlatency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms\nnon-2xx {}, errors {}, statuses {:?}",
                outcome.requests,
                outcome.elapsed.as_secs_f64(),
                outcome.rate(),
                outcome.percentile_ms(0.5),
                outcome.percentile_ms(0.9),
                outcome.percentile_ms(0.99),
                outcome.percentile_ms(0.999),
                outcome.latency.max() as f64 / 1000.0,
                outcome.non_2xx,
                outcome.errors,
                outcome.statuses
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bare { listen } => floors::serve_bare(listen, 1)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Warp { listen } => floors::serve_warp(listen)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
    }
}

/// `http://host:port/path` → (address, path). Loopback HTTP only.
fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = host
        .parse()
        .map_err(|_| format!("{host:?} is not an ip:port"))?;
    Ok((addr, path))
}
