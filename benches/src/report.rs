//! Latency summaries and the final report: a text table for people and a JSON document for
//! scripts. Every latency is in microseconds; quantiles come from HDR histograms.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value a latency histogram holds: 60 s in microseconds. Larger values saturate.
pub const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// A histogram of microseconds with three significant digits, from 1 us to 60 s.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("static histogram bounds are valid")
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// Formats microseconds for a table: `850us`, `1.25ms`, `2.0s`.
pub fn format_us(value_us: u64) -> String {
    if value_us < 1_000 {
        format!("{value_us}us")
    } else if value_us < 1_000_000 {
        format!("{:.2}ms", value_us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", value_us as f64 / 1_000_000.0)
    }
}

/// Formats a byte rate: `512.0 KB/s`, `1.23 GB/s` (decimal units, as disks are quoted).
pub fn format_rate(bytes_per_second: f64) -> String {
    if bytes_per_second >= 1e9 {
        format!("{:.2} GB/s", bytes_per_second / 1e9)
    } else if bytes_per_second >= 1e6 {
        format!("{:.1} MB/s", bytes_per_second / 1e6)
    } else {
        format!("{:.1} KB/s", bytes_per_second / 1e3)
    }
}

/// One row of the latency table.
pub fn latency_row(label: &str, summary: &LatencySummary) -> String {
    format!(
        "{label:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        format_us(summary.p50_us),
        format_us(summary.p90_us),
        format_us(summary.p99_us),
        format_us(summary.p999_us),
        format_us(summary.max_us),
        summary.count
    )
}

pub fn latency_header() -> String {
    format!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "latency", "p50", "p90", "p99", "p99.9", "max", "samples"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_quantiles_of_recorded_values() {
        let mut histogram = new_histogram();
        for value in 1..=1000u64 {
            histogram.record(value).unwrap();
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 1000);
        assert!((499..=501).contains(&summary.p50_us), "{summary:?}");
        assert!((899..=901).contains(&summary.p90_us), "{summary:?}");
        assert!((989..=991).contains(&summary.p99_us), "{summary:?}");
        assert_eq!(summary.max_us, 1000);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn units_are_readable() {
        assert_eq!(format_us(850), "850us");
        assert_eq!(format_us(1_250), "1.25ms");
        assert_eq!(format_rate(1.5e9), "1.50 GB/s");
        assert_eq!(format_rate(2.5e6), "2.5 MB/s");
    }
}
