//! Self-contained SVG pictures of a run, drawn with plotters' SVG backend: no scripts, no fonts
//! or stylesheets to fetch (text is plain `<text>` with a generic font family).
//!
//! - [`percentile_spectrum_svg`]: latency by percentile, the x axis on a log scale of 1/(1-p) so the
//!   tail (99%, 99.9%, 99.99%) gets as much room as the body.
//! - [`timeline_svg`]: throughput per second above p99 per second.

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::hgrm::TICKS_PER_HALF_DISTANCE;
use crate::openloop::TimelinePoint;

const SPECTRUM_SIZE: (u32, u32) = (960, 540);
const TIMELINE_SIZE: (u32, u32) = (960, 720);
const FONT: &str = "sans-serif";

/// Fewest decades of 1/(1-p) on the spectrum's x axis: 0% .. 99.99%.
const MIN_DECADES: u32 = 4;
/// Most decades shown: 99.9999%.
const MAX_DECADES: u32 = 6;

/// The colour of series `index`: a fixed, readable sequence.
fn colour(index: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    COLOURS[index % COLOURS.len()]
}

/// A tick label without floating-point noise: at most 3 decimals, trailing zeros dropped
/// (0.30000000000000004 → "0.3", 250.0 → "250").
fn tick_label(value: f64) -> String {
    let fixed = format!("{value:.3}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" { "0".to_owned() } else { trimmed.to_owned() }
}

/// Label of the x axis point `decades` = log10(1/(1-p)): 0 → "0%", 1 → "90%", 3 → "99.9%".
fn percentile_label(decades: f64) -> String {
    let whole = decades.round();
    if (decades - whole).abs() > 1e-9 || whole < 0.0 {
        return String::new();
    }
    if whole == 0.0 {
        return "0%".to_owned();
    }
    // `whole` is a small non-negative integer here.
    let digits = whole as usize;
    format!("{:.*}%", digits.saturating_sub(2), 100.0 * (1.0 - 10_f64.powf(-whole)))
}

/// The spectrum's points of one histogram: (log10(1/(1-p)), latency ms), the 100% point placed at
/// the right edge `x_max`.
fn spectrum_points(histogram: &Histogram<u64>, x_max: f64) -> Vec<(f64, f64)> {
    histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|step| {
            let quantile = step.quantile_iterated_to();
            let x = if quantile < 1.0 { (-(1.0 - quantile).log10()).min(x_max) } else { x_max };
            (x, step.value_iterated_to() as f64 / 1000.0)
        })
        .collect()
}

/// A latency percentile spectrum: one line per series (µs histograms, drawn in ms) with a legend.
/// The x axis runs from 0% to at least 99.99% (further, up to 99.9999%, when a series has enough
/// samples to tell), on a log scale of 1/(1-p).
pub fn percentile_spectrum_svg(series: &[(&str, &Histogram<u64>)], title: &str) -> anyhow::Result<String> {
    let most_samples = series.iter().map(|(_, histogram)| histogram.len()).max().unwrap_or(0);
    let decades = (most_samples.max(1) as f64).log10().ceil().clamp(f64::from(MIN_DECADES), f64::from(MAX_DECADES));
    let max_ms = series.iter().map(|(_, histogram)| histogram.max() as f64 / 1000.0).fold(0.0, f64::max);
    let y_max = if max_ms > 0.0 { max_ms * 1.08 } else { 1.0 };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SPECTRUM_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(16)
            // Room for the rightmost percentile label, centred on the axis' end.
            .margin_right(40)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(0.0..decades, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("Percentile")
            // At most one label per decade: plotters then puts them on the whole decades.
            .x_labels(decades as usize + 1)
            .y_desc("Latency (ms)")
            .x_label_formatter(&|decades| percentile_label(*decades))
            .y_label_formatter(&|ms| tick_label(*ms))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()?;
        for (index, (name, histogram)) in series.iter().enumerate() {
            let colour = colour(index);
            chart
                .draw_series(LineSeries::new(spectrum_points(histogram, decades), colour.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// Draws one panel of the timeline: `value` of each point against its second, one line per series.
fn timeline_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[(&str, &[TimelinePoint])],
    caption: &str,
    y_desc: &str,
    value: fn(&TimelinePoint) -> f64,
) -> anyhow::Result<()> {
    let points = || series.iter().flat_map(|(_, points)| points.iter());
    let x_max = points().map(|point| point.second as f64 + 1.0).fold(1.0, f64::max);
    let y_top = points().map(value).fold(0.0, f64::max);
    // Headroom for the legend in the upper right corner.
    let y_max = if y_top > 0.0 { y_top * 1.2 } else { 1.0 };

    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("Time (s)")
        .y_desc(y_desc)
        .x_label_formatter(&|seconds| tick_label(*seconds))
        .y_label_formatter(&|y| tick_label(*y))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (index, (name, points)) in series.iter().enumerate() {
        let colour = colour(index);
        let line = points.iter().map(|point| (point.second as f64, value(point)));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    Ok(())
}

/// Throughput and p99 over time: two stacked panels (completed requests per second, and p99 of
/// each second in ms), one line per series with a legend in each.
pub fn timeline_svg(series: &[(&str, &[TimelinePoint])], title: &str) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, TIMELINE_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, (FONT, 22))?;
        let (upper, lower) = body.split_vertically(body.dim_in_pixel().1 / 2);
        timeline_panel(&upper, series, "Throughput", "Completed (requests/s)", |point| point.completed as f64)?;
        timeline_panel(&lower, series, "p99 latency per second", "p99 (ms)", |point| point.p99_us as f64 / 1000.0)?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::openloop::new_latency_histogram;

    fn histogram(scale: u64) -> Histogram<u64> {
        let mut histogram = new_latency_histogram();
        for i in 1..=20_000_u64 {
            histogram.record(scale * (200 + i * i / 4_000)).expect("in range");
        }
        histogram
    }

    fn timeline(base: u64) -> Vec<TimelinePoint> {
        (0..30)
            .map(|second| TimelinePoint {
                second,
                completed: base + (second * 37) % 50,
                p99_us: 2_000 + (second % 7) * 900 + if second == 17 { 40_000 } else { 0 },
            })
            .collect()
    }

    /// The SVG is a standalone picture: it starts with `<svg`, names the title and every series,
    /// and refers to nothing outside itself but the SVG namespace.
    fn assert_self_contained(svg: &str, title: &str, names: &[&str]) {
        assert!(svg.starts_with("<svg"), "starts with {:?}", &svg[..svg.len().min(40)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(title), "title missing");
        for name in names {
            assert!(svg.contains(name), "series {name} missing");
        }
        let without_namespace = svg.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_namespace.contains("http://") && !without_namespace.contains("https://"));
        assert!(!svg.contains("<image") && !svg.contains("<script"));
    }

    /// Renders the SVG with `rsvg-convert` when it is installed (skipped otherwise): a parse or
    /// render error fails the test.
    fn render_check(svg: &str) {
        let child = Command::new("rsvg-convert")
            .args(["--format", "png"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("rsvg-convert not on PATH: render check skipped");
                return;
            }
            Err(error) => panic!("cannot run rsvg-convert: {error}"),
        };
        child.stdin.take().expect("piped stdin").write_all(svg.as_bytes()).expect("writing to rsvg-convert");
        let output = child.wait_with_output().expect("rsvg-convert output");
        assert!(output.status.success(), "rsvg-convert failed: {}", String::from_utf8_lossy(&output.stderr));
        assert!(output.stdout.starts_with(b"\x89PNG"), "rsvg-convert wrote no PNG");
    }

    #[test]
    fn percentile_spectrum_is_a_self_contained_svg() {
        let fast = histogram(1);
        let slow = histogram(3);
        let title = "Purchase latency by percentile";
        let svg = percentile_spectrum_svg(&[("healthz", &fast), ("purchase winner", &slow)], title).expect("svg");
        assert_self_contained(&svg, title, &["healthz", "purchase winner"]);
        for label in ["0%", "90%", "99%", "99.9%", "99.99%", "Latency (ms)"] {
            // plotters writes each text on a line of its own between the tags.
            assert!(svg.lines().any(|line| line.trim() == label), "axis label {label} missing");
        }
        render_check(&svg);
    }

    #[test]
    fn percentile_spectrum_copes_with_empty_input() {
        let empty = new_latency_histogram();
        let svg = percentile_spectrum_svg(&[("nothing", &empty)], "Empty").expect("spectrum");
        assert_self_contained(&svg, "Empty", &["nothing"]);
        let svg = percentile_spectrum_svg(&[], "No series").expect("spectrum");
        assert_self_contained(&svg, "No series", &[]);
        render_check(&svg);
    }

    #[test]
    fn timeline_is_a_self_contained_svg_with_two_panels() {
        let (a, b) = (timeline(400), timeline(900));
        let title = "Open loop at 50% of capacity";
        let svg = timeline_svg(&[("25%", a.as_slice()), ("50%", b.as_slice())], title).expect("svg");
        assert_self_contained(&svg, title, &["25%", "50%"]);
        assert!(svg.contains("Throughput") && svg.contains("p99 latency per second"));
        render_check(&svg);

        let svg = timeline_svg(&[("empty", &[][..])], "Nothing yet").expect("timeline");
        assert_self_contained(&svg, "Nothing yet", &["empty"]);
        render_check(&svg);
    }

    #[test]
    fn percentile_labels() {
        let labels: Vec<String> = (0..=5).map(|decades| percentile_label(f64::from(decades))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert_eq!(percentile_label(1.5), "");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(250.0), "250");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(12.5), "12.5");
    }
}
