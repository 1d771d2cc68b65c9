//! Messaging hops through the OpenTelemetry SDK: producers inject the context into a message's
//! headers, consumers handle it as a child (push consumers) or through span links (batch and pull
//! consumers, which must restore the stage from the headers themselves), and each way a real
//! service loses the stage on a queue gives exactly its finding on its hop.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use grayscope::app::Collector;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue};

const DEST: &str = "orders.placed";

fn messaging(op: &str, group: Option<&str>) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.destination.name", DEST),
        KeyValue::new("messaging.operation.type", op.to_string()),
    ];
    if let Some(g) = group {
        a.push(KeyValue::new(
            "messaging.consumer.group.name",
            g.to_string(),
        ));
    }
    a
}

/// A message on the broker: its headers, and the producer span's context for links.
struct Message {
    headers: HashMap<String, String>,
    creation: SpanContext,
}

/// `orders` handles a request tagged `stage` and publishes one message.
fn publish(orders: &Service, stage: Option<&str>) -> Message {
    let server = orders.span("POST /orders", SpanKind::Server, &entry(stage));
    let send = orders.span_with(
        "orders.placed publish",
        SpanKind::Producer,
        &server,
        messaging("send", None),
        vec![],
    );
    let m = Message {
        headers: inject(&send),
        creation: send.span().span_context().clone(),
    };
    end(&send);
    end(&server);
    m
}

/// The baggage entries in a message's headers: what a consumer restores by hand.
fn baggage_of(m: &Message) -> Vec<KeyValue> {
    extract(&m.headers)
        .baggage()
        .iter()
        .map(|(k, (v, _))| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

/// A push consumer: the message's context (and baggage) becomes its parent.
fn consume_as_child(svc: &Service, m: &Message) {
    let cx = extract(&m.headers);
    let process = svc.span_with(
        "orders.placed process",
        SpanKind::Consumer,
        &cx,
        messaging("process", Some("billing")),
        vec![],
    );
    end(&process);
}

/// A batch consumer: a root span linking to each message; `restore` says whether it restores the
/// stage from the first message's headers (what a links-only consumer has to do by hand).
fn consume_batch(svc: &Service, batch: &[&Message], restore: bool) {
    let mut root = Context::new();
    if restore {
        root = root.with_baggage(baggage_of(batch[0]));
    }
    let process = svc.span_with(
        "orders.placed process",
        SpanKind::Consumer,
        &root,
        messaging("process", Some("billing")),
        batch.iter().map(|m| m.creation.clone()).collect(),
    );
    end(&process);
}

/// A pull consumer: a root CLIENT `receive` span linking to the batch, and one CONSUMER `process`
/// span per message under it, each linking to its message and restoring its stage.
fn pull(svc: &Service, batch: &[&Message]) {
    let receive = svc.span_with(
        "orders.placed receive",
        SpanKind::Client,
        &Context::new(),
        messaging("receive", Some("billing")),
        batch.iter().map(|m| m.creation.clone()).collect(),
    );
    for m in batch {
        let process = svc.span_with(
            "orders.placed process",
            SpanKind::Consumer,
            &receive.with_baggage(baggage_of(m)),
            messaging("process", Some("billing")),
            vec![m.creation.clone()],
        );
        end(&process);
    }
    end(&receive);
}

async fn flush(c: &Collector, services: &[&Service]) {
    deliver(c, services).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_run_has_no_findings_with_push_batch_pull_and_lagging_consumers() {
    let c = spawn_collector(test_args()).await;
    let orders = Service::new(&c, "orders", Some("canary"), Export::Grpc);
    let push = Service::new(&c, "billing", Some("canary"), Export::HttpProtobuf);
    let batch = Service::new(&c, "ledger", Some("canary"), Export::Grpc);
    let puller = Service::new(&c, "audit", Some("canary"), Export::HttpJson);
    let lagging = Service::new(&c, "mailer", Some("canary"), Export::Grpc);
    let msgs: Vec<Message> = (0..4).map(|_| publish(&orders, Some("canary"))).collect();
    consume_as_child(&push, &msgs[0]);
    consume_batch(&batch, &[&msgs[0], &msgs[1], &msgs[2]], true);
    pull(&puller, &[&msgs[1], &msgs[2]]);
    flush(&c, &[&orders, &push, &batch, &puller]).await;
    // The producer's trace is long finalised (trace-idle is 300 ms) when this consumer handles the
    // message as the child of its context.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    consume_as_child(&lagging, &msgs[3]);
    flush(&c, &[&lagging]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.flush().await;

    assert_eq!(findings(&c).await, vec![]);
    // 3 batch links + 2 pull links were followed across traces, and the lagging consumer's
    // parent was found among the producers kept for links.
    assert_eq!(metric(&c, "grayscope_links_resolved_total").await, 6.0);
    assert_eq!(
        metric(&c, "grayscope_links_unresolved_total{reason=\"expired\"}").await,
        0.0
    );
    for callee in ["billing", "ledger", "audit", "mailer"] {
        let ok = metric(
            &c,
            &format!(
                "grayscope_edges_total{{caller=\"orders\",callee=\"{callee}\",stage=\"canary\",verdict=\"ok\"}}"
            ),
        )
        .await;
        assert!(ok >= 1.0, "orders -> {callee}: {ok}");
    }
    // The graph knows these are messaging hops, and through which destination.
    let g = get_json(&c, "/api/v1/graph").await;
    let edge = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == "orders" && e["callee"] == "ledger")
        .unwrap_or_else(|| panic!("orders -> ledger in {g}"));
    assert_eq!(
        edge["destinations"],
        serde_json::json!([{"system": "rabbitmq", "destination": DEST, "consumer_group": null}])
    );
    let page = reqwest::get(format!("http://{}/edges/orders/ledger", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Messaging hop") && page.contains(DEST),
        "{page}"
    );
    let overview = reqwest::get(format!("http://{}/", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        overview.contains("edge ok messaging"),
        "messaging edges are drawn as such"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_way_of_losing_the_stage_on_a_queue_is_its_own_finding_on_its_hop() {
    let mut args = test_args();
    args.verify.declared_instances = Some(vec!["payouts=canary".into()]);
    let c = spawn_collector(args).await;
    let orders = Service::new(&c, "orders", Some("canary"), Export::Grpc);

    // A links-only consumer that does not restore the stage from the headers.
    let ledger = Service::new(&c, "ledger", Some("canary"), Export::Grpc);
    let m = publish(&orders, Some("canary"));
    consume_batch(&ledger, &[&m], false);

    // A producer whose propagator is TraceContext only: the baggage never reaches the message.
    let billing = Service::new(&c, "billing", Some("canary"), Export::HttpProtobuf);
    let mut m = publish(&orders, Some("canary"));
    m.headers.remove("baggage");
    consume_as_child(&billing, &m);

    // A consumer that ignores the headers altogether: neither parent nor link.
    let mailer = Service::new(&c, "mailer", Some("canary"), Export::Grpc);
    let _ = publish(&orders, Some("canary"));
    let lost = mailer.span_with(
        "orders.placed process",
        SpanKind::Consumer,
        &Context::new(),
        messaging("process", Some("mailer")),
        vec![],
    );
    end(&lost);

    // A relay that republishes with the stage restamped to stable.
    let relay = Service::new(&c, "relay", Some("canary"), Export::Grpc);
    let archive = Service::new(&c, "archive", Some("canary"), Export::Grpc);
    let m = publish(&orders, Some("canary"));
    let cx = extract(&m.headers);
    let handled = relay.span_with(
        "orders.placed process",
        SpanKind::Consumer,
        &cx,
        messaging("process", Some("relay")),
        vec![],
    );
    let restamped = handled.with_baggage(vec![KeyValue::new(STAGE, "stable")]);
    let republish = relay.span_with(
        "archive publish",
        SpanKind::Producer,
        &restamped,
        messaging("send", None),
        vec![],
    );
    consume_as_child(
        &archive,
        &Message {
            headers: inject(&republish),
            creation: republish.span().span_context().clone(),
        },
    );
    end(&republish);
    end(&handled);

    // A canary message processed by payouts' stable consumer while its canary consumer runs.
    let payouts = Service::new(&c, "payouts", Some("stable"), Export::Grpc);
    let m = publish(&orders, Some("canary"));
    consume_as_child(&payouts, &m);

    flush(
        &c,
        &[
            &orders, &ledger, &billing, &mailer, &relay, &archive, &payouts,
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.flush().await;

    assert_eq!(
        findings(&c).await,
        vec![
            f("broken_trace", "messaging", "-", "mailer", true),
            f("changed", "in_process", "relay", "archive", true),
            f("misrouted", "messaging", "orders", "payouts", true),
            f("missing", "messaging", "orders", "billing", true),
            f("missing", "messaging", "orders", "ledger", true),
        ]
    );
    // The finding names the destination and the consumer group.
    let v = get_json(&c, "/api/v1/findings?limit=100&scope=messaging").await;
    let all = v["findings"].as_array().unwrap();
    assert_eq!(all.len(), 4, "{v}");
    let ledger = all
        .iter()
        .find(|f| f["callee"]["service"] == "ledger")
        .unwrap();
    assert_eq!(
        ledger["messaging"],
        serde_json::json!({"system": "rabbitmq", "destination": DEST, "consumer_group": "billing"})
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_to_an_unsampled_producer_is_unresolved_and_never_a_finding() {
    let c = spawn_collector(test_args()).await;
    let ledger = Service::new(&c, "ledger", Some("canary"), Export::Grpc);
    // The producer's span was not sampled: its context says so, and it is never exported.
    let unsampled = SpanContext::new(
        opentelemetry::trace::TraceId::from(0x5eed_u128),
        opentelemetry::trace::SpanId::from(0x77_u64),
        opentelemetry::trace::TraceFlags::default(),
        true,
        Default::default(),
    );
    let process = ledger.span_with(
        "orders.placed process",
        SpanKind::Consumer,
        &Context::new(),
        messaging("process", Some("ledger")),
        vec![unsampled],
    );
    end(&process);
    flush(&c, &[&ledger]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.flush().await;
    assert_eq!(findings(&c).await, vec![]);
    assert_eq!(
        metric(&c, "grayscope_links_unresolved_total{reason=\"unsampled\"}").await,
        1.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_a_shared_store_join_a_producer_and_a_consumer_each_saw_one_of() {
    let Some(admin) = common::postgres::server() else {
        return;
    };
    let url = common::postgres::fresh_database(&admin).await;
    let instance = || {
        let mut args = test_args();
        args.data = Some(url.clone().into());
        args.heartbeat_interval = Some("200ms".parse().unwrap());
        spawn_collector(args)
    };
    let (a, b) = (instance().await, instance().await);
    // The load balancer sent the producer's trace to a, the consumer's trace to b.
    let orders = Service::new(&a, "orders", Some("canary"), Export::Grpc);
    let ledger = Service::new(&b, "ledger", Some("canary"), Export::Grpc);
    let billing = Service::new(&b, "billing", Some("canary"), Export::Grpc);
    let m1 = publish(&orders, Some("canary"));
    let m2 = publish(&orders, Some("canary"));
    consume_batch(&ledger, &[&m1], false);
    consume_batch(&billing, &[&m2], true);
    flush(&a, &[&orders]).await;
    flush(&b, &[&ledger, &billing]).await;
    // a offers its producer span to the store at its next heartbeat; b finds it at its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(&b, "grayscope_links_resolved_total").await < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never found a's producer spans"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.store.flush().await.unwrap();
    // Either instance answers for the cluster.
    assert_eq!(
        findings(&a).await,
        vec![f("missing", "messaging", "orders", "ledger", true)]
    );
    assert_eq!(
        metric(&b, "grayscope_links_unresolved_total{reason=\"expired\"}").await,
        0.0
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
