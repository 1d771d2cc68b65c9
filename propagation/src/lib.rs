//! Carrying the release stage through a Rust service: read it at the edge, keep it in the
//! request's OpenTelemetry [`Context`], forward it on every outgoing HTTP and gRPC call, and copy it
//! onto every span so that grayscope can check each hop.
//!
//! The stage travels three ways at once, because different hops read different ones: the
//! `X-Release-Stage` header (gRPC metadata `x-release-stage`), which routers and proxies match on;
//! the W3C `baggage` entry `x-release-stage`, which instrumented services in every language pass on;
//! and, inside a process, the baggage of the current [`Context`].
//!
//! | piece | where it goes | what it does |
//! |---|---|---|
//! | [`StageLayer`] | axum / hyper / tonic **server** | extracts `traceparent`, `baggage` and `X-Release-Stage` into the request's context, applies a default stage at entry services only, and (with a tracer) records a SERVER span |
//! | [`ForwardLayer`] | hyper / tonic **client** | records a CLIENT span and injects `traceparent`, `baggage` and `X-Release-Stage` from the current context |
//! | [`inject`] / [`forward_metadata`] | any other client (reqwest), tonic interceptors | the same injection as one call |
//! | [`BaggageSpanProcessor`] | the tracer provider | copies the stage (and near misses of its key) from baggage onto every span when it starts |
//!
//! # Example
//!
//! An axum service that calls a gRPC service; no handler touches a header:
//!
//! ```no_run
//! use grayscope_propagation::{BaggageSpanProcessor, ForwardLayer, StageLayer};
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! # async fn run(exporter: opentelemetry_otlp::SpanExporter) -> anyhow::Result<()> {
//! let provider = SdkTracerProvider::builder()
//!     .with_span_processor(BaggageSpanProcessor::new()) // the stage on every span
//!     .with_batch_exporter(exporter)
//!     .build();
//! let tracer = provider.tracer("checkout");
//! let channel = tonic::transport::Endpoint::from_static("http://orders:50051").connect_lazy();
//! let orders = tower::ServiceBuilder::new()
//!     .layer(ForwardLayer::new().trace_with(tracer.clone()).peer_service("orders"))
//!     .service(channel); // hand this to the generated client: OrdersClient::new(orders)
//! let app: axum::Router = axum::Router::new()
//!     .route("/checkout", axum::routing::post(|| async { "ok" }))
//!     .layer(StageLayer::entry("stable").trace_with(tracer)); // the edge of the mesh
//! # let _ = (orders, app); Ok(()) }
//! ```
//!
//! In a handler, [`current_stage`] says where to route, and every call made through a
//! [`ForwardLayer`] client carries the stage on. The request's context is also in the request's
//! extensions (`axum::Extension<opentelemetry::Context>`), for work handed to other tasks: a
//! `tokio::spawn` does not inherit it, so wrap the future with
//! [`opentelemetry::context::FutureExt::with_context`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::context::FutureExt as _;
use opentelemetry::global::{BoxedTracer, ObjectSafeTracer};
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

pub mod keys;
mod processor;

pub use processor::BaggageSpanProcessor;

/// The baggage key, gRPC metadata key and (lower-cased) HTTP header that carry the stage.
pub const STAGE_KEY: &str = "x-release-stage";

/// [`STAGE_KEY`] as an HTTP header name.
pub const STAGE_HEADER: HeaderName = HeaderName::from_static(STAGE_KEY);

/// Longest stage value taken from a header; longer ones are ignored as garbage.
const MAX_STAGE_LEN: usize = 128;

/// The request's stage, from the baggage of `cx`.
pub fn stage(cx: &Context) -> Option<StringValue> {
    cx.baggage().get(STAGE_KEY).cloned()
}

/// The stage of the current context: what a handler routes on.
pub fn current_stage() -> Option<StringValue> {
    stage(&Context::current())
}

/// `cx` with its baggage's stage set to `stage` (other baggage entries are kept).
pub fn with_stage(cx: &Context, stage: impl Into<StringValue>) -> Context {
    let mut baggage = copy_baggage(cx);
    let _ = baggage.insert(STAGE_KEY, stage);
    cx.with_baggage(baggage)
}

/// A copy of the baggage of `cx`, to edit (`Baggage` is not `Clone`).
pub fn copy_baggage(cx: &Context) -> Baggage {
    cx.baggage()
        .iter()
        .map(|(k, (v, m))| (k.clone(), (v.clone(), m.clone())))
        .collect()
}

/// The W3C trace context and baggage propagators, which every OpenTelemetry SDK speaks.
fn propagator() -> &'static TextMapCompositePropagator {
    static PROPAGATOR: std::sync::OnceLock<TextMapCompositePropagator> = std::sync::OnceLock::new();
    PROPAGATOR.get_or_init(|| {
        TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ])
    })
}

/// The context an incoming request carries: its `traceparent` and `baggage`, with the stage taken
/// from `X-Release-Stage` when that header is present (it wins over baggage: it is what the caller's
/// router saw), else from baggage, else `default`.
///
/// `default` belongs to entry services only: applied further down, it hides the very break
/// grayscope looks for (and shows up there as `appeared`).
pub fn extract(headers: &HeaderMap, default: Option<&str>) -> Context {
    let cx = propagator().extract(&HeaderExtractor(headers));
    let header = headers
        .get(&STAGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_STAGE_LEN);
    match (header, stage(&cx)) {
        (Some(h), Some(b)) if h == b.as_str() => cx,
        (Some(h), _) => with_stage(&cx, h.to_string()),
        (None, Some(_)) => cx,
        (None, None) => match default {
            Some(d) => with_stage(&cx, d.to_string()),
            None => cx,
        },
    }
}

/// Writes `traceparent`, `baggage` and `X-Release-Stage` for `cx` into outgoing headers: the call
/// for clients without a [`ForwardLayer`] (for reqwest: build a `HeaderMap`, then `.headers(map)`).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    propagator().inject_context(cx, &mut HeaderInjector(headers));
    if let Some(s) = stage(cx)
        && let Ok(v) = HeaderValue::from_str(s.as_str())
    {
        headers.insert(STAGE_HEADER, v);
    }
}

/// A tonic client interceptor forwarding the current context as gRPC metadata:
/// `OrdersClient::with_interceptor(channel, forward_metadata)`. It records no span; a
/// [`ForwardLayer`] on the channel does both. (Feature `tonic`.)
#[cfg(feature = "tonic")]
pub fn forward_metadata(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject(&Context::current(), req.metadata_mut().as_mut());
    Ok(req)
}

/// The tracer a layer records spans with, type-erased so that layers stay one type.
type SharedTracer = Arc<BoxedTracer>;

fn share<T>(tracer: T) -> SharedTracer
where
    T: ObjectSafeTracer + Send + Sync + 'static,
{
    Arc::new(BoxedTracer::new(Box::new(tracer)))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Span name and attributes for a call, following the OpenTelemetry semantic conventions: gRPC
/// calls are named `package.Service/Method`, HTTP ones `METHOD route` (or just `METHOD` when the
/// route is unknown, to keep span names few).
fn describe<B>(req: &Request<B>, route: Option<&str>) -> (String, Vec<KeyValue>) {
    if is_grpc(req.headers()) {
        let path = req.uri().path().trim_start_matches('/');
        let mut attrs = vec![KeyValue::new("rpc.system", "grpc")];
        if let Some((service, method)) = path.split_once('/') {
            attrs.push(KeyValue::new("rpc.service", service.to_string()));
            attrs.push(KeyValue::new("rpc.method", method.to_string()));
        }
        (path.to_string(), attrs)
    } else {
        let method = req.method().as_str().to_string();
        let mut attrs = vec![KeyValue::new("http.request.method", method.clone())];
        match route {
            Some(r) => {
                attrs.push(KeyValue::new("http.route", r.to_string()));
                (format!("{method} {r}"), attrs)
            }
            None => (method, attrs),
        }
    }
}

/// The route that matched a request, when the router says (axum, with feature `axum`).
#[cfg(feature = "axum")]
fn route<B>(req: &Request<B>) -> Option<String> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
}

#[cfg(not(feature = "axum"))]
fn route<B>(_: &Request<B>) -> Option<String> {
    None
}

/// Records how a call ended on its span: the HTTP status, or the gRPC status of a trailers-only
/// response (the usual form of a gRPC error).
fn record_response<B>(span: &opentelemetry::trace::SpanRef<'_>, res: &Response<B>, server: bool) {
    let status = res.status().as_u16();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    let grpc = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if let Some(code) = grpc {
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
    }
    // A server fails on 5xx only; a client on any 4xx/5xx it receives.
    let failed = grpc.is_some_and(|c| c != 0) || status >= 500 || (!server && status >= 400);
    if failed {
        span.set_status(Status::error(format!("status {status}")));
    }
}

/// Ends the span of `cx` with how its call went.
fn end_span<R, E>(cx: &Context, res: &Result<Response<R>, E>, server: bool) {
    let span = cx.span();
    match res {
        Ok(r) => record_response(&span, r, server),
        Err(_) if server => span.set_status(Status::error("the service failed")),
        Err(_) => span.set_status(Status::error("the call failed")),
    }
    span.end();
}

/// Server side: puts each request's context (trace, baggage, stage) in place for the handler.
///
/// Works for anything built on `tower` and `http`: an axum `Router` (`.layer(..)`), a hyper
/// service, or a tonic server (`Server::builder().layer(..)`), where gRPC metadata is read from
/// the same HTTP/2 headers.
#[derive(Clone)]
pub struct StageLayer {
    default: Option<Arc<str>>,
    tracer: Option<SharedTracer>,
}

impl StageLayer {
    /// For the service where requests enter the mesh: a request that arrives without a stage gets
    /// `default`.
    pub fn entry(default: impl Into<String>) -> Self {
        StageLayer {
            default: Some(Arc::from(default.into())),
            tracer: None,
        }
    }

    /// For every other service: a request without a stage stays without one, so that a caller
    /// that lost the stage shows up as `missing` instead of being papered over.
    pub fn downstream() -> Self {
        StageLayer {
            default: None,
            tracer: None,
        }
    }

    /// Also records a SERVER span per request, a child of the caller's span.
    pub fn trace_with<T>(mut self, tracer: T) -> Self
    where
        T: ObjectSafeTracer + Send + Sync + 'static,
    {
        self.tracer = Some(share(tracer));
        self
    }
}

impl<S> tower_layer::Layer<S> for StageLayer {
    type Service = StageService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StageService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`StageLayer`] wraps around a server.
#[derive(Clone)]
pub struct StageService<S> {
    inner: S,
    layer: StageLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<Request<B>> for StageService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut cx = extract(req.headers(), self.layer.default.as_deref());
        let traced = self.layer.tracer.is_some();
        if let Some(tracer) = &self.layer.tracer {
            let (name, attrs) = describe(&req, route(&req).as_deref());
            let span = tracer
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .with_attributes(attrs)
                .start_with_context(tracer.as_ref(), &cx);
            cx = cx.with_span(span);
        }
        req.extensions_mut().insert(cx.clone());
        let fut = {
            let _attached = cx.clone().attach();
            self.inner.call(req)
        };
        Box::pin(async move {
            let res = fut.with_context(cx.clone()).await;
            if traced {
                end_span(&cx, &res, true);
            }
            res
        })
    }
}

/// Client side: records a CLIENT span for each outgoing call (with a tracer) and injects
/// `traceparent`, `baggage` and `X-Release-Stage` from the caller's current context.
///
/// Wrap the transport once (a hyper-util `Client`, a tonic `Channel`) and every call made through
/// it forwards the stage; the context is read when the call is made, which inside a handler served
/// by [`StageLayer`] is the request's.
#[derive(Clone, Default)]
pub struct ForwardLayer {
    tracer: Option<SharedTracer>,
    peer_service: Option<StringValue>,
}

impl ForwardLayer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also records a CLIENT span per call; the callee's span becomes its child.
    pub fn trace_with<T>(mut self, tracer: T) -> Self
    where
        T: ObjectSafeTracer + Send + Sync + 'static,
    {
        self.tracer = Some(share(tracer));
        self
    }

    /// Names the callee on the CLIENT span (`peer.service`), so that a callee that exports no
    /// spans still appears in grayscope's service graph by this name.
    pub fn peer_service(mut self, name: impl Into<String>) -> Self {
        self.peer_service = Some(StringValue::from(name.into()));
        self
    }
}

impl<S> tower_layer::Layer<S> for ForwardLayer {
    type Service = ForwardService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ForwardService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ForwardLayer`] wraps around a client.
#[derive(Clone)]
pub struct ForwardService<S> {
    inner: S,
    layer: ForwardLayer,
}

impl<S, B, R> tower_service::Service<Request<B>> for ForwardService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut cx = Context::current();
        let traced = self.layer.tracer.is_some();
        if let Some(tracer) = &self.layer.tracer {
            let (name, mut attrs) = describe(&req, None);
            if let Some(host) = req.uri().host() {
                attrs.push(KeyValue::new("server.address", host.to_string()));
            }
            if let Some(port) = req.uri().port_u16() {
                attrs.push(KeyValue::new("server.port", i64::from(port)));
            }
            if let Some(peer) = &self.layer.peer_service {
                attrs.push(KeyValue::new("peer.service", peer.clone()));
            }
            let span = tracer
                .span_builder(name)
                .with_kind(SpanKind::Client)
                .with_attributes(attrs)
                .start_with_context(tracer.as_ref(), &cx);
            cx = cx.with_span(span);
        }
        inject(&cx, req.headers_mut());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if traced {
                end_span(&cx, &res, false);
            }
            res
        })
    }
}

#[cfg(test)]
mod tests;
