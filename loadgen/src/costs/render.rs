//! The report folder of a `costs` run: `README.md` (one table per sweep and a table of how
//! each cost grew between the smallest and the largest size), `summary.json` (everything
//! measured) and `costs.svg` (each cost against its size on log-log axes).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use super::CostsReport;

/// Files of the report folder.
pub const README: &str = "README.md";
pub const SUMMARY: &str = "summary.json";
pub const PLOT: &str = "costs.svg";

const PLOT_SIZE: (u32, u32) = (960, 600);
const FONT: &str = "sans-serif";
/// Smallest time the plot shows, ms (a lower value is drawn there).
const PLOT_FLOOR_MS: f64 = 0.01;
/// Exponents of growth, cost ∝ size^k, below which a cost reads flat, sublinear, linear.
const FLAT_BELOW: f64 = 0.15;
const SUBLINEAR_BELOW: f64 = 0.85;
const LINEAR_UP_TO: f64 = 1.15;

/// How a cost grew between two sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub cost: String,
    pub from: (usize, f64),
    pub to: (usize, f64),
    /// k of cost ∝ size^k between the two points.
    pub exponent: f64,
    pub reading: &'static str,
}

/// k of cost ∝ size^k through two points; `None` when a point cannot be on a log scale.
pub fn growth_exponent(from: (usize, f64), to: (usize, f64)) -> Option<f64> {
    let (size_ratio, cost_ratio) = (to.0 as f64 / from.0 as f64, to.1 / from.1);
    (from.0 > 0 && to.0 != from.0 && from.1 > 0.0 && to.1 > 0.0).then(|| cost_ratio.ln() / size_ratio.ln())
}

/// The word for an exponent of growth.
pub fn reading(exponent: f64) -> &'static str {
    match exponent {
        k if k < FLAT_BELOW => "flat",
        k if k < SUBLINEAR_BELOW => "sublinear",
        k if k <= LINEAR_UP_TO => "linear",
        _ => "worse than linear",
    }
}

/// One cost against its size: (size, ms) points, smallest size first.
struct Series {
    name: &'static str,
    points: Vec<(usize, f64)>,
}

fn series(report: &CostsReport) -> Vec<Series> {
    let ms = |us: u64| us as f64 / 1_000.0;
    let first_rebuilds = || report.rebuilds.iter().filter(|r| !r.repeat);
    vec![
        Series {
            name: "winner p50 (stock)",
            points: report.paths.iter().map(|p| (p.stock, ms(p.winner.p50_us))).collect(),
        },
        Series {
            name: "sold-out p50 (stock)",
            points: report.paths.iter().map(|p| (p.stock, ms(p.sold_out.p50_us))).collect(),
        },
        Series {
            name: "replay p50 (stock)",
            points: report.paths.iter().map(|p| (p.stock, ms(p.replay.p50_us))).collect(),
        },
        Series {
            name: "rebuild without its fixed wait (orders)",
            points: first_rebuilds().map(|r| (r.orders, (r.total_s - r.settle_s) * 1_000.0)).collect(),
        },
        Series {
            name: "reconciler pass (live products)",
            points: report.reconciler.iter().map(|r| (r.live_products, r.pass_median_ms)).collect(),
        },
        Series {
            name: "login p50 (users)",
            points: report.logins.iter().map(|l| (l.users, ms(l.login.p50_us))).collect(),
        },
        Series {
            name: "user lookup by email, last user (users)",
            points: report.logins.iter().map(|l| (l.users, l.by_email_last_ms)).collect(),
        },
        Series {
            name: "user lookup by _id (users)",
            points: report.logins.iter().map(|l| (l.users, l.by_id_last_ms)).collect(),
        },
    ]
}

/// How each plotted cost grew from its smallest to its largest size.
pub fn growths(report: &CostsReport) -> Vec<Growth> {
    let mut growths: Vec<Growth> = series(report)
        .into_iter()
        .filter_map(|s| {
            let (from, to) = (*s.points.first()?, *s.points.last()?);
            let exponent = growth_exponent(from, to)?;
            Some(Growth { cost: s.name.to_owned(), from, to, exponent, reading: reading(exponent) })
        })
        .collect();
    let memory: Vec<(usize, f64)> = report.paths.iter().map(|p| (p.stock, p.sale_state_b as f64)).collect();
    if let (Some(from), Some(to)) = (memory.first(), memory.last()) {
        if let Some(exponent) = growth_exponent(*from, *to) {
            let cost = "sale state in Redis, bytes (stock)".to_owned();
            growths.push(Growth { cost, from: *from, to: *to, exponent, reading: reading(exponent) });
        }
    }
    growths
}

/// Every cost against its size, log-log, one line per cost.
pub fn plot_svg(report: &CostsReport) -> anyhow::Result<String> {
    let all = series(report);
    let points = || all.iter().flat_map(|s| s.points.iter());
    let x_max = points().map(|p| p.0 as f64).fold(10.0, f64::max) * 2.0;
    let y_max = points().map(|p| p.1).fold(1.0, f64::max) * 3.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Cost as a sale grows", (FONT, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((1.0..x_max).log_scale(), (PLOT_FLOOR_MS..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("Size: units of stock, orders, live products or users")
            .y_desc("Time (ms)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()?;
        for (index, cost) in all.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            let line: Vec<(f64, f64)> = cost.points.iter().map(|(x, y)| (*x as f64, y.max(PLOT_FLOOR_MS))).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
                .label(cost.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
            chart.draw_series(line.into_iter().map(|point| Circle::new(point, 4, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Writes `README.md`, `summary.json` and `costs.svg` into `dir`.
pub fn write(dir: &Path, report: &CostsReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let growths = growths(report);
    let summary = serde_json::json!({ "report": report, "growth": growths });
    std::fs::write(dir.join(SUMMARY), serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(dir.join(PLOT), plot_svg(report)?)?;
    std::fs::write(dir.join(README), markdown(report, &growths))?;
    Ok(())
}

/// The report as Markdown.
pub fn markdown(report: &CostsReport, growths: &[Growth]) -> String {
    let mut out = String::new();
    let machine = &report.machine;
    let _ = writeln!(out, "# Cost as a sale grows\n");
    let _ = writeln!(
        out,
        "Started {} UTC; {} s in all. {} ({} CPUs, {}), {}; {}; {}; commit {}, {} build. \
         Passwords: {} (the server's configured cost). Everything on one machine: the load \
         generator, the server instance(s), redis-server and FerretDB share its cores.\n",
        report.started_utc,
        report.total_s.round(),
        machine.cpu_model,
        machine.cpus,
        machine.memory,
        machine.kernel,
        machine.redis,
        machine.ferretdb,
        machine.git_commit,
        machine.profile,
        report.argon2,
    );
    let _ = writeln!(out, "![every cost against its size]({PLOT})\n");
    paths_tables(&mut out, report);
    state_tables(&mut out, report);
    login_table(&mut out, report);
    let _ = writeln!(out, "## Growth from the smallest to the largest size\n");
    let _ = writeln!(out, "| cost | smallest (size: value) | largest (size: value) | k in cost ∝ size^k | reading |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for growth in growths {
        let _ = writeln!(
            out,
            "| {} | {}: {:.3} | {}: {:.3} | {:.2} | {} |",
            growth.cost, growth.from.0, growth.from.1, growth.to.0, growth.to.1, growth.exponent, growth.reading
        );
    }
    let _ = writeln!(
        out,
        "\nTimes in ms, except bytes where named. `system-design/load-testing.md` explains the method and the findings."
    );
    out
}

fn paths_tables(out: &mut String, report: &CostsReport) {
    let _ = writeln!(out, "## Purchase paths by stock\n");
    let _ = writeln!(out, "| stock | path | requests | rate /s | p50 µs | p99 µs | max µs | unexpected |");
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for p in &report.paths {
        for (path, f) in [("winner", &p.winner), ("sold-out", &p.sold_out), ("replay", &p.replay)] {
            let _ = writeln!(
                out,
                "| {} | {path} | {} | {:.0} | {} | {} | {} | {} |",
                p.stock, f.requests, f.rate_per_s, f.p50_us, f.p99_us, f.max_us, f.unexpected
            );
        }
    }
    let _ = writeln!(
        out,
        "\nShare of sold-out answers from the in-process shortcut: {}.",
        report
            .paths
            .iter()
            .map(|p| format!("stock {}: {:.1}%", p.stock, p.sold_out_shortcut_share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "\n## Redis memory per sold unit\n");
    let _ = writeln!(
        out,
        "| stock | orders seeded in MongoDB (s to write; s to load) | used_memory Δ per unit sold over HTTP, B | sale state once sold out, B | per unit, B | orders hash encoding |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|");
    for p in &report.paths {
        let _ = writeln!(
            out,
            "| {} | {} ({:.1} s; {:.2} s) | {:.0} | {} | {:.0} | {} |",
            p.stock,
            p.seeded_orders,
            p.seed_s,
            p.load_s,
            p.used_memory_per_sold_unit_b,
            p.sale_state_b,
            p.sale_state_per_unit_b,
            p.orders_encoding
        );
    }
    let _ = writeln!(out, "\n## The sold-out path on several instances\n");
    let _ = writeln!(out, "| instances | requests | rate /s | p50 µs | p99 µs | max µs | unexpected |");
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
    for i in &report.instances {
        let f = &i.sold_out;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            i.instances, f.requests, f.rate_per_s, f.p50_us, f.p99_us, f.max_us, f.unexpected
        );
    }
}

fn state_tables(out: &mut String, report: &CostsReport) {
    let _ = writeln!(out, "\n## Rebuilding a product's sale state from MongoDB\n");
    let _ = writeln!(
        out,
        "| orders | orders in the collection | rebuild s | of which fixed wait s | MongoDB read s | load_sale.lua ms | used_memory Δ per order, B | inside the 10 s bound |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &report.rebuilds {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            r.orders,
            r.orders_in_collection,
            r.total_s,
            r.settle_s,
            r.mongo_read_s,
            r.redis_load_s * 1_000.0,
            r.used_memory_per_order_b,
            if r.within_timeout { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(out, "\n## One reconciler pass\n");
    let _ = writeln!(out, "| live products | pass median ms | pass max ms | per product µs | interval ms | lease ms |");
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    for r in &report.reconciler {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.0} | {} | {} |",
            r.live_products, r.pass_median_ms, r.pass_max_ms, r.per_product_us, r.interval_ms, r.lease_ms
        );
    }
}

fn login_table(out: &mut String, report: &CostsReport) {
    let _ = writeln!(out, "\n## Login by users in the collection\n");
    let _ = writeln!(
        out,
        "| users | logins | logins /s (one at a time) | p50 ms | p99 ms | password check ms | lookup by email, first user ms | lookup by email, last user ms | lookup by _id ms | lookups failed | s to insert |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &report.logins {
        let f = &l.login;
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
            l.users,
            f.requests,
            f.rate_per_s,
            f.p50_us as f64 / 1_000.0,
            f.p99_us as f64 / 1_000.0,
            l.password_check_ms,
            l.by_email_first_ms,
            l.by_email_last_ms,
            l.by_id_last_ms,
            l.lookups_failed,
            l.insert_s
        );
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::costs::drive::Figures;
    use crate::costs::login::LoginCost;
    use crate::costs::state::ReconcilerCost;
    use crate::costs::{CostsReport, Sizes};

    fn report() -> CostsReport {
        let login = |users: usize, p50_us: u64, by_email_last_ms: f64| LoginCost {
            users,
            insert_s: 0.1,
            login: Figures {
                requests: 20,
                rate_per_s: 5.0,
                p50_us,
                p99_us: p50_us * 2,
                max_us: p50_us * 2,
                unexpected: 0,
            },
            password_check_ms: 30.0,
            by_email_first_ms: 0.5,
            by_email_last_ms,
            by_id_last_ms: by_email_last_ms / 15.0,
            lookups_failed: 0,
        };
        let pass = |live_products: usize, pass_median_ms: f64| ReconcilerCost {
            live_products,
            pass_median_ms,
            pass_max_ms: pass_median_ms,
            per_product_us: pass_median_ms * 1_000.0 / live_products as f64,
            interval_ms: 1_000,
            lease_ms: 10_000,
        };
        CostsReport {
            started_utc: "2026-12-06 09:00:00".to_owned(),
            machine: crate::machine::Machine::describe(),
            sizes: Sizes::quick(),
            argon2: "Argon2id m=19456 KiB t=2 p=1".to_owned(),
            paths: Vec::new(),
            instances: Vec::new(),
            rebuilds: Vec::new(),
            reconciler: vec![pass(10, 13.0), pass(1_000, 2_900.0)],
            logins: vec![login(1_000, 42_000, 41.0), login(100_000, 3_900_000, 6_800.0)],
            total_s: 1.0,
        }
    }

    #[test]
    fn the_plot_is_a_self_contained_svg_naming_every_cost() {
        let svg = plot_svg(&report()).expect("svg");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for name in ["Cost as a sale grows", "login p50 (users)", "reconciler pass (live products)"] {
            assert!(svg.contains(name), "{name} missing");
        }
        let without_namespace = svg.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_namespace.contains("http://") && !svg.contains("<script"));
    }

    #[test]
    fn the_markdown_names_what_grew_worse_than_linearly() {
        let report = report();
        let growths = growths(&report);
        let lookup = growths.iter().find(|g| g.cost.starts_with("user lookup by email")).expect("lookup growth");
        assert_eq!(lookup.reading, "linear");
        let reconciler = growths.iter().find(|g| g.cost.starts_with("reconciler")).expect("reconciler growth");
        assert_eq!(reconciler.reading, "worse than linear");
        let text = markdown(&report, &growths);
        assert!(text.contains("| reconciler pass (live products) | 10: 13.000 | 1000: 2900.000 |"), "{text}");
    }

    #[test]
    fn growth_exponents_read_as_words() {
        let linear = growth_exponent((1_000, 2.0), (100_000, 200.0)).expect("exponent");
        assert!((linear - 1.0).abs() < 1e-9);
        assert_eq!(reading(linear), "linear");
        assert_eq!(reading(growth_exponent((100, 0.5), (100_000, 0.52)).expect("exponent")), "flat");
        assert_eq!(reading(growth_exponent((10, 1.0), (1_000, 10.0)).expect("exponent")), "sublinear");
        assert_eq!(reading(growth_exponent((10, 1.0), (1_000, 1_000.0)).expect("exponent")), "worse than linear");
        assert!(growth_exponent((10, 0.0), (100, 1.0)).is_none());
        assert!(growth_exponent((10, 1.0), (10, 2.0)).is_none());
    }
}
