//! Every verdict of the verdict table, each from its own scenario: services instrumented with the
//! OpenTelemetry SDK export real OTLP to an in-process collector, and one hop is broken the way a real
//! service breaks it. Each test asserts the exact set of findings: the right verdict on the right
//! edge, and nothing anywhere else.

mod common;

use std::collections::HashMap;

use common::*;
use grayscope::app::Collector;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceState,
};
use opentelemetry::{Context, KeyValue};

/// gateway -> users -> orders; each service exports over a different protocol.
struct Mesh {
    gateway: Service,
    users: Service,
    orders: Service,
}

impl Mesh {
    fn new(c: &Collector) -> Self {
        Mesh {
            gateway: Service::new(c, "gateway", Some("stable"), Export::Grpc),
            users: Service::new(c, "users", Some("stable"), Export::HttpProtobufGzip),
            orders: Service::new(c, "orders", Some("stable"), Export::HttpJson),
        }
    }

    fn all(&self) -> Vec<&Service> {
        vec![&self.gateway, &self.users, &self.orders]
    }
}

/// `caller` calls `callee`: a CLIENT span in the caller under `from`, the headers on the wire
/// (edited by `edit`, where a test breaks the hop), and a SERVER span in the callee under what it
/// extracts. Returns (client, server) contexts.
fn call(
    caller: &Service,
    from: &Context,
    callee: &Service,
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, String>),
) -> (Context, Context) {
    let client = caller.span(name, SpanKind::Client, from);
    let mut headers = inject(&client);
    edit(&mut headers);
    let server = callee.span(name, SpanKind::Server, &extract(&headers));
    (client, server)
}

fn keep(_: &mut HashMap<String, String>) {}

/// A whole request through the mesh: gateway receives it, calls users, which calls orders.
fn request(
    m: &Mesh,
    stage: Option<&str>,
    users_to_orders: impl FnOnce(&mut HashMap<String, String>),
) {
    let gw = m
        .gateway
        .span("GET /checkout", SpanKind::Server, &entry(stage));
    let (gc, us) = call(&m.gateway, &gw, &m.users, "GET /users/me", keep);
    let (uc, os) = call(&m.users, &us, &m.orders, "POST /orders", users_to_orders);
    for cx in [&os, &uc, &us, &gc, &gw] {
        end(cx);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_traffic_over_every_protocol_has_no_findings() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    for i in 0..20 {
        request(&m, Some(if i % 2 == 0 { "canary" } else { "stable" }), keep);
    }
    deliver(&c, &m.all()).await;
    assert_eq!(findings(&c).await, vec![]);

    let g = get_json(&c, "/api/v1/graph").await;
    let edge = |caller: &str, callee: &str| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["caller"] == caller && e["callee"] == callee)
            .cloned()
    };
    let gu = edge("gateway", "users").expect("gateway -> users");
    assert_eq!(gu["calls"], 20);
    assert_eq!(gu["stages"]["canary"]["calls"], 10);
    assert_eq!(gu["stages"]["stable"]["calls"], 10);
    assert_eq!(gu["consistency"], 1.0);
    assert_eq!(
        edge("users", "orders").expect("users -> orders")["verdicts"]["ok"],
        40,
        "20 calls + 20 in-process edges"
    );
    let canary = get_json(&c, "/api/v1/graph?stage=canary").await;
    assert!(
        canary["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["calls"] == 10)
    );
    assert_eq!(
        metric(&c, "grayscope_traces_finalised_total{reason=\"shutdown\"}").await,
        20.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_across_services_when_the_callee_never_gets_the_baggage() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    request(&m, Some("canary"), |h| {
        h.remove("baggage");
    });
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![f("missing", "cross_service", "users", "orders", true)]
    );
    let v = get_json(&c, "/api/v1/findings").await;
    let detail = v["findings"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("orders did not receive or did not extract the stage"),
        "{detail}"
    );
    assert_eq!(v["findings"][0]["caller"]["stage"], "canary");
    assert_eq!(v["findings"][0]["callee"]["stage"], serde_json::Value::Null);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_in_process_when_an_outgoing_call_drops_the_request_context() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    let gw = m
        .gateway
        .span("GET /checkout", SpanKind::Server, &entry(Some("canary")));
    let (gc, us) = call(&m.gateway, &gw, &m.users, "GET /users/me", keep);
    // The handler builds its outgoing call from the trace alone: the baggage is not carried.
    let bare = Context::new().with_remote_span_context(us.span().span_context().clone());
    let (uc, os) = call(&m.users, &bare, &m.orders, "POST /orders", keep);
    for cx in [&os, &uc, &us, &gc, &gw] {
        end(cx);
    }
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![f("missing", "in_process", "users", "orders", true)]
    );
    let v = get_json(&c, "/api/v1/findings?scope=in_process").await;
    let detail = v["findings"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("users made an outgoing call without the request's context"),
        "{detail}"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_when_a_hop_overwrites_the_stage() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    request(&m, Some("canary"), |h| {
        h.insert("baggage".into(), format!("{STAGE}=stable"));
    });
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![f("changed", "cross_service", "users", "orders", true)]
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn appeared_when_a_default_is_applied_mid_chain() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    let gw = m
        .gateway
        .span("GET /checkout", SpanKind::Server, &entry(None));
    let gc = m.gateway.span("GET /users/me", SpanKind::Client, &gw);
    // users is not an entry service but applies the `stable` default anyway.
    let extracted = wire(&gc).with_baggage(vec![KeyValue::new(STAGE, "stable")]);
    let us = m.users.span("GET /users/me", SpanKind::Server, &extracted);
    let (uc, os) = call(&m.users, &us, &m.orders, "POST /orders", keep);
    for cx in [&os, &uc, &us, &gc, &gw] {
        end(cx);
    }
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![f("appeared", "cross_service", "gateway", "users", true)]
    );
    let v = get_json(&c, "/api/v1/findings").await;
    assert_eq!(v["findings"][0]["severity"], "low");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn key_mismatch_when_the_key_is_misspelt_on_the_wire() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    request(&m, Some("canary"), |h| {
        let b = h
            .get("baggage")
            .unwrap()
            .replace("x-release-stage=", "x-release-stag=");
        h.insert("baggage".into(), b);
    });
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![f("key_mismatch", "cross_service", "users", "orders", true)]
    );
    let v = get_json(&c, "/api/v1/findings?kind=key_mismatch").await;
    let detail = v["findings"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("'x-release-stag'='canary'"), "{detail}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_value_outside_the_allowed_list() {
    let mut args = test_args();
    args.verify.allowed_stages = Some(vec!["stable".into(), "canary".into()]);
    let c = spawn_collector(args).await;
    let m = Mesh::new(&c);
    let gw = m
        .gateway
        .span("GET /checkout", SpanKind::Server, &entry(Some("canary")));
    let (gc, us) = call(&m.gateway, &gw, &m.users, "GET /users/me", |h| {
        h.insert("baggage".into(), format!("{STAGE}=canry"));
    });
    let (uc, os) = call(&m.users, &us, &m.orders, "POST /orders", keep);
    for cx in [&os, &uc, &us, &gc, &gw] {
        end(cx);
    }
    deliver(&c, &m.all()).await;
    // The bad value is judged on every edge it reaches; only the first is a break.
    assert_eq!(
        findings(&c).await,
        vec![
            f("invalid_value", "cross_service", "gateway", "users", true),
            f("invalid_value", "cross_service", "users", "orders", false),
            f("invalid_value", "in_process", "users", "orders", false),
        ]
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn misrouted_when_a_canary_request_reaches_a_stable_instance() {
    let c = spawn_collector(test_args()).await;
    let gateway = Service::new(&c, "gateway", Some("stable"), Export::Grpc);
    let users = Service::new(&c, "users", Some("stable"), Export::Grpc);
    let orders_stable = Service::new(&c, "orders", Some("stable"), Export::HttpProtobuf);
    let orders_canary = Service::new(&c, "orders", Some("canary"), Export::HttpProtobuf);
    // The canary instance of orders is live: it served another request.
    end(&orders_canary.span("GET /health", SpanKind::Server, &Context::new()));

    let gw = gateway.span("GET /checkout", SpanKind::Server, &entry(Some("canary")));
    let (gc, us) = call(&gateway, &gw, &users, "GET /users/me", keep);
    let (uc, os) = call(&users, &us, &orders_stable, "POST /orders", keep);
    for cx in [&os, &uc, &us, &gc, &gw] {
        end(cx);
    }
    deliver(&c, &[&orders_canary, &gateway, &users, &orders_stable]).await;
    assert_eq!(
        findings(&c).await,
        vec![f("misrouted", "cross_service", "users", "orders", true)]
    );
    let v = get_json(&c, "/api/v1/findings").await;
    assert_eq!(v["findings"][0]["callee"]["instance_stage"], "stable");
    let g = get_json(&c, "/api/v1/graph?stage=canary").await;
    let e = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["callee"] == "orders")
        .unwrap();
    assert_eq!(e["routing"][0]["stage"], "canary");
    assert_eq!(e["routing"][0]["instance_stage"], "stable");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn not_misrouted_when_no_canary_instance_is_live() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    request(&m, Some("canary"), keep);
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![],
        "stable is the only instance: the request had nowhere else to go"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_trace_when_the_parent_span_never_arrives() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    let gw = m
        .gateway
        .span("GET /checkout", SpanKind::Server, &entry(Some("canary")));
    let (gc, us) = call(&m.gateway, &gw, &m.users, "GET /users/me", keep);
    // users' client span is not exported; orders' parent is a span nobody sends.
    let ghost = SpanContext::new(
        us.span().span_context().trace_id(),
        SpanId::from_bytes([7; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let os = m.orders.span(
        "POST /orders",
        SpanKind::Server,
        &wire(&us).with_remote_span_context(ghost),
    );
    for cx in [&os, &us, &gc, &gw] {
        end(cx);
    }
    deliver(&c, &m.all()).await;
    assert_eq!(
        findings(&c).await,
        vec![f("broken_trace", "cross_service", "-", "orders", true)]
    );
    let v = get_json(&c, "/api/v1/findings?kind=broken_trace").await;
    assert_eq!(v["findings"][0]["caller"], serde_json::Value::Null);
    assert!(
        v["findings"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("0707070707070707 of orders 'POST /orders' never arrived")
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_trace_when_an_outgoing_call_starts_a_new_trace() {
    let c = spawn_collector(test_args()).await;
    let orders = Service::new(&c, "orders", Some("stable"), Export::Grpc);
    let inventory = Service::new(&c, "inventory", Some("stable"), Export::HttpProtobuf);
    let os = orders.span("POST /orders", SpanKind::Server, &entry(Some("canary")));
    // A detached task makes the call: no inbound context at all.
    let (oc, is) = call(&orders, &Context::new(), &inventory, "GET /stock", keep);
    for cx in [&is, &oc, &os] {
        end(cx);
    }
    deliver(&c, &[&orders, &inventory]).await;
    assert_eq!(
        findings(&c).await,
        vec![f("broken_trace", "in_process", "orders", "inventory", true)]
    );
    c.shutdown().await.unwrap();

    // A job that is expected to start traces by calling out is exempt.
    let mut args = test_args();
    args.verify.exempt_roots = Some(vec!["orders".into()]);
    let c = spawn_collector(args).await;
    let orders = Service::new(&c, "orders", Some("stable"), Export::Grpc);
    let inventory = Service::new(&c, "inventory", Some("stable"), Export::HttpProtobuf);
    let (oc, is) = call(&orders, &Context::new(), &inventory, "GET /stock", keep);
    end(&is);
    end(&oc);
    deliver(&c, &[&orders, &inventory]).await;
    assert_eq!(findings(&c).await, vec![]);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn findings_appear_once_a_trace_is_idle_without_any_flush() {
    let c = spawn_collector(test_args()).await;
    let m = Mesh::new(&c);
    request(&m, Some("canary"), |h| {
        h.remove("baggage");
    });
    let providers: Vec<_> = m.all().iter().map(|s| s.provider.clone()).collect();
    tokio::task::spawn_blocking(move || providers.iter().for_each(|p| p.force_flush().unwrap()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = findings(&c).await;
        if !found.is_empty() {
            assert_eq!(
                found,
                vec![f("missing", "cross_service", "users", "orders", true)]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no finding 10 s after a 300 ms idle time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&c, "grayscope_traces_finalised_total{reason=\"idle\"}").await,
        1.0
    );
    c.shutdown().await.unwrap();
}

/// Traces started by calling out are no broken traces when the evidence says so: a browser's
/// (by its resource), one that carries the stage it was given, and a job's (its service never
/// receives calls). They are the graph's entry points, with how many traces each started per
/// stage. A service that serves requests and calls out without a stage still breaks the trace.
#[tokio::test(flavor = "multi_thread")]
async fn trace_starters_are_entry_points_not_broken_traces() {
    let c = spawn_collector(test_args()).await;
    let exporter = || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("http://{}/v1/traces", c.otlp_http))
            .build()
            .unwrap()
    };
    use opentelemetry_otlp::WithExportConfig;
    let browser = Service::with_resource(
        exporter(),
        "web-app",
        None,
        &[
            ("telemetry.sdk.language", "webjs"),
            ("browser.platform", "Linux"),
        ],
    );
    let mobile = Service::new(&c, "mobile-app", None, Export::HttpProtobuf);
    let job = Service::new(&c, "nightly-report", None, Export::Grpc);
    let gateway = Service::new(&c, "gateway", Some("stable"), Export::Grpc);
    let users = Service::new(&c, "users", Some("stable"), Export::HttpJson);
    // The browser's fetch, tagged canary, untagged, and a job's call without a stage.
    for (client, stage) in [
        (&browser, Some("canary")),
        (&browser, None),
        (&mobile, Some("canary")),
        (&job, None),
    ] {
        let (fc, gw) = call(client, &entry(stage), &gateway, "GET /checkout", keep);
        let (gc, us) = call(&gateway, &gw, &users, "GET /users/me", keep);
        for cx in [&us, &gc, &gw, &fc] {
            end(cx);
        }
    }
    // gateway serves requests: a call it makes with no context lost it.
    let (lost, us) = call(&gateway, &Context::new(), &users, "GET /users/me", keep);
    end(&us);
    end(&lost);
    deliver(&c, &[&browser, &mobile, &job, &gateway, &users]).await;
    assert_eq!(
        findings(&c).await,
        vec![f("broken_trace", "in_process", "gateway", "users", true)]
    );
    let v = get_json(&c, "/api/v1/findings?kind=broken_trace").await;
    let detail = v["findings"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("carries no stage") && detail.contains("gateway receives calls"),
        "{detail}"
    );
    let g = get_json(&c, "/api/v1/graph").await;
    let starts = |name: &str| {
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["starts"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        starts("web-app"),
        serde_json::json!({"canary": 1, "none": 1}),
        "{g}"
    );
    assert_eq!(starts("mobile-app"), serde_json::json!({"canary": 1}));
    assert_eq!(starts("nightly-report"), serde_json::json!({"none": 1}));
    assert_eq!(starts("gateway"), serde_json::json!({}));
    // The dashboard draws them as entry points, their traces per stage in the node's title.
    let page = reqwest::get(format!("http://{}/", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<g class="node starter" data-node="web-app"><title>web-app (starts traces: canary 1, none 1)</title>"#),
        "{page}"
    );
    assert!(!page.contains(r#"class="node starter" data-node="gateway""#));
    c.shutdown().await.unwrap();
}
