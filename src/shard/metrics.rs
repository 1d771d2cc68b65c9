//! What the workers count: spans and traces held, queued, finalised (and why), and the spans that
//! were duplicates, conflicts or late; finalised traces kept for their late spans, and the spans
//! that waited there for their parent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::assemble::AssembleStats;
use crate::telemetry::{ReasonLabels, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

pub struct WorkerMetrics {
    buffered_spans: Family<WorkerLabels, Gauge>,
    buffered_traces: Family<WorkerLabels, Gauge>,
    buffered_bytes: Family<WorkerLabels, Gauge>,
    queued_spans: Family<WorkerLabels, Gauge>,
    traces_finalised: Family<ReasonLabels, Counter>,
    spans_finalised: Family<ReasonLabels, Counter>,
    duplicate_spans: Counter,
    conflicting_spans: Counter,
    late_spans: Counter,
    kept_traces: Family<WorkerLabels, Gauge>,
    kept_spans: Family<WorkerLabels, Gauge>,
    orphans_waiting: Family<WorkerLabels, Gauge>,
    orphans_resolved: Counter,
    orphans_expired: Family<ReasonLabels, Counter>,
    kept_evicted: Counter,
    orphan_lateness: Histogram,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            buffered_spans: Family::default(),
            buffered_traces: Family::default(),
            buffered_bytes: Family::default(),
            queued_spans: Family::default(),
            traces_finalised: Family::default(),
            spans_finalised: Family::default(),
            duplicate_spans: Counter::default(),
            conflicting_spans: Counter::default(),
            late_spans: Counter::default(),
            kept_traces: Family::default(),
            kept_spans: Family::default(),
            orphans_waiting: Family::default(),
            orphans_resolved: Counter::default(),
            orphans_expired: Family::default(),
            kept_evicted: Counter::default(),
            orphan_lateness: Histogram::new(LATENESS_BUCKETS),
        }
    }
}

/// Seconds: from a batch delay (1-5 s) through exporter backoff (5-30 s) to the slowest requests.
const LATENESS_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0,
];

/// A worker's own gauges, looked up once.
pub struct WorkerGauges {
    pub spans: Gauge,
    pub traces: Gauge,
    pub bytes: Gauge,
    pub queued: Gauge,
    pub kept_traces: Gauge,
    pub kept_spans: Gauge,
    pub orphans_waiting: Gauge,
}

impl WorkerMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = WorkerMetrics::default();
        r.register(
            "kept_traces",
            "Finalised traces kept so that their late spans are still judged (--max-kept-spans)",
            m.kept_traces.clone(),
        );
        r.register(
            "kept_spans",
            "Spans of finalised traces kept for late spans, with their bookkeeping (--max-kept-spans)",
            m.kept_spans.clone(),
        );
        r.register(
            "orphan_spans_waiting",
            "Spans of finalised traces whose parent has not arrived, waiting for it (--orphan-wait)",
            m.orphans_waiting.clone(),
        );
        r.register(
            "orphans_resolved",
            "Spans whose parent arrived after their trace was finalised, judged then",
            m.orphans_resolved.clone(),
        );
        r.register(
            "orphans_expired",
            "Spans whose wait for their parent ended: wait (over, judged broken_trace or unverifiable), flush (judged), memory (ended early by --max-kept-spans, not judged), shutdown (not judged)",
            m.orphans_expired.clone(),
        );
        r.register(
            "kept_traces_evicted",
            "Finalised traces forgotten before their time to stay within --max-kept-spans",
            m.kept_evicted.clone(),
        );
        r.register(
            "orphan_lateness_seconds",
            "How long after its trace's last span the parent of a waiting span arrived",
            m.orphan_lateness.clone(),
        );
        r.register(
            "buffered_spans",
            "Spans held in traces being assembled",
            m.buffered_spans.clone(),
        );
        r.register(
            "buffered_traces",
            "Traces being assembled",
            m.buffered_traces.clone(),
        );
        r.register(
            "buffered_bytes",
            "Heap bytes held for traces being assembled (estimated from capacities)",
            m.buffered_bytes.clone(),
        );
        r.register(
            "queued_spans",
            "Spans accepted and waiting for their worker",
            m.queued_spans.clone(),
        );
        r.register(
            "traces_finalised",
            "Traces finalised, by reason: idle (normal), memory (early, forced by --max-buffered-spans), shutdown",
            m.traces_finalised.clone(),
        );
        r.register(
            "spans_finalised",
            "Spans in finalised traces, by the trace's reason (late: added to a trace kept after it was finalised); accepted spans = these + duplicate + conflicting + late + buffered + queued",
            m.spans_finalised.clone(),
        );
        r.register(
            "duplicate_spans",
            "Spans received again with the same content (exporter retries), counted once",
            m.duplicate_spans.clone(),
        );
        r.register(
            "conflicting_spans",
            "Spans received again with the same id and different content; the first is kept",
            m.conflicting_spans.clone(),
        );
        r.register(
            "late_spans",
            "Spans for a trace already finalised and no longer kept: counted, not judged",
            m.late_spans.clone(),
        );
        m
    }

    pub fn gauges(&self, worker: usize) -> WorkerGauges {
        let l = WorkerLabels {
            worker: worker.to_string(),
        };
        WorkerGauges {
            spans: self.buffered_spans.get_or_create(&l).clone(),
            traces: self.buffered_traces.get_or_create(&l).clone(),
            bytes: self.buffered_bytes.get_or_create(&l).clone(),
            queued: self.queued_spans.get_or_create(&l).clone(),
            kept_traces: self.kept_traces.get_or_create(&l).clone(),
            kept_spans: self.kept_spans.get_or_create(&l).clone(),
            orphans_waiting: self.orphans_waiting.get_or_create(&l).clone(),
        }
    }

    /// How late the parents of waiting spans arrived, in ms.
    pub fn observe_lateness(&self, late_ms: &[u64]) {
        for &ms in late_ms {
            self.orphan_lateness.observe(ms as f64 / 1000.0);
        }
    }

    /// Publishes what an assembler counted since `before`.
    pub fn add_assembly(&self, before: &AssembleStats, now: &AssembleStats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.duplicate_spans
            .inc_by(d(before.duplicates, now.duplicates));
        self.conflicting_spans
            .inc_by(d(before.conflicts, now.conflicts));
        self.late_spans.inc_by(d(before.late, now.late));
        self.orphans_resolved
            .inc_by(d(before.orphans_resolved, now.orphans_resolved));
        self.kept_evicted
            .inc_by(d(before.kept_evicted, now.kept_evicted));
        for (reason, a, b) in [
            (
                "wait",
                before.orphans_expired_wait,
                now.orphans_expired_wait,
            ),
            (
                "flush",
                before.orphans_expired_flush,
                now.orphans_expired_flush,
            ),
            (
                "memory",
                before.orphans_expired_memory,
                now.orphans_expired_memory,
            ),
            (
                "shutdown",
                before.orphans_expired_shutdown,
                now.orphans_expired_shutdown,
            ),
        ] {
            if b > a {
                self.orphans_expired
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(b - a);
            }
        }
        if now.spans_late > before.spans_late {
            self.spans_finalised
                .get_or_create(&ReasonLabels { reason: "late" })
                .inc_by(now.spans_late - before.spans_late);
        }
        for (reason, a, b, sa, sb) in [
            (
                "idle",
                before.finalised_idle,
                now.finalised_idle,
                before.spans_idle,
                now.spans_idle,
            ),
            (
                "memory",
                before.finalised_early,
                now.finalised_early,
                before.spans_early,
                now.spans_early,
            ),
            (
                "shutdown",
                before.finalised_flush,
                now.finalised_flush,
                before.spans_flush,
                now.spans_flush,
            ),
        ] {
            if b > a {
                self.traces_finalised
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(b - a);
                self.spans_finalised
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(sb - sa);
            }
        }
    }
}
