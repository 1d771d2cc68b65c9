//! The stage on every span: a span processor that copies it from baggage when a span starts.

use std::time::Duration;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::Span as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use crate::STAGE_KEY;
use crate::keys::{KeyClass, StageKeys};

/// Copies chosen baggage entries onto every span as attributes when the span starts, so that the
/// stage is on every span a service records, not only on the ones a layer made.
///
/// By default it copies [`STAGE_KEY`] and any entry whose key is a near miss of it
/// (`x-release-stag`, `X_Release_Stage`): a misspelt key then reaches grayscope and is reported as
/// `key_mismatch` at the hop that misspelt it, instead of as a lost stage.
#[derive(Debug)]
pub struct BaggageSpanProcessor {
    keys: Option<StageKeys>,
}

impl Default for BaggageSpanProcessor {
    fn default() -> Self {
        Self::new()
    }
}

impl BaggageSpanProcessor {
    /// Copies the stage and near misses of its key.
    pub fn new() -> Self {
        Self::keys([STAGE_KEY])
    }

    /// Copies these keys and near misses of them.
    pub fn keys<I: IntoIterator<Item = K>, K: Into<String>>(keys: I) -> Self {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        BaggageSpanProcessor {
            keys: Some(StageKeys::new(&keys)),
        }
    }

    /// Copies every baggage entry (mind the cardinality and the size of what callers send).
    pub fn all() -> Self {
        BaggageSpanProcessor { keys: None }
    }
}

impl SpanProcessor for BaggageSpanProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        for (k, (v, _)) in cx.baggage() {
            let wanted = match &self.keys {
                Some(keys) => keys.classify(k.as_str()) != KeyClass::Unrelated,
                None => true,
            };
            if wanted {
                span.set_attribute(KeyValue::new(k.clone(), v.clone()));
            }
        }
    }

    fn on_end(&self, _: SpanData) {}

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}
