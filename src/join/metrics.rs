//! What the join counts, read at scrape time: producer spans kept, consumers waiting, and links
//! followed or given up on (by why).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Joins;
use crate::telemetry::{ReasonLabels, Registry};
use crate::verify::messaging::Unresolved;

/// `grayscope_link_*` metrics.
pub struct JoinMetrics(Arc<Joins>);

impl JoinMetrics {
    pub fn register(joins: &Arc<Joins>, r: &mut Registry) {
        r.register_collector(Box::new(JoinMetrics(joins.clone())));
    }
}

impl std::fmt::Debug for JoinMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinMetrics")
    }
}

impl Collector for JoinMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let gauge = ConstGauge::new(0i64).metric_type();
        let counter = ConstCounter::new(0u64).metric_type();
        for (name, help, v) in [
            (
                "link_producers",
                "Message creation-context spans kept for consumers that link to them (--link-wait)",
                s.producers,
            ),
            (
                "link_waiting_consumers",
                "Consumer spans waiting for the producer spans they link to",
                s.waiting_consumers,
            ),
            (
                "link_waiting_links",
                "Links of waiting consumer spans still to be followed",
                s.waiting_links,
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, gauge)?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "links_resolved",
            "Consumer links followed to their producer span and judged",
            None,
            counter,
        )?;
        ConstCounter::new(s.resolved).encode(m)?;
        let mut m = encoder.encode_descriptor(
            "links_unresolved",
            "Consumer links whose producer span was not found, by reason (unsampled, expired after --link-wait, evicted by the memory bound, shutdown): counted as unresolved edges, never findings",
            None,
            counter,
        )?;
        for (r, n) in Unresolved::ALL.iter().zip(s.unresolved) {
            ConstCounter::new(n).encode(m.encode_family(&ReasonLabels { reason: r.as_str() })?)?;
        }
        let m = encoder.encode_descriptor(
            "link_producers_evicted",
            "Producer spans dropped before --link-wait because --max-link-producers was reached",
            None,
            counter,
        )?;
        ConstCounter::new(s.producers_evicted).encode(m)?;
        Ok(())
    }
}
