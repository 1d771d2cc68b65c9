//! grayscope's own metrics (ingest health), in the Prometheus/OpenMetrics text format.
//!
//! Metrics are updated per request or per worker message, never per span, so their shared atomics
//! stay off the hot path. Names follow the OpenTelemetry Collector's receiver metrics where one
//! exists (`accepted`, `refused` spans), so operators recognise them.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::aggregate::Aggregate;
use crate::assemble::AssembleStats;
use crate::intern::Symbols;
use crate::store::{Reason, Store};

/// The content type of [`Telemetry::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Telemetry {
    registry: Registry,
    /// Requests by protocol and outcome (ok, partial, invalid, too_large, unsupported, refused, timeout).
    pub requests: Family<RequestLabels, Counter>,
    pub accepted_spans: Family<ProtocolLabels, Counter>,
    pub rejected_spans: Family<RejectLabels, Counter>,
    /// Spans refused with a retryable error because the workers' queues were full.
    pub refused_spans: Family<ProtocolLabels, Counter>,
    /// Connections closed by `listen` for sending no request (head) within the read timeout.
    pub connection_timeouts: Family<ListenerLabels, Counter>,
    pub buffered_spans: Family<WorkerLabels, Gauge>,
    pub buffered_traces: Family<WorkerLabels, Gauge>,
    pub buffered_bytes: Family<WorkerLabels, Gauge>,
    pub queued_spans: Family<WorkerLabels, Gauge>,
    pub traces_finalised: Family<ReasonLabels, Counter>,
    pub spans_finalised: Family<ReasonLabels, Counter>,
    pub duplicate_spans: Counter,
    pub conflicting_spans: Counter,
    pub late_spans: Counter,
}

/// Where the verdict and store metrics come from; absent in tests of the receivers alone.
pub struct Sources {
    pub aggregate: Arc<Aggregate>,
    pub store: Store,
    pub budget: crate::memory::Budget,
}

impl Telemetry {
    pub fn new(symbols: Arc<Symbols>, sources: Option<Sources>) -> Self {
        let mut registry = Registry::with_prefix("grayscope");
        let t = Telemetry {
            requests: Family::default(),
            accepted_spans: Family::default(),
            rejected_spans: Family::default(),
            refused_spans: Family::default(),
            connection_timeouts: Family::default(),
            buffered_spans: Family::default(),
            buffered_traces: Family::default(),
            buffered_bytes: Family::default(),
            queued_spans: Family::default(),
            traces_finalised: Family::default(),
            spans_finalised: Family::default(),
            duplicate_spans: Counter::default(),
            conflicting_spans: Counter::default(),
            late_spans: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "receiver_requests",
            "OTLP export requests by protocol and outcome",
            t.requests.clone(),
        );
        r.register(
            "receiver_accepted_spans",
            "Spans accepted for verification",
            t.accepted_spans.clone(),
        );
        r.register(
            "receiver_rejected_spans",
            "Spans rejected as invalid (reported to the sender through partial success)",
            t.rejected_spans.clone(),
        );
        r.register(
            "receiver_refused_spans",
            "Spans refused with a retryable error because verification could not keep up",
            t.refused_spans.clone(),
        );
        r.register(
            "connection_timeouts",
            "Connections closed because no request, or no complete HTTP/1.1 request head, arrived within --read-timeout (idle HTTP/1.1 keep-alive connections included)",
            t.connection_timeouts.clone(),
        );
        r.register(
            "buffered_spans",
            "Spans held in traces being assembled",
            t.buffered_spans.clone(),
        );
        r.register(
            "buffered_traces",
            "Traces being assembled",
            t.buffered_traces.clone(),
        );
        r.register(
            "buffered_bytes",
            "Heap bytes held for traces being assembled (estimated from capacities)",
            t.buffered_bytes.clone(),
        );
        r.register(
            "queued_spans",
            "Spans accepted and waiting for their worker",
            t.queued_spans.clone(),
        );
        r.register(
            "traces_finalised",
            "Traces finalised, by reason: idle (normal), memory (early, forced by --max-buffered-spans), shutdown",
            t.traces_finalised.clone(),
        );
        r.register(
            "spans_finalised",
            "Spans in finalised traces, by the trace's reason; accepted spans = these + duplicate + conflicting + late + buffered + queued",
            t.spans_finalised.clone(),
        );
        r.register(
            "duplicate_spans",
            "Spans received again with the same content (exporter retries), counted once",
            t.duplicate_spans.clone(),
        );
        r.register(
            "conflicting_spans",
            "Spans received again with the same id and different content; the first is kept",
            t.conflicting_spans.clone(),
        );
        r.register(
            "late_spans",
            "Spans for a trace already finalised: counted, not judged",
            t.late_spans.clone(),
        );
        // Counters alerts take the rate of exist from the start, at zero, so that a rate is 0
        // rather than absent before the first refusal.
        for protocol in ["grpc", "http_protobuf", "http_json"] {
            t.accepted_spans
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(0);
            t.refused_spans
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(0);
        }
        for listener in ["otlp_grpc", "otlp_http", "http"] {
            t.connection_timeouts
                .get_or_create(&ListenerLabels { listener })
                .inc_by(0);
        }
        r.register_collector(Box::new(InternerCollector(symbols)));
        if let Some(s) = sources {
            r.register_collector(Box::new(VerdictCollector(s.aggregate)));
            r.register_collector(Box::new(StoreCollector(s.store)));
            r.register_collector(Box::new(MemoryCollector(s.budget)));
        }
        Telemetry { registry, ..t }
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Interner sizes and overflows, read at scrape time.
#[derive(Debug)]
struct InternerCollector(Arc<Symbols>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

impl Collector for InternerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tables = [
            ("services", &self.0.services),
            ("span_names", &self.0.names),
            ("values", &self.0.values),
        ];
        let g = ConstGauge::new(0i64);
        let mut m = encoder.encode_descriptor(
            "interned_strings",
            "Distinct strings interned, by table (bounded; see grayscope_interned_overflow_total)",
            None,
            g.metric_type(),
        )?;
        for (table, i) in tables {
            ConstGauge::new(i.len() as i64).encode(m.encode_family(&TableLabels { table })?)?;
        }
        let c = ConstCounter::new(0u64);
        let mut m = encoder.encode_descriptor(
            "interned_overflow",
            "Strings folded into '(other)' because their table was full",
            None,
            c.metric_type(),
        )?;
        for (table, i) in tables {
            ConstCounter::new(i.overflowed()).encode(m.encode_family(&TableLabels { table })?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    caller: Arc<str>,
    callee: Arc<str>,
    stage: Arc<str>,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    kind: &'static str,
    scope: &'static str,
    caller: Arc<str>,
    callee: Arc<str>,
    stage: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    stage: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MisroutedLabels {
    callee: Arc<str>,
    stage: Arc<str>,
    instance_stage: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabelLabels {
    label: &'static str,
}

/// The verdict counters, read at scrape time: what alerting rules and rollout gates query.
struct VerdictCollector(Arc<Aggregate>);

impl std::fmt::Debug for VerdictCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerdictCollector")
    }
}

impl Collector for VerdictCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.verdict_samples();
        let counter = ConstCounter::new(0u64).metric_type();
        let mut m = encoder.encode_descriptor(
            "edges",
            "Judged parent->child span edges, by the service-graph edge they count on, request stage ('none' without one) and verdict",
            None,
            counter,
        )?;
        for ([caller, callee, stage], v, n) in s.edges {
            let labels = EdgeLabels {
                caller,
                callee,
                stage,
                verdict: v.as_str(),
            };
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "findings",
            "Findings that were first breaks (one bug, one increment per trace), by kind, scope, edge and stage",
            None,
            counter,
        )?;
        for (kind, scope, [caller, callee, stage], n) in s.findings {
            let labels = FindingLabels {
                kind: kind.as_str(),
                scope: scope.as_str(),
                caller,
                callee,
                stage,
            };
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "traces",
            "Finalised traces by root request stage and result (consistent or broken)",
            None,
            counter,
        )?;
        for (stage, broken, n) in s.traces {
            let result = if broken { "broken" } else { "consistent" };
            ConstCounter::new(n).encode(m.encode_family(&TraceLabels { stage, result })?)?;
        }
        let mut m = encoder.encode_descriptor(
            "misrouted",
            "Calls routed to an instance of another stage while one of the request's stage was live",
            None,
            counter,
        )?;
        for ([callee, stage, instance_stage], n) in s.misrouted {
            let labels = MisroutedLabels {
                callee,
                stage,
                instance_stage,
            };
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "label_values_folded",
            "Observations counted under 'other' because their label already had --max-label-values values",
            None,
            counter,
        )?;
        for (label, n) in s.folded {
            ConstCounter::new(n).encode(m.encode_family(&LabelLabels { label })?)?;
        }
        Ok(())
    }
}

/// The memory budget next to what the process holds, so that an alert can compare them.
#[derive(Debug)]
struct MemoryCollector(crate::memory::Budget);

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
        if let Some(rss) = crate::memory::resident_bytes() {
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

/// How far the store's writer is behind.
struct StoreCollector(Store);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(self.0.queued_spans() as i64);
        g.encode(encoder.encode_descriptor(
            "store_queued_spans",
            "Spans of finalised traces waiting to be written to the store",
            None,
            g.metric_type(),
        )?)?;
        let lag = ConstGauge::new(self.0.lag().as_secs_f64());
        lag.encode(encoder.encode_descriptor(
            "store_lag_seconds",
            "Age of the oldest finalised trace not yet committed to the store (0 when caught up)",
            None,
            lag.metric_type(),
        )?)?;
        let queued = ConstGauge::new(self.0.queued().traces as i64);
        queued.encode(encoder.encode_descriptor(
            "store_queued_traces",
            "Finalised traces handed to the store and not yet written or dropped",
            None,
            queued.metric_type(),
        )?)?;
        let counter = ConstCounter::new(0u64).metric_type();
        let written = self.0.written();
        for (name, help, n) in [
            (
                "store_written_traces",
                "Finalised traces written to the store",
                written.traces,
            ),
            (
                "store_written_findings",
                "Findings written to the store",
                written.findings,
            ),
        ] {
            ConstCounter::new(n).encode(encoder.encode_descriptor(name, help, None, counter)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "store_write_errors",
            "Store writes that failed and were rolled back, by reason (README: Store)",
            None,
            counter,
        )?;
        for (reason, n) in self.0.write_errors() {
            if reason != Reason::Shutdown {
                let labels = ReasonLabels {
                    reason: reason.label(),
                };
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        // Only the reasons a trace can be dropped for: the batch's own, and the shutdown deadline.
        let dropped: Vec<_> = self
            .0
            .dropped()
            .filter(|(r, _)| !r.is_store() || *r == Reason::Shutdown)
            .collect();
        for (name, help, traces) in [
            (
                "store_dropped_traces",
                "Finalised traces never written: set aside because the store refuses them, or unwritten when --shutdown-grace ran out",
                true,
            ),
            (
                "store_dropped_findings",
                "Findings in the dropped traces",
                false,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, counter)?;
            for (reason, t) in &dropped {
                let labels = ReasonLabels {
                    reason: reason.label(),
                };
                let n = if traces { t.traces } else { t.findings };
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
