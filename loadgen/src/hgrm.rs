//! HdrHistogram percentile distribution files (`.hgrm`) and percentile summaries.
//!
//! [`write_hgrm`] writes the text format of the reference implementation's
//! `outputPercentileDistribution` (5 percentile ticks per half distance to 100%), which
//! HdrHistogram's plotter and most tools read:
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.100 0.000000000000          3           1.00
//!      100.159 0.100000000000       1000           1.11
//!      ...
//!     9994.239 0.999658203125       9997        2925.71
//!    10002.431 0.999707031250      10000        3413.33
//!    10002.431 1.000000000000      10000
//! #[Mean    =     3333.937, StdDeviation   =     2981.703]
//! #[Max     =    10002.431, Total count    =        10000]
//! #[Buckets =           16, SubBuckets     =         2048]
//! ```

use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentile ticks per half distance to 100%, as in the reference format.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Scale from the histograms' microseconds to the milliseconds of `.hgrm` files.
pub const MICROS_PER_MILLI: f64 = 1000.0;

/// Writes `histogram` as an HdrHistogram percentile distribution: values are divided by
/// `value_unit_scale` (1000 turns microseconds into milliseconds) and printed with as many decimals
/// as the histogram has significant digits. The last row (100%) has no `1/(1-Percentile)` column,
/// as in the reference.
pub fn write_hgrm(histogram: &Histogram<u64>, value_unit_scale: f64, out: &mut impl Write) -> io::Result<()> {
    let decimals = usize::from(histogram.sigfig());
    let total = histogram.len();
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        let value = step.value_iterated_to() as f64 / value_unit_scale;
        let quantile = step.quantile_iterated_to();
        // Running count up to and including this value's bucket.
        let total_count = (step.quantile() * total as f64).round() as u64;
        if quantile < 1.0 {
            writeln!(out, "{value:12.decimals$} {quantile:2.12} {total_count:10} {:14.2}", 1.0 / (1.0 - quantile))?;
        } else {
            writeln!(out, "{value:12.decimals$} {quantile:2.12} {total_count:10}")?;
        }
    }
    let (mean, stdev, max) = if total == 0 {
        (0.0, 0.0, 0.0)
    } else {
        (
            histogram.mean() / value_unit_scale,
            histogram.stdev() / value_unit_scale,
            histogram.max() as f64 / value_unit_scale,
        )
    };
    writeln!(out, "#[Mean    = {mean:12.decimals$}, StdDeviation   = {stdev:12.decimals$}]")?;
    writeln!(out, "#[Max     = {max:12.decimals$}, Total count    = {total:12}]")?;
    writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", histogram.buckets(), sub_bucket_count(histogram))?;
    Ok(())
}

/// The histogram's sub-buckets per bucket, as the reference prints it: the power of two that gives
/// single-unit resolution up to 2 × 10^sigfig (hdrhistogram does not expose it).
fn sub_bucket_count(histogram: &Histogram<u64>) -> u64 {
    let largest_single_unit = 2 * 10_u64.pow(u32::from(histogram.sigfig()));
    largest_single_unit.next_power_of_two()
}

/// The usual percentiles of a latency histogram, in the histogram's unit (µs for ours).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub count: u64,
}

/// p50 / p90 / p99 / p99.9 / max / mean / count of `histogram` (all zero when it is empty).
pub fn percentile_summary(histogram: &Histogram<u64>) -> Summary {
    if histogram.is_empty() {
        return Summary { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0.0, count: 0 };
    }
    Summary {
        p50: histogram.value_at_quantile(0.5),
        p90: histogram.value_at_quantile(0.9),
        p99: histogram.value_at_quantile(0.99),
        p999: histogram.value_at_quantile(0.999),
        max: histogram.max(),
        mean: histogram.mean(),
        count: histogram.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openloop::new_latency_histogram;

    fn render(histogram: &Histogram<u64>) -> String {
        let mut out = Vec::new();
        write_hgrm(histogram, MICROS_PER_MILLI, &mut out).expect("writing to a Vec");
        String::from_utf8(out).expect("UTF-8")
    }

    /// 10 000 latencies from 100 µs to ~10 s, skewed like real ones.
    fn skewed() -> Histogram<u64> {
        let mut histogram = new_latency_histogram();
        for i in 1..=10_000_u64 {
            histogram.record(100 + i * i / 10).expect("in range");
        }
        histogram
    }

    struct Row {
        value: f64,
        percentile: f64,
        total_count: u64,
        inverse: Option<f64>,
    }

    fn rows(text: &str) -> Vec<Row> {
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert_eq!(lines.next(), Some(""));
        lines
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                assert!(columns.len() == 4 || columns.len() == 3, "bad row {line:?}");
                Row {
                    value: columns[0].parse().expect("numeric value"),
                    percentile: columns[1].parse().expect("numeric percentile"),
                    total_count: columns[2].parse().expect("numeric count"),
                    inverse: columns.get(3).map(|column| column.parse().expect("numeric 1/(1-P)")),
                }
            })
            .collect()
    }

    #[test]
    fn the_file_parses_and_is_monotonic_up_to_100_percent() {
        let histogram = skewed();
        let text = render(&histogram);
        let rows = rows(&text);
        assert!(rows.len() > 50, "only {} rows", rows.len());
        for pair in rows.windows(2) {
            assert!(pair[1].value >= pair[0].value);
            assert!(pair[1].percentile >= pair[0].percentile);
            assert!(pair[1].total_count >= pair[0].total_count);
        }
        let (last, body) = rows.split_last().expect("rows");
        assert!(body.iter().all(|row| row.inverse.is_some()), "only the last row lacks 1/(1-P)");
        for row in body {
            let inverse = row.inverse.expect("1/(1-P)");
            assert!((inverse - 1.0 / (1.0 - row.percentile)).abs() <= 0.01 * inverse.max(1.0));
        }
        assert_eq!(last.percentile, 1.0);
        assert!(last.inverse.is_none());
        assert_eq!(last.total_count, 10_000);
        assert!((last.value - histogram.max() as f64 / 1000.0).abs() < 0.001);
        // First rows step by 10% (5 ticks per half distance) and values are in milliseconds.
        assert_eq!(rows[0].percentile, 0.0);
        assert!((rows[1].percentile - 0.1).abs() < 1e-12);
        assert!((0.09..=0.11).contains(&rows[0].value), "first value {} ms", rows[0].value);
    }

    #[test]
    fn the_footer_matches_the_reference_layout() {
        let histogram = skewed();
        let text = render(&histogram);
        let footer: Vec<&str> = text.lines().filter(|line| line.starts_with('#')).collect();
        assert_eq!(footer.len(), 3);
        assert!(footer[0].starts_with("#[Mean    = ") && footer[0].contains(", StdDeviation   = "));
        assert_eq!(
            footer[1],
            format!("#[Max     = {:12.3}, Total count    = {:12}]", histogram.max() as f64 / 1000.0, 10_000)
        );
        assert_eq!(footer[2], format!("#[Buckets = {:12}, SubBuckets     = {:12}]", histogram.buckets(), 2048));
        let mean: f64 =
            footer[0]["#[Mean    = ".len()..].split(',').next().expect("mean").trim().parse().expect("numeric mean");
        assert!((mean - histogram.mean() / 1000.0).abs() < 0.001);
    }

    #[test]
    fn a_single_value_and_an_empty_histogram_still_write_valid_files() {
        let mut one = new_latency_histogram();
        one.record(2_500).expect("in range");
        let single = rows(&render(&one));
        assert_eq!(single.last().map(|row| row.percentile), Some(1.0));
        assert!(single.iter().all(|row| (row.value - 2.5).abs() < 0.01));

        let empty = render(&new_latency_histogram());
        assert!(empty.contains("Total count    =            0]"));
        assert!(rows(&empty).is_empty());
    }

    #[test]
    fn summary_percentiles_are_ordered() {
        let histogram = skewed();
        let summary = percentile_summary(&histogram);
        assert_eq!(summary.count, 10_000);
        assert!(summary.p50 <= summary.p90 && summary.p90 <= summary.p99);
        assert!(summary.p99 <= summary.p999 && summary.p999 <= summary.max);
        // i*i/10 at i = 5000 is 2.5 s.
        assert!((2_490_000..=2_510_000).contains(&summary.p50), "p50 {}", summary.p50);
        assert_eq!(percentile_summary(&new_latency_histogram()).count, 0);
    }
}
