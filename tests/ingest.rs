//! The OTLP receivers' contract, over real sockets: partial success, retryable refusals, traces
//! split across requests and protocols, duplicates. Bad input of every kind is in `bad_input.rs`.

mod common;

use std::sync::Arc;

use common::otlp::*;
use common::*;
use grayscope::app::serve_receivers;
use grayscope::instances::{Clock, Instances};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::listen::{Accept, ListenMetrics};
use grayscope::loadgen::{RawClient, Wire};
use grayscope::membership::Membership;
use grayscope::model::SpanKind;
use grayscope::receive::{Decoder, Ingest, IngestMetrics, RequestLimits};
use grayscope::shard::{LaneReceiver, Shards};
use grayscope::telemetry::Telemetry;
use grayscope::testkit::RequestBuilder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn with_bad_spans(trace: u128) -> ExportTraceServiceRequest {
    let good_span = Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: vec![9; 8],
        name: "ok".into(),
        kind: 2,
        ..Default::default()
    };
    RequestBuilder::new()
        .resource("svc", None)
        .push(good_span.clone())
        .push(Span {
            trace_id: vec![1; 15],
            ..good_span.clone()
        })
        .push(Span {
            span_id: vec![],
            ..good_span.clone()
        })
        .push(Span {
            span_id: vec![8; 8],
            parent_span_id: vec![8; 8],
            ..good_span
        })
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spans_are_rejected_one_by_one_in_every_protocol() {
    let c = spawn_collector(test_args()).await;
    for (i, wire) in [Wire::Grpc, Wire::Http, Wire::HttpJson]
        .into_iter()
        .enumerate()
    {
        for gzip in [false, true] {
            let trace = 100 + i as u128 * 2 + gzip as u128;
            let r = client(&c, wire)
                .send(encode(wire, &with_bad_spans(trace)), gzip)
                .await
                .unwrap();
            assert!(r.is_ok(), "{wire:?} gzip={gzip}: {r:?}");
            let ps = response(wire, &r).partial_success.expect("partial success");
            assert_eq!(ps.rejected_spans, 3, "{wire:?}");
            assert!(
                ps.error_message.starts_with("rejected 3 of 4 spans: "),
                "{}",
                ps.error_message
            );
            assert!(
                ps.error_message
                    .contains("spans[1]: trace_id must be 16 bytes, got 15")
            );
            assert!(
                ps.error_message
                    .contains("spans[2]: span_id must be 8 bytes, got 0")
            );
            assert!(
                ps.error_message
                    .contains("spans[3]: span is its own parent")
            );
        }
    }
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_accepted_spans_total{protocol=\"grpc\"}"
        )
        .await,
        2.0
    );
    assert_eq!(metric(&c, "grayscope_receiver_rejected_spans_total{protocol=\"http_json\",reason=\"invalid_trace_id\"}").await, 2.0);
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"partial\"}"
        )
        .await,
        2.0
    );
    c.shutdown().await.unwrap();
}

/// The real receivers over lanes the test drains itself, so it decides when the queue has room.
struct Receivers {
    grpc: RawClient,
    http: RawClient,
    lanes: Vec<LaneReceiver>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
}

async fn receivers(queue_spans: usize) -> Receivers {
    let symbols = Arc::new(Symbols::new(&SymbolLimits::default()));
    let mut registry = grayscope::telemetry::registry();
    let metrics = Arc::new(IngestMetrics::register(&mut registry));
    let listen = ListenMetrics::register(&mut registry);
    let telemetry = Arc::new(Telemetry::new(registry));
    let (shards, lanes) = Shards::unattended(1, queue_spans);
    let ingest = Arc::new(Ingest {
        decoder: Decoder::new(
            symbols,
            Arc::new(Instances::new([], 1000)),
            Clock::new(),
            &[STAGE.into()],
            "deployment.stage",
        ),
        shards,
        metrics,
        membership: Arc::new(Membership::new("test".into(), "127.0.0.1:0".into(), 6_000)),
    });
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ga, ha) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let stop = CancellationToken::new();
    let limits = RequestLimits {
        max_bytes: 1 << 20,
        read_timeout: std::time::Duration::from_secs(10),
        max_concurrent: 4,
    };
    let accept = |listener| Accept::new(&listen, listener, limits.read_timeout);
    serve_receivers(
        ingest,
        (grpc, accept("otlp_grpc")),
        (http, accept("otlp_http")),
        limits,
        None,
        &Default::default(),
        stop.clone(),
    );
    Receivers {
        grpc: RawClient::new(Wire::Grpc, ga),
        http: RawClient::new(Wire::Http, ha),
        lanes,
        telemetry,
        stop,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_is_a_retryable_refusal_never_a_silent_drop() {
    let mut r = receivers(3).await;
    let body = |t| encode(Wire::Grpc, &good(t));
    assert!(r.grpc.send(body(1), false).await.unwrap().is_ok());
    // The queue holds 3 spans and is full: both protocols refuse, retryably.
    let g = r.grpc.send(body(2), false).await.unwrap();
    assert_eq!(g.grpc_status, Some(14), "UNAVAILABLE: {g:?}");
    assert!(
        g.headers.get("grpc-status-details-bin").is_some(),
        "with RetryInfo"
    );
    let h = r.http.send(body(2), false).await.unwrap();
    assert_eq!(h.http, 503);
    assert_eq!(h.headers["retry-after"], "1");
    assert_eq!(
        http_status(Wire::Http, &h),
        (
            14,
            "verification queue of worker 0 is full; retry later".into()
        )
    );
    // Once the worker takes the queued batch, the retry is accepted.
    let first = r.lanes[0].next_batch().await.unwrap();
    assert_eq!(first.spans.len(), 3);
    assert!(r.http.send(body(2), false).await.unwrap().is_ok());
    let second = r.lanes[0].next_batch().await.unwrap();
    assert_eq!(second.spans[0].0, grayscope::model::TraceId(2));
    let text = r.telemetry.encode();
    assert!(
        text.contains("grayscope_receiver_refused_spans_total{protocol=\"grpc\"} 3"),
        "{text}"
    );
    assert!(
        text.contains(
            "grayscope_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"refused\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("grayscope_receiver_accepted_spans_total{protocol=\"http_protobuf\"} 3"),
        "{text}"
    );
    r.stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_split_across_requests_and_protocols_child_first_with_retries() {
    let c = spawn_collector(test_args()).await;
    let trace = 0xabcdef;
    let leaf = RequestBuilder::new()
        .resource("users", Some("stable"))
        .span(
            trace,
            3,
            Some(2),
            "GET /u",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .build();
    let middle = RequestBuilder::new()
        .resource("gateway", Some("stable"))
        .span(
            trace,
            2,
            Some(1),
            "GET /u",
            SpanKind::Client,
            &[(STAGE, "canary")],
        )
        .build();
    let root = RequestBuilder::new()
        .resource("gateway", Some("stable"))
        .span(
            trace,
            1,
            None,
            "GET /",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .build();
    // Child first, each part on another protocol, and every part delivered twice (a retry).
    for (wire, req) in [
        (Wire::HttpJson, &leaf),
        (Wire::Grpc, &middle),
        (Wire::Http, &root),
    ] {
        for _ in 0..2 {
            assert!(
                client(&c, wire)
                    .send(encode(wire, req), false)
                    .await
                    .unwrap()
                    .is_ok()
            );
        }
    }
    c.flush().await;
    assert_eq!(findings(&c).await, vec![]);
    assert_eq!(metric(&c, "grayscope_duplicate_spans_total").await, 3.0);
    let g = get_json(&c, "/api/v1/graph").await;
    assert_eq!(g["edges"][0]["calls"], 1, "counted once: {g}");
    assert_eq!(g["edges"][0]["verdicts"]["ok"], 2);
    c.shutdown().await.unwrap();
}
