//! What the workers count: spans and traces held, queued, finalised (and why), and the spans that
//! were duplicates, conflicts or late.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::assemble::AssembleStats;
use crate::telemetry::{ReasonLabels, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Default)]
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
}

/// A worker's own gauges, looked up once.
pub struct WorkerGauges {
    pub spans: Gauge,
    pub traces: Gauge,
    pub bytes: Gauge,
    pub queued: Gauge,
}

impl WorkerMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = WorkerMetrics::default();
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
            "Spans in finalised traces, by the trace's reason; accepted spans = these + duplicate + conflicting + late + buffered + queued",
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
            "Spans for a trace already finalised: counted, not judged",
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
