//! A run's results: rows (one per scenario, with its ratio to a floor measured in
//! the same run), targets met or not, costs measured at several sizes of the
//! work (curves), notes; written as Markdown, JSON and SVG charts side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::load::Outcome;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub description: String,
    pub floor: Option<String>,
    pub ratio: Option<f64>,
    pub requests: u64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub non_2xx: u64,
    pub errors: u64,
    pub unexpected: u64,
    pub note: Option<String>,
}

impl Row {
    pub fn new(scenario: &str, description: &str, floor: Option<(&str, f64)>, o: &Outcome) -> Row {
        Row {
            scenario: scenario.into(),
            description: description.into(),
            floor: floor.map(|(f, _)| f.into()),
            ratio: floor.map(|(_, r)| r),
            requests: o.requests,
            rate: o.rate(),
            p50_ms: o.percentile_ms(0.50),
            p90_ms: o.percentile_ms(0.90),
            p99_ms: o.percentile_ms(0.99),
            p999_ms: o.percentile_ms(0.999),
            non_2xx: o.non_2xx,
            errors: o.errors,
            unexpected: o.unexpected,
            note: None,
        }
    }
}

/// A floor's row as the scenarios measured against it see it: its name and req/s.
#[derive(Debug, Clone)]
pub struct Floor {
    scenario: String,
    rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub measured: f64,
    /// `>= x`, `<= x`, or `None` when only reported.
    pub bound: Option<String>,
    pub met: Option<bool>,
}

impl Target {
    pub fn at_least(name: &str, measured: f64, min: f64) -> Target {
        Target {
            name: name.into(),
            measured,
            bound: Some(format!(">= {min}")),
            met: Some(measured >= min),
        }
    }
    pub fn at_most(name: &str, measured: f64, max: f64) -> Target {
        Target {
            name: name.into(),
            measured,
            bound: Some(format!("<= {max}")),
            met: Some(measured <= max),
        }
    }
    pub fn reported(name: &str, measured: f64) -> Target {
        Target {
            name: name.into(),
            measured,
            bound: None,
            met: None,
        }
    }
}

/// One cost measured at several sizes of the work (e.g. verifier start-up
/// against live sessions), for the table of curves and their line chart.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub name: String,
    pub unit: String,
    /// What the sizes count ("live sessions").
    pub x: String,
    /// (size, value), smallest size first.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started: String,
    pub machine: String,
    pub command: String,
    pub duration_s: f64,
    pub connections: usize,
    pub threads: usize,
    pub pinned: bool,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub curves: Vec<Curve>,
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report, started now. The run's settings come as plain values so
    /// that the report depends on nothing but the load generator's outcomes.
    pub fn new(duration: Duration, connections: usize, threads: usize, pinned: bool) -> Report {
        Report {
            started: softphone_shared::seclog::timestamp(softphone_shared::unix_now()) + " UTC",
            machine: machine(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            duration_s: duration.as_secs_f64(),
            connections,
            threads,
            pinned,
            rows: Vec::new(),
            targets: Vec::new(),
            curves: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Adds a floor's row (the same kind of requests answered without the work
    /// under test) and returns it, to measure scenarios [`against`](Report::against).
    pub fn floor(&mut self, scenario: &str, description: &str, outcome: &Outcome) -> Floor {
        self.add(Row::new(scenario, description, None, outcome));
        Floor {
            scenario: scenario.into(),
            rate: outcome.rate(),
        }
    }

    /// Adds a scenario's row with its req/s as a ratio of `floor`'s, and returns
    /// that ratio (for a target).
    pub fn against(
        &mut self,
        floor: &Floor,
        scenario: &str,
        description: &str,
        outcome: &Outcome,
    ) -> f64 {
        let ratio = outcome.rate() / floor.rate;
        self.add(Row::new(
            scenario,
            description,
            Some((&floor.scenario, ratio)),
            outcome,
        ));
        ratio
    }

    /// A note on the row added last, shown after its description.
    pub fn annotate(&mut self, note: String) {
        if let Some(row) = self.rows.last_mut() {
            row.note = Some(note);
        }
    }

    pub fn target(&mut self, target: Target) {
        self.targets.push(target);
    }

    pub fn curve(&mut self, curve: Curve) {
        self.curves.push(curve);
    }

    pub fn note(&mut self, note: &str) {
        self.notes.push(note.into());
    }

    /// Any request that errored or got an answer other than the expected one.
    pub fn failures(&self) -> u64 {
        self.rows.iter().map(|r| r.errors + r.unexpected).sum()
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "Run {} on {}.", self.started, self.machine);
        let _ = writeln!(
            md,
            "{} connections, {} generator thread(s), {:.0} s per scenario, {}.\n",
            self.connections,
            self.threads,
            self.duration_s,
            if self.pinned {
                "servers pinned to CPU 0, load generator to CPU 1"
            } else {
                "not pinned"
            }
        );
        md.push_str("| scenario | req/s | vs floor | p50 ms | p90 ms | p99 ms | p99.9 ms | non-2xx | errors | wrong |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let ratio = match (&r.floor, r.ratio) {
                (Some(f), Some(x)) => format!("{x:.2}× {f}"),
                _ => "floor".into(),
            };
            let _ = writeln!(
                md,
                "| {} — {}{} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
                r.scenario,
                r.description,
                r.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                r.rate,
                ratio,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.p999_ms,
                r.non_2xx,
                r.errors,
                r.unexpected
            );
        }
        md.push_str("\n| target | measured | bound | met |\n|---|---:|---|---|\n");
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {:.3} | {} | {} |",
                t.name,
                t.measured,
                t.bound.as_deref().unwrap_or("reported"),
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            );
        }
        self.curves_markdown(&mut md);
        for n in &self.notes {
            let _ = writeln!(md, "\n- {n}");
        }
        md
    }

    /// The curves as one table: a row per cost, a column per size.
    fn curves_markdown(&self, md: &mut String) {
        let Some(first) = self.curves.first() else {
            return;
        };
        let sizes = self.curve_sizes();
        let _ = write!(md, "\n| cost, by {} |", first.x);
        for size in &sizes {
            let _ = write!(md, " {size:.0} |");
        }
        md.push_str("\n|---|");
        md.push_str(&"---:|".repeat(sizes.len()));
        md.push('\n');
        for c in &self.curves {
            let _ = write!(md, "| {} ({}) |", c.name, c.unit);
            for size in &sizes {
                match c.points.iter().find(|(x, _)| x == size) {
                    Some((_, v)) => {
                        let _ = write!(md, " {} |", significant(*v));
                    }
                    None => md.push_str(" - |"),
                }
            }
            md.push('\n');
        }
    }

    /// Every size any curve was measured at, smallest first.
    fn curve_sizes(&self) -> Vec<f64> {
        let mut sizes: Vec<f64> = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|(x, _)| *x))
            .collect();
        sizes.sort_by(f64::total_cmp);
        sizes.dedup();
        sizes
    }

    /// One line per curve, each relative to its value at its smallest size,
    /// on log-log axes: a flat line is a cost that does not grow with the
    /// work, the dashed one grows in proportion to it. Each line ends with its
    /// last value in its own unit. None without curves.
    pub fn curves_svg(&self) -> Option<String> {
        const COLORS: [&str; 12] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
            "#bcbd22", "#7f7f7f", "#393b79", "#ad494a",
        ];
        let first = self.curves.first()?;
        let sizes = self.curve_sizes();
        let (x0, x1) = (*sizes.first()?, *sizes.last()?);
        let relative: Vec<(&Curve, Vec<(f64, f64)>)> = self
            .curves
            .iter()
            .filter_map(|c| {
                let base = c.points.iter().map(|p| p.1).find(|v| *v > 0.0)?;
                let points = c
                    .points
                    .iter()
                    .filter(|(x, v)| *x > 0.0 && *v > 0.0)
                    .map(|(x, v)| (*x, v / base))
                    .collect();
                Some((c, points))
            })
            .collect();
        // The y range holds every line, 1 and the proportional line's end.
        let (mut y0, mut y1) = (1.0f64, (x1 / x0).max(1.0));
        for (_, points) in &relative {
            for (_, r) in points {
                y0 = y0.min(*r);
                y1 = y1.max(*r);
            }
        }
        let (y0, y1) = (y0.log10().floor(), y1.log10().ceil().max(y0.log10() + 1.0));
        let (left, top, plot_w, plot_h) = (70.0, 40.0, 520.0, 320.0);
        let span_x = (x1.log10() - x0.log10()).max(1e-9);
        let px = |x: f64| left + (x.log10() - x0.log10()) / span_x * plot_w;
        let py = |r: f64| top + plot_h - (r.log10() - y0) / (y1 - y0) * plot_h;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">softphone-bench {started} — cost against {x} (log-log), relative to the smallest size</text>\n\
             <rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{cx}\" y=\"{xy}\" text-anchor=\"middle\">{x}</text>\n",
            w = left + plot_w + 330.0,
            h = top + plot_h + 50.0,
            started = escape(&self.started),
            x = escape(&first.x),
            cx = left + plot_w / 2.0,
            xy = top + plot_h + 40.0,
        );
        for size in &sizes {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{size:.0}</text>",
                px(*size),
                top + plot_h + 18.0
            );
        }
        for decade in y0 as i32..=y1 as i32 {
            let y = py(10f64.powi(decade));
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\n\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}×</text>",
                left + plot_w,
                left - 6.0,
                y + 4.0,
                significant(10f64.powi(decade))
            );
        }
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>",
            px(x0),
            py(1.0),
            px(x1),
            py(x1 / x0)
        );
        for (i, (curve, points)) in relative.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let line: Vec<String> = points
                .iter()
                .map(|(x, r)| format!("{:.1},{:.1}", px(*x), py(*r)))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                line.join(" ")
            );
            let last = curve.points.last().map_or(0.0, |p| p.1);
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}: {} {}</text>",
                left + plot_w + 12.0,
                top + 14.0 + 18.0 * i as f64,
                escape(&curve.name),
                significant(last),
                escape(&curve.unit)
            );
        }
        svg.push_str("</svg>\n");
        Some(svg)
    }

    /// Horizontal bars of req/s (log scale) with each scenario's p99 beside it.
    pub fn svg(&self) -> String {
        let row_h = 26.0;
        let left = 260.0;
        let bar_w = 560.0;
        let width = left + bar_w + 160.0;
        let height = 60.0 + row_h * self.rows.len() as f64;
        let max = self.rows.iter().map(|r| r.rate).fold(1.0, f64::max);
        let scale = |v: f64| (v.max(1.0).log10() / max.log10().max(1.0)) * bar_w;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">softphone-bench {} — req/s (log scale) and p99 latency</text>\n",
            escape(&self.started)
        );
        for (i, r) in self.rows.iter().enumerate() {
            let y = 40.0 + row_h * i as f64;
            let floor = r.floor.is_none();
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
                 <rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{}\">{:.0} req/s · p99 {:.2} ms{}</text>",
                left - 8.0,
                y + 15.0,
                escape(&r.scenario),
                y + 3.0,
                scale(r.rate),
                row_h - 8.0,
                if floor { "#9e9e9e" } else { "#1f77b4" },
                left + scale(r.rate) + 6.0,
                y + 15.0,
                r.rate,
                r.p99_ms,
                r.ratio.map(|x| format!(" · {x:.2}×")).unwrap_or_default()
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes `<dir>/bench-<stamp>.{md,json,svg}` (and `bench-<stamp>-curves.svg`
    /// when there are curves) and returns the Markdown path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let stamp: String = self.started.chars().filter(char::is_ascii_digit).collect();
        let base = dir.join(format!("bench-{stamp}"));
        let md = base.with_extension("md");
        std::fs::write(&md, self.markdown())?;
        std::fs::write(
            base.with_extension("json"),
            serde_json::to_vec_pretty(self).unwrap_or_default(),
        )?;
        std::fs::write(base.with_extension("svg"), self.svg())?;
        if let Some(svg) = self.curves_svg() {
            std::fs::write(dir.join(format!("bench-{stamp}-curves.svg")), svg)?;
        }
        Ok(md)
    }
}

/// A value with three significant digits and no exponent (0.000123, 1.06, 117, 120000).
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// CPU model, cores and kernel, for the report's first line.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // /proc/cpuinfo, not available_parallelism: the latter sees only our pinned CPU.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}
