//! A short soak through the binary: steady traffic well below capacity, paced by the load generator,
//! must be accepted in full with flat resident memory, and every span accounted for. The full
//! length (10 minutes at half the release build's capacity) is `scripts/soak.sh`.

mod common;

use std::time::Duration;

use common::binary::{Served, sum};
use grayscope::loadgen::{self, LoadgenArgs, Wire};

const SECONDS: u64 = 24;
const RATE: f64 = 30_000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_keeps_memory_flat() {
    let data = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Served::start(data.path(), &["--trace-idle", "2s"]));
    let watched = server.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        for _ in 0..SECONDS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            samples.push(watched.status_kib("VmRSS:"));
        }
        samples
    });
    let summary = loadgen::generate(LoadgenArgs {
        protocol: Wire::Http,
        grpc: server.grpc,
        http: server.http,
        spans_per_request: 1000,
        concurrency: 4,
        duration: Some(grayscope::config::Dur(Duration::from_secs(SECONDS))),
        requests: None,
        fault_rate: 0.01,
        fault_kinds: Vec::new(),
        seed: 5,
        templates: 16,
        gzip: false,
        faults_out: None,
        server_pid: None,
        threads: 1,
        rate: Some(RATE),
        tls: false,
        services: None,
        edges: None,
        depth: None,
        auth: Default::default(),
    })
    .await
    .unwrap();
    let samples = sampler.await.unwrap();
    eprintln!(
        "soak: {:.0} spans/s accepted, RSS each second (MiB): {:?}",
        summary.spans_per_second,
        samples.iter().map(|k| k >> 10).collect::<Vec<_>>()
    );

    // Paced, below capacity: everything accepted at the asked rate, nothing refused.
    assert_eq!((summary.errors, summary.refused), (0, 0), "{summary:?}");
    assert!(
        (summary.spans_per_second - RATE).abs() < RATE / 10.0,
        "{summary:?}"
    );
    // Flat: once traces start finishing (the first third), memory stops growing.
    let third = samples.len() / 3;
    let middle = *samples[third..2 * third].iter().max().unwrap();
    let last = *samples[2 * third..].iter().max().unwrap();
    assert!(
        last <= middle + middle / 10 + 8 * 1024,
        "RSS grew from {middle} KiB to {last} KiB at a steady rate"
    );
    // Every accepted span ends in a finalised trace, once the last ones have gone idle.
    let mut m = server.metrics().await;
    for _ in 0..100 {
        if sum(&m, "grayscope_buffered_spans") + sum(&m, "grayscope_queued_spans") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = server.metrics().await;
    }
    let accepted = sum(&m, "grayscope_receiver_accepted_spans_total");
    assert_eq!(accepted, summary.spans);
    let accounted = sum(&m, "grayscope_spans_finalised_total")
        + sum(&m, "grayscope_duplicate_spans_total")
        + sum(&m, "grayscope_conflicting_spans_total")
        + sum(&m, "grayscope_late_spans_total")
        + sum(&m, "grayscope_buffered_spans")
        + sum(&m, "grayscope_queued_spans");
    assert_eq!(accounted, accepted);
    assert_eq!(
        sum(&m, "grayscope_spans_finalised_total{reason=\"memory\"}"),
        0,
        "below capacity, nothing is finalised early"
    );
}
