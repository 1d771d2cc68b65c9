//! A flood far beyond capacity, through the binary: more spans than `--max-buffered-spans`, many
//! times more traces than fit, and traces that never finish, from 64 senders that retry at once.
//! grayscope must refuse retryably instead of growing, keep its resident memory under the budget
//! its flags give (`grayscope_memory_budget_bytes`), and account for every span it acknowledged:
//! accepted = finalised (idle, early, shutdown, and late: added to a trace kept after it was
//! finalised) + duplicate + conflicting + late + buffered + queued, exactly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::{Served, sum};
use grayscope::loadgen::{RawClient, Template, Wire};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::SeedableRng;

const MAX_BUFFERED: u64 = 100_000;
const MAX_KEPT: u64 = 40_000;
const QUEUE_SPANS: u64 = 20_000;
const WORKERS: u64 = 2;
const SENDERS: usize = 64;
const FLOOD: Duration = Duration::from_secs(12);

/// The collector under flood, with flags small enough that a flood is far past them.
fn start(data: &std::path::Path) -> Served {
    Served::start(
        data,
        &[
            // Nothing finishes by going idle: only the memory bound finalises.
            "--trace-idle",
            "1h",
            "--max-buffered-spans",
            &MAX_BUFFERED.to_string(),
            // Traces finalised early are kept for their late spans (the growing ones come back
            // again and again), their spans whose parent never comes waiting: a bound far past.
            "--max-kept-spans",
            &MAX_KEPT.to_string(),
            "--queue-spans",
            &QUEUE_SPANS.to_string(),
            "--workers",
            &WORKERS.to_string(),
            "--max-request-bytes",
            "1MiB",
            "--max-concurrent-requests",
            "2",
        ],
    )
}

fn request(spans: Vec<Span>) -> Bytes {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![grayscope::testkit::otlp::kv("service.name", "flood")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

fn span(trace: u128, id: u64, parent: Option<u64>) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: "flood".into(),
        kind: 2,
        attributes: vec![grayscope::testkit::otlp::kv("x-release-stage", "canary")],
        ..Default::default()
    }
}

/// Requests of one sender built before the flood, so that the senders are fast enough to flood.
/// Odd ones carry spans for traces that never finish, even ones a thousand single-span traces;
/// cycled, they arrive again as duplicates or late spans, which must be accounted for as well.
fn prebuilt(sender: u64) -> Vec<(Bytes, u64)> {
    (0..PREBUILT).map(|n| own_request(sender, n)).collect()
}

const PREBUILT: u64 = 24;

/// The n-th request of a sender: whole traces of the load generator (new trace ids every time),
/// or one of its prebuilt requests.
fn nth_request(templates: &[Template], own: &[(Bytes, u64)], sender: u64, n: u64) -> (Bytes, u64) {
    if n.is_multiple_of(3) {
        let t = &templates[(n as usize) % templates.len()];
        return (t.instance(sender, n, None).into(), t.spans as u64);
    }
    own[(n as usize) % own.len()].clone()
}

fn own_request(sender: u64, n: u64) -> (Bytes, u64) {
    let unique = (sender << 40) | n;
    match n % 2 {
        1 => {
            // 50 traces per sender that grow for the whole flood, 10 spans each time.
            let spans = (0..500u64)
                .map(|i| {
                    let trace = 0xAAAA_0000_0000 | (sender << 8) as u128 | (i % 50) as u128;
                    span(trace, (unique << 10) | i, Some(1))
                })
                .collect();
            (request(spans), 500)
        }
        _ => {
            let spans = (0..1000u64)
                .map(|i| span(((unique as u128) << 16) | i as u128 | 1 << 100, 1 + i, None))
                .collect();
            (request(spans), 1000)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_not_absorbed_and_every_span_is_accounted_for() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let templates: Arc<Vec<Template>> = Arc::new(
        (0..8)
            .map(|_| Template::build(990, (0.05, &[]), Wire::Http, &mut rng))
            .collect(),
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..SENDERS as u64 {
        let wire = if sender % 2 == 0 {
            Wire::Grpc
        } else {
            Wire::Http
        };
        let client = RawClient::new(
            wire,
            if wire == Wire::Grpc {
                server.grpc
            } else {
                server.http
            },
        );
        let own = tokio::task::spawn_blocking(move || prebuilt(sender))
            .await
            .unwrap();
        let (templates, accepted, refused, stop) = (
            templates.clone(),
            accepted.clone(),
            refused.clone(),
            stop.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (body, spans) = nth_request(&templates, &own, sender, n);
                loop {
                    let r = client.send(body.clone(), false).await.unwrap();
                    if r.is_ok() {
                        accepted.fetch_add(spans, Ordering::Relaxed);
                        break;
                    }
                    // Refused, and said so the way OTLP senders understand: retry later.
                    assert!(r.is_retryable(), "{r:?}");
                    if wire == Wire::Http {
                        assert_eq!(r.headers["retry-after"], "1", "{r:?}");
                    } else {
                        assert!(
                            r.headers.contains_key("grpc-status-details-bin"),
                            "RetryInfo"
                        );
                    }
                    refused.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                n += 1;
            }
        }));
    }

    // While the flood runs: the bounds hold at every look.
    let started = Instant::now();
    let mut rss_kib = Vec::new();
    while started.elapsed() < FLOOD {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = server.metrics().await;
        assert!(sum(&m, "grayscope_buffered_spans") <= MAX_BUFFERED);
        assert!(sum(&m, "grayscope_queued_spans") <= QUEUE_SPANS * WORKERS + 1000);
        rss_kib.push(server.status_kib("VmRSS:"));
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }

    // Once the queues are empty, every acknowledged span is in exactly one counter.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = server.metrics().await;
        if sum(&m, "grayscope_queued_spans") == 0 {
            // Let the workers publish what they did with the last batch.
            tokio::time::sleep(Duration::from_millis(300)).await;
            break server.metrics().await;
        }
        assert!(Instant::now() < deadline, "the queues never emptied");
    };
    let acked = accepted.load(Ordering::Relaxed);
    assert_eq!(sum(&m, "grayscope_receiver_accepted_spans_total"), acked);
    let finalised = sum(&m, "grayscope_spans_finalised_total");
    let accounted = finalised
        + sum(&m, "grayscope_duplicate_spans_total")
        + sum(&m, "grayscope_conflicting_spans_total")
        + sum(&m, "grayscope_late_spans_total")
        + sum(&m, "grayscope_buffered_spans")
        + sum(&m, "grayscope_queued_spans");
    assert_eq!(accounted, acked, "every acknowledged span is accounted for");
    // Every finalised trace got its verdict.
    assert_eq!(
        sum(&m, "grayscope_traces_total"),
        sum(&m, "grayscope_traces_finalised_total")
    );

    // It was a flood: far more than fits, much of it refused, the memory bound did the finalising.
    let refusals = refused.load(Ordering::Relaxed);
    eprintln!(
        "flood: {acked} spans accepted, {refusals} requests refused, {finalised} spans finalised early \
         or idle; RSS every 500 ms (MiB): {:?}",
        rss_kib.iter().map(|k| k >> 10).collect::<Vec<_>>()
    );
    assert!(acked > 10 * MAX_BUFFERED, "{acked} spans accepted");
    assert!(refusals > 0, "senders were asked to retry");
    assert_eq!(
        sum(
            &m,
            "grayscope_receiver_requests_total{protocol=\"grpc\",outcome=\"refused\"}"
        ) + sum(
            &m,
            "grayscope_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"refused\"}"
        ),
        refusals,
        "every refusal counted"
    );
    assert!(sum(&m, "grayscope_spans_finalised_total{reason=\"memory\"}") > 0);
    // Late spans reopened kept traces, and the kept ones stayed within their bound, the rest
    // forgotten early and counted, their waiting spans with them.
    assert!(sum(&m, "grayscope_spans_finalised_total{reason=\"late\"}") > 0);
    assert!(sum(&m, "grayscope_kept_spans") <= MAX_KEPT);
    assert!(sum(&m, "grayscope_kept_traces_evicted_total") > 0);
    assert!(sum(&m, "grayscope_orphans_expired_total{reason=\"memory\"}") > 0);

    // Memory: under the budget the flags give, and not growing while the flood went on.
    let budget = sum(&m, "grayscope_memory_budget_bytes");
    let peak = server.status_kib("VmHWM:") * 1024;
    eprintln!(
        "flood: peak RSS {} MiB, budget {} MiB",
        peak >> 20,
        budget >> 20
    );
    assert!(budget > 0 && budget < 1 << 30, "budget {budget}");
    assert!(peak <= budget, "peak RSS {peak} over the budget {budget}");
    let third = rss_kib.len() / 3;
    let early = *rss_kib[..third].iter().max().unwrap();
    let late = *rss_kib[2 * third..].iter().max().unwrap();
    assert!(
        late <= early + early / 4 + 16 * 1024,
        "RSS grew from {early} KiB to {late} KiB while the flood went on"
    );
}
