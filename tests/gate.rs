//! The rollout gate against real traffic: the demo mesh's services, instrumented with the
//! OpenTelemetry SDK, export to a collector; the gate then answers as Argo Rollouts and Flagger
//! would ask.

mod common;

use std::time::Duration;

use common::*;
use grayscope::app::Collector;
use grayscope::demo::{Demo, DemoOptions, Export, Protocol, parse_faults};
use serde_json::{Value, json};

async fn traffic(c: &Collector, faults: &[&str]) -> u64 {
    let export = Export::new(Protocol::Grpc, Some(&format!("http://{}", c.otlp_grpc))).unwrap();
    let specs: Vec<String> = faults.iter().map(|s| s.to_string()).collect();
    let mut o = DemoOptions::new(export, parse_faults(&specs).unwrap());
    o.rate = 50.0;
    o.requests = Some(20);
    o.batch_delay = Duration::from_millis(100);
    let mut demo = Demo::start(o).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), demo.finished())
        .await
        .unwrap();
    let p = demo.stop().await;
    assert_eq!(p.failed, 0);
    c.flush().await;
    p.canary
}

async fn gate(c: &Collector, query: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}/api/v1/gate?{query}", c.http))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn webhook(c: &Collector, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/gate/webhook", c.http))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn flagger(metadata: Value) -> Value {
    json!({"name": "orders", "namespace": "shop", "phase": "Progressing",
           "checksum": "85d557f47b", "metadata": metadata})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_traffic_passes_and_no_traffic_is_no_evidence() {
    let c = spawn_collector(test_args()).await;
    traffic(&c, &[]).await;

    let (status, g) = gate(&c, "stage=canary&window=5m&max_findings=0").await;
    assert_eq!(status, 200);
    assert_eq!(g["pass"], true, "{g}");
    assert_eq!(
        (g["stage"].as_str(), g["window"].as_str()),
        (Some("canary"), Some("5m"))
    );
    assert_eq!(g["findings"], 0);
    assert!(g["edges_checked"].as_u64().unwrap() > 0);
    assert_eq!(g["consistency"], 1.0);
    assert_eq!(g["reasons"], json!([]));

    let (_, g) = gate(&c, "stage=purple").await;
    assert_eq!(g["pass"], false);
    assert_eq!(g["edges_checked"], 0);
    assert!(
        g["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no traffic is no evidence"),
        "{g}"
    );
    let (_, g) = gate(&c, "stage=purple&allow_empty=true").await;
    assert_eq!(g["pass"], true);

    let (status, body) = webhook(&c, &flagger(json!({"stage": "canary", "window": "5m"}))).await;
    assert_eq!((status, &body["pass"]), (200, &json!(true)));

    for (query, param) in [
        ("window=5m", "'stage'"),
        ("stage=canary&window=soon", "'window'"),
        ("stage=canary&max_findings=-1", "'max_findings'"),
        ("stage=canary&min_consistency=2", "'min_consistency'"),
        ("stage=canary&colour=red", "unknown parameter 'colour'"),
    ] {
        let (status, e) = gate(&c, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(e["error"].as_str().unwrap().contains(param), "{query}: {e}");
    }
    let (status, e) = webhook(&c, &json!({"metadata": {"window": "5m"}})).await;
    assert_eq!(status, 400);
    assert!(
        e["error"].as_str().unwrap().contains("(in metadata)"),
        "{e}"
    );
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/gate/webhook", c.http))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_hop_fails_the_gate_and_is_named() {
    let c = spawn_collector(test_args()).await;
    let canary = traffic(&c, &["missing@orders->payments"]).await;

    let (status, g) = gate(&c, "stage=canary&window=5m").await;
    assert_eq!(status, 200, "Argo reads the verdict from the body");
    assert_eq!(g["pass"], false);
    assert_eq!(g["findings"], canary);
    let reasons: Vec<&str> = g["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains(&format!("{canary} findings for stage 'canary'")),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[1],
        format!("orders -> payments: {canary} (missing {canary})")
    );
    assert!(g["consistency"].as_f64().unwrap() < 1.0);

    // A tolerance, or a part of the graph the bug is not on, passes.
    let (_, g) = gate(&c, &format!("stage=canary&max_findings={canary}")).await;
    assert_eq!(g["pass"], true, "{g}");
    let (_, g) = gate(&c, "stage=canary&caller=gateway").await;
    assert_eq!(g["pass"], true, "{g}");
    let (_, g) = gate(&c, "stage=canary&max_findings=1000&min_consistency=0.99").await;
    assert_eq!(g["pass"], false, "{g}");
    assert!(
        g["reasons"][0]
            .as_str()
            .unwrap()
            .contains("below min_consistency=0.99"),
        "{g}"
    );

    let (status, body) = webhook(
        &c,
        &flagger(json!({"stage": "canary", "window": "5m", "max_findings": "0"})),
    )
    .await;
    assert_eq!(status, 412, "Flagger halts on a non-2xx status");
    assert_eq!(body["pass"], false);
    assert_eq!(body["findings"], canary);
    c.shutdown().await.unwrap();
}
