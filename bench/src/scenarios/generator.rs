//! The load generator itself: its CPU per request against wrk's, on the same
//! target with the same connections and time.

use std::path::PathBuf;
use std::process::Command;

use crate::procstat;
use crate::report::{Report, Row, Target};
use crate::stack::{CLIENT_CPU, Settings, Stack, measure, ok_get, plan};

pub(crate) fn run(settings: &Settings, stack: &Stack, report: &mut Report) -> Result<(), String> {
    let floor_plan = plan(settings, stack.bare_addr, vec![ok_get("/")]);
    let before = procstat::cpu_time("self").map(|(own, _)| own);
    let ours = measure("generator: softphone-bench", &floor_plan)?;
    let after = procstat::cpu_time("self").map(|(own, _)| own);
    let our_cpu = match (before, after) {
        (Some(b), Some(a)) => (a - b).as_secs_f64() * 1e6 / ours.requests.max(1) as f64,
        _ => f64::NAN,
    };
    report.add(Row::new(
        "generator-ours",
        "softphone-bench against the bare floor",
        None,
        &ours,
    ));
    report.annotate(format!("{our_cpu:.2} µs of generator CPU per request"));

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
