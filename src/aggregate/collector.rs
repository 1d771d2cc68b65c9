//! The verdict metrics as Prometheus sees them: the aggregate's capped counters, turned into
//! labelled series at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::Aggregate;
use crate::telemetry::Registry;

/// `grayscope_edges_total`, `_findings_total`, `_traces_total`, `_misrouted_total` and
/// `_label_values_folded_total`, read from `aggregate` at every scrape.
pub fn register(aggregate: &Arc<Aggregate>, r: &mut Registry) {
    r.register_collector(Box::new(VerdictCollector(aggregate.clone())));
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
