//! The load generator's seeded faults, sent over each protocol, must equal the collector's findings
//! exactly: every injected bug found on its hop, and nothing else reported.

mod common;

use std::collections::BTreeSet;

use common::*;
use grayscope::loadgen::{self, LoadgenArgs, Wire};

async fn run(wire: Wire, gzip: bool, seed: u64, services: Option<usize>) {
    let c = spawn_collector(test_args()).await;
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults.json");
    let summary = loadgen::generate(LoadgenArgs {
        protocol: wire,
        grpc: c.otlp_grpc,
        http: c.otlp_http,
        spans_per_request: 500,
        concurrency: 3,
        duration: None,
        requests: Some(12),
        fault_rate: 0.25,
        fault_kinds: Vec::new(),
        seed,
        templates: 4,
        gzip,
        faults_out: Some(faults.clone()),
        server_pid: None,
        threads: 1,
        rate: None,
        tls: false,
        services,
        edges: None,
        depth: None,
        auth: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!((summary.requests, summary.errors), (12, 0));
    c.flush().await;

    let expected: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&faults).unwrap()).unwrap();
    let expected: BTreeSet<(String, String, String, String)> = expected
        .iter()
        .map(|f| {
            (
                f["trace_id"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["caller"].as_str().unwrap_or("-").to_string(),
                f["callee"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // A wide mesh's traces are longer: fewer of them in as many spans.
    assert!(
        expected.len() > if services.is_some() { 50 } else { 100 },
        "enough faults to mean something: {}",
        expected.len()
    );
    let kinds: BTreeSet<&str> = expected.iter().map(|e| e.1.as_str()).collect();
    // The wide mesh's faults are all on one call: not the shop's orphans and lost contexts,
    // which are both broken traces.
    assert_eq!(
        kinds.len(),
        if services.is_some() { 5 } else { 6 },
        "every kind the generator injects: {kinds:?}"
    );

    let v = get_json(&c, "/api/v1/findings?limit=1000").await;
    let found: BTreeSet<(String, String, String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(
                f["first_break"], true,
                "a fault causes no consequences: {f}"
            );
            (
                f["trace_id"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["edge"]["caller"].as_str().unwrap_or("-").to_string(),
                f["edge"]["callee"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found.len(),
        v["findings"].as_array().unwrap().len(),
        "one finding per fault"
    );
    let missed: Vec<_> = expected.difference(&found).take(5).collect();
    let extra: Vec<_> = found.difference(&expected).take(5).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "missed {missed:?}, extra {extra:?}"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_equal_findings_over_grpc() {
    run(Wire::Grpc, false, 11, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_equal_findings_over_http_protobuf_gzip() {
    run(Wire::Http, true, 12, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_equal_findings_over_http_json() {
    run(Wire::HttpJson, false, 13, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_equal_findings_through_a_wide_mesh() {
    run(Wire::Grpc, false, 14, Some(60)).await;
}
