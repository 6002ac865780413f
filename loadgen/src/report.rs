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

use crate::baseline::{self, Baselines, Measure};
use crate::check::CheckReport;
use crate::hgrm::{Summary, percentile_summary, write_hgrm};
use crate::machine::Machine;
use crate::openloop::TimelinePoint;
use crate::plots::{percentile_spectrum_svg, timeline_svg};
use crate::record::{Outcome, Retries, RetryCause, Series};

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

/// What a scenario run measured, ready to write.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `sale` or `browse`.
    pub scenario: String,
    pub title: String,
    /// How the load was driven (goose users, what each did), for the latency table.
    pub driver: String,
    pub started_utc: String,
    pub configuration: Vec<(String, String)>,
    pub machine: Machine,
    pub backend: String,
    /// Seconds from the first request sent to the last answer: the window of every rate.
    pub active_s: f64,
    /// Seconds from the load driver's start to the first request sent (goose's start-up,
    /// outside the window); None without a request.
    pub start_up_s: Option<f64>,
    pub rows: Vec<Row>,
    pub all_latency_us: Summary,
    pub timeline: Vec<TimelinePoint>,
    pub check: CheckReport,
    /// The goose JSON the deltas are against, if any.
    pub baseline: Option<String>,
    /// goose's own figures: requests and its run time.
    pub goose_requests: usize,
    pub goose_duration_s: usize,
    /// The side-by-side baselines and open-loop runs, if they ran.
    pub baselines: Option<Baselines>,
    /// The product cache over the run, if the scenario reads products.
    pub cache: Option<CacheFigures>,
    /// The buyers' retries of their keys, if the scenario has a sale.
    pub retries: Option<Retries>,
}

/// The product cache's hits and misses over a run, from the server's `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CacheFigures {
    pub hits: u64,
    pub misses: u64,
}

impl CacheFigures {
    /// Hits among lookups; `None` without a lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

impl ScenarioReport {
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
pub fn write(dir: &Path, report: &ScenarioReport, series: &[(String, Outcome, Histogram<u64>)]) -> anyhow::Result<()> {
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
    if let Some(rest) = route.strip_prefix("POST /api/v1/user/buy/{id}") {
        return if rest.is_empty() { "buy" } else { rest.trim() };
    }
    match route.strip_prefix("GET /api/v1/products") {
        Some("") => "list",
        Some(_) => "detail",
        None => route,
    }
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

fn markdown(report: &ScenarioReport, hgrm_files: &[String]) -> String {
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
    let start_up = report
        .start_up_s
        .map_or_else(String::new, |s| format!(" (the load driver's {s:.2} s of start-up before it are not counted)"));
    let _ = writeln!(
        md,
        "{} answers in {:.2} s from the first request sent to the last answer{start_up}; the rates are over that \
         window. Latency from send to the end of the body, in milliseconds, measured by the load generator ({}).\n",
        report.all_latency_us.count, report.active_s, report.driver
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
    if let Some(retries) = &report.retries {
        retries_markdown(&mut md, retries);
    }
    let _ = writeln!(md, "\n![latency percentile spectrum](latency-spectrum.svg)\n");
    let _ = writeln!(md, "![throughput and p99 over time](timeline.svg)\n");
    if let Some(cache) = &report.cache {
        cache_markdown(&mut md, cache);
    }
    if let Some(baselines) = &report.baselines {
        baselines_markdown(&mut md, baselines);
    }
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

fn retries_markdown(md: &mut String, retries: &Retries) {
    let _ = writeln!(md, "\n### Retries\n");
    let _ = writeln!(
        md,
        "Buyers retried the same Idempotency-Key after these answers (at most {} attempts per key; the pause is the \
         answer's Retry-After, at most {} s, and never less than {} ms × attempt, at most {} ms). Each attempt is \
         also a row of the table above. {} key{} ran out of attempts.\n",
        crate::sale::MAX_ATTEMPTS,
        crate::sale::MAX_RETRY_AFTER.as_secs(),
        crate::sale::RETRY_PAUSE.as_millis(),
        crate::sale::MAX_RETRY_PAUSE.as_millis(),
        retries.gave_up,
        if retries.gave_up == 1 { "" } else { "s" }
    );
    let _ = writeln!(md, "| cause | answer | retries |\n|---|---|---:|");
    for cause in RetryCause::ALL {
        let count = retries.by_cause.get(&cause).copied().unwrap_or(0);
        let _ = writeln!(md, "| {} | {} | {count} |", cause.name(), cause.answer());
    }
    let _ = writeln!(md, "| all | | {} |", retries.total);
}

fn cache_markdown(md: &mut String, cache: &CacheFigures) {
    let _ = writeln!(md, "## Product cache\n");
    let ratio = cache.hit_ratio().map_or_else(|| "no lookup".to_owned(), |r| format!("{:.3}%", r * 100.0));
    let _ = writeln!(
        md,
        "Lookups of the product cache (product pages and the first page of the list) during the run, read from \
         the server's `/metrics` before and after (`flashsale_product_cache_hits` and `_misses`; with `--url`, \
         of the one instance that answered).\n"
    );
    let _ = writeln!(md, "| hits | misses | hit ratio |\n|---:|---:|---:|");
    let _ = writeln!(md, "| {} | {} | {ratio} |\n", cache.hits, cache.misses);
}

/// The documents each MongoDB write carried, per repetition: "-" for measures without writes.
fn documents_per_write(samples: &[&baseline::Sample]) -> String {
    let values: Vec<String> =
        samples.iter().filter_map(|s| s.documents_per_write).map(|documents| format!("{documents:.1}")).collect();
    if values.is_empty() { "-".to_owned() } else { values.join(", ") }
}

/// How the winner's orders reached MongoDB, per repetition, and what the raw `insert_many` ran at.
fn group_commit_markdown(md: &mut String, b: &Baselines) {
    let winners: Vec<&baseline::Sample> = b.samples.iter().filter(|s| s.measure == Measure::Winner).collect();
    if winners.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nThe winner path's group commits, from the server's `/metrics` (`order_group_commits` and \
         `orders_group_committed`, read before and after each winner measure, warmup included): their mean \
         batch, rounded, is the batch size of the raw `insert_many` of the same repetition, whose rate counts \
         documents per second.\n"
    );
    let _ = writeln!(md, "| repetition | group commits | orders | mean batch | insert_many batch size |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for winner in winners {
        let batch = b
            .samples
            .iter()
            .find(|s| s.measure == Measure::MongoInsertMany && s.repetition == winner.repetition)
            .and_then(|s| s.documents_per_write)
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.0}"));
        let (commits, orders) = winner.group_commits.map_or((0, 0), |g| (g.commits, g.orders));
        let mean = winner.documents_per_write.map_or_else(|| "none".to_owned(), |m| format!("{m:.2}"));
        let _ = writeln!(md, "| {} | {commits} | {orders} | {mean} | {batch} |", winner.repetition);
    }
}

fn open_loop_row(md: &mut String, point: &baseline::OpenLoopPoint) {
    let _ = writeln!(
        md,
        "| {:.0}% | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
        point.fraction * 100.0,
        point.rate_per_s,
        point.achieved_per_s,
        ms(point.p50_us),
        ms(point.p99_us),
        ms(point.p999_us),
        ms(point.max_us),
        point.dropped,
        point.unexpected
    );
}

/// "4.55 ms, under the 10 ms target."
fn p99_verdict(p99_us: u64, target: std::time::Duration) -> String {
    let verdict = if u128::from(p99_us) < target.as_micros() { "under" } else { "**over**" };
    format!("{} ms, {verdict} the {} ms target.", ms(p99_us), target.as_millis())
}

fn winner_open_loop_markdown(md: &mut String, winner: &baseline::WinnerOpenLoop) {
    let point = &winner.point;
    let _ = writeln!(
        md,
        "\nThe winner path (reserve, group-committed MongoDB insert, confirm) at {:.0}% of its own median \
         closed-loop rate, the same way: a new key per request, dealt over the buyers, on the product without \
         the one-per-user rule, which had {} units left before the run and {} after (it never sold out).\n",
        point.fraction * 100.0,
        winner.units_left_before,
        winner.units_left_after
    );
    let _ = writeln!(
        md,
        "| load | planned per s | achieved per s | p50 ms | p99 ms | p99.9 ms | max ms | dropped | unexpected |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    open_loop_row(md, point);
    let _ = writeln!(
        md,
        "\nWinner p99 at {:.0}% of its capacity: {}",
        point.fraction * 100.0,
        p99_verdict(point.p99_us, baseline::WINNER_P99_TARGET)
    );
}

fn baselines_markdown(md: &mut String, b: &Baselines) {
    let _ = writeln!(md, "## Against the physical limit\n");
    let _ = writeln!(
        md,
        "Measured after the sale, in this same invocation: each measure in turn, {} repetitions, alternating \
         (`{}` s closed loops of {} workers after a {} ms warmup; `redis-benchmark` with {} connections and {} \
         requests). The HTTP and MongoDB rates come from the load generator's own closed-loop driver, each worker \
         waiting for its answer; HTTP requests go out through its bare HTTP/1.1 driver (`wire`: requests \
         written as bytes on kept-alive connections, answers read to their Content-Length): that is the \
         driver that measured capacity. Both drivers ran on {} thread{}: `redis-benchmark`'s client and the \
         HTTP driver's own runtime, so each side of a ratio gave its driver the same threads. {}\n",
        b.repetitions,
        baseline::MEASURE.as_secs(),
        baseline::CONCURRENCY,
        baseline::WARMUP.as_millis(),
        baseline::REDIS_BENCHMARK_CLIENTS,
        baseline::REDIS_BENCHMARK_REQUESTS,
        b.driver_threads,
        if b.driver_threads == 1 { "" } else { "s" },
        match b.driver_cpu_us_per_request {
            Some(us) => format!(
                "The HTTP driver's cost: the load generator's threads spent {us:.0} µs of CPU per `/healthz` request (median), \
                 CPU the server did not have on this machine."
            ),
            None => "Its CPU cost per request could not be read from /proc.".to_owned(),
        }
    );
    let _ = writeln!(
        md,
        "| measure | what | median per s | range per s | p50 ms | p99 ms | documents per write, by repetition | \
         unexpected answers |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    for measure in Measure::ALL {
        let Some(spread) = b.rates.get(&measure) else { continue };
        let samples: Vec<&baseline::Sample> = b.samples.iter().filter(|s| s.measure == measure).collect();
        let median_sample = samples
            .iter()
            .min_by(|a, c| (a.rate_per_s - spread.median).abs().total_cmp(&(c.rate_per_s - spread.median).abs()));
        let unexpected: u64 = samples.iter().map(|s| s.unexpected).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} to {:.0} | {} | {} | {} | {unexpected} |",
            measure.name(),
            measure.describe(),
            spread.median,
            spread.min,
            spread.max,
            median_sample.map_or_else(|| "-".to_owned(), |s| ms(s.p50_us)),
            median_sample.map_or_else(|| "-".to_owned(), |s| ms(s.p99_us)),
            documents_per_write(&samples),
        );
    }
    group_commit_markdown(md, b);
    let _ = writeln!(md, "\n| ratio (per repetition) | median | range | target | |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    for ratio in &b.ratios {
        let verdict = match ratio.target {
            Some(target) if ratio.spread.median >= target => "meets it",
            Some(_) => "**short** (see below)",
            None => "",
        };
        let _ = writeln!(
            md,
            "| {} | {:.2}× | {:.2} to {:.2} | {} | {verdict} |",
            ratio.name,
            ratio.spread.median,
            ratio.spread.min,
            ratio.spread.max,
            ratio.target.map_or_else(|| "-".to_owned(), |t| format!("≥ {t:.1}×"))
        );
    }
    let _ = writeln!(md, "\n### Open loop: latency at a fixed arrival rate\n");
    let _ = writeln!(
        md,
        "The sold-out path (the flood of a sale) at fractions of its median closed-loop rate, {} s each after a \
         {} ms warmup, every request timed from its planned send time (coordinated omission cannot hide a \
         stall), dealt to {} lanes driven from {} thread{} (a worker per core: latency is compared with no \
         other driver).\n",
        baseline::OPEN_LOOP_RUN.as_secs(),
        baseline::OPEN_LOOP_WARMUP.as_millis(),
        baseline::OPEN_LOOP_LANES,
        b.open_loop_threads,
        if b.open_loop_threads == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        md,
        "| load | planned per s | achieved per s | p50 ms | p99 ms | p99.9 ms | max ms | dropped | unexpected |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for point in &b.open_loop {
        open_loop_row(md, point);
    }
    if let Some(half) = b.open_loop.iter().find(|p| (p.fraction - 0.5).abs() < 1e-9) {
        let _ = writeln!(md, "\np99 at 50% of capacity: {}", p99_verdict(half.p99_us, baseline::SOLD_OUT_P99_TARGET));
    }
    if let Some(winner) = &b.winner_open_loop {
        winner_open_loop_markdown(md, winner);
    }
    let limits = short_ratio_limits(b);
    if !limits.is_empty() {
        let _ = writeln!(md, "\n### What limits a ratio that falls short\n");
        for line in limits {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(
            md,
            "\n`system-design/load-testing.md` says what was profiled and changed, and what each change measured."
        );
    }
    let _ = writeln!(md);
}

/// For each purchase path short of its target, what this run's own figures say limits it.
fn short_ratio_limits(b: &Baselines) -> Vec<String> {
    let median = |measure: Measure| b.rates.get(&measure).map(|spread| spread.median).filter(|rate| *rate > 0.0);
    let short = |name: &str| b.ratios.iter().any(|r| r.name == name && r.target.is_some_and(|t| r.spread.median < t));
    let driver = b.driver_cpu_us_per_request.map_or_else(String::new, |us| {
        format!(", while the load generator's own driver spent {us:.0} µs of CPU per request on the same cores")
    });
    let mut lines = Vec::new();
    if short(baseline::RATIO_SOLD_OUT_TO_EVALSHA) {
        if let (Some(sold_out), Some(healthz), Some(evalsha)) =
            (median(Measure::SoldOut), median(Measure::Healthz), median(Measure::Evalsha))
        {
            lines.push(format!(
                "**Sold-out path**: it touches nothing outside the server process (the product is remembered sold \
                 out, the session's user is remembered), and it reached {:.2}× of `/healthz` on the same server, \
                 whose own rate is {:.2}× of raw EVALSHA. So HTTP on this machine bounds it: the request and answer \
                 of a purchase against a bare GET, and the kernel's loopback TCP, which Redis, FerretDB, the server \
                 and the load generator share{driver}.",
                sold_out / healthz,
                healthz / evalsha
            ));
        }
    }
    if short(baseline::RATIO_REPLAY_TO_EVALSHA) {
        if let (Some(replay), Some(sold_out)) = (median(Measure::Replay), median(Measure::SoldOut)) {
            lines.push(format!(
                "**Replay path**: the stored answer comes from the instance's memory, after one Redis round trip \
                 (the session read), which takes it to {:.2}× of the sold-out path's rate.",
                replay / sold_out
            ));
        }
    }
    if short(baseline::RATIO_WINNER_TO_INSERT) || short(baseline::RATIO_WINNER_TO_INSERT_MANY) {
        if let Some(line) = winner_limit(b) {
            lines.push(line);
        }
    }
    lines
}

/// What this run's figures say of the winner path: the batches its group commits reached,
/// and what MongoDB itself did with one document and with a batch of that size.
fn winner_limit(b: &Baselines) -> Option<String> {
    let median = |measure: Measure| b.rates.get(&measure).map(|spread| spread.median).filter(|rate| *rate > 0.0);
    let (winner, insert, insert_many) =
        (median(Measure::Winner)?, median(Measure::MongoInsert)?, median(Measure::MongoInsertMany)?);
    let batches: Vec<f64> =
        b.samples.iter().filter(|s| s.measure == Measure::Winner).filter_map(|s| s.documents_per_write).collect();
    let batch = baseline::Spread::of(&batches).map_or_else(
        || "no group commit (each order its own insert)".to_owned(),
        |spread| format!("group commits of {:.1} orders on average (median of the repetitions)", spread.median),
    );
    Some(format!(
        "**Winner path**: its {} closed-loop workers reached MongoDB in {batch}. At that batch size raw MongoDB \
         wrote {insert_many:.0} documents per s in unordered `insert_many` calls, {:.2}× its {insert:.0} single \
         inserts per s: the most the winner path could reach against raw insert with batches of that size. The \
         winner path reached {winner:.0} orders per s, {:.2}× of that `insert_many` rate (medians), with a \
         Redis reservation, a confirmation and an HTTP request around every order.",
        baseline::CONCURRENCY,
        insert_many / insert,
        winner / insert_many
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_become_file_names() {
        assert_eq!(slug("POST /api/v1/user/buy/{id} (replay)"), "post-api-v1-user-buy-id-replay");
        assert_eq!(short_route("POST /api/v1/user/buy/{id} (replay)"), "(replay)");
        assert_eq!(short_route("POST /api/v1/user/buy/{id}"), "buy");
        assert_eq!(short_route("GET /api/v1/products"), "list");
        assert_eq!(short_route("GET /api/v1/products/{id}"), "detail");
    }

    fn baselines(sold_out: f64, replay: f64) -> Baselines {
        let spread = |median: f64| baseline::Spread { median, min: median, max: median };
        let rates = [
            (Measure::Evalsha, 80_000.0),
            (Measure::Healthz, 100_000.0),
            (Measure::SoldOut, sold_out),
            (Measure::Replay, replay),
        ]
        .into_iter()
        .map(|(measure, rate)| (measure, spread(rate)))
        .collect();
        let ratio = |name: &str, value: f64, target: f64| baseline::Ratio {
            name: name.to_owned(),
            spread: spread(value),
            target: Some(target),
        };
        Baselines {
            repetitions: 1,
            samples: Vec::new(),
            rates,
            ratios: vec![
                ratio(baseline::RATIO_SOLD_OUT_TO_EVALSHA, sold_out / 80_000.0, 1.0),
                ratio(baseline::RATIO_REPLAY_TO_EVALSHA, replay / 80_000.0, 0.5),
            ],
            open_loop: Vec::new(),
            winner_open_loop: None,
            driver_cpu_us_per_request: Some(7.0),
            driver_threads: 1,
            open_loop_threads: 2,
        }
    }

    #[test]
    fn a_short_ratio_is_explained_with_the_runs_own_figures() {
        let limits = short_ratio_limits(&baselines(76_000.0, 42_000.0));
        assert_eq!(limits.len(), 1, "only the sold-out path is short: {limits:?}");
        assert!(limits[0].contains("0.76× of `/healthz`") && limits[0].contains("1.25× of raw EVALSHA"), "{limits:?}");
        assert!(limits[0].contains("7 µs of CPU per request"), "{limits:?}");

        let limits = short_ratio_limits(&baselines(60_000.0, 30_000.0));
        assert_eq!(limits.len(), 2);
        assert!(limits[1].contains("0.50× of the sold-out path"), "{limits:?}");
        assert!(short_ratio_limits(&baselines(90_000.0, 45_000.0)).is_empty(), "nothing short, nothing to explain");
    }

    /// Baselines with a winner path at `winner` orders per s, raw inserts at 1,000 per s
    /// and raw `insert_many` at `insert_many` documents per s, in batches of 8.
    fn winner_baselines(winner: f64, insert_many: f64) -> Baselines {
        let mut b = baselines(90_000.0, 45_000.0);
        let spread = |median: f64| baseline::Spread { median, min: median, max: median };
        for (measure, rate) in
            [(Measure::Winner, winner), (Measure::MongoInsert, 1_000.0), (Measure::MongoInsertMany, insert_many)]
        {
            b.rates.insert(measure, spread(rate));
        }
        let sample = |measure, rate_per_s, documents_per_write, group_commits| baseline::Sample {
            measure,
            repetition: 1,
            rate_per_s,
            p50_us: 1_000,
            p99_us: 9_000,
            unexpected: 0,
            documents_per_write,
            group_commits,
        };
        let commits = baseline::GroupCommits { commits: 400, orders: 3_160 };
        b.samples = vec![
            sample(Measure::Winner, winner, commits.mean_batch(), Some(commits)),
            sample(Measure::MongoInsert, 1_000.0, Some(1.0), None),
            sample(Measure::MongoInsertMany, insert_many, Some(8.0), None),
        ];
        for (name, value, target) in [
            (baseline::RATIO_WINNER_TO_INSERT, winner / 1_000.0, baseline::WINNER_TO_INSERT_TARGET),
            (baseline::RATIO_WINNER_TO_INSERT_MANY, winner / insert_many, baseline::WINNER_TO_INSERT_MANY_TARGET),
        ] {
            b.ratios.push(baseline::Ratio { name: name.to_owned(), spread: spread(value), target: Some(target) });
        }
        b
    }

    #[test]
    fn a_short_winner_ratio_is_explained_by_its_batch_and_the_raw_insert_many() {
        let limits = short_ratio_limits(&winner_baselines(2_500.0, 6_000.0));
        assert_eq!(limits.len(), 1, "only the winner is short: {limits:?}");
        assert!(limits[0].contains("group commits of 7.9 orders"), "{limits:?}");
        assert!(
            limits[0].contains("6000 documents per s") && limits[0].contains("6.00× its 1000 single"),
            "{limits:?}"
        );
        assert!(limits[0].contains("0.42× of that `insert_many` rate"), "{limits:?}");
        assert!(short_ratio_limits(&winner_baselines(3_500.0, 6_000.0)).is_empty(), "both winner ratios met");
    }

    #[test]
    fn the_report_gives_the_batch_sizes_and_the_winners_open_loop_verdict() {
        let mut b = winner_baselines(3_500.0, 6_000.0);
        let point = baseline::OpenLoopPoint {
            path: Measure::Winner,
            fraction: baseline::WINNER_OPEN_LOOP_FRACTION,
            rate_per_s: 1_750.0,
            achieved_per_s: 1_749.0,
            p50_us: 4_000,
            p99_us: 61_000,
            p999_us: 80_000,
            max_us: 90_000,
            dropped: 0,
            unexpected: 0,
        };
        b.winner_open_loop =
            Some(baseline::WinnerOpenLoop { point, units_left_before: 900_000, units_left_after: 892_000 });
        let mut md = String::new();
        baselines_markdown(&mut md, &b);
        assert!(md.contains("| mongo_insert_many |"), "{md}");
        assert!(md.contains("| 1 | 400 | 3160 | 7.90 | 8 |"), "the group commits of repetition 1: {md}");
        assert!(md.contains("| 7.9 | 0 |") && md.contains("| 8.0 | 0 |"), "documents per write: {md}");
        assert!(md.contains(baseline::RATIO_WINNER_TO_INSERT_MANY), "{md}");
        assert!(md.contains("| 50% | 1750 | 1749 | 4.00 | 61.00 | 80.00 | 90.00 | 0 | 0 |"), "{md}");
        assert!(md.contains("Winner p99 at 50% of its capacity: 61.00 ms, **over** the 50 ms target."), "{md}");
        assert!(md.contains("900000 units left before the run and 892000 after"), "{md}");
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
