//! `grayscope_propagation` across three real servers on loopback: an axum entry service calls a
//! tonic service, which calls an axum service. The stage must survive HTTP -> gRPC -> HTTP, and a
//! hop that skips the forwarding (it passes the trace context only, as plain tracing
//! instrumentation does) must lose it where grayscope says it did.

mod common;

use std::net::SocketAddr;

use axum::extract::{Query, State};
use bytes::Bytes;
use common::*;
use grayscope::demo::proto::orders_client::OrdersClient;
use grayscope::demo::proto::orders_server::{Orders, OrdersServer};
use grayscope::demo::proto::{
    ListOrdersReply, ListOrdersRequest, PlaceOrderReply, PlaceOrderRequest,
};
use grayscope_propagation::{
    self as propagation, BaggageSpanProcessor, ForwardLayer, ForwardService, StageLayer,
};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderInjector;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tower::ServiceExt;

fn provider(collector: SocketAddr, service: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{collector}"))
        .build()
        .unwrap();
    SdkTracerProvider::builder()
        .with_span_processor(BaggageSpanProcessor::new())
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("deployment.stage", "stable"))
                .build(),
        )
        .build()
}

async fn serve_http(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn body_text(res: http::Response<hyper::body::Incoming>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The gRPC hop in the middle. `user = "skip"` asks it to call the ledger the way a service with
/// tracing but without grayscope's forwarding does: its own CLIENT span and `traceparent`, nothing
/// else.
#[derive(Clone)]
struct Middle {
    ledger: String,
    forwarding: ForwardService<Client<HttpConnector, Empty<Bytes>>>,
    plain: Client<HttpConnector, Empty<Bytes>>,
    tracer: SdkTracer,
}

#[tonic::async_trait]
impl Orders for Middle {
    async fn list_orders(
        &self,
        req: tonic::Request<ListOrdersRequest>,
    ) -> Result<tonic::Response<ListOrdersReply>, tonic::Status> {
        let request = http::Request::get(&self.ledger).body(Empty::new()).unwrap();
        let seen = if req.into_inner().user == "skip" {
            let cx = Context::current();
            let span = self
                .tracer
                .span_builder("GET")
                .with_kind(SpanKind::Client)
                .start_with_context(&self.tracer, &cx);
            let cx = cx.with_span(span);
            let mut request = request;
            TraceContextPropagator::new()
                .inject_context(&cx, &mut HeaderInjector(request.headers_mut()));
            let res = self.plain.request(request).await.unwrap();
            cx.span().end();
            body_text(res).await
        } else {
            body_text(self.forwarding.clone().oneshot(request).await.unwrap()).await
        };
        Ok(tonic::Response::new(ListOrdersReply {
            order_ids: vec![],
            served_by: seen,
        }))
    }

    async fn place_order(
        &self,
        _: tonic::Request<PlaceOrderRequest>,
    ) -> Result<tonic::Response<PlaceOrderReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

#[derive(serde::Deserialize)]
struct Mode {
    mode: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stage_survives_http_grpc_http_and_is_lost_where_forwarding_is_skipped() {
    let c = spawn_collector(test_args()).await;
    let providers = [
        provider(c.otlp_grpc, "front"),
        provider(c.otlp_grpc, "orders"),
        provider(c.otlp_grpc, "ledger"),
    ];
    let [front, orders, ledger] = providers.clone().map(|p| p.tracer("propagation-test"));

    // ledger (HTTP): answers with the stage its handler sees.
    let ledger_addr = serve_http(
        axum::Router::new()
            .route(
                "/ledger",
                axum::routing::get(|| async {
                    propagation::current_stage().map_or("none".to_string(), |s| s.to_string())
                }),
            )
            .layer(StageLayer::downstream().trace_with(ledger)),
    )
    .await;

    // orders (gRPC): calls the ledger.
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let middle = Middle {
        ledger: format!("http://{ledger_addr}/ledger"),
        forwarding: tower::ServiceBuilder::new()
            .layer(
                ForwardLayer::new()
                    .trace_with(orders.clone())
                    .peer_service("ledger"),
            )
            .service(http.clone()),
        plain: http,
        tracer: orders.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let orders_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(StageLayer::downstream().trace_with(orders))
            .add_service(OrdersServer::new(middle))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    // front (HTTP, entry): calls orders over gRPC and returns what the ledger saw.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{orders_addr}"))
        .unwrap()
        .connect_lazy();
    let orders_client = OrdersClient::new(
        tower::ServiceBuilder::new()
            .layer(
                ForwardLayer::new()
                    .trace_with(front.clone())
                    .peer_service("orders"),
            )
            .service(channel),
    );
    let front_addr = serve_http(
        axum::Router::new()
            .route(
                "/front",
                axum::routing::get(
                    |State(mut client): State<OrdersClient<_>>, Query(m): Query<Mode>| async move {
                        let reply = client
                            .list_orders(ListOrdersRequest { user: m.mode })
                            .await
                            .unwrap();
                        reply.into_inner().served_by
                    },
                ),
            )
            .with_state(orders_client)
            .layer(StageLayer::entry("stable").trace_with(front)),
    )
    .await;

    let get = |mode: &str, stage: Option<&str>| {
        let mut req = reqwest::Client::new().get(format!("http://{front_addr}/front?mode={mode}"));
        if let Some(s) = stage {
            req = req.header("X-Release-Stage", s);
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("forward", Some("canary")).await, "canary");
    // The entry's default travels as far as an explicit tag.
    assert_eq!(get("forward", None).await, "stable");
    // Baggage alone (as another language's SDK sends it) is read too.
    let from_baggage = reqwest::Client::new()
        .get(format!("http://{front_addr}/front?mode=forward"))
        .header("baggage", "x-release-stage=canary")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(from_baggage, "canary");
    // Skipping the forwarding loses the stage at the ledger.
    assert_eq!(get("skip", Some("canary")).await, "none");

    tokio::task::spawn_blocking(move || {
        for p in providers {
            p.force_flush().unwrap();
        }
    })
    .await
    .unwrap();
    c.flush().await;

    // grayscope agrees: one finding, on the hop that skipped forwarding, and nothing upstream.
    assert_eq!(
        findings(&c).await,
        vec![f("missing", "cross_service", "orders", "ledger", true)]
    );
    let graph = get_json(&c, "/api/v1/graph").await;
    let front_orders = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "front" && e["callee"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(front_orders["calls"], 4);
    assert_eq!(front_orders["first_breaks"], serde_json::json!({}));
    c.shutdown().await.unwrap();
}
