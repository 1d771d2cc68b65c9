//! Bad input of every kind, over real sockets: each case asserts the exact answer (status, code,
//! message, counters) and that the collector still accepts the next good request.
//!
//! Malformed and truncated bodies, gzip that is corrupt, cut short or a bomb, wrong and missing
//! content types, JSON with wrong types, bad ids, self-parenting spans and parent cycles,
//! conflicting duplicates, a trace of 200,000 spans, a chain 100,000 deep, 100,000 service names,
//! invalid UTF-8, 10 MiB attribute values, slow HTTP bodies, silent connections and slow request
//! heads, and abandoned gRPC streams.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::otlp::*;
use common::*;
use grayscope::loadgen::Wire;
use grayscope::loadgen::client::{EXPORT_PATH, compress, grpc_frame};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use grayscope::testkit::otlp::kv;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn span(trace: u128, id: u64, parent: Option<u64>, name: &str, stage: &str) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + id,
        end_time_unix_nano: 1_700_000_000_000_000_000 + id + 1,
        attributes: vec![kv(STAGE, stage)],
        ..Default::default()
    }
}

/// Sends `req` over OTLP/HTTP protobuf and asserts it was accepted in full.
async fn accepted(c: &TestCollector, req: &ExportTraceServiceRequest) {
    let r = client(c, Wire::Http)
        .send(encode(Wire::Http, req), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(response(Wire::Http, &r).partial_success, None);
}

async fn requests(c: &TestCollector, protocol: &str, outcome: &str) -> f64 {
    metric(
        c,
        &format!(
            "grayscope_receiver_requests_total{{protocol=\"{protocol}\",outcome=\"{outcome}\"}}"
        ),
    )
    .await
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
    assert_eq!(requests(&c, "grpc", "invalid").await, 2.0);
    assert_eq!(requests(&c, "http_protobuf", "invalid").await, 3.0);
    c.shutdown().await.unwrap();
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
    assert_eq!(requests(&c, "http_other", "unsupported").await, 3.0);
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
    assert_eq!(requests(&c, "grpc", "too_large").await, 2.0);
    assert_eq!(requests(&c, "http_protobuf", "too_large").await, 2.0);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn json_with_wrong_types_is_400_and_names_the_problem() {
    let c = spawn_collector(test_args()).await;
    let http = client(&c, Wire::HttpJson);
    let cases = [
        (r#"{"resourceSpans": 7}"#, "invalid type: integer `7`"),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name": ["a"]}]}]}]}"#,
            "invalid type: sequence, expected a string",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId": 5}]}]}]}"#,
            "invalid type: integer `5`",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId": "not hex at all!!"}]}]}]}"#,
            "invalid character 'n' at position 0",
        ),
        (r#"{"resourceSpans": ["#, "EOF while parsing"),
        ("[1, 2]", "invalid type: integer `1`"),
    ];
    for (body, expected) in cases {
        let r = http.send(Bytes::from(body), false).await.unwrap();
        assert_eq!(r.http, 400, "{body}: {r:?}");
        let (code, msg) = http_status(Wire::HttpJson, &r);
        assert_eq!(code, 3, "INVALID_ARGUMENT: {body}");
        assert!(msg.starts_with("invalid OTLP/JSON: "), "{body}: {msg}");
        assert!(msg.contains(expected), "{body}: {msg}");
    }
    still_serves(&c, Wire::HttpJson, 1).await;
    assert_eq!(
        requests(&c, "http_json", "invalid").await,
        cases.len() as f64
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_in_strings_is_invalid_argument() {
    let c = spawn_collector(test_args()).await;
    // A valid request whose span name is then overwritten with bytes that are not UTF-8.
    let req = RequestBuilder::new()
        .resource("svc", None)
        .push(span(5, 1, None, "MARKER", "canary"))
        .build();
    let mut bytes = req.encode_to_vec();
    let at = bytes.windows(6).position(|w| w == b"MARKER").unwrap();
    bytes[at..at + 6].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]);
    let bytes = Bytes::from(bytes);

    let r = client(&c, Wire::Http)
        .send(bytes.clone(), false)
        .await
        .unwrap();
    assert_eq!(r.http, 400, "{r:?}");
    let (code, msg) = http_status(Wire::Http, &r);
    assert_eq!(code, 3);
    assert!(
        msg.starts_with("invalid OTLP protobuf: ") && msg.contains("UTF-8"),
        "{msg}"
    );
    let r = client(&c, Wire::Grpc).send(bytes, false).await.unwrap();
    assert_eq!(r.grpc_status, Some(3), "INVALID_ARGUMENT: {r:?}");
    assert!(
        r.grpc_message.as_deref().unwrap().contains("UTF-8"),
        "{r:?}"
    );

    // The same in JSON: a string with raw bytes that are not UTF-8.
    let mut json = serde_json::to_vec(&good(6)).unwrap();
    let at = json.windows(7).position(|w| w == b"gateway").unwrap();
    json[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let r = client(&c, Wire::HttpJson)
        .send(Bytes::from(json), false)
        .await
        .unwrap();
    assert_eq!(r.http, 400, "{r:?}");
    let (code, msg) = http_status(Wire::HttpJson, &r);
    assert_eq!(code, 3);
    assert!(msg.starts_with("invalid OTLP/JSON: "), "{msg}");

    for wire in [Wire::Grpc, Wire::Http, Wire::HttpJson] {
        still_serves(&c, wire, 7).await;
    }
    assert_eq!(requests(&c, "grpc", "invalid").await, 1.0);
    assert_eq!(requests(&c, "http_protobuf", "invalid").await, 1.0);
    assert_eq!(requests(&c, "http_json", "invalid").await, 1.0);
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_accepted_spans_total{protocol=\"grpc\"}"
        )
        .await,
        3.0,
        "only the good request's spans"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_corrupt_gzip_is_invalid_argument() {
    let c = spawn_collector(test_args()).await;
    let plain = good(1).encode_to_vec();
    let whole = compress(&plain);
    let truncated = whole.slice(..whole.len() / 2);
    let mut corrupt = whole.to_vec();
    let n = corrupt.len();
    corrupt[12..n - 8].iter_mut().for_each(|b| *b ^= 0x5a);
    let corrupt = Bytes::from(corrupt);

    for (what, body) in [("truncated", truncated), ("corrupt", corrupt)] {
        let r = client(&c, Wire::Http)
            .send_request(post(
                &c,
                "application/x-protobuf",
                Some("gzip"),
                body.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(r.http, 400, "{what}: {r:?}");
        let (code, msg) = http_status(Wire::Http, &r);
        assert_eq!(code, 3, "{what}");
        assert!(msg.starts_with("invalid gzip body: "), "{what}: {msg}");

        // gRPC: the message flagged compressed, its bytes not valid gzip.
        let req = http::Request::post(format!("http://{}{EXPORT_PATH}", c.otlp_grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-encoding", "gzip")
            .body(http_body_util::Full::new(grpc_frame(&body, true)))
            .unwrap();
        let r = client(&c, Wire::Grpc).send_request(req).await.unwrap();
        assert_eq!(r.grpc_status, Some(3), "{what}: INVALID_ARGUMENT: {r:?}");
        assert!(
            r.grpc_message
                .as_deref()
                .unwrap()
                .starts_with("Error decompressing"),
            "{what}: {r:?}"
        );
    }
    for wire in [Wire::Grpc, Wire::Http] {
        still_serves(&c, wire, 2).await;
    }
    assert_eq!(requests(&c, "http_protobuf", "invalid").await, 2.0);
    assert_eq!(requests(&c, "grpc", "invalid").await, 2.0);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_are_rejected_span_by_span() {
    let c = spawn_collector(test_args()).await;
    let ok = span(9, 1, None, "ok", "canary");
    let req = RequestBuilder::new()
        .resource("svc", None)
        .push(ok.clone())
        .push(Span {
            trace_id: vec![7; 17],
            ..ok.clone()
        })
        .push(Span {
            trace_id: vec![],
            ..ok.clone()
        })
        .push(Span {
            trace_id: vec![0; 16],
            ..ok.clone()
        })
        .push(Span {
            span_id: vec![0; 8],
            ..ok.clone()
        })
        .push(Span {
            span_id: vec![3; 4],
            ..ok.clone()
        })
        .push(Span {
            parent_span_id: vec![1; 3],
            span_id: vec![2; 8],
            ..ok.clone()
        })
        .push(Span {
            parent_span_id: vec![4; 8],
            span_id: vec![4; 8],
            ..ok.clone()
        })
        // An all-zero parent is "no parent", as some exporters write it.
        .push(Span {
            parent_span_id: vec![0; 8],
            span_id: vec![5; 8],
            ..ok.clone()
        })
        .build();
    for wire in [Wire::Grpc, Wire::Http, Wire::HttpJson] {
        let r = client(&c, wire)
            .send(encode(wire, &req), false)
            .await
            .unwrap();
        assert!(r.is_ok(), "{wire:?}: {r:?}");
        let ps = response(wire, &r).partial_success.expect("partial success");
        assert_eq!(ps.rejected_spans, 7, "{wire:?}");
        let p = "resource_spans[0].scope_spans[0].spans";
        assert_eq!(
            ps.error_message,
            format!(
                "rejected 7 of 9 spans: {p}[1]: trace_id must be 16 bytes, got 17; \
                 {p}[2]: trace_id must be 16 bytes, got 0; {p}[3]: trace_id is all zeroes; \
                 {p}[4]: span_id is all zeroes; {p}[5]: span_id must be 8 bytes, got 4; and 2 more"
            ),
            "{wire:?}"
        );
    }
    // OTLP/JSON ids are hex: the wrong number of digits is the wrong length.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"abcd","spanId":"0102030405060708","name":"short"},
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"010203","name":"short span"}]}]}]}"#;
    let r = client(&c, Wire::HttpJson)
        .send(Bytes::from(json), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    let ps = response(Wire::HttpJson, &r).partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 2);
    assert!(
        ps.error_message
            .contains("spans[0]: trace_id must be 16 bytes, got 2"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message
            .contains("spans[1]: span_id must be 8 bytes, got 3"),
        "{}",
        ps.error_message
    );

    still_serves(&c, Wire::Grpc, 10).await;
    let rejected = |reason: &str| {
        format!(
            "grayscope_receiver_rejected_spans_total{{protocol=\"http_json\",reason=\"{reason}\"}}"
        )
    };
    assert_eq!(metric(&c, &rejected("invalid_trace_id")).await, 4.0);
    assert_eq!(metric(&c, &rejected("invalid_span_id")).await, 3.0);
    assert_eq!(metric(&c, &rejected("invalid_parent_span_id")).await, 1.0);
    assert_eq!(metric(&c, &rejected("own_parent")).await, 1.0);
    c.shutdown().await.unwrap();
}

/// Waits (up to 10 s) until `sample` reads `want`: worker counters are published after each batch.
async fn eventually(c: &TestCollector, sample: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(c, sample).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sample} is {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of every sample whose line starts with `prefix`.
async fn metric_sum(c: &TestCollector, prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", c.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn parent_cycles_are_broken_traces_once_per_cycle() {
    let c = spawn_collector(test_args()).await;
    let trace = 0x20;
    let mut b = RequestBuilder::new()
        .resource("loop", None)
        // A sane part: a root and its child.
        .push(span(trace, 1, None, "root", "canary"))
        .push(span(trace, 2, Some(1), "child", "canary"))
        // A span that is its own grandparent, and a chain hanging off that cycle.
        .push(span(trace, 10, Some(11), "a", "canary"))
        .push(span(trace, 11, Some(10), "b", "canary"))
        .push(span(trace, 12, Some(11), "below the cycle", "canary"));
    // Many more two-span cycles in the same trace.
    for k in 0..2_000u64 {
        let id = 1_000 + 2 * k;
        b = b
            .push(span(trace, id, Some(id + 1), "x", "canary"))
            .push(span(trace, id + 1, Some(id), "y", "canary"));
    }
    accepted(&c, &b.build()).await;
    c.flush().await;
    assert_eq!(
        metric(
            &c,
            "grayscope_traces_total{stage=\"canary\",result=\"broken\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_sum(&c, "grayscope_findings_total{kind=\"broken_trace\"").await,
        2_001.0,
        "one first break per cycle"
    );
    let v = get_json(&c, &format!("/api/v1/traces/{trace:032x}")).await;
    assert_eq!(v["spans"].as_array().unwrap().len(), 4_005);
    let cycle = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["callee"]["span_name"] == "a")
        .expect("the first cycle is reported");
    assert!(
        cycle["detail"].as_str().unwrap().contains("cycle"),
        "{cycle}"
    );
    still_serves(&c, Wire::Http, 3).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_span_ids_with_different_content_keep_the_first() {
    let mut args = test_args();
    args.trace_idle = Some("1h".parse().unwrap());
    let c = spawn_collector(args).await;
    let trace = 0x30;
    let first = RequestBuilder::new()
        .resource("svc", Some("stable"))
        .push(span(trace, 1, None, "first", "canary"))
        .build();
    let other = RequestBuilder::new()
        .resource("svc", Some("stable"))
        .push(span(trace, 1, None, "second", "stable"))
        .build();
    accepted(&c, &first).await;
    accepted(&c, &other).await;
    accepted(&c, &first).await;
    eventually(&c, "grayscope_conflicting_spans_total", 1.0).await;
    eventually(&c, "grayscope_duplicate_spans_total", 1.0).await;
    let v = get_json(&c, &format!("/api/v1/traces/{trace:032x}")).await;
    let spans = v["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1, "{v}");
    assert_eq!(spans[0]["name"], "first");
    assert_eq!(spans[0]["stage"], "canary");
    still_serves(&c, Wire::Grpc, 4).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_of_200000_spans_is_judged_whole() {
    // Idle long enough that the four parts meet however slowly they are built.
    let mut args = test_args();
    args.trace_idle = Some("1h".parse().unwrap());
    let c = spawn_collector(args).await;
    let trace = 0x40;
    let mut root = span(trace, 1, None, "root", "canary");
    root.kind = SpanKind::Server as i32;
    for part in 0..4u64 {
        let mut b = RequestBuilder::new().resource("wide", Some("stable"));
        if part == 0 {
            b = b.push(root.clone());
        }
        for id in (part * 50_000).max(1) + 1..=(part + 1) * 50_000 {
            let mut s = span(trace, id, Some(1), "work", "canary");
            s.kind = SpanKind::Internal as i32;
            b = b.push(s);
        }
        accepted(&c, &b.build()).await;
    }
    c.flush().await;
    assert_eq!(
        metric(
            &c,
            "grayscope_edges_total{caller=\"wide\",callee=\"wide\",stage=\"canary\",verdict=\"ok\"}"
        )
        .await,
        199_999.0
    );
    assert_eq!(
        metric(
            &c,
            "grayscope_traces_total{stage=\"canary\",result=\"consistent\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&c, "grayscope_traces_finalised_total{reason=\"memory\"}").await,
        0.0
    );
    still_serves(&c, Wire::Grpc, 5).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_100000_deep_is_walked_without_recursion() {
    let c = spawn_collector(test_args()).await;
    let trace = 0x50;
    let depth = 100_000u64;
    let mut b = RequestBuilder::new().resource("deep", Some("stable"));
    for id in 1..=depth {
        // The stage changes at the very bottom.
        let stage = if id == depth { "stable" } else { "canary" };
        // Every span named differently: the stored trace's string table has 100,000 entries.
        let mut s = span(
            trace,
            id,
            (id > 1).then(|| id - 1),
            &format!("step {id}"),
            stage,
        );
        s.kind = SpanKind::Internal as i32;
        b = b.push(s);
    }
    accepted(&c, &b.build()).await;
    c.flush().await;
    assert_eq!(
        findings(&c).await,
        vec![f("changed", "in_process", "deep", "deep", true)]
    );
    let v = get_json(&c, &format!("/api/v1/traces/{trace:032x}")).await;
    assert_eq!(v["spans"].as_array().unwrap().len(), depth as usize);
    let page = reqwest::get(format!("http://{}/traces/{trace:032x}", c.http))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("100000 spans"),
        "the page says how many spans there are"
    );
    assert!(
        html.len() < 4 << 20,
        "the page stays small: {} bytes",
        html.len()
    );
    still_serves(&c, Wire::Http, 6).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_service_names_fold_into_other() {
    let c = spawn_collector(test_args()).await;
    for part in 0..4u128 {
        let mut b = RequestBuilder::new();
        for i in part * 25_000..(part + 1) * 25_000 {
            b = b
                .resource(&format!("service-{i:06}"), Some("stable"))
                .push(span(0x1_0000_0000 + i, 1, None, "GET /", "canary"));
        }
        accepted(&c, &b.build()).await;
    }
    c.flush().await;
    assert_eq!(
        metric(
            &c,
            "grayscope_traces_total{stage=\"canary\",result=\"consistent\"}"
        )
        .await,
        100_000.0
    );
    assert_eq!(
        metric(&c, "grayscope_interned_strings{table=\"services\"}").await,
        10_000.0,
        "the table stops at its cap"
    );
    assert!(metric(&c, "grayscope_interned_overflow_total{table=\"services\"}").await >= 90_000.0);
    let services = get_json(&c, "/api/v1/services").await;
    let n = services["services"].as_array().unwrap().len();
    assert!(n <= 10_001, "{n} services listed");
    still_serves(&c, Wire::Grpc, 7).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_values_of_10_mib_are_accepted_and_not_kept() {
    let c = spawn_collector(test_args()).await;
    let trace = 0x60;
    let huge_stage = "x".repeat(10 << 20);
    let root = span(trace, 1, None, "root", &huge_stage);
    let mut child = span(trace, 2, Some(1), "child", "canary");
    child.attributes.push(kv("payload", &"p".repeat(10 << 20)));
    let req = RequestBuilder::new()
        .resource("big", Some("stable"))
        .push(root)
        .build();
    let r = client(&c, Wire::Grpc)
        .send(encode(Wire::Grpc, &req), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    accepted(
        &c,
        &RequestBuilder::new()
            .resource("big", Some("stable"))
            .push(child)
            .build(),
    )
    .await;
    c.flush().await;
    assert_eq!(
        findings(&c).await,
        vec![f("changed", "in_process", "big", "big", true)]
    );
    let v = get_json(&c, "/api/v1/findings").await;
    assert!(
        v.to_string().len() < 16 << 10,
        "the stage value is cut when interned, not stored at 10 MiB"
    );
    still_serves(&c, Wire::Grpc, 8).await;
    c.shutdown().await.unwrap();
}

fn with_read_timeout() -> grayscope::config::ServeArgs {
    let mut args = test_args();
    args.read_timeout = Some("1s".parse().unwrap());
    args
}

/// Sends `head` and then whatever `trickle` yields, one piece every 100 ms, and returns everything
/// the server answered until it closed (or reset) the connection, with how long that took.
async fn slow_post(addr: std::net::SocketAddr, head: &str, trickle: usize) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..trickle {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
        wr
    });
    let mut buf = Vec::new();
    // Closing with bytes unread makes the kernel send a reset rather than an end of stream.
    match tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes within 10 s")
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e}"),
    }
    let took = started.elapsed();
    writer.abort();
    (String::from_utf8_lossy(&buf).into_owned(), took)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_http_bodies_time_out_with_408() {
    let c = spawn_collector(with_read_timeout()).await;
    let head = |len: usize| {
        format!(
            "POST /v1/traces HTTP/1.1\r\nhost: grayscope\r\ncontent-type: application/x-protobuf\r\ncontent-length: {len}\r\n\r\n0123456789"
        )
    };
    // A body that stops after 10 of 1,000 bytes, and one that trickles a byte every 100 ms.
    for (what, trickle) in [("stalled", 0), ("trickling", 100)] {
        let (answer, took) = slow_post(c.otlp_http, &head(1_000), trickle).await;
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{what}: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{what}: {answer}"
        );
        assert!(
            answer.contains("request body not received within 1s (--read-timeout)"),
            "{what}: {answer}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{what}: answered after {took:?}"
        );
    }
    assert_eq!(requests(&c, "http_protobuf", "timeout").await, 2.0);
    still_serves(&c, Wire::Http, 9).await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_slow_connections_are_closed_after_the_read_timeout() {
    let c = spawn_collector(with_read_timeout()).await;
    let head = "POST /v1/traces HTTP/1.1\r\nhost: grayscope\r\n";
    let cases = [
        ("OTLP/HTTP, silent", c.otlp_http, "", 0),
        ("OTLP/HTTP, a head a byte at a time", c.otlp_http, head, 100),
        ("OTLP/gRPC, silent", c.otlp_grpc, "", 0),
        (
            "OTLP/gRPC, half the HTTP/2 preface",
            c.otlp_grpc,
            "PRI * HTTP/2.0\r\n",
            0,
        ),
        ("API, silent", c.http, "", 0),
    ];
    for (what, addr, head, trickle) in cases {
        let (answer, took) = slow_post(addr, head, trickle).await;
        assert_eq!(answer, "", "{what}: closed without an answer");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
    }
    let timeouts = async |listener: &str| {
        let sample = format!("grayscope_connection_timeouts_total{{listener=\"{listener}\"}}");
        metric(&c, &sample).await
    };
    assert_eq!(timeouts("otlp_http").await, 2.0);
    assert_eq!(timeouts("otlp_grpc").await, 2.0);
    assert_eq!(timeouts("http").await, 1.0);

    // A keep-alive connection is closed once it has waited that long for its next request.
    let tcp = TcpStream::connect(c.otlp_http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let resp = send
        .send_request(
            http::Request::get("/healthz")
                .header("host", "grayscope")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let idle = Instant::now();
    assert_eq!(resp.status(), http::StatusCode::NOT_FOUND, "{resp:?}");
    let _ = resp.into_body().collect().await;
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed within 5 s")
        .unwrap()
        .unwrap();
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
    assert_eq!(timeouts("otlp_http").await, 3.0);

    still_serves(&c, Wire::Http, 11).await;
    still_serves(&c, Wire::Grpc, 12).await;
    c.shutdown().await.unwrap();
}

type StreamedBody =
    StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, std::io::Error>>>;

/// An Export call whose request body the test feeds by hand, on its own HTTP/2 connection.
struct OpenStream {
    body: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    response: tokio::task::JoinHandle<hyper::Result<http::Response<hyper::body::Incoming>>>,
    connection: tokio::task::JoinHandle<hyper::Result<()>>,
}

async fn open_stream(c: &TestCollector) -> OpenStream {
    let tcp = TcpStream::connect(c.otlp_grpc).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, StreamedBody>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(conn);
    send.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post(format!("http://{}{EXPORT_PATH}", c.otlp_grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    let response = tokio::spawn(send.send_request(req));
    // Part of a message: a frame header announcing 1,000 bytes, then 10 of them.
    tx.send(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0x03, 0xe8]))))
        .await
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from(vec![0u8; 10]))))
        .await
        .unwrap();
    OpenStream {
        body: tx,
        response,
        connection,
    }
}

fn grpc_status_of(resp: &http::Response<hyper::body::Incoming>) -> Option<&str> {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_grpc_streams_cost_nothing() {
    let c = spawn_collector(with_read_timeout()).await;

    // Stalled: the rest of the message never comes. The read timeout ends the call.
    let stalled = open_stream(&c).await;
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), stalled.response)
        .await
        .expect("answered within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        grpc_status_of(&resp),
        Some("4"),
        "DEADLINE_EXCEEDED: {resp:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(stalled.body);

    // Ended early: the sender closes its side mid-message.
    let cut = open_stream(&c).await;
    drop(cut.body);
    let resp = tokio::time::timeout(Duration::from_secs(10), cut.response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        grpc_status_of(&resp),
        Some("3"),
        "INVALID_ARGUMENT: {resp:?}"
    );
    let _ = resp.into_body().collect().await;

    // Reset: the sender cancels the stream mid-message.
    let reset = open_stream(&c).await;
    reset
        .body
        .send(Err(std::io::Error::other("the sender gives up")))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), reset.response)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.is_err(), "a reset stream gets no answer: {answer:?}");

    // Gone: the whole connection is dropped with a stream open.
    let gone = open_stream(&c).await;
    gone.connection.abort();
    gone.response.abort();
    drop(gone.body);

    still_serves(&c, Wire::Grpc, 10).await;
    assert_eq!(requests(&c, "grpc", "timeout").await, 1.0);
    assert_eq!(requests(&c, "grpc", "invalid").await, 1.0);
    assert_eq!(
        metric(
            &c,
            "grayscope_receiver_accepted_spans_total{protocol=\"grpc\"}"
        )
        .await,
        3.0,
        "only the good request's spans"
    );
    // Shutdown is not held up by anything those streams left behind.
    let started = Instant::now();
    c.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
