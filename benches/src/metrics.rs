//! The server-side view: scrape the data node's Prometheus text metrics before and after a run,
//! subtract, and compute quantiles of every histogram from the bucket deltas. This is how
//! es-bench prints the node's own latency by stage next to the end-to-end latency.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

/// Largest metrics page accepted, so a misbehaving endpoint cannot exhaust memory.
const SCRAPE_MAX_BYTES: usize = 16 * 1024 * 1024;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape: histograms keyed by name and labels (without `le`), plain samples likewise.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub histograms: BTreeMap<SeriesKey, HistogramSeries>,
    pub samples: BTreeMap<SeriesKey, f64>,
}

/// Metric name plus its labels rendered as `{a="1",b="2"}` (sorted, `le` removed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub name: String,
    pub labels: String,
}

impl std::fmt::Display for SeriesKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}{}", self.name, self.labels)
    }
}

/// Cumulative bucket counts of one histogram series, by upper bound.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HistogramSeries {
    /// (upper bound, cumulative count), sorted by bound; the last bound may be +Inf.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl HistogramSeries {
    /// `self - earlier`, bucket by bucket. Buckets missing in `earlier` count as zero.
    pub fn delta(&self, earlier: Option<&HistogramSeries>) -> HistogramSeries {
        let Some(earlier) = earlier else {
            return self.clone();
        };
        let buckets = self
            .buckets
            .iter()
            .map(|&(bound, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(other, _)| same_bound(*other, bound))
                    .map_or(0.0, |&(_, count)| count);
                (bound, (count - before).max(0.0))
            })
            .collect();
        HistogramSeries {
            buckets,
            sum: (self.sum - earlier.sum).max(0.0),
            count: (self.count - earlier.count).max(0.0),
        }
    }

    /// Quantile `q` (0..=1) by linear interpolation inside the bucket that holds it, as
    /// Prometheus' `histogram_quantile` does. `None` when the series is empty. A quantile that
    /// falls in the +Inf bucket returns the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|&(_, count)| count)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let in_bucket = count - lower_count;
                if in_bucket <= 0.0 {
                    return Some(bound);
                }
                let fraction = (rank - lower_count) / in_bucket;
                return Some(lower_bound + (bound - lower_bound) * fraction);
            }
            lower_bound = bound;
            lower_count = count;
        }
        Some(lower_bound)
    }
}

fn same_bound(left: f64, right: f64) -> bool {
    if left.is_infinite() || right.is_infinite() {
        return left == right;
    }
    (left - right).abs() <= 1e-12 * right.abs()
}

#[derive(Debug)]
pub enum ScrapeError {
    Io(std::io::Error),
    TooLarge,
    BadResponse(String),
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::Io(error) => write!(formatter, "metrics endpoint: {error}"),
            ScrapeError::TooLarge => {
                write!(
                    formatter,
                    "metrics page larger than {SCRAPE_MAX_BYTES} bytes"
                )
            }
            ScrapeError::BadResponse(text) => write!(
                formatter,
                "metrics endpoint did not answer with HTTP 200 and a body: {text}"
            ),
        }
    }
}

impl std::error::Error for ScrapeError {}

impl From<std::io::Error> for ScrapeError {
    fn from(error: std::io::Error) -> Self {
        ScrapeError::Io(error)
    }
}

/// Fetches `http://ADDR/metrics` with a plain HTTP/1.0 GET and parses it.
pub fn scrape(addr: &str) -> Result<Scrape, ScrapeError> {
    let socket_addr: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| ScrapeError::BadResponse(format!("cannot resolve {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&socket_addr, SCRAPE_TIMEOUT)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .take(SCRAPE_MAX_BYTES as u64 + 1)
        .read_to_end(&mut response)?;
    if response.len() > SCRAPE_MAX_BYTES {
        return Err(ScrapeError::TooLarge);
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| ScrapeError::BadResponse(first_line(&text)))?;
    let status = first_line(head);
    if !status.contains(" 200") {
        return Err(ScrapeError::BadResponse(status));
    }
    Ok(parse(body))
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// Parses Prometheus text exposition. Lines it does not understand are skipped: the view is
/// best effort and must never stop a benchmark.
pub fn parse(text: &str) -> Scrape {
    let mut histogram_names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some("histogram")) =
            (words.next(), words.next(), words.next(), words.next())
        {
            histogram_names.insert(name.to_string());
        }
    }
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        let histogram_part = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            histogram_names.contains(base).then_some((base, *suffix))
        });
        match histogram_part {
            Some((base, suffix)) => {
                let (labels, le) = split_le(&labels);
                let key = SeriesKey {
                    name: base.to_string(),
                    labels: render_labels(&labels),
                };
                let series = scrape.histograms.entry(key).or_default();
                match suffix {
                    "_bucket" => {
                        if let Some(bound) = le.and_then(|le| parse_float(&le)) {
                            series.buckets.push((bound, value));
                        }
                    }
                    "_sum" => series.sum = value,
                    _ => series.count = value,
                }
            }
            None => {
                let key = SeriesKey {
                    name: name.to_string(),
                    labels: render_labels(&labels),
                };
                scrape.samples.insert(key, value);
            }
        }
    }
    for series in scrape.histograms.values_mut() {
        series
            .buckets
            .sort_by(|left, right| left.0.total_cmp(&right.0));
    }
    scrape
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Label pairs of one sample, in the order they appear.
type Labels = Vec<(String, String)>;

/// `name{a="x",b="y"} 12.5 [timestamp]` → (name, [(a,x),(b,y)], 12.5).
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(char::is_whitespace)?;
            (&line[..space], Vec::new(), &line[space..])
        }
    };
    let value = parse_float(rest.split_whitespace().next()?)?;
    Some((name.trim(), labels, value))
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let equals = rest.find('=')?;
        let name = rest[..equals].trim().to_string();
        let after = rest[equals + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut characters = after.char_indices();
        let mut end = None;
        while let Some((index, character)) = characters.next() {
            match character {
                '\\' => match characters.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(index);
                    break;
                }
                other => value.push(other),
            }
        }
        labels.push((name, value));
        rest = after[end? + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

fn split_le(labels: &[(String, String)]) -> (Vec<(String, String)>, Option<String>) {
    let mut le = None;
    let mut others = Vec::new();
    for (name, value) in labels {
        if name == "le" {
            le = Some(value.clone());
        } else {
            others.push((name.clone(), value.clone()));
        }
    }
    (others, le)
}

fn render_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut sorted = labels.to_vec();
    sorted.sort();
    let inner: Vec<String> = sorted
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Server-side latency of one histogram series over the run.
#[derive(Debug, Clone, Serialize)]
pub struct StageLatency {
    pub series: String,
    pub count: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

/// Converts a histogram bound to microseconds from the unit its name declares
/// (`_seconds`, `_ms`/`_milliseconds`, `_us`/`_microseconds`, `_ns`/`_nanoseconds`).
/// `None` when the name declares no time unit (a size histogram, say).
pub fn microseconds_per_unit(name: &str) -> Option<f64> {
    let units = [
        ("_seconds", 1e6),
        ("_milliseconds", 1e3),
        ("_ms", 1e3),
        ("_microseconds", 1.0),
        ("_us", 1.0),
        ("_nanoseconds", 1e-3),
        ("_ns", 1e-3),
    ];
    units
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|&(_, factor)| factor)
}

/// Every time histogram that moved between the two scrapes, with its quantiles in us.
pub fn stage_latencies(before: &Scrape, after: &Scrape) -> Vec<StageLatency> {
    let mut stages = Vec::new();
    for (key, series) in &after.histograms {
        let Some(factor) = microseconds_per_unit(&key.name) else {
            continue;
        };
        let delta = series.delta(before.histograms.get(key));
        if delta.count <= 0.0 && delta.buckets.last().is_none_or(|&(_, count)| count <= 0.0) {
            continue;
        }
        let quantile = |q| delta.quantile(q).unwrap_or(0.0) * factor;
        let count = if delta.count > 0.0 {
            delta.count
        } else {
            delta.buckets.last().map_or(0.0, |&(_, count)| count)
        };
        stages.push(StageLatency {
            series: key.to_string(),
            count,
            p50_us: quantile(0.50),
            p90_us: quantile(0.90),
            p99_us: quantile(0.99),
            mean_us: if count > 0.0 {
                delta.sum / count * factor
            } else {
                0.0
            },
        });
    }
    stages
}

/// Plain samples (counters, gauges) that changed, as `after - before`.
pub fn counter_deltas(before: &Scrape, after: &Scrape) -> BTreeMap<String, f64> {
    after
        .samples
        .iter()
        .filter_map(|(key, &value)| {
            let delta = value - before.samples.get(key).copied().unwrap_or(0.0);
            (delta != 0.0).then(|| (key.to_string(), delta))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Series named and labelled as the data node exports them (`node/src/metrics.rs`).
    const PAGE_BEFORE: &str = r#"# HELP es_latency_seconds Latency of each stage of appends and fetches.
# TYPE es_latency_seconds histogram
es_latency_seconds_bucket{operation="append",stage="write",le="0.0001"} 0
es_latency_seconds_bucket{operation="append",stage="write",le="0.001"} 10
es_latency_seconds_bucket{operation="append",stage="write",le="0.01"} 10
es_latency_seconds_bucket{operation="append",stage="write",le="+Inf"} 10
es_latency_seconds_sum{operation="append",stage="write"} 0.005
es_latency_seconds_count{operation="append",stage="write"} 10
# TYPE es_requests_total counter
es_requests_total{operation="append"} 10
# TYPE es_wal_data_sync_seconds_total counter
es_wal_data_sync_seconds_total 0.25
"#;

    const PAGE_AFTER: &str = r#"# TYPE es_latency_seconds histogram
es_latency_seconds_bucket{operation="append",stage="write",le="0.0001"} 0
es_latency_seconds_bucket{operation="append",stage="write",le="0.001"} 60
es_latency_seconds_bucket{operation="append",stage="write",le="0.01"} 110
es_latency_seconds_bucket{operation="append",stage="write",le="+Inf"} 110
es_latency_seconds_sum{operation="append",stage="write"} 0.305
es_latency_seconds_count{operation="append",stage="write"} 110
# TYPE es_requests_total counter
es_requests_total{operation="append"} 110
# TYPE es_wal_data_sync_seconds_total counter
es_wal_data_sync_seconds_total 1.75
es_connections_open 3
"#;

    #[test]
    fn parses_histograms_and_samples() {
        let scrape = parse(PAGE_AFTER);
        let key = SeriesKey {
            name: "es_latency_seconds".into(),
            labels: r#"{operation="append",stage="write"}"#.into(),
        };
        let series = &scrape.histograms[&key];
        assert_eq!(series.buckets.len(), 4);
        assert_eq!(series.count, 110.0);
        assert!(series.buckets.last().unwrap().0.is_infinite());
        let requests = SeriesKey {
            name: "es_requests_total".into(),
            labels: r#"{operation="append"}"#.into(),
        };
        assert_eq!(scrape.samples[&requests], 110.0);
    }

    #[test]
    fn quantiles_come_from_the_delta_not_the_totals() {
        let stages = stage_latencies(&parse(PAGE_BEFORE), &parse(PAGE_AFTER));
        assert_eq!(stages.len(), 1);
        let write = &stages[0];
        assert_eq!(
            write.series,
            r#"es_latency_seconds{operation="append",stage="write"}"#
        );
        assert_eq!(write.count, 100.0);
        // Delta: 50 in (100us, 1ms], 50 in (1ms, 10ms]. The median sits at the top of the
        // first bucket; p90 is 80 % into the second one.
        assert!((write.p50_us - 1_000.0).abs() < 1.0, "{write:?}");
        assert!((write.p90_us - 8_200.0).abs() < 1.0, "{write:?}");
        assert!((write.mean_us - 3_000.0).abs() < 1.0, "{write:?}");
    }

    #[test]
    fn counters_report_their_change() {
        let deltas = counter_deltas(&parse(PAGE_BEFORE), &parse(PAGE_AFTER));
        assert_eq!(deltas[r#"es_requests_total{operation="append"}"#], 100.0);
        // Time spent in fdatasync during the run: a `_seconds_total` counter, not a histogram.
        assert_eq!(deltas["es_wal_data_sync_seconds_total"], 1.5);
        assert_eq!(deltas["es_connections_open"], 3.0);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let scrape = parse("not a metric\n{broken\nname{a=\"x} 1\nok 2\n");
        assert_eq!(scrape.samples.len(), 1);
    }

    #[test]
    fn quantile_in_the_infinite_bucket_is_the_last_finite_bound() {
        let series = HistogramSeries {
            buckets: vec![(0.001, 1.0), (f64::INFINITY, 10.0)],
            sum: 1.0,
            count: 10.0,
        };
        assert_eq!(series.quantile(0.99), Some(0.001));
    }
}
