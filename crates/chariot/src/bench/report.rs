//! What the bench measured, merged per side, and how it is printed.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::baseline::Baseline;
use super::workers::{Plan, Protocol};
use super::BenchArgs;
use crate::commands::Connection;

/// Largest latency a histogram holds (one hour, in microseconds); longer ones saturate.
const HIGHEST_MICROS: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // The bounds are constants inside hdrhistogram's documented valid range (low >= 1,
    // high >= 2 * low, 3 significant figures), so creation cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds")
}

/// One side's (producers' or consumers') raw measurements.
#[derive(Debug, Clone)]
pub struct SideStats {
    /// Records published or consumed.
    pub records: u64,
    /// Bytes of record values.
    pub bytes: u64,
    /// Requests that succeeded (for consumers: that returned records).
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The first failure's text, to explain `errors`.
    pub first_error: Option<String>,
    /// Per-request latency, microseconds.
    pub latency: Histogram<u64>,
    /// Publish-to-consume latency of stamped records, microseconds (consumers only).
    pub end_to_end: Histogram<u64>,
    /// Seconds from the start until the side's last worker finished.
    pub secs: f64,
}

impl SideStats {
    /// Nothing measured yet.
    pub fn new() -> SideStats {
        SideStats {
            records: 0,
            bytes: 0,
            requests: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
            end_to_end: histogram(),
            secs: 0.0,
        }
    }

    /// Counts a failed request.
    pub fn failed(&mut self, error: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            tracing::warn!(%error, "bench request failed");
            self.first_error = Some(error);
        }
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: SideStats) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.end_to_end.add(&other.end_to_end);
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            samples: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }

    fn to_text(&self) -> String {
        format!(
            "p50 {}, p99 {}, p999 {}, max {} ({} samples)",
            micros_text(self.p50),
            micros_text(self.p99),
            micros_text(self.p999),
            micros_text(self.max),
            self.samples
        )
    }
}

fn micros_text(us: u64) -> String {
    match us {
        0..=999 => format!("{us} us"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// One side's results.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    /// Records published or consumed.
    pub records: u64,
    /// Bytes of record values.
    pub bytes: u64,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure's text.
    pub first_error: Option<String>,
    /// Seconds the rates divide by.
    pub secs: f64,
    /// Records per second.
    pub records_per_sec: f64,
    /// Value bytes per second, in 10^6 bytes.
    pub mb_per_sec: f64,
    /// Per-request latency from send to answer, microseconds; null without samples.
    pub latency_us: Option<Percentiles>,
    /// Consumers only: publish sent to record consumed, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_latency_us: Option<Percentiles>,
}

impl SideReport {
    fn new(stats: &SideStats, end_to_end: bool) -> SideReport {
        let secs = stats.secs.max(1e-9);
        SideReport {
            records: stats.records,
            bytes: stats.bytes,
            requests: stats.requests,
            errors: stats.errors,
            first_error: stats.first_error.clone(),
            secs: stats.secs,
            records_per_sec: stats.records as f64 / secs,
            mb_per_sec: stats.bytes as f64 / secs / 1e6,
            latency_us: Percentiles::of(&stats.latency),
            end_to_end_latency_us: end_to_end
                .then(|| Percentiles::of(&stats.end_to_end))
                .flatten(),
        }
    }
}

/// The baseline and how the producers compare with it.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// The raw measurement.
    #[serde(flatten)]
    pub raw: Baseline,
    /// Producer MB/s divided by the raw MB/s.
    pub producer_ratio: f64,
}

/// Everything `chariot bench` prints; with `--json`, exactly this object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `native` or `rog`.
    pub protocol: Protocol,
    /// The server.
    pub addr: String,
    /// The log used.
    pub log: String,
    /// Its partitions.
    pub partitions: u8,
    /// Producer count.
    pub producers: usize,
    /// Consumer count.
    pub consumers: usize,
    /// Bytes per record value.
    pub record_size: usize,
    /// Records per publish request.
    pub batch_size: usize,
    /// The requested window, seconds.
    pub duration_secs: f64,
    /// The producers' results.
    pub producer: SideReport,
    /// The consumers' results.
    pub consumer: SideReport,
    /// The raw-disk baseline, with `--baseline-dir`.
    pub baseline: Option<BaselineReport>,
}

impl Report {
    /// Assembles the report.
    pub fn new(
        args: &BenchArgs,
        conn: &Connection,
        plan: &Plan,
        produced: SideStats,
        consumed: SideStats,
        baseline: Option<Baseline>,
    ) -> Report {
        let producer = SideReport::new(&produced, false);
        let baseline = baseline.map(|raw| BaselineReport {
            producer_ratio: producer.mb_per_sec / raw.mb_per_sec.max(1e-9),
            raw,
        });
        Report {
            protocol: plan.protocol,
            addr: conn.addr.clone(),
            log: plan.log.clone(),
            partitions: plan.partitions,
            producers: plan.producers,
            consumers: plan.consumers,
            record_size: plan.record_size,
            batch_size: plan.batch_size,
            duration_secs: args.duration.as_secs_f64(),
            producer,
            consumer: SideReport::new(&consumed, true),
            baseline,
        }
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let protocol = match self.protocol {
            Protocol::Native => "native protocol",
            Protocol::Rog => "Rog protocol (one connection per request)",
        };
        let mut lines = vec![
            format!(
                "chariot bench: {protocol} against {}, log {} ({} partition(s))",
                self.addr, self.log, self.partitions
            ),
            format!(
                "  {} producer(s), {} consumer(s), {}-byte records, {} record(s) per publish, {:.1} s",
                self.producers, self.consumers, self.record_size, self.batch_size, self.duration_secs
            ),
        ];
        let (produce_latency, consume_latency) = match self.protocol {
            Protocol::Native => (
                "latency per publish, send to ack",
                "latency per range read, send to answer",
            ),
            Protocol::Rog => (
                "latency per publish, connect + send to ack",
                "latency per record, fetch sent to ack answered",
            ),
        };
        side_lines(&mut lines, "producers", &self.producer, produce_latency);
        side_lines(&mut lines, "consumers", &self.consumer, consume_latency);
        if let Some(e2e) = &self.consumer.end_to_end_latency_us {
            lines.push(format!(
                "  end-to-end, publish sent to record consumed: {}",
                e2e.to_text()
            ));
        }
        if let Some(b) = &self.baseline {
            lines.push(format!(
                "baseline: raw sequential write in {}: {:.1} MB/s ({:.1} MB in {:.2} s; 1 MiB writes, 64 MiB files, fdatasync each)",
                b.raw.dir.display(),
                b.raw.mb_per_sec,
                b.raw.bytes as f64 / 1e6,
                b.raw.secs
            ));
            lines.push(format!(
                "  producers reached {:.3}x of it ({:.1}%)",
                b.producer_ratio,
                b.producer_ratio * 100.0
            ));
        }
        lines.join("\n")
    }
}

fn side_lines(lines: &mut Vec<String>, name: &str, side: &SideReport, latency: &str) {
    lines.push(format!(
        "{name}: {} records in {:.2} s = {:.0} records/s, {:.2} MB/s ({} requests)",
        side.records, side.secs, side.records_per_sec, side.mb_per_sec, side.requests
    ));
    match &side.latency_us {
        Some(p) => lines.push(format!("  {latency}: {}", p.to_text())),
        None => lines.push(format!("  {latency}: no samples")),
    }
    if side.errors > 0 {
        lines.push(format!(
            "  {} failed request(s); first: {}",
            side.errors,
            side.first_error.as_deref().unwrap_or("?")
        ));
    }
}
