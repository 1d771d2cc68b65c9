//! The OTLP receivers' contract, over real sockets: partial success, malformed and oversized
//! bodies, unsupported types and encodings, retryable refusals, duplicates. After every bad request
//! the collector must still accept the next good one.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use grayscope::app::{Collector, serve_receivers};
use grayscope::instances::{Clock, Instances};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::loadgen::client::compress;
use grayscope::loadgen::{RawClient, Reply, Wire};
use grayscope::model::SpanKind;
use grayscope::receive::{Decoder, Ingest};
use grayscope::shard::{LaneReceiver, Shards};
use grayscope::telemetry::Telemetry;
use grayscope::testkit::RequestBuilder;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A clean trace: gateway SERVER -> gateway CLIENT -> users SERVER, all canary.
fn good(trace: u128) -> ExportTraceServiceRequest {
    RequestBuilder::new()
        .resource("gateway", Some("stable"))
        .span(
            trace,
            1,
            None,
            "GET /",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .span(
            trace,
            2,
            Some(1),
            "GET /u",
            SpanKind::Client,
            &[(STAGE, "canary")],
        )
        .resource("users", Some("stable"))
        .span(
            trace,
            3,
            Some(2),
            "GET /u",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .build()
}

fn encode(wire: Wire, req: &ExportTraceServiceRequest) -> Bytes {
    match wire {
        Wire::HttpJson => serde_json::to_vec(req).unwrap().into(),
        _ => req.encode_to_vec().into(),
    }
}

fn client(c: &Collector, wire: Wire) -> RawClient {
    RawClient::new(
        wire,
        if wire == Wire::Grpc {
            c.otlp_grpc
        } else {
            c.otlp_http
        },
    )
}

/// A good request is accepted in full: the receiver still works.
async fn still_serves(c: &Collector, wire: Wire, trace: u128) {
    let r = client(c, wire)
        .send(encode(wire, &good(trace)), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(response(wire, &r).partial_success, None);
}

fn response(wire: Wire, r: &Reply) -> ExportTraceServiceResponse {
    match wire {
        Wire::HttpJson => {
            assert_eq!(r.headers["content-type"], "application/json");
            serde_json::from_slice(&r.body).unwrap()
        }
        Wire::Http => {
            assert_eq!(r.headers["content-type"], "application/x-protobuf");
            ExportTraceServiceResponse::decode(r.body.clone()).unwrap()
        }
        Wire::Grpc => ExportTraceServiceResponse::decode(r.body.clone()).unwrap(),
    }
}

/// An HTTP error body: a google.rpc.Status in the request's encoding.
fn http_status(wire: Wire, r: &Reply) -> (i64, String) {
    if wire == Wire::HttpJson || r.headers["content-type"] == "application/json" {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (
            v["code"].as_i64().unwrap(),
            v["message"].as_str().unwrap().to_string(),
        )
    } else {
        let s = tonic_types::Status::decode(r.body.clone()).unwrap();
        (s.code as i64, s.message)
    }
}

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

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_invalid_argument() {
    let c = spawn_collector(test_args()).await;
    let garbage = Bytes::from_static(b"\xff\xff\xff\xff not protobuf");
    for gzip in [false, true] {
        let r = client(&c, Wire::Grpc)
            .send(garbage.clone(), gzip)
            .await
            .unwrap();
        assert_eq!(r.grpc_status, Some(3), "{r:?}");
        assert!(
            r.grpc_message
                .as_deref()
                .unwrap()
                .contains("failed to decode Protobuf message"),
            "{r:?}"
        );

        let r = client(&c, Wire::Http)
            .send(garbage.clone(), gzip)
            .await
            .unwrap();
        assert_eq!(r.http, 400);
        let (code, msg) = http_status(Wire::Http, &r);
        assert_eq!(code, 3);
        assert!(msg.starts_with("invalid OTLP protobuf: "), "{msg}");

        let r = client(&c, Wire::HttpJson)
            .send(Bytes::from_static(b"{\"resourceSpans\": 7}"), gzip)
            .await
            .unwrap();
        assert_eq!(r.http, 400);
        let (code, msg) = http_status(Wire::HttpJson, &r);
        assert_eq!(code, 3);
        assert!(msg.starts_with("invalid OTLP/JSON: "), "{msg}");
    }
    // Corrupt gzip: a valid header, then garbage.
    let mut corrupt = compress(&good(1).encode_to_vec()).to_vec();
    let n = corrupt.len();
    corrupt[12..n - 8].iter_mut().for_each(|b| *b ^= 0x5a);
    let corrupt = Bytes::from(corrupt);
    let r = client(&c, Wire::Http)
        .send_request(post(
            &c,
            "application/x-protobuf",
            Some("gzip"),
            corrupt.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(r.http, 400);
    assert!(
        http_status(Wire::Http, &r)
            .1
            .starts_with("invalid gzip body"),
        "{r:?}"
    );
    for wire in [Wire::Grpc, Wire::Http, Wire::HttpJson] {
        still_serves(&c, wire, 7).await;
    }
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_requests_total{protocol=\"grpc\",outcome=\"invalid\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"invalid\"}"
        )
        .await,
        3.0
    );
    c.shutdown().await.unwrap();
}

fn post(
    c: &Collector,
    content_type: &str,
    encoding: Option<&str>,
    body: Bytes,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post(format!("http://{}/v1/traces", c.otlp_http));
    if !content_type.is_empty() {
        b = b.header("content-type", content_type);
    }
    if let Some(e) = encoding {
        b = b.header("content-encoding", e);
    }
    b.body(Full::new(body)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_content_types_and_encodings_are_415() {
    let c = spawn_collector(test_args()).await;
    let http = client(&c, Wire::Http);
    let body = encode(Wire::Http, &good(3));
    for ct in ["text/plain", "", "application/grpc"] {
        let r = http
            .send_request(post(&c, ct, None, body.clone()))
            .await
            .unwrap();
        assert_eq!(r.http, 415, "{ct:?}");
        assert!(
            http_status(Wire::HttpJson, &r)
                .1
                .starts_with("unsupported Content-Type"),
            "{r:?}"
        );
    }
    let r = http
        .send_request(post(&c, "application/x-protobuf", Some("br"), body.clone()))
        .await
        .unwrap();
    assert_eq!(r.http, 415);
    assert!(
        http_status(Wire::Http, &r)
            .1
            .contains("unsupported Content-Encoding \"br\"")
    );
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_requests_total{protocol=\"http_other\",outcome=\"unsupported\"}"
        )
        .await,
        3.0
    );
    // Parameters and case do not matter.
    let r = http
        .send_request(post(
            &c,
            "Application/JSON; charset=utf-8",
            None,
            encode(Wire::HttpJson, &good(4)),
        ))
        .await
        .unwrap();
    assert_eq!(r.http, 200, "{r:?}");
    still_serves(&c, Wire::Http, 5).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_and_gzip_bombs_are_refused_without_retry() {
    let mut args = test_args();
    args.max_request_bytes = Some("64KiB".parse().unwrap());
    let c = spawn_collector(args).await;
    let big = Bytes::from(vec![0u8; 100 << 10]);
    // A few KiB that inflate to 8 MiB.
    let bomb_payload = vec![0u8; 8 << 20];
    let bomb = compress(&bomb_payload);
    assert!(
        bomb.len() < 64 << 10,
        "the bomb itself is under the limit: {}",
        bomb.len()
    );

    let r = client(&c, Wire::Http)
        .send(big.clone(), false)
        .await
        .unwrap();
    assert_eq!(r.http, 413);
    assert_eq!(http_status(Wire::Http, &r).0, 8);
    let r = client(&c, Wire::Http)
        .send_request(post(
            &c,
            "application/x-protobuf",
            Some("gzip"),
            bomb.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(r.http, 413, "{r:?}");
    assert!(
        http_status(Wire::Http, &r)
            .1
            .contains("exceeds the limit of 65536 bytes")
    );

    for payload in [big, Bytes::from(bomb_payload)] {
        let compressed = payload.len() == 8 << 20;
        let r = client(&c, Wire::Grpc)
            .send(payload, compressed)
            .await
            .unwrap();
        assert_eq!(r.grpc_status, Some(8), "RESOURCE_EXHAUSTED: {r:?}");
        assert!(
            r.headers.get("grpc-status-details-bin").is_none(),
            "no RetryInfo: not retryable"
        );
    }
    for wire in [Wire::Grpc, Wire::Http] {
        still_serves(&c, wire, 9).await;
    }
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_requests_total{protocol=\"grpc\",outcome=\"too_large\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_requests_total{protocol=\"http_protobuf\",outcome=\"too_large\"}"
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
    let telemetry = Arc::new(Telemetry::new(symbols.clone(), None));
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
        telemetry: telemetry.clone(),
    });
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ga, ha) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let stop = CancellationToken::new();
    serve_receivers(ingest, grpc, http, 1 << 20, None, stop.clone());
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
