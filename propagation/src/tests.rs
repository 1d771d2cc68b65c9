use std::sync::{Arc, Mutex};

use opentelemetry::trace::{Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::*;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use std::time::Duration;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn stage_of(cx: &Context) -> Option<String> {
    stage(cx).map(|s| s.to_string())
}

#[test]
fn the_header_wins_over_baggage_and_defaults_apply_only_when_given() {
    let both = headers(&[
        ("x-release-stage", "canary"),
        ("baggage", "x-release-stage=stable,tenant=acme"),
    ]);
    let cx = extract(&both, Some("stable"));
    assert_eq!(stage_of(&cx).as_deref(), Some("canary"));
    // Other baggage survives the override.
    assert_eq!(
        cx.baggage().get("tenant").map(|v| v.as_str().to_string()),
        Some("acme".into())
    );

    let baggage_only = headers(&[("baggage", "x-release-stage=canary")]);
    assert_eq!(
        stage_of(&extract(&baggage_only, None)).as_deref(),
        Some("canary")
    );

    let none = HeaderMap::new();
    assert_eq!(
        stage_of(&extract(&none, Some("stable"))).as_deref(),
        Some("stable")
    );
    assert_eq!(stage_of(&extract(&none, None)), None);

    // A near-miss key is not the stage: the bug stays visible.
    let typo = headers(&[("baggage", "x-release-stag=canary")]);
    assert_eq!(stage_of(&extract(&typo, None)), None);

    // An empty or oversized header is ignored.
    let empty = headers(&[("x-release-stage", "  ")]);
    assert_eq!(stage_of(&extract(&empty, None)), None);
    let long = "c".repeat(MAX_STAGE_LEN + 1);
    let huge = headers(&[("x-release-stage", &long)]);
    assert_eq!(stage_of(&extract(&huge, None)), None);
}

#[test]
fn inject_writes_trace_context_baggage_and_the_header() {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("t");
    let span = tracer.start("op");
    let cx = with_stage(&Context::new().with_span(span), "canary");
    let mut h = HeaderMap::new();
    inject(&cx, &mut h);
    assert!(h.get("traceparent").is_some());
    assert_eq!(h.get("baggage").unwrap(), "x-release-stage=canary");
    assert_eq!(h.get("x-release-stage").unwrap(), "canary");

    // And what was injected extracts to the same stage and trace.
    let back = extract(&h, None);
    assert_eq!(stage_of(&back).as_deref(), Some("canary"));
    assert_eq!(
        back.span().span_context().trace_id(),
        cx.span().span_context().trace_id()
    );

    // Without a stage there is no header.
    let mut h = HeaderMap::new();
    inject(&Context::new(), &mut h);
    assert!(h.get("x-release-stage").is_none());
}

#[cfg(feature = "tonic")]
#[test]
fn the_interceptor_forwards_the_current_context_as_metadata() {
    let _g = with_stage(&Context::new(), "canary").attach();
    let req = forward_metadata(tonic::Request::new(())).unwrap();
    assert_eq!(req.metadata().get("x-release-stage").unwrap(), "canary");
    assert_eq!(
        req.metadata().get("baggage").unwrap(),
        "x-release-stage=canary"
    );
}

/// Keeps the attributes of every span that ends.
#[derive(Debug, Default, Clone)]
struct Keep(Arc<Mutex<Vec<Vec<String>>>>);

impl SpanProcessor for Keep {
    fn on_start(&self, _: &mut Span, _: &Context) {}
    fn on_end(&self, span: SpanData) {
        let keys = span.attributes.into_iter().map(|kv| kv.key.to_string());
        self.0.lock().unwrap().push(keys.collect());
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn copied(processor: BaggageSpanProcessor, baggage: &[(&str, &str)]) -> Vec<String> {
    let keep = Keep::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_span_processor(keep.clone())
        .build();
    let tracer = provider.tracer("t");
    let cx = Context::new().with_baggage(
        baggage
            .iter()
            .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
    );
    tracer.start_with_context("op", &cx).end();
    let spans = keep.0.lock().unwrap();
    let mut keys = spans[0].clone();
    keys.sort();
    keys
}

#[test]
fn the_span_processor_copies_the_stage_and_near_misses_only() {
    let baggage = [
        ("x-release-stage", "canary"),
        ("X_Release_Stag", "canary"),
        ("tenant", "acme"),
    ];
    assert_eq!(
        copied(BaggageSpanProcessor::new(), &baggage),
        ["X_Release_Stag", "x-release-stage"]
    );
    assert_eq!(
        copied(BaggageSpanProcessor::keys(["tenant"]), &baggage),
        ["tenant"]
    );
    assert_eq!(copied(BaggageSpanProcessor::all(), &baggage).len(), 3);
}
