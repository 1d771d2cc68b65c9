//! What the receivers count: `grayscope_receiver_*`, by protocol.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Outcome, Protocol};
use crate::telemetry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    protocol: &'static str,
    reason: &'static str,
}

#[derive(Default)]
pub struct IngestMetrics {
    /// Requests by protocol and outcome (ok, partial, invalid, too_large, unsupported, refused, timeout).
    requests: Family<RequestLabels, Counter>,
    accepted_spans: Family<ProtocolLabels, Counter>,
    rejected_spans: Family<RejectLabels, Counter>,
    /// Spans refused with a retryable error because the workers' queues were full.
    refused_spans: Family<ProtocolLabels, Counter>,
}

impl IngestMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = IngestMetrics::default();
        let r = registry.sub_registry_with_prefix("receiver");
        r.register(
            "requests",
            "OTLP export requests by protocol and outcome",
            m.requests.clone(),
        );
        r.register(
            "accepted_spans",
            "Spans accepted for verification",
            m.accepted_spans.clone(),
        );
        r.register(
            "rejected_spans",
            "Spans rejected as invalid (reported to the sender through partial success)",
            m.rejected_spans.clone(),
        );
        r.register(
            "refused_spans",
            "Spans refused with a retryable error because verification could not keep up",
            m.refused_spans.clone(),
        );
        // Counters alerts take the rate of exist from the start, at zero, so that a rate is 0
        // rather than absent before the first refusal.
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson] {
            let l = ProtocolLabels {
                protocol: protocol.as_str(),
            };
            m.accepted_spans.get_or_create(&l).inc_by(0);
            m.refused_spans.get_or_create(&l).inc_by(0);
        }
        m
    }

    pub fn request(&self, protocol: Protocol, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                protocol: protocol.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn accepted(&self, protocol: Protocol, spans: u64) {
        self.accepted_spans
            .get_or_create(&ProtocolLabels {
                protocol: protocol.as_str(),
            })
            .inc_by(spans);
    }

    pub fn refused(&self, protocol: Protocol, spans: u64) {
        self.refused_spans
            .get_or_create(&ProtocolLabels {
                protocol: protocol.as_str(),
            })
            .inc_by(spans);
    }

    pub fn rejected(&self, protocol: Protocol, reason: &'static str, spans: u64) {
        self.rejected_spans
            .get_or_create(&RejectLabels {
                protocol: protocol.as_str(),
                reason,
            })
            .inc_by(spans);
    }
}
