//! The probe's requests: each under a fresh trace whose root CLIENT span the probe records and
//! exports itself, carrying the stage as `traceparent`'s baggage and as the stage header, to an
//! HTTP or a gRPC entry point.
//!
//! A gRPC request message is given as its protobuf bytes, not as JSON through server
//! reflection: reflection is usually off in production, and bytes reach any service exactly as
//! its real clients' do.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::{Plan, ProbeError};
use crate::demo::export::{Exports, exporter};
use crate::model::PROBE_ATTRIBUTE;

/// The service name of the probe's own spans.
pub const PROBE_SERVICE: &str = "grayscope-probe";

/// Where the requests go, and what they carry besides the stage.
#[derive(Debug, Clone)]
pub enum Target {
    Http {
        url: String,
        method: http::Method,
        headers: Vec<(String, String)>,
        body: Bytes,
        timeout: Duration,
        /// Trusted for an https entry point, besides the system's roots.
        ca: Option<std::path::PathBuf>,
    },
    Grpc {
        addr: String,
        /// `/pkg.Service/Method`
        path: String,
        headers: Vec<(String, String)>,
        body: Bytes,
        timeout: Duration,
    },
}

impl Target {
    pub fn new(
        url: Option<&str>,
        grpc: Option<&str>,
        method: Option<&str>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Duration,
        ca: Option<std::path::PathBuf>,
    ) -> Result<Target, String> {
        let body = Bytes::from(body);
        match (url, grpc) {
            (Some(url), None) => {
                let uri: http::Uri = url.parse().map_err(|e| format!("--url '{url}': {e}"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(format!(
                        "--url '{url}': expected a URL like http://gateway:8080/path"
                    ));
                }
                let method = method.unwrap_or("GET");
                let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("--method '{method}' is not an HTTP method"))?;
                for (k, v) in &headers {
                    http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("--header '{k}' is not a header name"))?;
                    http::HeaderValue::from_str(v)
                        .map_err(|_| format!("--header '{k}': '{v}' is not a header value"))?;
                }
                Ok(Target::Http {
                    url: url.to_string(),
                    method,
                    headers,
                    body,
                    timeout,
                    ca,
                })
            }
            (None, Some(addr)) => {
                let method = method.ok_or("--grpc needs --method pkg.Service/Method")?;
                let path = format!("/{}", method.trim_start_matches('/'));
                match path[1..].split_once('/') {
                    Some((svc, m)) if !svc.is_empty() && !m.is_empty() && !m.contains('/') => {}
                    _ => {
                        return Err(format!(
                            "--method '{method}' is not a gRPC method like pkg.Service/Method"
                        ));
                    }
                }
                for (k, v) in &headers {
                    tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                        k.to_ascii_lowercase().as_bytes(),
                    )
                    .map_err(|_| format!("--header '{k}' is not a metadata key"))?;
                    tonic::metadata::MetadataValue::try_from(v.as_str())
                        .map_err(|_| format!("--header '{k}': '{v}' is not a metadata value"))?;
                }
                Ok(Target::Grpc {
                    addr: addr.to_string(),
                    path,
                    headers,
                    body,
                    timeout,
                })
            }
            _ => Err("give either --url or --grpc".into()),
        }
    }

    /// What a successful answer is called.
    pub fn success(&self) -> &'static str {
        match self {
            Target::Http { .. } => "2xx",
            Target::Grpc { .. } => "OK",
        }
    }

    /// The probe span's name, and what a person reads as the target.
    pub fn describe(&self) -> String {
        match self {
            Target::Http { url, method, .. } => format!("{method} {url}"),
            Target::Grpc { addr, path, .. } => format!("gRPC {addr}{path}"),
        }
    }
}

/// One request the probe sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stage: String,
    /// 32 hex digits.
    pub trace_id: String,
    pub answer: Answer,
}

/// How the entry point answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status, or the gRPC status code's name; none when nothing came back.
    pub status: Option<String>,
    /// 2xx, or gRPC OK.
    pub ok: bool,
    /// Why nothing came back, or the gRPC status message.
    pub error: Option<String>,
}

/// The entry point's client: the system's roots, and `--ca-file` besides for an internal CA.
fn http_client(target: &Target) -> Result<reqwest::Client, ProbeError> {
    let mut b = reqwest::Client::builder();
    if let Target::Http { ca: Some(ca), .. } = target {
        let pem = std::fs::read(ca)
            .map_err(|e| ProbeError::Usage(format!("--ca-file {}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| ProbeError::Usage(format!("--ca-file {}: {e}", ca.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| ProbeError::Usage(format!("cannot build the entry point's client: {e}")))
}

/// Sends every stage's requests, one after another, then exports the probe's spans.
pub async fn send_all(plan: &Plan) -> Result<Vec<Sent>, ProbeError> {
    let exports = Arc::new(Exports::default());
    let provider = provider(plan, &exports)?;
    let tracer = provider.tracer("grayscope-probe");
    let key = plan.stage_header.to_ascii_lowercase();
    let http_client = http_client(&plan.target)?;
    let mut grpc = None;
    let mut sent = Vec::new();
    for stage in &plan.stages {
        for _ in 0..plan.requests {
            let span = tracer
                .span_builder(plan.target.describe())
                .with_kind(SpanKind::Client)
                .with_attributes([KeyValue::new(key.clone(), stage.clone())])
                .start(&tracer);
            let trace_id = span.span_context().trace_id().to_string();
            let cx = Context::new()
                .with_span(span)
                .with_baggage([KeyValue::new(key.clone(), stage.clone())]);
            let mut headers: HashMap<String, String> = HashMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut headers);
            BaggagePropagator::new().inject_context(&cx, &mut headers);
            headers.insert(plan.stage_header.clone(), stage.clone());
            let answer = match &plan.target {
                Target::Http { .. } => http(&http_client, &plan.target, &headers).await,
                Target::Grpc { .. } => grpc_call(&mut grpc, &plan.target, &headers).await,
            };
            let span = cx.span();
            if let Some(s) = &answer.status {
                span.set_attribute(KeyValue::new("grayscope.probe.status", s.clone()));
            }
            if !answer.ok {
                span.set_status(Status::error(
                    answer
                        .error
                        .clone()
                        .or_else(|| answer.status.clone())
                        .unwrap_or_default(),
                ));
            }
            span.end();
            sent.push(Sent {
                stage: stage.clone(),
                trace_id,
                answer,
            });
        }
    }
    // Exported before anything is judged: without its root span a trace looks broken.
    let flushed = tokio::task::spawn_blocking(move || {
        let r = provider.force_flush();
        let _ = provider.shutdown();
        r
    })
    .await;
    let failed = exports.failed.load(Ordering::Relaxed);
    if failed > 0 || !matches!(flushed, Ok(Ok(()))) {
        return Err(ProbeError::Export {
            endpoint: plan.export.url.clone(),
            cause: exports
                .first_error()
                .or_else(|| match flushed {
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                    Ok(Ok(())) => None,
                })
                .unwrap_or_else(|| format!("{failed} spans refused")),
        });
    }
    Ok(sent)
}

/// The probe's OpenTelemetry setup: its own resource, marked as probe traffic.
fn provider(plan: &Plan, exports: &Arc<Exports>) -> Result<SdkTracerProvider, ProbeError> {
    let exporter = exporter(&plan.export, exports).map_err(|cause| ProbeError::Export {
        endpoint: plan.export.url.clone(),
        cause,
    })?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(65_536)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(PROBE_SERVICE)
        .with_attributes([KeyValue::new(PROBE_ATTRIBUTE, true)])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(resource)
        .build())
}

async fn http(
    client: &reqwest::Client,
    target: &Target,
    trace: &HashMap<String, String>,
) -> Answer {
    let Target::Http {
        url,
        method,
        headers,
        body,
        timeout,
        ..
    } = target
    else {
        unreachable!("an HTTP target");
    };
    let mut req = client
        .request(method.clone(), url)
        .timeout(*timeout)
        .body(body.clone());
    for (k, v) in headers.iter().map(|(k, v)| (k, v)).chain(trace.iter()) {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) => Answer {
            status: Some(r.status().as_u16().to_string()),
            ok: r.status().is_success(),
            error: None,
        },
        Err(e) => Answer {
            status: None,
            ok: false,
            error: Some(error_chain(&e)),
        },
    }
}

async fn grpc_call(
    channel: &mut Option<tonic::transport::Channel>,
    target: &Target,
    trace: &HashMap<String, String>,
) -> Answer {
    let Target::Grpc {
        addr,
        path,
        headers,
        body,
        timeout,
    } = target
    else {
        unreachable!("a gRPC target");
    };
    let failed = |e: String| Answer {
        status: None,
        ok: false,
        error: Some(e),
    };
    let ch = match channel {
        Some(c) => c.clone(),
        None => {
            let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
                Ok(e) => e.timeout(*timeout).connect_timeout(*timeout),
                Err(e) => return failed(format!("'{addr}' is not HOST:PORT: {e}")),
            };
            match endpoint.connect().await {
                Ok(c) => channel.insert(c).clone(),
                Err(e) => return failed(error_chain(&e)),
            }
        }
    };
    let mut grpc = tonic::client::Grpc::new(ch);
    if let Err(e) = grpc.ready().await {
        return failed(error_chain(&e));
    }
    let mut req = tonic::Request::new(body.clone());
    for (k, v) in headers.iter().map(|(k, v)| (k, v)).chain(trace.iter()) {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes());
        if let (Ok(key), Ok(value)) = (key, v.parse()) {
            req.metadata_mut().insert(key, value);
        }
    }
    let path = http::uri::PathAndQuery::from_maybe_shared(path.clone())
        .expect("validated as pkg.Service/Method");
    match grpc.unary(req, path, RawCodec).await {
        Ok(_) => Answer {
            status: Some("OK".into()),
            ok: true,
            error: None,
        },
        Err(s) => Answer {
            status: Some(format!("{:?}", s.code())),
            ok: false,
            error: Some(s.message().to_string()),
        },
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Messages as the bytes they are on the wire: the probe needs no generated code for the
/// service it calls.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
