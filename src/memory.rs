//! The memory budget: the most memory grayscope holds, derived from its flags.
//!
//! Everything fed by senders is bounded, by a flag or by a constant; the budget adds those bounds
//! up, each at a measured cost per item, so that an operator can size a container from the flags
//! and an alert can compare the process's resident memory with it (`grayscope_memory_budget_bytes`
//! and `grayscope_process_resident_bytes`). Past a bound grayscope finalises traces early, makes
//! senders wait, or refuses with a retryable error; it does not grow.
//!
//! The costs per item come from `cargo bench --bench buffered_memory`: a buffered span holds
//! 122 heap bytes, a span of a trace kept for late spans 77, a finalised one (with its trace's snapshot, as traces with findings keep it)
//! 160, and decoding a request allocates 0.6 times its size for typical spans and 5.0 times for
//! the smallest valid ones (OTLP/protobuf, decoded in place; OTLP/JSON at most 2.2 times). They are
//! rounded up for the allocator's slack.

use crate::aggregate::AggregateConfig;
use crate::aggregate::metrics::MAX_SERIES;
use crate::assemble::AssemblerConfig;
use crate::config::ServeConfig;
use crate::intern::SymbolLimits;
use crate::model::{SpanRecord, TraceId};
use crate::receive::decode::{MAX_NAME_LEN, MAX_SERVICE_LEN, MAX_VALUE_LEN};
use crate::telemetry::Registry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// Code, runtime, threads, the store's page caches (five connections of 2 MiB), the watch buffer.
pub const FIXED: u64 = 64 << 20;
/// A span of a trace being assembled, with its share of the trace's tables.
pub const BUFFERED_SPAN: u64 = 136;
/// A span of a finalised trace (queued for the store, or kept for the API), with its share of the
/// trace's outcome and snapshot.
pub const FINALISED_SPAN: u64 = 192;
/// A request being handled holds its body, its decompressed body, and what decoding allocates (at
/// most 5 times its size, for a request of the smallest valid spans).
pub const REQUEST_FACTOR: u64 = 2 + 6;
/// Bookkeeping per interned string, besides the string itself.
const STRING_OVERHEAD: u64 = 64;
/// A verdict counter series: its key and count in a hash map.
const SERIES: u64 = 64;
/// Verdict counter families (edges, findings, traces, misrouted).
const FAMILIES: u64 = 4;
/// A remembered finalised trace id (set and queue entries).
const TOMBSTONE: u64 = 48;
/// A span of a finalised trace kept for late spans: its record in the trace's skeleton, with the
/// skeleton's bookkeeping shared out (each skeleton weighs one span more than it holds).
pub const KEPT_SPAN: u64 = 88;

/// One bounded part of grayscope's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub bytes: u64,
    /// Which flags and constants bound it.
    pub bound_by: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub parts: Vec<Part>,
}

impl Budget {
    pub fn of(cfg: &ServeConfig) -> Budget {
        let n = |v: usize| v as u64;
        let queued_span = 2 * n(std::mem::size_of::<(TraceId, SpanRecord)>());
        let strings = SymbolLimits::default();
        let part = |name, bytes, bound_by| Part {
            name,
            bytes,
            bound_by,
        };
        Budget {
            parts: vec![
                part("fixed", FIXED, "code, runtime, store page caches"),
                part(
                    "requests",
                    n(cfg.max_concurrent_requests) * REQUEST_FACTOR * n(cfg.max_request_bytes),
                    "--max-concurrent-requests x 8 x --max-request-bytes",
                ),
                part(
                    "queued_spans",
                    n(cfg.queue_spans) * n(cfg.workers) * queued_span,
                    "--queue-spans x --workers",
                ),
                part(
                    "buffered_spans",
                    n(cfg.max_buffered_spans) * BUFFERED_SPAN,
                    "--max-buffered-spans",
                ),
                part(
                    "finished_traces",
                    n(AssemblerConfig::online(
                        cfg.trace_idle.0,
                        cfg.max_buffered_spans,
                        cfg.workers,
                        cfg.sample_clean,
                        cfg.orphan_wait.0,
                        cfg.max_kept_spans,
                    )
                    .tombstones)
                        * n(cfg.workers)
                        * TOMBSTONE,
                    "--max-buffered-spans / 8, at least 4,096 per worker",
                ),
                part(
                    "kept_spans",
                    if cfg.orphan_wait.0.is_zero() {
                        0
                    } else {
                        n(cfg.max_kept_spans) * KEPT_SPAN
                    },
                    "--max-kept-spans (none with --orphan-wait 0)",
                ),
                part(
                    "links",
                    n(cfg.max_link_producers) * n(crate::join::PRODUCER_BYTES)
                        + n(cfg.max_link_waits) * n(crate::join::WAITING_LINK_BYTES),
                    "--max-link-producers, --max-link-waits",
                ),
                part(
                    "store_queue",
                    n(cfg.store_queue_spans) * FINALISED_SPAN,
                    "--store-queue-spans",
                ),
                part(
                    "recent_traces",
                    n(AggregateConfig::default().max_trace_spans) * FINALISED_SPAN,
                    "500,000 spans of traces kept for the API",
                ),
                part(
                    "strings",
                    n(strings.services) * (n(MAX_SERVICE_LEN) + STRING_OVERHEAD)
                        + n(strings.span_names) * (n(MAX_NAME_LEN) + STRING_OVERHEAD)
                        + n(strings.values) * (n(MAX_VALUE_LEN) + STRING_OVERHEAD),
                    "10,000 services, 200,000 span names, 10,000 values",
                ),
                part(
                    "metric_series",
                    FAMILIES * n(MAX_SERIES) * SERIES,
                    "20,000 series per verdict metric",
                ),
            ],
        }
    }

    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

impl Budget {
    /// `grayscope_memory_budget_bytes{part}` and `grayscope_process_resident_bytes`.
    pub fn register_metrics(&self, r: &mut Registry) {
        r.register_collector(Box::new(MemoryCollector(self.clone())));
    }
}

/// The memory budget next to what the process holds, so that an alert can compare them.
#[derive(Debug)]
struct MemoryCollector(Budget);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: &'static str,
}

impl Collector for MemoryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(0i64);
        let mut m = encoder.encode_descriptor(
            "memory_budget_bytes",
            "The most memory grayscope holds, by part, derived from its flags (README: Memory budget)",
            None,
            g.metric_type(),
        )?;
        for p in &self.0.parts {
            ConstGauge::new(p.bytes as i64)
                .encode(m.encode_family(&PartLabels { part: p.name })?)?;
        }
        if let Some(rss) = resident_bytes() {
            let g = ConstGauge::new(rss as i64);
            g.encode(encoder.encode_descriptor(
                "process_resident_bytes",
                "Resident memory of this process",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`, Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn cfg(args: &[&str]) -> ServeConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut argv = vec!["grayscope"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).serve.resolve().unwrap()
    }

    #[test]
    fn every_flag_that_bounds_memory_moves_the_budget() {
        let base = cfg(&["--workers", "2"]);
        let b = Budget::of(&base);
        let part = |b: &Budget, name: &str| b.parts.iter().find(|p| p.name == name).unwrap().bytes;
        assert_eq!(part(&b, "requests"), 4 * 8 * (16 << 20));
        assert_eq!(part(&b, "buffered_spans"), 2_000_000 * BUFFERED_SPAN);
        let smaller = Budget::of(&cfg(&[
            "--workers",
            "2",
            "--max-concurrent-requests",
            "2",
            "--max-request-bytes",
            "1MiB",
            "--max-buffered-spans",
            "100000",
            "--queue-spans",
            "1000",
        ]));
        assert_eq!(part(&smaller, "requests"), 2 * 8 * (1 << 20));
        assert_eq!(part(&smaller, "buffered_spans"), 100_000 * BUFFERED_SPAN);
        assert!(part(&smaller, "queued_spans") < part(&b, "queued_spans"));
        assert!(smaller.total() < b.total());
        assert_eq!(part(&b, "kept_spans"), 1_000_000 * KEPT_SPAN);
        let kept = |args: &[&str]| part(&Budget::of(&cfg(args)), "kept_spans");
        assert_eq!(kept(&["--max-kept-spans", "1000"]), 1000 * KEPT_SPAN);
        assert_eq!(kept(&["--orphan-wait", "0s"]), 0, "nothing is kept");
        assert_eq!(b.total(), b.parts.iter().map(|p| p.bytes).sum::<u64>());
    }

    #[test]
    fn resident_memory_is_read() {
        let rss = resident_bytes().expect("Linux has /proc/self/statm");
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
    }
}
