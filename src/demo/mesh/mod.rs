//! The demo's services: real axum and tonic servers on loopback, each with its own tracer provider,
//! calling each other through [`grayscope_propagation`] clients. A fault changes exactly one call.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::export::{Exports, exporter};
use super::{DemoError, DemoOptions, FaultKind, Propagation, Svc};
use grayscope_propagation::{
    self as propagation, BaggageSpanProcessor, ForwardLayer, ForwardService, STAGE_HEADER,
    STAGE_KEY, StageLayer,
};

use super::proto as pb;
use capture::CaptureLayer;
use faulty::FaultService;
use otel::{bind, bind_at, provider};
use services::{
    GatewayService, InventoryService, OrdersService, UsersService, charge, checkout, place_order,
};

use pb::inventory_client::InventoryClient;
use pb::inventory_server::{Inventory, InventoryServer};
use pb::orders_client::OrdersClient;
use pb::orders_server::{Orders, OrdersServer};

mod broker;
mod capture;
mod faulty;
mod otel;
mod services;

/// The stage the gateway gives untagged requests.
const DEFAULT_STAGE: &str = "stable";
const CANARY: &str = "canary";
/// The misspelt baggage key of the `typo` fault.
const TYPO_KEY: &str = "x-release-stag";

type HttpTransport = Client<HttpConnector, Full<Bytes>>;
type HttpClient = ForwardService<FaultService<HttpTransport>>;
type GrpcChannel = ForwardService<FaultService<tonic::transport::Channel>>;

/// A failed call between two services of the mesh.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CallError(String);

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        CallError(format!("gRPC {}: {}", s.code(), s.message()))
    }
}

impl From<CallError> for tonic::Status {
    fn from(e: CallError) -> Self {
        tonic::Status::unavailable(e.0)
    }
}

fn bad_gateway(e: CallError) -> (StatusCode, String) {
    (StatusCode::BAD_GATEWAY, e.0)
}

/// An HTTP service instance and a client for it.
#[derive(Clone)]
struct HttpTarget {
    client: HttpClient,
    base: Arc<str>,
}

impl HttpTarget {
    async fn post(self, path: String, body: Value) -> Result<Value, CallError> {
        let req = Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| CallError(e.to_string()))?;
        let res = self
            .client
            .oneshot(req)
            .await
            .map_err(|e| CallError(e.to_string()))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(CallError(format!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| CallError(e.to_string()))
    }
}

/// One caller->callee call of the mesh: a client per instance of the callee, and the fault (if
/// any) that breaks this call. Routing by stage happens here, as a service's client-side load
/// balancer would do it.
#[derive(Clone)]
struct Edge<C> {
    stable: C,
    canary: Option<C>,
    fault: Option<FaultKind>,
}

impl<C: Clone> Edge<C> {
    /// The instance for the current request: canary requests go to a canary instance when the
    /// callee has one (unless the fault is a misroute).
    fn route(&self) -> C {
        let canary = propagation::current_stage().is_some_and(|s| s.as_str() == CANARY);
        match &self.canary {
            Some(c) if canary && self.fault != Some(FaultKind::Misroute) => c.clone(),
            _ => self.stable.clone(),
        }
    }

    /// Makes the call `f` builds, the way the fault says: with the request's context (the
    /// default), without its baggage (`missing`), or from a detached task (`lost-context`).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<T, CallError>> + Send + 'static,
        T: Send + 'static,
    {
        let call = f(self.route());
        match self.fault {
            Some(FaultKind::Missing) => {
                call.with_context(Context::current().with_cleared_baggage())
                    .await
            }
            // The bug as it is written in real services: a spawned task starts with an empty
            // context, so its call starts a new trace.
            Some(FaultKind::LostContext) => tokio::spawn(call)
                .await
                .map_err(|e| CallError(format!("task failed: {e}")))?,
            _ => call.await,
        }
    }
}

/// The running services.
pub(super) struct Mesh {
    providers: Vec<SdkTracerProvider>,
    servers: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    gateway: SocketAddr,
    /// The stable orders instance (gRPC).
    orders: SocketAddr,
    layout: String,
    /// Messages through the broker, published and handled.
    messages: Arc<broker::Tally>,
}

/// Builds clients for calls made by one service (with its tracer) under the faults of the run.
struct Caller<'a> {
    service: Svc,
    tracer: SdkTracer,
    options: &'a DemoOptions,
    http: HttpTransport,
}

impl Caller<'_> {
    fn fault(&self, callee: Svc) -> Option<FaultKind> {
        self.options
            .faults
            .iter()
            .find(|f| (f.caller, f.callee) == (self.service, callee))
            .map(|f| f.kind)
    }

    /// Whether calls carry the stage as `X-Release-Stage` only (the hand-built style).
    fn header_only(&self) -> bool {
        self.options.propagation == Propagation::Header
    }

    /// Records the stage on this service's SERVER spans as a captured header, in the hand-built
    /// style.
    fn capture(&self) -> CaptureLayer {
        CaptureLayer {
            on: self.header_only(),
            entry: self.service == Svc::Gateway,
        }
    }

    fn layer(&self, callee: Svc) -> ForwardLayer {
        ForwardLayer::new()
            .trace_with(self.tracer.clone())
            .peer_service(callee.name())
    }

    fn http(&self, callee: Svc, addr: SocketAddr) -> Edge<HttpTarget> {
        let fault = self.fault(callee);
        let client = tower::ServiceBuilder::new()
            .layer(self.layer(callee))
            .service(FaultService {
                inner: self.http.clone(),
                fault,
                header_only: self.header_only(),
            });
        Edge {
            stable: HttpTarget {
                client,
                base: Arc::from(format!("http://{addr}")),
            },
            canary: None,
            fault,
        }
    }

    fn grpc(
        &self,
        callee: Svc,
        stable: SocketAddr,
        canary: Option<SocketAddr>,
    ) -> Edge<GrpcChannel> {
        let fault = self.fault(callee);
        let channel = |addr: SocketAddr| {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("a socket address is a valid URI")
                .connect_timeout(Duration::from_secs(2))
                .connect_lazy();
            tower::ServiceBuilder::new()
                .layer(self.layer(callee))
                .service(FaultService {
                    inner: channel,
                    fault,
                    header_only: self.header_only(),
                })
        };
        Edge {
            stable: channel(stable),
            canary: canary.map(channel),
            fault,
        }
    }
}

impl Mesh {
    pub(super) async fn start(
        options: &DemoOptions,
        exports: &Arc<Exports>,
        broker_url: Option<&str>,
    ) -> Result<Mesh, DemoError> {
        let mut mesh = Mesh {
            providers: Vec::new(),
            servers: Vec::new(),
            stop: CancellationToken::new(),
            gateway: ([127, 0, 0, 1], 0).into(),
            orders: ([127, 0, 0, 1], 0).into(),
            layout: String::new(),
            messages: Arc::default(),
        };
        let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let caller = |m: &mut Mesh, service: Svc, stage: &str| {
            let p = provider(options, exports, service, stage)?;
            let tracer = p.tracer("grayscope-demo");
            m.providers.push(p);
            Ok::<_, DemoError>(Caller {
                service,
                tracer,
                options,
                http: http.clone(),
            })
        };

        // Leaves first: every caller needs its callees' addresses.
        let payments = caller(&mut mesh, Svc::Payments, DEFAULT_STAGE)?;
        let payments_addr = mesh.serve_http(
            bind("payments").await?,
            axum::Router::new()
                .route("/charge", axum::routing::post(charge))
                .layer(payments.capture())
                .layer(StageLayer::downstream().trace_with(payments.tracer.clone())),
        );

        let inventory = caller(&mut mesh, Svc::Inventory, DEFAULT_STAGE)?;
        let inventory_addr = mesh.serve_grpc(
            bind("inventory").await?,
            StageLayer::downstream().trace_with(inventory.tracer.clone()),
            inventory.capture(),
            InventoryServer::new(InventoryService),
        );

        // The messaging hop: billing's consumer groups subscribe before anything is published.
        let nats = match broker_url {
            Some(url) => Some(
                async_nats::connect(url)
                    .await
                    .map_err(|e| DemoError::Broker(format!("connecting to {url}: {e}")))?,
            ),
            None => None,
        };
        if let Some(client) = &nats {
            for stage in [DEFAULT_STAGE, CANARY] {
                let billing = caller(&mut mesh, Svc::Billing, stage)?;
                let fault = options
                    .faults
                    .iter()
                    .find(|f| (f.caller, f.callee) == super::BROKER_EDGE)
                    .map(|f| f.kind);
                let task = broker::consume(
                    client,
                    billing.tracer,
                    stage,
                    fault,
                    mesh.stop.clone(),
                    mesh.messages.clone(),
                )
                .await?;
                mesh.servers.push(task);
            }
        }

        let mut orders_addrs = Vec::new();
        for stage in [DEFAULT_STAGE, CANARY] {
            let c = caller(&mut mesh, Svc::Orders, stage)?;
            let svc = OrdersService {
                publisher: nats.clone().map(|client| broker::Publisher {
                    client,
                    tracer: c.tracer.clone(),
                    fault: c.fault(Svc::Billing),
                    tally: mesh.messages.clone(),
                }),
                stage: stage.to_string(),
                next_order: Arc::new(AtomicU64::new(1)),
                tracer: c.tracer.clone(),
                db: services::orders_db()?,
                payments: c.http(Svc::Payments, payments_addr),
                inventory: c
                    .grpc(Svc::Inventory, inventory_addr, None)
                    .map(InventoryClient::new),
            };
            orders_addrs.push(mesh.serve_grpc(
                bind("orders").await?,
                StageLayer::downstream().trace_with(c.tracer.clone()),
                c.capture(),
                OrdersServer::new(svc),
            ));
        }
        let (orders_stable, orders_canary) = (orders_addrs[0], orders_addrs[1]);
        mesh.orders = orders_stable;

        let users = caller(&mut mesh, Svc::Users, DEFAULT_STAGE)?;
        let users_state = Arc::new(UsersService {
            orders: users
                .grpc(Svc::Orders, orders_stable, Some(orders_canary))
                .map(OrdersClient::new),
        });
        let users_addr = mesh.serve_http(
            bind("users").await?,
            axum::Router::new()
                .route("/users/{user}/orders", axum::routing::post(place_order))
                .with_state(users_state)
                .layer(users.capture())
                .layer(StageLayer::downstream().trace_with(users.tracer.clone())),
        );

        let gateway = caller(&mut mesh, Svc::Gateway, DEFAULT_STAGE)?;
        let gateway_state = Arc::new(GatewayService {
            users: gateway.http(Svc::Users, users_addr),
            orders: gateway
                .grpc(Svc::Orders, orders_stable, Some(orders_canary))
                .map(OrdersClient::new),
        });
        mesh.gateway = mesh.serve_http(
            bind_at(
                "gateway",
                options.gateway.unwrap_or(([127, 0, 0, 1], 0).into()),
            )
            .await?,
            axum::Router::new()
                .route("/checkout", axum::routing::get(checkout))
                .with_state(gateway_state)
                .layer(gateway.capture())
                .layer(StageLayer::entry(DEFAULT_STAGE).trace_with(gateway.tracer.clone()))
                // Web pages of any origin may call it with their trace context and stage, as a
                // front end instrumented with the OpenTelemetry web SDK does; the browser's
                // preflight is answered here, before any span.
                .layer(
                    tower_http::cors::CorsLayer::new()
                        .allow_origin(tower_http::cors::Any)
                        .allow_methods([axum::http::Method::GET])
                        .allow_headers([
                            axum::http::HeaderName::from_static("traceparent"),
                            axum::http::HeaderName::from_static("tracestate"),
                            axum::http::HeaderName::from_static("baggage"),
                            axum::http::HeaderName::from_static("x-release-stage"),
                        ]),
                ),
        );

        mesh.layout = format!(
            "  gateway    HTTP http://{}  (entry: untagged requests get stage '{DEFAULT_STAGE}')\n\
             \x20 users      HTTP http://{users_addr}\n\
             \x20 orders     gRPC {orders_stable} (stable), {orders_canary} (canary)\n\
             \x20 payments   HTTP http://{payments_addr}\n\
             \x20 inventory  gRPC {inventory_addr}\n\
             \x20 calls: gateway->users->orders->{{payments, inventory}}, gateway->orders\n",
            mesh.gateway
        );
        if let Some(url) = broker_url {
            mesh.layout.push_str(&format!(
                "  billing    NATS {url}: consumer groups billing (stable, orders.placed.stable) and billing_gray (canary, orders.placed.canary)\n  messages: orders publishes OrderPlaced for every order, routed by stage\n"
            ));
        }
        Ok(mesh)
    }

    pub(super) fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub(super) fn orders_addr(&self) -> SocketAddr {
        self.orders
    }

    pub(super) fn describe(&self) -> String {
        self.layout.clone()
    }

    fn serve_http(&mut self, listener: TcpListener, router: axum::Router) -> SocketAddr {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let stop = self.stop.clone();
        self.servers.push(tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::warn!("demo service on {addr} failed: {e}");
            }
        }));
        addr
    }

    fn serve_grpc<S>(
        &mut self,
        listener: TcpListener,
        layer: StageLayer,
        capture: CaptureLayer,
        svc: S,
    ) -> SocketAddr
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let stop = self.stop.clone();
        self.servers.push(tokio::spawn(async move {
            // The layer added last is the inner one: capture runs inside the SERVER span.
            let serve = tonic::transport::Server::builder()
                .layer(layer)
                .layer(capture)
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.cancelled_owned(),
                );
            if let Err(e) = serve.await {
                tracing::warn!("demo service on {addr} failed: {e}");
            }
        }));
        addr
    }

    /// Stops the servers, then flushes and shuts down every tracer provider (so that nothing a
    /// service recorded is lost).
    pub(super) async fn stop(self) {
        // Messages published for answered requests are handled before the consumers stop.
        self.messages.drained(Duration::from_secs(5)).await;
        self.stop.cancel();
        for server in self.servers {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let providers = self.providers;
        let flushed = tokio::task::spawn_blocking(move || {
            for p in providers {
                if let Err(e) = p.shutdown() {
                    tracing::warn!("demo: flushing spans failed: {e}");
                }
            }
        })
        .await;
        if let Err(e) = flushed {
            tracing::warn!("demo: flushing spans failed: {e}");
        }
    }
}

impl<C> Edge<C> {
    fn map<D>(self, f: impl Fn(C) -> D) -> Edge<D> {
        Edge {
            stable: f(self.stable),
            canary: self.canary.map(&f),
            fault: self.fault,
        }
    }
}
