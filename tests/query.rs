//! The gRPC query API through a tonic client generated from the same proto, on the collector's
//! OTLP/gRPC address.

mod common;

use common::*;
use grayscope::api::grpc::pb;
use grayscope::api::grpc::pb::query_client::QueryClient;
use grayscope::app::Collector;
use grayscope::loadgen::{RawClient, Wire};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

/// `n` traces from `first`: users SERVER (canary) -> users CLIENT without the stage: one
/// in-process `missing` each; with `changed`, the CLIENT carries `stable` instead.
async fn send(c: &Collector, first: u128, n: u128, changed: bool) {
    let mut b = RequestBuilder::new().resource("users", Some("stable"));
    for t in first..first + n {
        let attrs: &[(&str, &str)] = if changed { &[(STAGE, "stable")] } else { &[] };
        b = b
            .span(t, 1, None, "GET /u", SpanKind::Server, &[(STAGE, "canary")])
            .span(t, 2, Some(1), "call orders", SpanKind::Client, attrs);
    }
    let r = RawClient::new(Wire::Grpc, c.otlp_grpc)
        .send(b.build().encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

async fn client(c: &Collector) -> QueryClient<Channel> {
    QueryClient::connect(format!("http://{}", c.otlp_grpc))
        .await
        .unwrap()
}

fn kind(k: &str) -> Option<pb::FindingFilter> {
    Some(pb::FindingFilter {
        kind: k.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn list_get_and_graph_answer_like_the_json_api() {
    let c = spawn_collector(test_args()).await;
    send(&c, 1, 12, false).await;
    send(&c, 100, 3, true).await;
    c.flush().await;
    let mut q = client(&c).await;

    let all = q
        .list_findings(pb::ListFindingsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.findings.len(), 15);
    assert_eq!(all.next_cursor, "");
    let changed = q
        .list_findings(pb::ListFindingsRequest {
            filter: kind("changed"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.findings.len(), 3);
    let f = &changed.findings[0];
    assert_eq!((f.scope.as_str(), f.first_break), ("in_process", true));
    assert_eq!(f.caller.as_ref().unwrap().stage.as_deref(), Some("canary"));
    assert_eq!(f.callee.as_ref().unwrap().stage.as_deref(), Some("stable"));
    assert!(f.observed_unix_ms > 0);

    // Pages of 5: three pages, no repeats.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = q
            .list_findings(pb::ListFindingsRequest {
                filter: kind("missing"),
                limit: 5,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.findings.into_iter().map(|f| f.trace_id));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12);

    let t = q
        .get_trace(pb::GetTraceRequest {
            trace_id: format!("{:032x}", 100),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t.finalised);
    assert_eq!(t.spans.len(), 2);
    assert_eq!(t.edges[0].verdict, "changed");
    assert_eq!(t.findings.len(), 1);
    let unknown = q
        .get_trace(pb::GetTraceRequest {
            trace_id: format!("{:032x}", 999_999),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = q
        .get_trace(pb::GetTraceRequest {
            trace_id: "xyz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("trace_id: 'xyz'"),
        "{}",
        bad.message()
    );
    let bad = q
        .list_findings(pb::ListFindingsRequest {
            filter: kind("ok"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let g = q
        .get_service_graph(pb::GetServiceGraphRequest::default())
        .await
        .unwrap()
        .into_inner();
    let users = g.nodes.iter().find(|n| n.name == "users").unwrap();
    assert!(!users.is_virtual);
    // Calls to nobody that exports spans stay on users itself.
    let e = g
        .edges
        .iter()
        .find(|e| e.caller == "users" && e.callee == "users")
        .unwrap();
    let totals = e.totals.as_ref().unwrap();
    assert_eq!(totals.first_breaks.get("missing"), Some(&12));
    assert_eq!(totals.first_breaks.get("changed"), Some(&3));
    assert_eq!(e.stages["canary"].first_breaks.get("missing"), Some(&12));
    assert!(e.last_seen_unix_ms > 0);
    let none = q
        .get_service_graph(pb::GetServiceGraphRequest {
            stage: "purple".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.nodes.is_empty());
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_receives_findings_produced_after_it_subscribed() {
    let c = spawn_collector(test_args()).await;
    send(&c, 1, 2, false).await;
    c.flush().await;
    let mut q = client(&c).await;
    let mut stream = q
        .watch_findings(pb::WatchFindingsRequest {
            filter: kind("changed"),
        })
        .await
        .unwrap()
        .into_inner();
    // Not watched: a missing one; watched: a changed one.
    send(&c, 10, 1, false).await;
    send(&c, 20, 1, true).await;
    c.flush().await;
    let f = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("a finding arrives")
        .unwrap()
        .expect("the stream is open");
    assert_eq!(f.kind, "changed");
    assert_eq!(f.trace_id, format!("{:032x}", 20));
    assert_eq!(f.edge_caller, "users");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_does_not_read_is_ended_with_a_clear_status() {
    let c = spawn_collector(test_args()).await;
    let mut q = client(&c).await;
    let mut stream = q
        .watch_findings(pb::WatchFindingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Far more than the watcher's buffers (and the HTTP/2 windows, a few MB), while it reads
    // nothing.
    const SENT: u128 = 25_000;
    for i in 0..SENT / 1000 {
        send(&c, 1 + i * 1000, 1000, false).await;
        c.flush().await;
    }
    let mut received = 0;
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the stream ended without a status after {received}"),
                Err(s) => break s,
            }
        }
    })
    .await
    .expect("the watch ends");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("read too slowly"), "{status:?}");
    assert!(received < SENT, "{received}");
    c.shutdown().await.unwrap();
}
