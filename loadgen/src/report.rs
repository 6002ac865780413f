//! A report folder, `reports/<date>-<scenario>/`:
//!
//! - `README.md`: configuration, machine, versions, commit; per route and outcome the
//!   count, throughput, p50/p90/p99/p99.9/max and errors by cause; the correctness
//!   check; links to everything below;
//! - `summary.json`: the same, for tools;
//! - `latency-spectrum.svg`, `timeline.svg`: the pictures;
//! - `<route>-<outcome>.hgrm`: HdrHistogram percentile distributions (µs);
//! - `goose.json`, `goose.md`, `goose.html`: goose's own report, with deltas against
//!   the previous run's `goose.json` when one was found (the next run's baseline).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::CheckReport;
use crate::hgrm::{Summary, percentile_summary, write_hgrm};
use crate::machine::Machine;
use crate::openloop::TimelinePoint;
use crate::plots::{percentile_spectrum_svg, timeline_svg};
use crate::record::{Outcome, Series};

/// goose's own report files inside a report folder.
pub const GOOSE_JSON: &str = "goose.json";
pub const GOOSE_MD: &str = "goose.md";
pub const GOOSE_HTML: &str = "goose.html";

/// One row of the latency table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub route: String,
    pub outcome: Outcome,
    pub count: u64,
    pub per_second: f64,
    /// Latency percentiles, µs.
    pub latency_us: Summary,
    pub causes: Vec<(String, u64)>,
}

/// What a sale run measured, ready to write.
#[derive(Debug, Clone, Serialize)]
pub struct SaleReport {
    pub title: String,
    pub started_utc: String,
    pub configuration: Vec<(String, String)>,
    pub machine: Machine,
    pub backend: String,
    /// Seconds from the first request to the last answer.
    pub active_s: f64,
    pub rows: Vec<Row>,
    pub all_latency_us: Summary,
    pub timeline: Vec<TimelinePoint>,
    pub check: CheckReport,
    /// The goose JSON the deltas are against, if any.
    pub baseline: Option<String>,
    /// goose's own figures: requests and its run time.
    pub goose_requests: usize,
    pub goose_duration_s: usize,
}

impl SaleReport {
    /// Rows of the table, from the recorder's series.
    pub fn rows(series: &std::collections::BTreeMap<(String, Outcome), Series>, active_s: f64) -> Vec<Row> {
        series
            .iter()
            .map(|((route, outcome), series)| Row {
                route: route.clone(),
                outcome: *outcome,
                count: series.latency.len(),
                per_second: if active_s > 0.0 { series.latency.len() as f64 / active_s } else { 0.0 },
                latency_us: percentile_summary(&series.latency),
                causes: series.causes.iter().map(|(cause, n)| (cause.clone(), *n)).collect(),
            })
            .collect()
    }
}

/// The most recent earlier report of `scenario` under `reports` holding a goose JSON,
/// other than `current`: the baseline of this run's deltas.
pub fn previous_baseline(reports: &Path, scenario: &str, current: &Path) -> Option<PathBuf> {
    let suffix = format!("-{scenario}");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(reports)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path != current)
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)))
        .filter(|path| path.join(GOOSE_JSON).is_file())
        .collect();
    candidates.sort();
    candidates.pop().map(|dir| dir.join(GOOSE_JSON))
}

/// Writes every file of the report except goose's own (goose wrote those already).
pub fn write(dir: &Path, report: &SaleReport, series: &[(String, Outcome, Histogram<u64>)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut hgrm_files = Vec::new();
    for (route, outcome, histogram) in series {
        let name = format!("{}-{}.hgrm", slug(route), outcome.name());
        let mut file = std::fs::File::create(dir.join(&name)).with_context(|| format!("creating {name}"))?;
        // Values in µs; the files give milliseconds, as HdrHistogram's plotter expects.
        write_hgrm(histogram, 1000.0, &mut file)?;
        hgrm_files.push(name);
    }
    let labelled: Vec<(String, &Histogram<u64>)> =
        series.iter().map(|(route, outcome, h)| (format!("{} {}", short_route(route), outcome.name()), h)).collect();
    let spectrum_series: Vec<(&str, &Histogram<u64>)> =
        labelled.iter().map(|(label, h)| (label.as_str(), *h)).collect();
    let spectrum = percentile_spectrum_svg(&spectrum_series, &format!("{}: latency by percentile", report.title))?;
    std::fs::write(dir.join("latency-spectrum.svg"), spectrum)?;
    let timeline =
        timeline_svg(&[("all answers", report.timeline.as_slice())], &format!("{}: throughput and p99", report.title))?;
    std::fs::write(dir.join("timeline.svg"), timeline)?;
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(report)?)?;
    std::fs::write(dir.join("README.md"), markdown(report, &hgrm_files))?;
    Ok(())
}

fn short_route(route: &str) -> &str {
    route
        .strip_prefix("POST /api/v1/user/buy/{id}")
        .map_or(route, |rest| if rest.is_empty() { "buy" } else { rest.trim() })
}

/// A file-name-safe form of a route.
pub fn slug(route: &str) -> String {
    let mut slug = String::new();
    for c in route.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn markdown(report: &SaleReport, hgrm_files: &[String]) -> String {
    let mut md = String::new();
    let verdict = if report.check.passed() { "passed" } else { "FAILED" };
    let _ = writeln!(md, "# {}\n", report.title);
    let _ = writeln!(md, "Started {} (UTC). Correctness check: **{verdict}**.\n", report.started_utc);
    let _ = writeln!(md, "## Configuration\n");
    let _ = writeln!(md, "| setting | value |\n|---|---|");
    for (key, value) in &report.configuration {
        let _ = writeln!(md, "| {key} | {value} |");
    }
    let _ = writeln!(md, "| backends | {} |", report.backend);
    let m = &report.machine;
    let _ = writeln!(md, "\n## Machine and versions\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} ({} logical CPUs available) |", m.cpu_model, m.cpus);
    let _ = writeln!(md, "| memory | {} |", m.memory);
    let _ = writeln!(md, "| kernel | {} |", m.kernel);
    let _ = writeln!(md, "| Redis | {} |", m.redis);
    let _ = writeln!(md, "| FerretDB | {} |", m.ferretdb);
    let _ = writeln!(md, "| rustc | {} |", m.rustc);
    let _ = writeln!(md, "| flashsale-loadgen | {} ({} build) |", m.loadgen_version, m.profile);
    let _ = writeln!(md, "| commit | {} |", m.git_commit);
    let _ = writeln!(
        md,
        "\nRedis, the server and the load generator share this machine's cores: the figures are what one \
         box does with all three on it, not what the server does alone.\n"
    );
    let _ = writeln!(md, "## Per route and outcome\n");
    let _ = writeln!(
        md,
        "{} answers in {:.2} s from the first request to the last answer. Latency from send to the end of \
         the body, in milliseconds, measured by the load generator (goose is the load driver: a closed loop, \
         one goose user per buyer).\n",
        report.all_latency_us.count, report.active_s
    );
    let _ = writeln!(md, "| route | outcome | count | per s | p50 | p90 | p99 | p99.9 | max | errors by cause |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in &report.rows {
        let s = &row.latency_us;
        let causes = if row.causes.is_empty() {
            "-".to_owned()
        } else {
            row.causes.iter().map(|(cause, n)| format!("{cause}: {n}")).collect::<Vec<_>>().join("; ")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            row.route,
            row.outcome.name(),
            row.count,
            row.per_second,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.p999),
            ms(s.max),
            causes
        );
    }
    let a = &report.all_latency_us;
    let _ = writeln!(
        md,
        "| all | all | {} | {:.0} | {} | {} | {} | {} | {} | |",
        a.count,
        if report.active_s > 0.0 { a.count as f64 / report.active_s } else { 0.0 },
        ms(a.p50),
        ms(a.p90),
        ms(a.p99),
        ms(a.p999),
        ms(a.max)
    );
    let _ = writeln!(md, "\n![latency percentile spectrum](latency-spectrum.svg)\n");
    let _ = writeln!(md, "![throughput and p99 over time](timeline.svg)\n");
    let _ = writeln!(md, "## Correctness after the load\n");
    let _ = writeln!(md, "| check | verdict | detail |\n|---|---|---|");
    for check in &report.check.checks {
        let _ =
            writeln!(md, "| {} | {} | {} |", check.name, if check.passed { "passed" } else { "FAILED" }, check.detail);
    }
    let _ = writeln!(md, "\n## Files\n");
    let _ = writeln!(md, "- `summary.json`: this report, for tools.");
    let _ = writeln!(
        md,
        "- goose's own report ({} requests in {} s by goose's clock): [`{GOOSE_MD}`]({GOOSE_MD}), \
         [`{GOOSE_JSON}`]({GOOSE_JSON}) (the next run's baseline), [`{GOOSE_HTML}`]({GOOSE_HTML}) (its charts \
         load from a CDN: offline they are blank, hence the SVGs above).",
        report.goose_requests, report.goose_duration_s
    );
    match &report.baseline {
        Some(baseline) => {
            let _ = writeln!(md, "- goose's deltas are against `{baseline}`.");
        }
        None => {
            let _ = writeln!(md, "- No earlier report was found: goose's report has no deltas this time.");
        }
    }
    for file in hgrm_files {
        let _ = writeln!(md, "- [`{file}`]({file}): HdrHistogram percentile distribution, milliseconds.");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_become_file_names() {
        assert_eq!(slug("POST /api/v1/user/buy/{id} (replay)"), "post-api-v1-user-buy-id-replay");
        assert_eq!(short_route("POST /api/v1/user/buy/{id} (replay)"), "(replay)");
        assert_eq!(short_route("POST /api/v1/user/buy/{id}"), "buy");
    }

    #[test]
    fn the_baseline_is_the_latest_earlier_report_of_the_scenario() {
        let dir = std::env::temp_dir().join(format!("flashsale-loadgen-baseline-{}", std::process::id()));
        for (name, goose) in [
            ("2026-11-01-sale", true),
            ("2026-11-20-sale", true),
            ("2026-11-22-sale", false),
            ("2026-11-23-browse", true),
        ] {
            std::fs::create_dir_all(dir.join(name)).expect("dir");
            if goose {
                std::fs::write(dir.join(name).join(GOOSE_JSON), "{}").expect("file");
            }
        }
        let current = dir.join("2026-11-25-sale");
        let found = previous_baseline(&dir, "sale", &current).expect("a baseline");
        assert_eq!(found, dir.join("2026-11-20-sale").join(GOOSE_JSON));
        assert_eq!(
            previous_baseline(&dir, "sale", &dir.join("2026-11-20-sale")),
            Some(dir.join("2026-11-01-sale").join(GOOSE_JSON))
        );
        assert_eq!(previous_baseline(&dir, "auth", &current), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
