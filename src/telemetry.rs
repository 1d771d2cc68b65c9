//! grayscope's own metrics, in the Prometheus/OpenMetrics text format.
//!
//! A leaf: it knows no subsystem. Each subsystem defines what it counts and registers it, when the
//! collector is wired, in the one registry (or in a sub-registry with its prefix, as the receivers'
//! `receiver_*`); counters updated as things happen live with the subsystem, values read at scrape
//! time are collectors over the subsystem's own state. Metrics are updated per request or per
//! worker message, never per span, so their shared atomics stay off the hot path. Names follow the
//! OpenTelemetry Collector's receiver metrics where one exists (`accepted`, `refused` spans), so
//! operators recognise them.

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::registry::Registry;

/// The content type of [`Telemetry::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry every subsystem registers in: every name starts `grayscope_`.
pub fn registry() -> Registry {
    Registry::with_prefix("grayscope")
}

/// A label naming why something happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The registry, once everything is registered: what `/metrics` serves.
pub struct Telemetry {
    registry: Registry,
}

impl Telemetry {
    pub fn new(registry: Registry) -> Self {
        Telemetry { registry }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
