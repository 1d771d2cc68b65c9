//! The store's metrics, read at scrape time: its backlog, what it wrote, what it could not.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{Reason, SharedStore};
use crate::telemetry::{ReasonLabels, Registry};

/// `grayscope_store_*`, read from the store's [`super::Health`] at every scrape.
pub fn register_metrics(store: &SharedStore, r: &mut Registry) {
    r.register_collector(Box::new(StoreCollector(store.clone())));
}

/// How far the store's writer is behind, and what became of what it was handed.
struct StoreCollector(SharedStore);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0.health();
        let g = ConstGauge::new(h.queued_spans as i64);
        g.encode(encoder.encode_descriptor(
            "store_queued_spans",
            "Spans of finalised traces waiting to be written to the store",
            None,
            g.metric_type(),
        )?)?;
        let lag = ConstGauge::new(h.lag.as_secs_f64());
        lag.encode(encoder.encode_descriptor(
            "store_lag_seconds",
            "Age of the oldest finalised trace not yet committed to the store (0 when caught up)",
            None,
            lag.metric_type(),
        )?)?;
        let failing = ConstGauge::new(i64::from(h.failing));
        failing.encode(encoder.encode_descriptor(
            "store_failing",
            "1 while writes to the store fail for a reason of the store's (down, full, locked) and are retried",
            None,
            failing.metric_type(),
        )?)?;
        let queued = ConstGauge::new(h.queued.traces as i64);
        queued.encode(encoder.encode_descriptor(
            "store_queued_traces",
            "Finalised traces handed to the store and not yet written or dropped",
            None,
            queued.metric_type(),
        )?)?;
        let counter = ConstCounter::new(0u64).metric_type();
        let written = h.written;
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
        for &(reason, n) in &h.write_errors {
            if reason != Reason::Shutdown {
                let labels = ReasonLabels {
                    reason: reason.label(),
                };
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        // Only the reasons a trace can be dropped for: the batch's own, and the shutdown deadline.
        let dropped: Vec<_> = h
            .dropped
            .iter()
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
