//! The report of a run: what an engineer reads after the simulator played one plan.
//!
//! - [`verdict_table`]: the terminal table, one row per invariant and per self-check,
//!   and the conclusion ("all invariants held", "N invariants violated", "vacuous run");
//! - [`violation_details`]: on a violation, the seed and plan hash, the replay command,
//!   every violation, the offending buyers' full histories and the slice of the timeline
//!   around the first violations;
//! - [`write`]: the report folder (by default [`default_dir`]): `plan.json`,
//!   `history.json`, `verdicts.json`, `summary.md` and `timeline.html`.
//!
//! `timeline.html` is self-contained (inline CSS and inline SVG, no script, no font, no
//! image, no external reference) and stays small on runs of tens of thousands of
//! operations: the traffic is aggregated into buckets per product, and only the ops of
//! the buyers a violation names are drawn one by one.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::checker::{Invariant, Report, SelfCheckResult, Verdict, Violation};
use crate::history::{ADMIN, FaultEvent, FaultPhase, History, Op, OpKind, Outcome};
use crate::plan::{Backend, Fault, Plan, ProductChange};
use crate::runner::{self, RunOutcome};

/// Largest number of offending buyers whose histories are shown.
const MAX_OFFENDERS: usize = 20;
/// Half-width of the timeline slice shown around a violation.
const CONTEXT_MS: u64 = 1_500;
/// Largest number of lines of the timeline slices, all violations together.
const MAX_CONTEXT_LINES: usize = 60;
/// Violations (the first in time) that get a timeline slice.
const MAX_CONTEXT_VIOLATIONS: usize = 3;
/// Smallest traffic bucket of the timeline.
const MIN_BUCKET_MS: u64 = 100;
/// Roughly how many buckets the timeline has at most.
const TARGET_BUCKETS: u64 = 400;
/// Violations marked on the timeline.
const MAX_VIOLATION_MARKS: usize = 100;
/// Ops of one offending buyer drawn on the timeline (a bot may make thousands).
const MAX_OPS_DRAWN: usize = 1_000;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! wl {
    ($dst:expr) => {
        $dst.push('\n')
    };
    ($dst:expr, $($arg:tt)*) => {{
        let _ = writeln!($dst, $($arg)*);
    }};
}

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

/// The terminal verdict table: one row per invariant (name, HELD/VIOLATED, items checked,
/// violations count) and one per self-check (passed/FAILED + detail), then a line "all
/// invariants held" / "N invariants violated" / "vacuous run".
pub fn verdict_table(run: &RunOutcome) -> String {
    let report = &run.report;
    let width = Invariant::ALL
        .iter()
        .map(|i| i.name().len())
        .chain(report.self_checks.iter().map(|c| c.check.name().len()))
        .chain(["invariant".len(), "self-check".len()])
        .max()
        .unwrap_or(10);
    let mut out = String::new();
    wl!(out, "{:<width$}  {:<9}  {:>9}  {:>10}", "invariant", "verdict", "checked", "violations");
    for invariant in Invariant::ALL {
        match report.verdict(invariant) {
            Some(verdict) => wl!(
                out,
                "{:<width$}  {:<9}  {:>9}  {:>10}",
                invariant.name(),
                if verdict.held { "HELD" } else { "VIOLATED" },
                verdict.checked,
                violation_count(verdict)
            ),
            None => wl!(out, "{:<width$}  {:<9}  {:>9}  {:>10}", invariant.name(), "UNCHECKED", "-", "-"),
        }
    }
    wl!(out);
    wl!(out, "{:<width$}  {:<9}  detail", "self-check", "result");
    for check in &report.self_checks {
        wl!(
            out,
            "{:<width$}  {:<9}  {}",
            check.check.name(),
            if check.passed { "passed" } else { "FAILED" },
            check.detail
        );
    }
    wl!(out);
    wl!(out, "{}", conclusion(report));
    out
}

/// What an engineer needs on a violation (empty string if the run passed): the seed and
/// plan hash, the replay command, each violation message, the offending buyers' full
/// histories (at most 20 buyers, every op sorted by invoke time) and the slice of the
/// timeline around the first violations (ops on the same product and fault events
/// within ±1500 ms, at most 60 lines).
pub fn violation_details(run: &RunOutcome) -> String {
    let report = &run.report;
    if report.passed() {
        return String::new();
    }
    let mut out = String::new();
    wl!(out, "seed {}  plan hash {}  {}", run.plan.options.seed, run.plan_hash, conclusion(report));
    if let Some(broken) = &run.broken {
        wl!(out, "server variant: broken {broken}");
    }
    wl!(out, "replay: {}", run.replay_command);

    let violated: Vec<&Verdict> = report.verdicts.iter().filter(|v| !v.held).collect();
    if !violated.is_empty() {
        wl!(out);
        wl!(out, "violations:");
        for verdict in &violated {
            wl!(out, "  {} ({} violations)", verdict.invariant.name(), violation_count(verdict));
            for violation in &verdict.violations {
                wl!(out, "    - {}{}", violation.message, violation_context(violation));
            }
        }
    }
    let failed: Vec<&SelfCheckResult> = report.self_checks.iter().filter(|c| !c.passed).collect();
    if !failed.is_empty() {
        wl!(out);
        wl!(out, "self-checks failed (the run did not exercise what it claims):");
        for check in failed {
            wl!(out, "  - {}: {}", check.check.name(), check.detail);
        }
    }

    let offenders: Vec<usize> = report.offending_buyers().into_iter().collect();
    if !offenders.is_empty() {
        let shown = &offenders[..offenders.len().min(MAX_OFFENDERS)];
        let histories = buyer_histories(&run.history, shown);
        wl!(out);
        if shown.len() < offenders.len() {
            wl!(out, "offending buyers ({} of {}, the first by index):", shown.len(), offenders.len());
        } else {
            wl!(out, "offending buyers ({}):", shown.len());
        }
        for buyer in shown {
            let ops = histories.get(buyer).map(Vec::as_slice).unwrap_or_default();
            wl!(out);
            wl!(out, "  {} ({} ops)", describe_buyer(run, *buyer), ops.len());
            let op_width = ops.iter().map(|op| op_text(&op.kind).len()).max().unwrap_or(2).max(2);
            wl!(out, "    {:>8}  {:>8}  {:>4}  {:<op_width$}  outcome", "invoke", "complete", "inst", "op");
            for op in ops {
                wl!(
                    out,
                    "    {:>8}  {:>8}  {:>4}  {:<op_width$}  {}",
                    op.invoke_ms,
                    op.complete_ms,
                    op.instance,
                    op_text(&op.kind),
                    op.outcome.label()
                );
            }
        }
    }

    timeline_slices(run, &mut out);
    out
}

/// Where a run's report goes by default: `target/flashsale-sim/seed-<seed>-<plan hash>`
/// under the current directory.
pub fn default_dir(run: &RunOutcome) -> PathBuf {
    PathBuf::from("target").join("flashsale-sim").join(format!("seed-{}-{}", run.plan.options.seed, run.plan_hash))
}

/// Writes the report folder (created if missing): `plan.json`, `history.json`,
/// `verdicts.json`, `summary.md` and `timeline.html`. Returns the paths written.
pub fn write(dir: &Path, run: &RunOutcome) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files: [(&str, Vec<u8>); 5] = [
        ("plan.json", json_file(&run.plan)?),
        ("history.json", history_json(&run.history)?),
        ("verdicts.json", json_file(&VerdictsFile::new(run))?),
        ("summary.md", summary_markdown(run).into_bytes()),
        ("timeline.html", timeline_html(run).into_bytes()),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------
// Shared helpers.

/// PASSED, VIOLATED or VACUOUS.
fn status(report: &Report) -> &'static str {
    if !report.all_held() {
        "VIOLATED"
    } else if report.vacuous() {
        "VACUOUS"
    } else {
        "PASSED"
    }
}

/// The last line of the verdict table.
fn conclusion(report: &Report) -> String {
    let violated = report.verdicts.iter().filter(|v| !v.held).count();
    let failed = report.self_checks.iter().filter(|c| !c.passed).count();
    if violated > 0 {
        format!("{violated} invariants violated")
    } else if failed > 0 {
        format!("vacuous run (every invariant held, but {failed} self-checks failed)")
    } else {
        "all invariants held".into()
    }
}

/// The exact number of violations: the checker keeps the first ones and sums up the rest
/// in a last "... and N more".
fn violation_count(verdict: &Verdict) -> u64 {
    let kept = verdict.violations.len() as u64;
    let more = verdict.violations.last().and_then(|last| {
        let rest = last.message.strip_prefix("... and ")?.strip_suffix(" more")?;
        (last.buyers.is_empty() && last.product.is_none()).then_some(rest.parse::<u64>().ok()?)
    });
    match more {
        Some(more) => kept - 1 + more,
        None => kept,
    }
}

/// " (product 1, buyers 3, 4, at 1234 ms)", or nothing.
fn violation_context(violation: &Violation) -> String {
    let mut parts = Vec::new();
    if let Some(product) = violation.product {
        parts.push(format!("product {product}"));
    }
    if !violation.buyers.is_empty() {
        let buyers: Vec<String> = violation.buyers.iter().map(usize::to_string).collect();
        let noun = if buyers.len() == 1 { "buyer" } else { "buyers" };
        parts.push(format!("{noun} {}", buyers.join(", ")));
    }
    if let Some(at) = violation.at_ms {
        parts.push(format!("at {at} ms"));
    }
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

/// "buyer 3: double clicker on product 1, starts at 1200 ms, instance 0, user ...".
fn describe_buyer(run: &RunOutcome, buyer: usize) -> String {
    let mut text = format!("buyer {buyer}");
    if let Some(plan) = run.plan.buyers.get(buyer) {
        w!(
            text,
            ": {:?} on product {}, starts at {} ms, instance {}",
            plan.behaviour,
            plan.product,
            plan.start_at_ms,
            plan.instance
        );
        if plan.via_http_login {
            text.push_str(", HTTP login");
        }
    }
    if let Some(user) = run.ids.user_ids.get(buyer) {
        w!(text, ", user {user}");
    }
    text
}

/// Who sent an operation: a buyer, or the administrator.
fn who(buyer: usize) -> String {
    if buyer == ADMIN { "admin".to_owned() } else { format!("buyer {buyer}") }
}

fn op_product(kind: &OpKind) -> Option<usize> {
    match kind {
        OpKind::Buy { product, .. }
        | OpKind::Read { product }
        | OpKind::Cancel { product, .. }
        | OpKind::Restock { product, .. }
        | OpKind::Change { product, .. } => Some(*product),
        OpKind::Login => None,
    }
}

fn op_text(kind: &OpKind) -> String {
    match kind {
        OpKind::Buy { product, key } => format!("buy p{product} key {key}"),
        OpKind::Read { product } => format!("read p{product}"),
        OpKind::Login => "login".into(),
        OpKind::Cancel { product, order_id } => format!("cancel p{product} order {order_id}"),
        OpKind::Restock { product, quantity } => format!("restock p{product} +{quantity}"),
        OpKind::Change { product, change } => format!("{} p{product}", change_text(*change)),
    }
}

/// A product change, in words.
pub fn change_text(change: ProductChange) -> &'static str {
    match change {
        ProductChange::OnePerUser { on: true } => "one-per-user on",
        ProductChange::OnePerUser { on: false } => "one-per-user off",
        ProductChange::Close => "close",
        ProductChange::Reopen => "reopen",
        ProductChange::Delete => "delete",
    }
}

/// The ops of each of `buyers`, sorted by invoke time.
fn buyer_histories<'a>(history: &'a History, buyers: &[usize]) -> HashMap<usize, Vec<&'a Op>> {
    let mut by_buyer: HashMap<usize, Vec<&Op>> = buyers.iter().map(|b| (*b, Vec::new())).collect();
    for op in &history.ops {
        if let Some(ops) = by_buyer.get_mut(&op.buyer) {
            ops.push(op);
        }
    }
    for ops in by_buyer.values_mut() {
        ops.sort_by_key(|op| (op.invoke_ms, op.complete_ms, op.seq));
    }
    by_buyer
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Redis => "redis",
        Backend::Mongo => "mongo",
    }
}

/// A fault's kind and target, e.g. "proxy latency 120 ms → redis".
fn fault_label(fault: &Fault) -> String {
    match fault {
        Fault::ProxyLatency { target, latency_ms } => {
            format!("proxy latency {latency_ms} ms → {}", backend_name(*target))
        }
        Fault::ProxyReset { target } => format!("proxy reset → {}", backend_name(*target)),
        Fault::ProxySlowClose { target, delay_ms } => {
            format!("proxy slow close {delay_ms} ms → {}", backend_name(*target))
        }
        Fault::ProxyBlackhole { target } => format!("proxy blackhole → {}", backend_name(*target)),
        Fault::Partition { target } => format!("network partition → {}", backend_name(*target)),
        Fault::Pause { target } => format!("pause (SIGSTOP) {}", backend_name(*target)),
        Fault::KillRestart { target, persistent } => {
            format!("kill+restart {}{}", backend_name(*target), if *persistent { "" } else { " (no persistence)" })
        }
        Fault::KillInstance { instance } => format!("kill instance {instance}"),
        Fault::SlowLink { instance, latency_ms } => format!("slow link {latency_ms} ms, instance {instance} → redis"),
        Fault::ClientPauseWrite => "CLIENT PAUSE WRITE redis".into(),
    }
}

fn phase_name(phase: FaultPhase) -> &'static str {
    match phase {
        FaultPhase::Start => "start",
        FaultPhase::Heal => "heal",
        FaultPhase::Error => "ERROR",
    }
}

/// One fault's life on the timeline.
struct FaultSpan<'a> {
    index: usize,
    fault: Fault,
    start_ms: Option<u64>,
    heal_ms: Option<u64>,
    events: Vec<&'a FaultEvent>,
}

/// Every fault of the plan (and any the history adds), with its start and heal.
fn fault_spans<'a>(plan: &Plan, history: &'a History) -> Vec<FaultSpan<'a>> {
    let mut spans: Vec<FaultSpan<'a>> = plan
        .faults
        .iter()
        .enumerate()
        .map(|(index, planned)| FaultSpan {
            index,
            fault: planned.fault,
            start_ms: None,
            heal_ms: None,
            events: vec![],
        })
        .collect();
    for event in &history.faults {
        let position = match spans.iter().position(|s| s.index == event.index) {
            Some(position) => position,
            None => {
                spans.push(FaultSpan {
                    index: event.index,
                    fault: event.fault,
                    start_ms: None,
                    heal_ms: None,
                    events: vec![],
                });
                spans.len() - 1
            }
        };
        let Some(span) = spans.get_mut(position) else { continue };
        match event.phase {
            FaultPhase::Start if span.start_ms.is_none() => span.start_ms = Some(event.at_ms),
            FaultPhase::Heal if span.heal_ms.is_none() => span.heal_ms = Some(event.at_ms),
            _ => {}
        }
        span.events.push(event);
    }
    spans.sort_by_key(|s| s.index);
    spans
}

/// "start at 1200 ms (detail); heal at 2400 ms", or "never fired".
fn what_happened(span: &FaultSpan<'_>) -> String {
    if span.events.is_empty() {
        return "never fired".into();
    }
    let parts: Vec<String> = span
        .events
        .iter()
        .map(|e| {
            if e.detail.is_empty() {
                format!("{} at {} ms", phase_name(e.phase), e.at_ms)
            } else {
                format!("{} at {} ms ({})", phase_name(e.phase), e.at_ms, e.detail)
            }
        })
        .collect();
    parts.join("; ")
}

// ---------------------------------------------------------------------------------------
// The timeline slices of the violation details.

/// One line of a timeline slice.
struct SliceLine {
    /// Faults and the named buyers' ops first, then the ops nearest the violation.
    priority: (bool, u64),
    at_ms: u64,
    text: String,
}

fn timeline_slices(run: &RunOutcome, out: &mut String) {
    let mut moments: Vec<(Invariant, &Violation, u64)> = run
        .report
        .verdicts
        .iter()
        .filter(|v| !v.held)
        .flat_map(|v| v.violations.iter().map(move |violation| (v.invariant, violation)))
        .filter_map(|(invariant, violation)| violation.at_ms.map(|at| (invariant, violation, at)))
        .collect();
    moments.sort_by_key(|(_, violation, at)| (*at, violation.product));
    moments.dedup_by_key(|(_, violation, at)| (*at, violation.product));
    moments.truncate(MAX_CONTEXT_VIOLATIONS);
    if moments.is_empty() {
        return;
    }
    let budget = MAX_CONTEXT_LINES / moments.len();
    wl!(out);
    wl!(
        out,
        "timeline around the first violations (±{CONTEXT_MS} ms; ops on the same product, fault events; * = named buyer):"
    );
    for (invariant, violation, at) in moments {
        let low = at.saturating_sub(CONTEXT_MS);
        let high = at.saturating_add(CONTEXT_MS);
        wl!(out);
        let product = violation.product.map_or_else(|| "every product".to_string(), |p| format!("product {p}"));
        wl!(out, "  at {at} ms, {product}: [{}] {}", invariant.name(), violation.message);
        let mut lines = Vec::new();
        for event in run.history.faults.iter().filter(|e| e.at_ms >= low && e.at_ms <= high) {
            let mut text = format!(
                "    {:>8}  {:>8}  fault #{} {} {}",
                event.at_ms,
                "",
                event.index,
                phase_name(event.phase),
                fault_label(&event.fault)
            );
            if !event.detail.is_empty() {
                w!(text, ": {}", event.detail);
            }
            lines.push(SliceLine { priority: (false, 0), at_ms: event.at_ms, text });
        }
        for op in &run.history.ops {
            if op.invoke_ms > high || op.complete_ms < low {
                continue;
            }
            if violation.product.is_some() && op_product(&op.kind) != violation.product {
                continue;
            }
            let named = violation.buyers.contains(&op.buyer);
            let distance = if at < op.invoke_ms { op.invoke_ms - at } else { at.saturating_sub(op.complete_ms) };
            let text = format!(
                "  {} {:>8}  {:>8}  {:<12} inst {}  {}  {}",
                if named { "*" } else { " " },
                op.invoke_ms,
                op.complete_ms,
                who(op.buyer),
                op.instance,
                op_text(&op.kind),
                op.outcome.label()
            );
            lines.push(SliceLine { priority: (!named, distance), at_ms: op.invoke_ms, text });
        }
        let total = lines.len();
        lines.sort_by_key(|l| l.priority);
        lines.truncate(budget);
        lines.sort_by_key(|l| l.at_ms);
        wl!(out, "    {:>8}  {:>8}", "invoke", "complete");
        for line in &lines {
            wl!(out, "{}", line.text);
        }
        if total > lines.len() {
            wl!(out, "    ... {} more in the window (the nearest are shown)", total - lines.len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON files.

fn json_file<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).context("serializing the report")?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `{"ops": [...], "faults": [...], "stock_events": [...]}`, one op, fault event or stock
/// event a line (greppable, and far
/// smaller than pretty-printed JSON).
fn history_json(history: &History) -> anyhow::Result<Vec<u8>> {
    fn list<T: Serialize>(out: &mut Vec<u8>, items: &[T]) -> anyhow::Result<()> {
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n  " } else { b",\n  " });
            serde_json::to_writer(&mut *out, item).context("serializing the history")?;
        }
        out.extend_from_slice(if items.is_empty() { b"]" } else { b"\n]" });
        Ok(())
    }
    let mut out = Vec::with_capacity(history.ops.len() * 200 + 64);
    out.extend_from_slice(b"{\n\"ops\": ");
    list(&mut out, &history.ops)?;
    out.extend_from_slice(b",\n\"faults\": ");
    list(&mut out, &history.faults)?;
    out.extend_from_slice(b",\n\"stock_events\": ");
    list(&mut out, &history.stock_events)?;
    out.extend_from_slice(b"\n}\n");
    Ok(out)
}

/// The contents of `verdicts.json`.
#[derive(Serialize)]
struct VerdictsFile<'a> {
    seed: u64,
    plan_hash: &'a str,
    replay_command: &'a str,
    broken: Option<&'a str>,
    /// "passed", "violated" or "vacuous".
    status: String,
    all_held: bool,
    vacuous: bool,
    timings: &'a runner::Timings,
    verdicts: &'a [Verdict],
    self_checks: &'a [SelfCheckResult],
    offending_buyers: BTreeSet<usize>,
    final_state: &'a crate::checker::FinalState,
    identities: &'a crate::checker::Identities,
}

impl<'a> VerdictsFile<'a> {
    fn new(run: &'a RunOutcome) -> Self {
        Self {
            seed: run.plan.options.seed,
            plan_hash: &run.plan_hash,
            replay_command: &run.replay_command,
            broken: run.broken.as_deref(),
            status: status(&run.report).to_lowercase(),
            all_held: run.report.all_held(),
            vacuous: run.report.vacuous(),
            timings: &run.timings,
            verdicts: &run.report.verdicts,
            self_checks: &run.report.self_checks,
            offending_buyers: run.report.offending_buyers(),
            final_state: &run.final_state,
            identities: &run.ids,
        }
    }
}

// ---------------------------------------------------------------------------------------
// summary.md

/// Text fit for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn summary_markdown(run: &RunOutcome) -> String {
    let plan = &run.plan;
    let o = &plan.options;
    let report = &run.report;
    let mut md = String::new();
    wl!(md, "# flashsale-sim: seed {}, plan hash `{}`: {}", o.seed, run.plan_hash, status(report));
    wl!(md);
    wl!(md, "**{}**", conclusion(report));
    wl!(md);
    wl!(md, "Replay:");
    wl!(md);
    wl!(md, "```sh");
    wl!(md, "{}", run.replay_command);
    wl!(md, "```");
    wl!(md);

    wl!(md, "## Options");
    wl!(md);
    wl!(md, "| option | value |");
    wl!(md, "|---|---|");
    wl!(md, "| seed | {} |", o.seed);
    wl!(md, "| plan hash | `{}` |", run.plan_hash);
    wl!(md, "| buyers | {} |", o.buyers);
    wl!(md, "| products | {} |", o.products);
    wl!(md, "| stock per product | {} |", o.stock_per_product);
    wl!(md, "| instances | {} |", o.instances);
    wl!(md, "| topology | {:?} |", o.topology);
    wl!(md, "| fault mix | {:?} |", o.fault_mix);
    wl!(md, "| duration | {} ms |", o.duration_ms);
    wl!(md, "| server variant | {} |", run.broken.as_deref().map_or_else(|| "correct".to_string(), cell));
    wl!(md);

    wl!(md, "## Products");
    wl!(md);
    wl!(md, "| product | stock | one per user | opens at | restocks | changes | id |");
    wl!(md, "|---:|---:|---|---:|---|---|---|");
    for product in &plan.products {
        let id = run.ids.product_ids.get(product.index).map(ToString::to_string).unwrap_or_default();
        wl!(
            md,
            "| {} | {} | {} | {} ms | {} | {} | `{}` |",
            product.index,
            product.stock,
            if product.one_per_user { "yes" } else { "no" },
            product.opens_at_ms,
            product
                .restocks
                .iter()
                .map(|r| format!("+{} at {} ms", r.quantity, r.at_ms))
                .collect::<Vec<_>>()
                .join(", "),
            product
                .changes
                .iter()
                .map(|c| format!("{} at {} ms", change_text(c.change), c.at_ms))
                .collect::<Vec<_>>()
                .join(", "),
            id
        );
    }
    wl!(md);

    wl!(md, "## Buyers by behaviour");
    wl!(md);
    wl!(md, "| behaviour | buyers |");
    wl!(md, "|---|---:|");
    for (behaviour, count) in plan.behaviour_counts() {
        wl!(md, "| {behaviour:?} | {count} |");
    }
    wl!(md);

    wl!(md, "## Faults");
    wl!(md);
    let spans = fault_spans(plan, &run.history);
    if spans.is_empty() {
        wl!(md, "No faults were planned.");
    } else {
        wl!(md, "| # | planned at | for | fault | what happened |");
        wl!(md, "|---:|---:|---:|---|---|");
        for span in &spans {
            let (at, duration) = plan.faults.get(span.index).map_or_else(
                || ("-".to_string(), "-".to_string()),
                |f| (format!("{} ms", f.at_ms), format!("{} ms", f.duration_ms)),
            );
            wl!(
                md,
                "| {} | {at} | {duration} | {} | {} |",
                span.index,
                cell(&fault_label(&span.fault)),
                cell(&what_happened(span))
            );
        }
    }
    wl!(md);

    wl!(md, "## Purchase outcomes");
    wl!(md);
    let counts = runner::outcome_counts(&run.history);
    if counts.is_empty() {
        wl!(md, "No purchase was made.");
    } else {
        wl!(md, "| outcome | count |");
        wl!(md, "|---|---:|");
        for (label, count) in counts {
            wl!(md, "| {} | {count} |", cell(&label));
        }
    }
    wl!(md);
    wl!(md, "{} operations in all, {} fault events.", run.history.ops.len(), run.history.faults.len());
    wl!(md);

    wl!(md, "## Verdicts");
    wl!(md);
    wl!(md, "| invariant | verdict | checked | violations |");
    wl!(md, "|---|---|---:|---:|");
    for invariant in Invariant::ALL {
        match report.verdict(invariant) {
            Some(v) => wl!(
                md,
                "| {} | {} | {} | {} |",
                invariant.name(),
                if v.held { "HELD" } else { "**VIOLATED**" },
                v.checked,
                violation_count(v)
            ),
            None => wl!(md, "| {} | UNCHECKED | - | - |", invariant.name()),
        }
    }
    wl!(md);

    wl!(md, "## Self-checks");
    wl!(md);
    wl!(md, "| self-check | result | detail |");
    wl!(md, "|---|---|---|");
    for check in &report.self_checks {
        wl!(
            md,
            "| {} | {} | {} |",
            check.check.name(),
            if check.passed { "passed" } else { "**FAILED**" },
            cell(&check.detail)
        );
    }
    wl!(md);

    wl!(md, "## Final state");
    wl!(md);
    wl!(
        md,
        "Reconciler {} in {} ms.",
        if run.final_state.drained { "drained" } else { "did NOT drain" },
        run.final_state.drain_ms
    );
    wl!(md);
    wl!(md, "| product | live orders | released | Redis units left | Redis pending | Redis orders |");
    wl!(md, "|---:|---:|---:|---:|---:|---:|");
    for (index, product) in run.final_state.products.iter().enumerate() {
        let live = product.orders.iter().filter(|o| o.live).count();
        let released = product.orders.len() - live;
        match product.redis {
            Some(sale) => wl!(
                md,
                "| {index} | {live} | {released} | {} | {} | {} |",
                sale.raw_remaining(),
                sale.pending,
                sale.orders_held
            ),
            None => wl!(md, "| {index} | {live} | {released} | not loaded | - | - |"),
        }
    }
    wl!(md);

    wl!(md, "## Timings");
    wl!(md);
    wl!(md, "| phase | ms |");
    wl!(md, "|---|---:|");
    wl!(md, "| setup | {} |", run.timings.setup_ms);
    wl!(md, "| sale | {} |", run.timings.sale_ms);
    wl!(md, "| drain | {} |", run.timings.drain_ms);
    wl!(md, "| total | {} |", run.timings.total_ms);

    let details = violation_details(run);
    if !details.is_empty() {
        wl!(md);
        wl!(md, "## Violation details");
        wl!(md);
        let fence = if details.contains("```") { "~~~~" } else { "```" };
        wl!(md, "{fence}text");
        md.push_str(&details);
        if !details.ends_with('\n') {
            md.push('\n');
        }
        wl!(md, "{fence}");
    }
    md
}

// ---------------------------------------------------------------------------------------
// timeline.html

/// Text escaped for HTML (element content and attribute values). `://` is written with
/// character references so the file holds no link, not even in a quoted error message.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    if out.contains("://") { out.replace("://", ":&#47;&#47;") } else { out }
}

const CSS: &str = "\
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:20px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:20px 0 6px}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;color:#fff;font-weight:700}
.PASSED{background:#2e8b3a}.VIOLATED{background:#c0392b}.VACUOUS{background:#d98c1f}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.held,td.passed{color:#2e8b3a;font-weight:600}td.violated,td.failed{color:#c0392b;font-weight:700}
code,pre{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f7f7f7;border:1px solid #ddd;padding:8px;overflow:auto;max-height:600px}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.scroll{overflow-x:auto}p.small{color:#555;font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#333}
svg .small{font-size:10px;fill:#555}
svg .lane{fill:#fafafa;stroke:#e2e2e2}
svg .grid{stroke:#e6e6e6}
svg .axis{stroke:#888}
svg .ok{fill:#2e9d3f}svg .fail{fill:#9c9c9c}svg .info{fill:#f28e1c}
svg .open{stroke:#1f5fbf;stroke-width:1.5;stroke-dasharray:4 3}
svg .band-redis{fill:#c9a3e6;fill-opacity:.35}
svg .band-mongo{fill:#8fb8e8;fill-opacity:.35}
svg .band-instance{fill:#e8d38f;fill-opacity:.45}
svg .planned{fill:none;stroke:#999;stroke-dasharray:3 3}
svg .error{fill:#c0392b}
svg .violation{stroke:#c0392b;stroke-width:1.5}
svg .op{stroke:#d62728;stroke-width:3;stroke-linecap:round}
svg .op.okop{stroke:#a31515}
";

/// Pixels of the SVG.
const SVG_WIDTH: f64 = 1280.0;
const GUTTER: f64 = 170.0;
const RIGHT_MARGIN: f64 = 24.0;
const LABEL_ROW: f64 = 13.0;
const FAULT_LABEL_ROWS: usize = 3;
const LANE_HEIGHT: f64 = 72.0;
const LANE_GAP: f64 = 10.0;
const BUYER_LANE: f64 = 16.0;
const BUYER_ROWS: usize = 3;

/// Maps milliseconds to x.
#[derive(Clone, Copy)]
struct Scale {
    max_ms: u64,
}

impl Scale {
    fn x(self, ms: u64) -> f64 {
        let width = SVG_WIDTH - GUTTER - RIGHT_MARGIN;
        GUTTER + width * (ms.min(self.max_ms) as f64) / (self.max_ms.max(1) as f64)
    }

    fn end(self) -> f64 {
        SVG_WIDTH - RIGHT_MARGIN
    }
}

/// Bucket width: at least 100 ms, a round number, at most about 400 buckets.
fn bucket_ms(max_ms: u64) -> u64 {
    const NICE: [u64; 12] = [100, 200, 250, 500, 1_000, 2_000, 2_500, 5_000, 10_000, 15_000, 30_000, 60_000];
    let needed = max_ms.div_ceil(TARGET_BUCKETS).max(MIN_BUCKET_MS);
    NICE.iter().copied().find(|b| *b >= needed).unwrap_or_else(|| needed.div_ceil(60_000) * 60_000)
}

/// Axis tick step: a round number of milliseconds giving at most about 12 ticks.
fn tick_ms(max_ms: u64) -> u64 {
    const NICE: [u64; 14] =
        [100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000];
    NICE.iter().copied().find(|t| max_ms / t <= 12).unwrap_or_else(|| max_ms.div_ceil(12).max(1))
}

fn seconds(ms: u64, step: u64) -> String {
    if step % 1_000 == 0 { format!("{} s", ms / 1_000) } else { format!("{:.1} s", ms as f64 / 1_000.0) }
}

fn band_class(fault: &Fault) -> &'static str {
    if matches!(fault, Fault::KillInstance { .. }) {
        "band-instance"
    } else if fault.target() == Some(Backend::Mongo) {
        "band-mongo"
    } else {
        "band-redis"
    }
}

fn timeline_html(run: &RunOutcome) -> String {
    let report = &run.report;
    let state = status(report);
    let title = format!("flashsale-sim seed {} plan {}: {state}", run.plan.options.seed, run.plan_hash);
    let mut h = String::with_capacity(64 * 1024);
    wl!(h, "<!DOCTYPE html>");
    wl!(h, "<html lang=\"en\"><head><meta charset=\"utf-8\">");
    wl!(h, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    wl!(h, "<title>{}</title>", esc(&title));
    wl!(h, "<style>\n{CSS}</style></head><body>");
    wl!(
        h,
        "<h1>flashsale-sim: seed {} · plan hash <code>{}</code> <span class=\"badge {state}\">{state}</span></h1>",
        run.plan.options.seed,
        esc(&run.plan_hash)
    );
    let o = &run.plan.options;
    wl!(
        h,
        "<p>{} buyers, {} products × {} units, {} instances, {:?} Redis, {:?} faults, {} ms{}. <b>{}</b>.</p>",
        o.buyers,
        o.products,
        o.stock_per_product,
        o.instances,
        o.topology,
        o.fault_mix,
        o.duration_ms,
        run.broken.as_deref().map(|b| format!(", server variant broken {}", esc(b))).unwrap_or_default(),
        esc(&conclusion(report))
    );
    wl!(h, "<p>Replay: <code>{}</code></p>", esc(&run.replay_command));

    verdict_tables_html(report, &mut h);

    wl!(h, "<h2>Timeline</h2>");
    timeline_svg(run, &mut h);

    let details = violation_details(run);
    if !details.is_empty() {
        wl!(h, "<h2>Violation details</h2>");
        wl!(h, "<pre>{}</pre>", esc(&details));
    }
    wl!(h, "</body></html>");
    h
}

fn verdict_tables_html(report: &Report, h: &mut String) {
    wl!(h, "<h2>Verdicts</h2>");
    wl!(h, "<table><tr><th>invariant</th><th>verdict</th><th>checked</th><th>violations</th></tr>");
    for invariant in Invariant::ALL {
        match report.verdict(invariant) {
            Some(v) => {
                let (class, word) = if v.held { ("held", "HELD") } else { ("violated", "VIOLATED") };
                let mut first = String::new();
                if let Some(violation) = v.violations.first() {
                    w!(first, "<br><small>{}</small>", esc(&violation.message));
                }
                wl!(
                    h,
                    "<tr><td>{}{first}</td><td class=\"{class}\">{word}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(invariant.name()),
                    v.checked,
                    violation_count(v)
                );
            }
            None => wl!(
                h,
                "<tr><td>{}</td><td>UNCHECKED</td><td class=\"n\">-</td><td class=\"n\">-</td></tr>",
                esc(invariant.name())
            ),
        }
    }
    wl!(h, "</table>");
    wl!(h, "<table><tr><th>self-check</th><th>result</th><th>detail</th></tr>");
    for check in &report.self_checks {
        let (class, word) = if check.passed { ("passed", "passed") } else { ("failed", "FAILED") };
        wl!(
            h,
            "<tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
            esc(check.check.name()),
            esc(&check.detail)
        );
    }
    wl!(h, "</table>");
}

/// Buy counts of one bucket: ok, fail, info.
type Counts = [u32; 3];

fn timeline_svg(run: &RunOutcome, h: &mut String) {
    let history = &run.history;
    let plan = &run.plan;
    let max_ms = history
        .ops
        .iter()
        .map(|op| op.complete_ms)
        .chain(history.faults.iter().map(|f| f.at_ms))
        .chain(plan.products.iter().map(|p| p.opens_at_ms))
        .max()
        .unwrap_or(0)
        .max(1_000);
    let scale = Scale { max_ms };
    let bucket = bucket_ms(max_ms);
    let buckets = usize::try_from(max_ms.div_ceil(bucket)).unwrap_or(usize::MAX).max(1);

    // Buy outcomes per product and bucket (by invocation time).
    let products =
        plan.products.len().max(history.ops.iter().filter_map(|op| op_product(&op.kind)).max().map_or(0, |p| p + 1));
    let mut traffic: Vec<Vec<Counts>> = vec![vec![[0; 3]; buckets]; products];
    for op in &history.ops {
        let OpKind::Buy { product, .. } = op.kind else { continue };
        let slot = match op.outcome {
            Outcome::Ok { .. } => 0,
            Outcome::Fail { .. } => 1,
            Outcome::Info { .. } => 2,
            _ => continue,
        };
        let index = usize::try_from(op.invoke_ms / bucket).unwrap_or(usize::MAX).min(buckets - 1);
        if let Some(counts) = traffic.get_mut(product).and_then(|lane| lane.get_mut(index)) {
            counts[slot] += 1;
        }
    }

    let offenders: Vec<usize> = run.report.offending_buyers().into_iter().take(MAX_OFFENDERS).collect();
    let top = 6.0 + LABEL_ROW * FAULT_LABEL_ROWS as f64 + 4.0;
    let lanes_bottom = top + products as f64 * (LANE_HEIGHT + LANE_GAP);
    let buyers_top = if offenders.is_empty() { lanes_bottom } else { lanes_bottom + 18.0 };
    let plot_bottom = buyers_top + offenders.len() as f64 * (BUYER_LANE + 2.0);
    let height = plot_bottom + 28.0;

    wl!(
        h,
        "<p class=\"legend\"><span><i style=\"background:#2e9d3f\"></i>ok</span><span><i style=\"background:#9c9c9c\"></i>fail</span><span><i style=\"background:#f28e1c\"></i>info (unknown)</span><span><i style=\"background:#c9a3e6\"></i>Redis fault</span><span><i style=\"background:#8fb8e8\"></i>MongoDB fault</span><span><i style=\"background:#e8d38f\"></i>instance fault</span><span>┆ sale opens</span><span style=\"color:#c0392b\">│ violation</span></p>"
    );
    wl!(
        h,
        "<p class=\"small\">Purchases by invocation time in buckets of {bucket} ms, {} operations over {:.1} s; hover for counts.</p>",
        history.ops.len(),
        max_ms as f64 / 1_000.0
    );
    wl!(h, "<div class=\"scroll\">");
    wl!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {SVG_WIDTH} {height:.0}\" role=\"img\">"
    );
    // The drawing's own styles, so the SVG also renders on its own (copied out, or
    // opened by an SVG viewer that ignores the page's stylesheet).
    let svg_css: String =
        CSS.lines().filter_map(|line| line.strip_prefix("svg ")).map(|rule| rule.replace("}svg ", "}")).collect();
    wl!(h, "<style>{svg_css}</style>");

    // Lane backgrounds and labels, under everything else.
    for (product, lane) in traffic.iter().enumerate() {
        let lane_top = top + product as f64 * (LANE_HEIGHT + LANE_GAP);
        let peak = lane.iter().map(|c| c.iter().sum::<u32>()).max().unwrap_or(0);
        let buys: u64 = lane.iter().flat_map(|c| c.iter()).map(|n| u64::from(*n)).sum();
        wl!(
            h,
            "<rect class=\"lane\" x=\"{GUTTER}\" y=\"{lane_top:.1}\" width=\"{:.1}\" height=\"{LANE_HEIGHT}\"/>",
            scale.end() - GUTTER
        );
        wl!(h, "<text x=\"8\" y=\"{:.1}\">product {product}</text>", lane_top + 14.0);
        if let Some(p) = plan.products.get(product) {
            wl!(
                h,
                "<text class=\"small\" x=\"8\" y=\"{:.1}\">stock {}{}</text>",
                lane_top + 28.0,
                p.stock,
                if p.one_per_user { ", one per user" } else { "" }
            );
        }
        wl!(h, "<text class=\"small\" x=\"8\" y=\"{:.1}\">{buys} buys</text>", lane_top + 41.0);
        wl!(h, "<text class=\"small\" x=\"8\" y=\"{:.1}\">peak {peak} / {bucket} ms</text>", lane_top + 54.0);
    }
    let histories = buyer_histories(history, &offenders);
    if !offenders.is_empty() {
        wl!(h, "<text x=\"8\" y=\"{:.1}\">offending buyers (every op, invoke → complete)</text>", buyers_top - 5.0);
    }
    for (n, buyer) in offenders.iter().enumerate() {
        let lane_top = buyers_top + n as f64 * (BUYER_LANE + 2.0);
        let ops = histories.get(buyer).map_or(0, Vec::len);
        let mut label = format!("buyer {buyer}");
        if let Some(b) = plan.buyers.get(*buyer) {
            w!(label, " {:?}", b.behaviour);
        }
        if ops > MAX_OPS_DRAWN {
            w!(label, " (first {MAX_OPS_DRAWN} of {ops} ops)");
        }
        wl!(
            h,
            "<rect class=\"lane\" x=\"{GUTTER}\" y=\"{lane_top:.1}\" width=\"{:.1}\" height=\"{BUYER_LANE}\"/>",
            scale.end() - GUTTER
        );
        wl!(h, "<text class=\"small\" x=\"8\" y=\"{:.1}\">{}</text>", lane_top + BUYER_LANE - 4.0, esc(&label));
    }

    // Grid and time axis.
    let step = tick_ms(max_ms);
    let mut tick = 0;
    while tick <= max_ms {
        let x = scale.x(tick);
        wl!(h, "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{plot_bottom:.1}\"/>");
        wl!(
            h,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot_bottom + 16.0,
            seconds(tick, step)
        );
        tick += step;
    }
    wl!(
        h,
        "<line class=\"axis\" x1=\"{GUTTER}\" y1=\"{plot_bottom:.1}\" x2=\"{:.1}\" y2=\"{plot_bottom:.1}\"/>",
        scale.end()
    );

    // Faults: bands from start to heal, labels above the lanes.
    for (n, span) in fault_spans(plan, history).iter().enumerate() {
        let label = fault_label(&span.fault);
        let row_y = 6.0 + LABEL_ROW * ((n % FAULT_LABEL_ROWS) as f64 + 1.0) - 3.0;
        let tooltip = format!("fault #{}: {label}\n{}", span.index, what_happened(span));
        match span.start_ms {
            Some(start) => {
                let end = span.heal_ms.filter(|heal| *heal >= start).unwrap_or(max_ms);
                let x1 = scale.x(start);
                let x2 = scale.x(end).max(x1 + 1.0);
                wl!(
                    h,
                    "<g><title>{}</title><rect class=\"{}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/><text x=\"{x1:.1}\" y=\"{row_y:.1}\">{}</text></g>",
                    esc(&tooltip),
                    band_class(&span.fault),
                    row_y + 3.0,
                    x2 - x1,
                    plot_bottom - row_y - 3.0,
                    esc(&format!("#{} {label}", span.index))
                );
            }
            None => {
                // Never started: the planned slot, outlined.
                if let Some(planned) = plan.faults.get(span.index) {
                    let x1 = scale.x(planned.at_ms);
                    let x2 = scale.x(planned.at_ms + planned.duration_ms).max(x1 + 1.0);
                    wl!(
                        h,
                        "<g><title>{}</title><rect class=\"planned\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/><text x=\"{x1:.1}\" y=\"{row_y:.1}\">{}</text></g>",
                        esc(&tooltip),
                        row_y + 3.0,
                        x2 - x1,
                        plot_bottom - row_y - 3.0,
                        esc(&format!("#{} {label} (not fired)", span.index))
                    );
                }
            }
        }
        for event in span.events.iter().filter(|e| e.phase == FaultPhase::Error) {
            let x = scale.x(event.at_ms);
            wl!(
                h,
                "<path class=\"error\" d=\"M{x:.1} {:.1}l-4 -7h8z\"><title>{}</title></path>",
                top,
                esc(&format!("fault #{} {label}: error at {} ms: {}", span.index, event.at_ms, event.detail))
            );
        }
    }

    // One lane per product.
    let bucket_width = (scale.x(bucket) - scale.x(0)).max(0.5);
    for (product, lane) in traffic.iter().enumerate() {
        let lane_top = top + product as f64 * (LANE_HEIGHT + LANE_GAP);
        let base = lane_top + LANE_HEIGHT;
        let peak = lane.iter().map(|c| c.iter().sum::<u32>()).max().unwrap_or(0).max(1);
        let unit = (LANE_HEIGHT - 6.0) / f64::from(peak);
        let plan_product = plan.products.get(product);
        for (index, counts) in lane.iter().enumerate() {
            if counts.iter().all(|n| *n == 0) {
                continue;
            }
            let start = index as u64 * bucket;
            let x = scale.x(start);
            let width = bucket_width.min(scale.end() - x).max(0.5);
            w!(
                h,
                "<g><title>product {product}, {:.1}–{:.1} s: {} ok, {} fail, {} info</title>",
                start as f64 / 1_000.0,
                (start + bucket) as f64 / 1_000.0,
                counts[0],
                counts[1],
                counts[2]
            );
            let mut y = base;
            for (slot, class) in ["ok", "fail", "info"].iter().enumerate() {
                if counts[slot] == 0 {
                    continue;
                }
                let bar = f64::from(counts[slot]) * unit;
                y -= bar;
                w!(h, "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{bar:.1}\"/>");
            }
            wl!(h, "</g>");
        }
        if let Some(p) = plan_product {
            let x = scale.x(p.opens_at_ms);
            wl!(
                h,
                "<g><title>product {product} opens at {} ms</title><line class=\"open\" x1=\"{x:.1}\" y1=\"{lane_top:.1}\" x2=\"{x:.1}\" y2=\"{base:.1}\"/><text class=\"small\" x=\"{:.1}\" y=\"{:.1}\">opens</text></g>",
                p.opens_at_ms,
                x + 3.0,
                lane_top + 10.0
            );
        }
    }

    // Violations tied to a moment: a red mark on their product's lane (or every lane).
    let marks = run
        .report
        .verdicts
        .iter()
        .flat_map(|v| v.violations.iter().map(move |violation| (v.invariant, violation)))
        .filter(|(_, violation)| violation.at_ms.is_some())
        .take(MAX_VIOLATION_MARKS);
    for (invariant, violation) in marks {
        let Some(at) = violation.at_ms else { continue };
        let x = scale.x(at);
        let (y1, y2) = match violation.product {
            Some(p) if p < products => {
                let lane_top = top + p as f64 * (LANE_HEIGHT + LANE_GAP);
                (lane_top, lane_top + LANE_HEIGHT)
            }
            _ => (top, lanes_bottom - LANE_GAP),
        };
        wl!(
            h,
            "<line class=\"violation\" x1=\"{x:.1}\" y1=\"{y1:.1}\" x2=\"{x:.1}\" y2=\"{y2:.1}\"><title>{}</title></line>",
            esc(&format!("[{}] at {at} ms: {}", invariant.name(), violation.message))
        );
    }

    // The offending buyers, every op drawn.
    if !offenders.is_empty() {
        for (n, buyer) in offenders.iter().enumerate() {
            let lane_top = buyers_top + n as f64 * (BUYER_LANE + 2.0);
            let ops = histories.get(buyer).map(Vec::as_slice).unwrap_or_default();
            // Concurrent ops go to separate rows.
            let mut row_ends = [0.0_f64; BUYER_ROWS];
            for op in ops.iter().take(MAX_OPS_DRAWN) {
                let x1 = scale.x(op.invoke_ms);
                let x2 = scale.x(op.complete_ms).max(x1 + 1.5);
                let row = row_ends.iter().position(|end| *end < x1).unwrap_or(BUYER_ROWS - 1);
                if let Some(end) = row_ends.get_mut(row) {
                    *end = end.max(x2 + 1.0);
                }
                let y = lane_top + 3.5 + row as f64 * ((BUYER_LANE - 7.0) / (BUYER_ROWS as f64 - 1.0));
                let class = if matches!(op.outcome, Outcome::Ok { .. }) { "op okop" } else { "op" };
                let tooltip = format!(
                    "buyer {buyer}: {} · {}–{} ms · instance {} · {}",
                    op_text(&op.kind),
                    op.invoke_ms,
                    op.complete_ms,
                    op.instance,
                    op.outcome.label()
                );
                wl!(
                    h,
                    "<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\"><title>{}</title></line>",
                    esc(&tooltip)
                );
            }
        }
    }
    wl!(h, "</svg></div>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{FinalProduct, FinalState, Identities, RedisSale, SelfCheck, StoredOrder};
    use crate::plan::{FaultMix, PlanOptions, Topology};
    use crate::runner::Timings;
    use uuid::Uuid;

    /// A folder under the system temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            Self(std::env::temp_dir().join(format!("flashsale-sim-report-{name}-{}-{nanos}", std::process::id())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn plan() -> Plan {
        Plan::generate(PlanOptions {
            seed: 42,
            buyers: 4,
            products: 2,
            stock_per_product: 2,
            instances: 2,
            topology: Topology::Single,
            fault_mix: FaultMix::MongoOutage,
            duration_ms: 10_000,
            partition: false,
        })
        .expect("plan")
    }

    fn op(seq: u64, buyer: usize, kind: OpKind, invoke_ms: u64, complete_ms: u64, outcome: Outcome) -> Op {
        Op { seq, buyer, instance: buyer % 2, kind, invoke_ms, complete_ms, outcome }
    }

    fn buy(product: usize, key: &str) -> OpKind {
        OpKind::Buy { product, key: key.into() }
    }

    fn ok(order: u128, replayed: bool) -> Outcome {
        Outcome::Ok { status: 201, order_id: Uuid::from_u128(order), unit: 1, replayed }
    }

    fn held(invariant: Invariant, checked: u64) -> Verdict {
        Verdict { invariant, held: true, checked, violations: vec![] }
    }

    const DOUBLE_ORDER: &str = "key \"k1\" answered two orders: <b>one</b> & two";

    /// A run where buyer 1 got two orders for one key around 1300 ms, during a fault.
    fn violated_run() -> RunOutcome {
        let plan = plan();
        let history = History {
            ops: vec![
                op(0, 0, OpKind::Login, 0, 40, Outcome::LoggedIn),
                op(1, 0, buy(0, "k0"), 100, 180, ok(10, false)),
                op(2, 1, buy(0, "k1"), 120, 1_120, Outcome::Info { status: 0, reason: "timeout".into() }),
                op(3, 1, buy(0, "k1"), 1_200, 1_300, ok(11, false)),
                op(4, 1, buy(0, "k1"), 1_250, 1_320, ok(12, true)),
                op(
                    5,
                    1,
                    OpKind::Read { product: 0 },
                    1_400,
                    1_410,
                    Outcome::Info { status: 0, reason: "error for url (http://127.0.0.1:1/x)".into() },
                ),
                op(6, 2, buy(0, "k2"), 1_350, 1_380, Outcome::Fail { status: 409, problem: "sold-out".into() }),
                op(7, 3, buy(1, "k3"), 3_100, 3_150, ok(13, false)),
                op(8, 3, buy(1, "k3b"), 3_200, 3_260, Outcome::Fail { status: 429, problem: "rate-limited".into() }),
            ],
            faults: plan
                .faults
                .iter()
                .enumerate()
                .flat_map(|(index, f)| {
                    [
                        FaultEvent {
                            index,
                            at_ms: f.at_ms,
                            fault: f.fault,
                            phase: FaultPhase::Start,
                            detail: "blackholed".into(),
                        },
                        FaultEvent {
                            index,
                            at_ms: f.at_ms + f.duration_ms,
                            fault: f.fault,
                            phase: FaultPhase::Heal,
                            detail: String::new(),
                        },
                    ]
                })
                .collect(),
            ..Default::default()
        };
        let ids = Identities {
            product_ids: (0..2).map(|i| Uuid::from_u128(1_000 + i)).collect(),
            user_ids: (0..4).map(|i| Uuid::from_u128(2_000 + i)).collect(),
        };
        let order = |id: u128, user: u128, unit: i64| StoredOrder {
            order_id: Uuid::from_u128(id).to_string(),
            user_id: Uuid::from_u128(user).to_string(),
            unit: Some(unit),
            live: true,
        };
        let sale = |next_unit: i64| RedisSale { stock_total: 2, next_unit, free_count: 0, pending: 0, orders_held: 2 };
        let final_state = FinalState {
            products: vec![
                FinalProduct {
                    product_id: ids.product_ids[0],
                    orders: vec![order(10, 2_000, 1), order(11, 2_001, 2)],
                    redis: Some(sale(3)),
                    recorded_stock: Some(2),
                    revised_stock: Some(2),
                    deleted: false,
                },
                FinalProduct {
                    product_id: ids.product_ids[1],
                    orders: vec![order(13, 2_003, 1)],
                    redis: Some(sale(2)),
                    recorded_stock: Some(2),
                    revised_stock: Some(2),
                    deleted: false,
                },
            ],
            drained: true,
            drain_ms: 250,
        };
        let mut verdicts: Vec<Verdict> = Invariant::ALL.iter().map(|i| held(*i, 9)).collect();
        if let Some(v) = verdicts.iter_mut().find(|v| v.invariant == Invariant::Idempotency) {
            v.held = false;
            v.violations = vec![
                Violation { message: DOUBLE_ORDER.into(), product: Some(0), buyers: vec![1], at_ms: Some(1_320) },
                Violation { message: "... and 4 more".into(), product: None, buyers: vec![], at_ms: None },
            ];
        }
        let self_checks = [
            SelfCheck::SoldOut,
            SelfCheck::RetriedAfterTimeout,
            SelfCheck::KeyReplayed,
            SelfCheck::FaultsFired,
            SelfCheck::Drained,
        ]
        .into_iter()
        .map(|check| SelfCheckResult { check, passed: true, detail: format!("{} fine", check.name()) })
        .collect();
        let replay_command = runner::replay_command(&plan, crate::world::BackendChoice::Local, Some("double_order"));
        RunOutcome {
            plan_hash: plan.hash(),
            replay_command,
            plan,
            ids,
            history,
            final_state,
            report: Report { verdicts, self_checks },
            timings: Timings { setup_ms: 1_000, sale_ms: 10_000, drain_ms: 250, total_ms: 11_500 },
            broken: Some("double_order".into()),
        }
    }

    fn passed_run() -> RunOutcome {
        let mut run = violated_run();
        run.report.verdicts = Invariant::ALL.iter().map(|i| held(*i, 9)).collect();
        run.broken = None;
        run
    }

    #[test]
    fn the_verdict_table_names_every_invariant_and_self_check() {
        let run = violated_run();
        let table = verdict_table(&run);
        for invariant in Invariant::ALL {
            assert!(table.contains(invariant.name()), "{} missing:\n{table}", invariant.name());
        }
        for check in &run.report.self_checks {
            assert!(table.contains(check.check.name()), "{:?} missing:\n{table}", check.check);
        }
        let idempotency = table.lines().find(|l| l.starts_with("idempotency")).expect("idempotency row");
        assert!(idempotency.contains("VIOLATED") && idempotency.trim_end().ends_with(" 5"), "{idempotency}");
        assert_eq!(table.lines().last(), Some("1 invariants violated"));

        assert_eq!(verdict_table(&passed_run()).lines().last(), Some("all invariants held"));
        let mut vacuous = passed_run();
        vacuous.report.self_checks[0].passed = false;
        let table = verdict_table(&vacuous);
        assert!(table.lines().last().is_some_and(|l| l.starts_with("vacuous run")), "{table}");
        assert!(table.contains("FAILED"));
    }

    #[test]
    fn violation_details_give_the_replay_and_the_offending_buyers_ops() {
        let run = violated_run();
        let details = violation_details(&run);
        assert!(details.contains(&run.replay_command), "{details}");
        assert!(details.contains(&run.plan_hash));
        assert!(details.contains(DOUBLE_ORDER));
        assert!(details.contains("buyer 1"));
        // Every op of buyer 1, in invoke order, with its outcome label.
        let history = details.split("offending buyers").nth(1).expect("histories");
        let history = history.split("timeline around").next().expect("histories");
        let positions: Vec<usize> = ["info timeout", "201", "201 replay", "info error for url"]
            .iter()
            .map(|label| history.find(&format!("  {label}")).unwrap_or_else(|| panic!("{label} missing:\n{history}")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "not in invoke order:\n{history}");
        assert!(history.contains("buy p0 key k1"));
        assert!(!history.contains("key k0"), "buyer 0 is not offending:\n{history}");
        // The timeline slice: buyer 2's sold-out on the same product, not buyer 3's product.
        let slice = details.split("timeline around").nth(1).expect("slice");
        assert!(slice.contains("buyer 2") && slice.contains("409 sold-out"), "{slice}");
        assert!(!slice.contains("buyer 3"), "{slice}");
        assert!(slice.lines().count() <= MAX_CONTEXT_LINES + 10);

        assert_eq!(violation_details(&passed_run()), "");
    }

    #[test]
    fn the_default_dir_names_seed_and_hash() {
        let run = violated_run();
        let dir = default_dir(&run);
        assert_eq!(dir, Path::new("target/flashsale-sim").join(format!("seed-42-{}", run.plan_hash)));
    }

    #[test]
    fn write_produces_the_five_files() {
        let run = violated_run();
        let tmp = TempDir::new("five");
        let dir = tmp.0.join("nested");
        let written = write(&dir, &run).expect("write");
        let names: Vec<String> =
            written.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["plan.json", "history.json", "verdicts.json", "summary.md", "timeline.html"]);
        for path in &written {
            assert!(path.starts_with(&dir) && path.is_file(), "{}", path.display());
        }

        let json = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join(name)).expect("read")).expect("valid JSON")
        };
        assert_eq!(json("plan.json")["options"]["seed"], 42);
        let history = json("history.json");
        assert_eq!(history["ops"].as_array().map(Vec::len), Some(run.history.ops.len()));
        assert_eq!(history["faults"].as_array().map(Vec::len), Some(run.history.faults.len()));
        assert_eq!(history["ops"][1]["op"], "buy");
        let verdicts = json("verdicts.json");
        assert_eq!(verdicts["plan_hash"], run.plan_hash.as_str());
        assert_eq!(verdicts["replay_command"], run.replay_command.as_str());
        assert_eq!(verdicts["broken"], "double_order");
        assert_eq!(verdicts["status"], "violated");
        assert_eq!(verdicts["verdicts"].as_array().map(Vec::len), Some(Invariant::ALL.len()));
        assert!(verdicts["timings"]["total_ms"].is_u64());
        assert!(verdicts["final_state"]["products"].is_array());
        assert!(verdicts["identities"]["user_ids"].is_array());

        let summary = std::fs::read_to_string(dir.join("summary.md")).expect("summary");
        for needle in
            ["seed 42", run.plan_hash.as_str(), "## Faults", "blackhole", "409 sold-out", "VIOLATED", "```text"]
        {
            assert!(summary.contains(needle), "{needle} missing:\n{summary}");
        }

        let html = std::fs::read_to_string(dir.join("timeline.html")).expect("html");
        assert!(html.contains("<svg"));
        assert!(html.contains("VIOLATED"));
        let without_xmlns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_xmlns.contains("http://") && !without_xmlns.contains("https://"));
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("<img"));
        assert!(!html.contains("<b>one</b>"), "violation text not escaped");
        assert!(html.contains("&lt;b&gt;one&lt;/b&gt; &amp; two"));
        assert!(html.contains("class=\"op"), "the offending buyer's ops are drawn");
        for invariant in Invariant::ALL {
            assert!(html.contains(&esc(invariant.name())));
        }

        // Writing again over an existing folder works.
        assert_eq!(write(&dir, &passed_run()).expect("rewrite").len(), 5);
    }

    #[test]
    fn the_timeline_aggregates_a_large_run() {
        let mut run = violated_run();
        let ops = &mut run.history.ops;
        for i in 0..30_000_u64 {
            // Thousands of buyers beyond the plan's, none of them offending.
            let buyer = 4 + (i % 3_000) as usize;
            let outcome = match i % 5 {
                0 => ok(u128::from(i), false),
                1 | 2 => Outcome::Fail { status: 409, problem: "sold-out".into() },
                _ => Outcome::Info { status: 503, reason: "unavailable".into() },
            };
            let invoke = i * 2;
            ops.push(op(100 + i, buyer, buy((i % 2) as usize, &format!("k{i}")), invoke, invoke + 40, outcome));
        }
        let html = timeline_html(&run);
        assert!(html.len() < 2_000_000, "timeline.html is {} bytes", html.len());
        assert!(html.contains("<svg"));
    }
}
