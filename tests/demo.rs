//! The demo mesh end to end: real services on loopback, instrumented with the OpenTelemetry SDK,
//! exporting over real OTLP to a real collector. Each fault must produce exactly its verdict on
//! exactly its edge, once per affected request, and nothing else; a clean mesh must produce nothing.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use grayscope::app::Collector;
use grayscope::demo::{
    BrokerMode, Demo, DemoOptions, Export, Progress, Propagation, Protocol, parse_faults,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue as ProtoKeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

fn options(export: Export, faults: &[&str], requests: u64, rate: f64) -> DemoOptions {
    let specs: Vec<String> = faults.iter().map(|s| s.to_string()).collect();
    let mut o = DemoOptions::new(export, parse_faults(&specs).unwrap());
    o.rate = rate;
    o.requests = Some(requests);
    o.batch_delay = Duration::from_millis(100);
    o
}

/// Runs the demo until it has sent `o.requests` (all answered), flushes every service's spans and
/// returns what it sent.
async fn run(o: DemoOptions) -> Progress {
    let requests = o.requests.unwrap();
    let mut demo = Demo::start(o).await.expect("the demo starts");
    tokio::time::timeout(Duration::from_secs(60), demo.finished())
        .await
        .expect("the demo sends its requests in time");
    let p = demo.stop().await;
    assert_eq!((p.sent, p.ok, p.failed), (requests, requests, 0), "{p}");
    // Every request records 13 spans, and every one reached the endpoint.
    assert_eq!(
        (p.spans_exported, p.spans_failed),
        (13 * requests, 0),
        "{p}"
    );
    p
}

fn export_to(c: &Collector, protocol: Protocol) -> Export {
    let url = match protocol {
        Protocol::Grpc => format!("http://{}", c.otlp_grpc),
        Protocol::Http => format!("http://{}", c.otlp_http),
    };
    Export::new(protocol, Some(&url)).unwrap()
}

/// The demo with one fault against a collector: the findings are exactly that fault's verdict on
/// that fault's edge, each a first break, one per affected request.
async fn fault_is_found(spec: &str, protocol: Protocol, expected: (&str, &str), canary_only: bool) {
    fault_is_found_in(Propagation::Baggage, spec, protocol, expected, canary_only).await;
}

async fn fault_is_found_in(
    propagation: Propagation,
    spec: &str,
    protocol: Protocol,
    expected: (&str, &str),
    canary_only: bool,
) {
    let c = spawn_collector(test_args()).await;
    let (kind, scope) = expected;
    let (caller, callee) = spec.split_once('@').unwrap().1.split_once("->").unwrap();
    let mut o = options(export_to(&c, protocol), &[spec], 20, 50.0);
    o.propagation = propagation;
    let p = run(o).await;
    c.flush().await;
    let found = findings(&c).await;
    let kinds: BTreeSet<_> = found.iter().cloned().collect();
    assert_eq!(
        kinds,
        BTreeSet::from([f(kind, scope, caller, callee, true)]),
        "{spec}"
    );
    let affected = if canary_only { p.canary } else { p.sent };
    assert!(affected > 0);
    assert_eq!(
        found.len() as u64,
        affected,
        "{spec}: one per affected request"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_is_found_on_its_hop() {
    fault_is_found(
        "missing@orders->payments",
        Protocol::Grpc,
        ("missing", "in_process"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_is_found_on_its_hop() {
    fault_is_found(
        "changed@users->orders",
        Protocol::Http,
        ("changed", "cross_service"),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misroute_is_found_on_its_hop() {
    fault_is_found(
        "misroute@gateway->orders",
        Protocol::Grpc,
        ("misrouted", "cross_service"),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typo_is_found_on_its_hop() {
    fault_is_found(
        "typo@orders->inventory",
        Protocol::Http,
        ("key_mismatch", "cross_service"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_context_is_found_on_its_hop() {
    fault_is_found(
        "lost-context@orders->inventory",
        Protocol::Grpc,
        ("broken_trace", "in_process"),
        false,
    )
    .await;
}

/// The hand-built style: `X-Release-Stage` forwarded by hand, recorded only as the captured
/// header of SERVER spans. Each fault gives exactly one finding per affected request, on the hop,
/// from what one service received to what the next received.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_built_missing_is_found_on_its_hop() {
    fault_is_found_in(
        Propagation::Header,
        "missing@orders->payments",
        Protocol::Grpc,
        ("missing", "cross_service"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_built_changed_is_found_on_its_hop() {
    fault_is_found_in(
        Propagation::Header,
        "changed@users->orders",
        Protocol::Http,
        ("changed", "cross_service"),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_built_misroute_is_found_on_its_hop() {
    fault_is_found_in(
        Propagation::Header,
        "misroute@gateway->orders",
        Protocol::Grpc,
        ("misrouted", "cross_service"),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_built_typo_is_found_on_its_hop() {
    fault_is_found_in(
        Propagation::Header,
        "typo@orders->inventory",
        Protocol::Http,
        ("missing", "cross_service"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_built_lost_context_is_found_on_its_hop() {
    fault_is_found_in(
        Propagation::Header,
        "lost-context@orders->inventory",
        Protocol::Grpc,
        ("broken_trace", "in_process"),
        false,
    )
    .await;
}

/// The hand-built mesh, clean: no finding, though its database calls and INTERNAL spans carry no
/// stage; the edges to them are `not_applicable`, every hop between services is `ok`, and each
/// service is learned to be in `captured` mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_hand_built_mesh_has_no_findings() {
    let mut args = test_args();
    // Clean traces are stored, to be read back.
    args.sample_clean = Some(1.0);
    let c = spawn_collector(args).await;
    let mut o = options(export_to(&c, Protocol::Grpc), &[], 60, 50.0);
    o.propagation = Propagation::Header;
    let p = run(o).await;
    c.flush().await;
    assert_eq!(findings(&c).await, vec![]);
    let m = scrape(&c).await;
    let edges = |caller: &str, callee: &str, stage: &str, verdict: &str| {
        let sample = format!(
            "grayscope_edges_total{{caller=\"{caller}\",callee=\"{callee}\",stage=\"{stage}\",verdict=\"{verdict}\"}}"
        );
        m.lines()
            .find_map(|l| l.strip_prefix(&sample))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap()) as u64
    };
    let stable = p.sent - p.canary;
    for (caller, callee) in [
        ("gateway", "users"),
        ("users", "orders"),
        ("orders", "payments"),
        ("orders", "inventory"),
        ("gateway", "orders"),
    ] {
        assert_eq!(
            (
                edges(caller, callee, "canary", "ok"),
                edges(caller, callee, "stable", "ok")
            ),
            (p.canary, stable),
            "{caller} -> {callee}\n{m}"
        );
    }
    // Orders' database call and pricing: one edge each per request, not judged.
    assert_eq!(
        edges("orders", "sqlite", "canary", "not_applicable")
            + edges("orders", "sqlite", "stable", "not_applicable"),
        p.sent,
        "{m}"
    );
    assert!(
        edges("orders", "orders", "canary", "not_applicable") >= p.canary,
        "{m}"
    );
    // A trace shows where each span's stage came from.
    let graph = get_json(&c, "/api/v1/graph").await;
    let hop = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "orders" && e["callee"] == "inventory")
        .expect("orders -> inventory on the graph");
    let id = hop["examples"]["ok"][0].as_str().unwrap().to_string();
    let t = get_json(&c, &format!("/api/v1/traces/{id}")).await;
    let sources: BTreeSet<String> = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["stage_source"].as_str().map(str::to_string))
        .collect();
    assert!(sources.contains("http_header"), "{t}");
    assert!(sources.contains("grpc_metadata"), "{t}");
    assert!(sources.contains("inbound"), "{t}");
    // The trace page says so too.
    let page = reqwest::get(format!("http://{}/traces/{id}", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("(captured header)"), "{page}");
    assert!(page.contains("(captured metadata)"), "{page}");
    assert!(page.contains("(as received)"), "{page}");
    // Every service was learned to carry the stage only where a request's header was captured.
    let services = get_json(&c, "/api/v1/services").await;
    let modes: BTreeSet<(String, String, bool)> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["stage_mode"].as_str().unwrap().to_string(),
                s["stage_mode_configured"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: BTreeSet<_> = ["gateway", "inventory", "orders", "payments", "users"]
        .into_iter()
        .map(|s| (s.to_string(), "captured".to_string(), false))
        .collect();
    assert_eq!(modes, want);
    c.shutdown().await.unwrap();
}

/// Whether the broker tests can run: `nats-server` is installed (required under `CI=true`).
fn broker_here() -> bool {
    let here = grayscope::demo::nats_server_binary().is_some();
    if !here {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server is required in CI (Debian package 'nats-server'; .ci/run installs it)"
        );
        eprintln!("nats-server is not installed: skipping a test of the demo's messaging hop");
    }
    here
}

/// [`run`] with the messaging hop: two spans more per request (orders' publish, billing's
/// handling), and each consumer group's subscribe span.
async fn run_with_broker(mut o: DemoOptions) -> Progress {
    o.broker = BrokerMode::On;
    let requests = o.requests.unwrap();
    let mut demo = Demo::start(o)
        .await
        .expect("the demo starts with its broker");
    assert!(
        demo.describe()
            .contains("billing    NATS nats://127.0.0.1:")
    );
    tokio::time::timeout(Duration::from_secs(60), demo.finished())
        .await
        .expect("the demo sends its requests in time");
    let p = demo.stop().await;
    assert_eq!((p.sent, p.ok, p.failed), (requests, requests, 0), "{p}");
    assert_eq!(
        (p.spans_exported, p.spans_failed),
        (15 * requests + 2, 0),
        "{p}"
    );
    p
}

/// A fault on the messaging hop: exactly `expected` (kind, scope, edge caller, edge callee), a
/// first break, once per affected request.
async fn broker_fault_is_found(spec: &str, expected: (&str, &str, &str, &str), canary_only: bool) {
    if !broker_here() {
        return;
    }
    let c = spawn_collector(test_args()).await;
    let p = run_with_broker(options(export_to(&c, Protocol::Grpc), &[spec], 20, 50.0)).await;
    // Joined hops are judged when both traces are finalised.
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.flush().await;
    let found = findings(&c).await;
    let kinds: BTreeSet<_> = found.iter().cloned().collect();
    let (kind, scope, caller, callee) = expected;
    assert_eq!(
        kinds,
        BTreeSet::from([f(kind, scope, caller, callee, true)]),
        "{spec}"
    );
    let affected = if canary_only { p.canary } else { p.sent };
    assert!(affected > 0);
    assert_eq!(
        found.len() as u64,
        affected,
        "{spec}: one per affected request"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_mesh_with_its_messaging_hop_has_no_findings() {
    if !broker_here() {
        return;
    }
    let c = spawn_collector(test_args()).await;
    let p = run_with_broker(options(export_to(&c, Protocol::Http), &[], 60, 30.0)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.flush().await;
    assert_eq!(findings(&c).await, vec![]);
    let g = get_json(&c, "/api/v1/graph").await;
    let hop = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "orders" && e["callee"] == "billing")
        .unwrap_or_else(|| panic!("orders -> billing in {g}"));
    assert_eq!(hop["calls"].as_u64(), Some(p.sent), "{hop}");
    assert_eq!(hop["destinations"][0]["destination"], "orders.placed");
    // Canary messages reached the canary consumer group, and only they did.
    let canary: u64 = hop["routing"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["stage"] == "canary")
        .map(|r| {
            assert_eq!(r["instance_stage"], "canary");
            r["calls"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(canary, p.canary);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tracecontext_only_producer_is_missing_on_the_messaging_hop() {
    broker_fault_is_found(
        "tracecontext-only@orders->billing",
        ("missing", "messaging", "orders", "billing"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_links_only_consumer_is_missing_on_the_messaging_hop() {
    broker_fault_is_found(
        "links-only@orders->billing",
        ("missing", "messaging", "orders", "billing"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_ignoring_headers_is_a_broken_trace() {
    broker_fault_is_found(
        "ignore-headers@orders->billing",
        ("broken_trace", "messaging", "-", "billing"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restamped_message_is_changed_on_the_messaging_hop() {
    broker_fault_is_found(
        "changed@orders->billing",
        ("changed", "messaging", "orders", "billing"),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_message_taken_by_the_stable_group_is_misrouted() {
    broker_fault_is_found(
        "misroute@orders->billing",
        ("misrouted", "messaging", "orders", "billing"),
        true,
    )
    .await;
}

/// Thirty seconds of the clean mesh: every trace complete, every stage carried, no finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_mesh_has_no_findings_over_30s() {
    let c = spawn_collector(test_args()).await;
    let p = run(options(export_to(&c, Protocol::Grpc), &[], 600, 20.0)).await;
    c.flush().await;
    assert_eq!(findings(&c).await, vec![]);
    let totals = get_json(&c, "/api/v1/graph").await;
    let edges = totals["edges"].as_array().unwrap();
    let mut calls: Vec<(String, String, u64)> = edges
        .iter()
        .map(|e| {
            (
                e["caller"].as_str().unwrap().to_string(),
                e["callee"].as_str().unwrap().to_string(),
                e["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    calls.sort();
    let n = p.sent;
    assert_eq!(
        calls,
        vec![
            ("gateway".into(), "orders".into(), n),
            ("gateway".into(), "users".into(), n),
            ("orders".into(), "inventory".into(), n),
            // Pricing, in process: judged, no call.
            ("orders".into(), "orders".into(), 0),
            ("orders".into(), "payments".into(), n),
            ("orders".into(), "sqlite".into(), n),
            ("users".into(), "orders".into(), n),
        ]
    );
    // Canary requests reached the canary orders instance, and only they did.
    let users_orders = edges
        .iter()
        .find(|e| e["caller"] == "users" && e["callee"] == "orders")
        .unwrap();
    let routing = users_orders["routing"].as_array().unwrap();
    let canary_calls: u64 = routing
        .iter()
        .filter(|r| r["stage"] == "canary")
        .map(|r| {
            assert_eq!(r["instance_stage"], "canary");
            r["calls"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(canary_calls, p.canary);
    let services = get_json(&c, "/api/v1/services").await;
    for s in services["services"].as_array().unwrap() {
        assert_eq!(s["stage_mode"], "every_span", "{s}");
    }
    c.shutdown().await.unwrap();
}

/// A minimal OTLP/HTTP receiver that keeps every request body as it arrived.
async fn capture_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, Bytes)>>>) {
    let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                kept.lock().unwrap().push((ct, body));
                // An empty ExportTraceServiceResponse: full success.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, bodies)
}

fn attr<'a>(attrs: &'a [ProtoKeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The demo is an ordinary OTLP client: another receiver gets plain OTLP/HTTP protobuf with every
/// service, both orders instances, and the stage on every span.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_speaks_plain_otlp_to_any_receiver() {
    let (addr, bodies) = capture_server().await;
    let export = Export::new(Protocol::Http, Some(&format!("http://{addr}"))).unwrap();
    let p = run(options(export, &[], 10, 50.0)).await;

    let bodies = bodies.lock().unwrap();
    assert!(!bodies.is_empty());
    let mut spans = Vec::new();
    let mut instances = BTreeSet::new();
    for (ct, body) in bodies.iter() {
        assert_eq!(ct, "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(body.clone()).expect("valid OTLP protobuf");
        for rs in req.resource_spans {
            let res = rs.resource.unwrap().attributes;
            let service = attr(&res, "service.name").unwrap().to_string();
            let stage = attr(&res, "deployment.stage").unwrap().to_string();
            instances.insert((service.clone(), stage));
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s));
                }
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("gateway", "stable"),
        ("inventory", "stable"),
        ("orders", "canary"),
        ("orders", "stable"),
        ("payments", "stable"),
        ("users", "stable"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(instances, want);
    // 13 spans per request: 6 SERVER (one per service called), 5 CLIENT calls, orders' database
    // call and its pricing (INTERNAL).
    assert_eq!(spans.len() as u64, 13 * p.sent);
    let traces: BTreeSet<_> = spans.iter().map(|(_, s)| s.trace_id.clone()).collect();
    assert_eq!(traces.len() as u64, p.sent);
    for (service, s) in &spans {
        let stage = attr(&s.attributes, "x-release-stage");
        assert!(
            matches!(stage, Some("stable" | "canary")),
            "{service} '{}' has no stage",
            s.name
        );
        // Kind 3 is CLIENT: every call names its callee, a service or a database system.
        if s.kind == 3 {
            assert!(
                attr(&s.attributes, "peer.service")
                    .or(attr(&s.attributes, "db.system.name"))
                    .is_some(),
                "{}",
                s.name
            );
        }
    }
    let canary_gateway_spans = spans
        .iter()
        .filter(|(svc, s)| {
            svc == "gateway"
                && s.kind == 2
                && attr(&s.attributes, "x-release-stage") == Some("canary")
        })
        .count() as u64;
    assert_eq!(canary_gateway_spans, p.canary);
}

/// `grayscope demo` as users run it, against a collector: it prints the mesh and its fault,
/// sends what it was asked to, and the collector finds the fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_command_prints_its_faults_and_feeds_a_collector() {
    let c = spawn_collector(test_args()).await;
    let endpoint = format!("http://{}", c.otlp_grpc);
    // With nats-server installed, the demo runs its messaging hop too (--broker auto).
    let broker = broker_here();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_grayscope"))
            .args(["demo", "--otlp-endpoint", &endpoint, "--requests", "10"])
            .args(["--rate", "50", "--fault", "typo@orders->inventory"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fault typo@orders->inventory: orders sends the stage to inventory as baggage 'x-release-stag'; expect key_mismatch (cross_service) on orders->inventory"),
        "{stdout}"
    );
    assert!(stdout.contains("orders     gRPC 127.0.0.1:"), "{stdout}");
    assert_eq!(
        stdout.contains("billing    NATS nats://127.0.0.1:"),
        broker,
        "{stdout}"
    );
    let spans = if broker { 15 * 10 + 2 } else { 130 };
    assert!(
        stdout.contains(&format!(
            "sent 10 requests (3 canary, 7 stable): 10 ok, 0 failed; {spans} spans exported, 0 failed"
        )),
        "{stdout}"
    );
    // Joined hops are judged when both traces are finalised.
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.flush().await;
    let found = findings(&c).await;
    assert_eq!(found.len(), 10);
    assert!(
        found
            .iter()
            .all(|x| *x == f("key_mismatch", "cross_service", "orders", "inventory", true))
    );
    c.shutdown().await.unwrap();
}

#[test]
fn bad_fault_specs_fail_with_the_allowed_calls() {
    let out = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["demo", "--fault", "missing@payments->orders"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid fault 'missing@payments->orders': 'payments->orders' is not a call the mesh makes; calls are gateway->users, users->orders, orders->payments, orders->inventory, gateway->orders"),
        "{err}"
    );
}

/// The README's first command: `serve --demo` shows the default fault's finding within seconds.
#[test]
fn serve_demo_shows_a_finding_within_seconds() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let mut child = common::binary::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_grayscope"))
            .args(["serve", "--demo", "--demo-gateway", "127.0.0.1:0"])
            .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--log", "warn"])
            .arg("--data")
            .arg(data.path())
            .env_remove("GRAYSCOPE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let api = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{printed}");
        printed.push_str(&line);
        if let Some(rest) = line.strip_prefix("grayscope: dashboard at http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    assert!(
        printed.contains("fault missing@orders->payments"),
        "{printed}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt.block_on(async {
        let url = format!("http://{api}/api/v1/findings?first_break=true&limit=1");
        loop {
            let v: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if let Some(f) = v["findings"].as_array().unwrap().first() {
                return f.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no finding after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(first["kind"], "missing");
    assert_eq!(first["scope"], "in_process");
    assert_eq!(first["edge"]["caller"], "orders");
    assert_eq!(first["edge"]["callee"], "payments");

    // The README's probe, against the same mesh: it names the same hop and exits 1.
    let after = |prefix: &str| -> String {
        let rest = &printed[printed.find(prefix).expect(prefix) + prefix.len()..];
        rest.split([',', ' ', '\n']).next().unwrap().to_string()
    };
    let probe = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["probe", "--requests", "5"])
        .arg("--url")
        .arg(format!(
            "{}/checkout?user=alice&item=book",
            after("gateway    HTTP ")
        ))
        .args(["--collector", &format!("http://{api}")])
        .args([
            "--otlp-endpoint",
            &format!("http://{}", after("OTLP/gRPC on ")),
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(
        probe.status.code(),
        Some(1),
        "{report}{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        report.contains("first break: missing on orders -> payments (in process), 5 of 5 requests"),
        "{report}"
    );

    // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(code, Some(0), "{log}");
}

/// With nothing listening at the endpoint, the demo says so and exits 1 instead of pretending.
#[test]
fn the_demo_says_when_nothing_receives_its_spans() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["demo", "--otlp-endpoint", &endpoint])
        .args(["--requests", "3", "--rate", "50"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let spans = if broker_here() { 3 * 15 + 2 } else { 39 };
    assert!(
        err.contains(&format!(
            "{spans} spans could not be exported to {endpoint}"
        )),
        "{err}"
    );
    assert!(
        err.contains("is an OTLP receiver listening there?"),
        "{err}"
    );
}
