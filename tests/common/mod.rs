//! Test harness: an in-process collector on OS-chosen ports, services instrumented with the real
//! OpenTelemetry SDK and OTLP exporters, and a "wire" that carries context between them through the
//! real W3C propagators (so a test can break a hop by editing the headers, as a buggy service would).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use grayscope::app::{self, Collector, Listeners};
use grayscope::config::{ServeArgs, ServeConfig};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor};

pub const STAGE: &str = "x-release-stage";

pub mod binary;
pub mod browser;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod python;
pub mod rabbitmq;

/// Serve options for tests: every port chosen by the OS, a short idle time.
pub fn test_args() -> ServeArgs {
    ServeArgs {
        otlp_grpc: Some("127.0.0.1:0".parse().unwrap()),
        otlp_http: Some("127.0.0.1:0".parse().unwrap()),
        http: Some("127.0.0.1:0".parse().unwrap()),
        trace_idle: Some("300ms".parse().unwrap()),
        // Which clean traces are stored is then no accident of their ids.
        sample_clean: Some(0.0),
        ..ServeArgs::default()
    }
}

/// A collector whose store lives in a temporary directory, removed when the test is done.
pub struct TestCollector {
    collector: Option<Collector>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestCollector {
    type Target = Collector;
    fn deref(&self) -> &Collector {
        self.collector.as_ref().expect("not shut down")
    }
}

impl TestCollector {
    pub async fn shutdown(mut self) -> anyhow::Result<grayscope::store::Tally> {
        self.collector
            .take()
            .expect("shut down once")
            .shutdown()
            .await
    }
}

pub async fn spawn_collector(mut args: ServeArgs) -> TestCollector {
    let dir = tempfile::tempdir().expect("a temporary directory");
    if args.data.is_none() {
        args.data = Some(dir.path().to_path_buf());
    }
    let cfg: ServeConfig = args.resolve().expect("test config resolves");
    let listeners = Listeners::bind(&cfg).await.expect("binding port 0");
    TestCollector {
        collector: Some(app::start(&cfg, listeners).await.expect("collector starts")),
        _dir: dir,
    }
}

/// How a service exports its spans.
#[derive(Clone, Copy, Debug)]
pub enum Export {
    Grpc,
    GrpcGzip,
    HttpProtobuf,
    HttpProtobufGzip,
    HttpJson,
}

/// Copies every baggage entry into span attributes when a span starts, as a baggage span processor
/// does in an instrumented service.
#[derive(Debug)]
struct BaggageToAttributes;

impl SpanProcessor for BaggageToAttributes {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        for (k, (v, _)) in cx.baggage() {
            span.set_attribute(KeyValue::new(k.clone(), v.clone()));
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

/// One instrumented service instance: its own resource, provider and exporter.
pub struct Service {
    pub provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Service {
    pub fn new(c: &Collector, name: &str, instance_stage: Option<&str>, export: Export) -> Self {
        Self::to(c.otlp_grpc, c.otlp_http, name, instance_stage, export)
    }

    pub fn to(
        grpc: SocketAddr,
        http: SocketAddr,
        name: &str,
        instance_stage: Option<&str>,
        export: Export,
    ) -> Self {
        use opentelemetry_otlp::Compression;
        let exporter = match export {
            Export::Grpc | Export::GrpcGzip => {
                let b = SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(format!("http://{grpc}"));
                let b = if matches!(export, Export::GrpcGzip) {
                    b.with_compression(Compression::Gzip)
                } else {
                    b
                };
                b.build()
            }
            Export::HttpProtobuf | Export::HttpProtobufGzip | Export::HttpJson => {
                let b = SpanExporter::builder()
                    .with_http()
                    .with_endpoint(format!("http://{http}/v1/traces"))
                    .with_protocol(if matches!(export, Export::HttpJson) {
                        Protocol::HttpJson
                    } else {
                        Protocol::HttpBinary
                    });
                let b = if matches!(export, Export::HttpProtobufGzip) {
                    b.with_compression(Compression::Gzip)
                } else {
                    b
                };
                b.build()
            }
        }
        .expect("exporter builds");
        Self::with_exporter(exporter, name, instance_stage)
    }

    /// A service exporting through `exporter` (one configured for TLS and a token, say).
    pub fn with_exporter(exporter: SpanExporter, name: &str, instance_stage: Option<&str>) -> Self {
        Self::with_resource(exporter, name, instance_stage, &[])
    }

    /// A service whose resource also carries `attributes` (a browser's or a phone's, say).
    pub fn with_resource(
        exporter: SpanExporter,
        name: &str,
        instance_stage: Option<&str>,
        attributes: &[(&str, &str)],
    ) -> Self {
        let mut resource = Resource::builder().with_service_name(name.to_string());
        if let Some(s) = instance_stage {
            resource = resource.with_attribute(KeyValue::new("deployment.stage", s.to_string()));
        }
        for (k, v) in attributes {
            resource = resource.with_attribute(KeyValue::new(k.to_string(), v.to_string()));
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BaggageToAttributes)
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("grayscope-tests");
        Service { provider, tracer }
    }

    /// Starts a span as a child of `parent` (which carries the baggage it sees) and returns the
    /// context of the new span. Spans end when [`end`] is called on their context.
    pub fn span(&self, name: &str, kind: SpanKind, parent: &Context) -> Context {
        let span = self
            .tracer
            .span_builder(name.to_string())
            .with_kind(kind)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// [`Service::span`] with attributes and span links (a message consumer's links to the
    /// contexts its messages were created in).
    pub fn span_with(
        &self,
        name: &str,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
        links: Vec<opentelemetry::trace::SpanContext>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name.to_string())
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(
                links
                    .into_iter()
                    .map(opentelemetry::trace::Link::with_context)
                    .collect(),
            )
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Exports everything this service has ended (blocks; call from a blocking thread).
    pub fn flush(&self) {
        self.provider.force_flush().expect("spans exported");
    }
}

pub fn end(cx: &Context) {
    cx.span().end();
}

/// An incoming request at an entry service, tagged with `stage`.
pub fn entry(stage: Option<&str>) -> Context {
    match stage {
        Some(s) => Context::new().with_baggage(vec![KeyValue::new(STAGE, s.to_string())]),
        None => Context::new(),
    }
}

/// The headers a client injects for `cx`.
pub fn inject(cx: &Context) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    propagator().inject_context(cx, &mut headers);
    headers
}

/// The context a server extracts from `headers`.
pub fn extract(headers: &HashMap<String, String>) -> Context {
    propagator().extract(headers)
}

/// A correct hop: everything the client had arrives at the server.
pub fn wire(cx: &Context) -> Context {
    extract(&inject(cx))
}

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Flushes services from a blocking thread, then finalises every trace in the collector.
pub async fn deliver(c: &Collector, services: &[&Service]) {
    let providers: Vec<SdkTracerProvider> = services.iter().map(|s| s.provider.clone()).collect();
    tokio::task::spawn_blocking(move || {
        for p in providers {
            p.force_flush().expect("spans exported");
        }
    })
    .await
    .unwrap();
    c.flush().await;
}

pub async fn get_json(c: &Collector, path: &str) -> serde_json::Value {
    let r = reqwest::get(format!("http://{}{}", c.http, path))
        .await
        .expect("API answers");
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.expect("JSON body")
}

/// (kind, scope, edge caller, edge callee, first_break) of every finding, sorted.
pub async fn findings(c: &Collector) -> Vec<(String, String, String, String, bool)> {
    let v = get_json(c, "/api/v1/findings?limit=1000").await;
    let mut out: Vec<_> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["scope"].as_str().unwrap().to_string(),
                f["edge"]["caller"].as_str().unwrap_or("-").to_string(),
                f["edge"]["callee"].as_str().unwrap().to_string(),
                f["first_break"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

pub fn f(
    kind: &str,
    scope: &str,
    caller: &str,
    callee: &str,
    first_break: bool,
) -> (String, String, String, String, bool) {
    (
        kind.into(),
        scope.into(),
        caller.into(),
        callee.into(),
        first_break,
    )
}

/// The collector's `/metrics` text.
pub async fn scrape(c: &Collector) -> String {
    reqwest::get(format!("http://{}/metrics", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a metric sample line `name{labels} value` in Prometheus text.
pub async fn metric(c: &Collector, sample: &str) -> f64 {
    let text = scrape(c).await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
