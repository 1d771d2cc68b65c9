//! `/metrics` as Prometheus scrapes it: the verdict counters alerting rules are written against, and
//! the label cap that keeps a flood of names from becoming a flood of series.

mod common;

use std::collections::BTreeSet;

use common::*;
use grayscope::loadgen::{RawClient, Wire};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use prost::Message;

/// The values of `label` over the samples of `metric`.
fn label_values(text: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let start = l.find(&needle)? + needle.len();
            Some(l[start..start + l[start..].find('"')?].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_count_edges_first_breaks_traces_and_misroutes() {
    let c = spawn_collector(test_args()).await;
    // users (canary) -> users CLIENT (canary) -> orders SERVER: 3 lose the stage, 2 keep it; one
    // more is a canary request routed to the stable orders while a canary orders is live.
    let mut b = RequestBuilder::new().resource("users", Some("stable"));
    for t in 1..=6u128 {
        b = b
            .span(t, 1, None, "GET /u", SpanKind::Server, &[(STAGE, "canary")])
            .span(
                t,
                2,
                Some(1),
                "call",
                SpanKind::Client,
                &[(STAGE, "canary")],
            );
    }
    b = b.resource("orders", Some("canary"));
    for t in 1..=5u128 {
        let attrs: &[(&str, &str)] = if t <= 3 { &[] } else { &[(STAGE, "canary")] };
        b = b.span(t, 3, Some(2), "GET /o", SpanKind::Server, attrs);
    }
    b = b.resource("orders", Some("stable")).span(
        6,
        3,
        Some(2),
        "GET /o",
        SpanKind::Server,
        &[(STAGE, "canary")],
    );
    let r = RawClient::new(Wire::Grpc, c.otlp_grpc)
        .send(b.build().encode_to_vec().into(), false)
        .await
        .unwrap();
    assert!(r.is_ok());
    c.flush().await;
    for sample in [
        r#"grayscope_edges_total{caller="users",callee="orders",stage="canary",verdict="missing"} 3"#,
        r#"grayscope_edges_total{caller="users",callee="orders",stage="canary",verdict="misrouted"} 1"#,
        // 6 in-process SERVER -> CLIENT edges and 2 good calls.
        r#"grayscope_edges_total{caller="users",callee="orders",stage="canary",verdict="ok"} 8"#,
        r#"grayscope_findings_total{kind="missing",scope="cross_service",caller="users",callee="orders",stage="canary"} 3"#,
        r#"grayscope_findings_total{kind="misrouted",scope="cross_service",caller="users",callee="orders",stage="canary"} 1"#,
        r#"grayscope_traces_total{stage="canary",result="broken"} 4"#,
        r#"grayscope_traces_total{stage="canary",result="consistent"} 2"#,
        r#"grayscope_misrouted_total{callee="orders",stage="canary",instance_stage="stable"} 1"#,
        r#"grayscope_label_values_folded_total{label="caller"} 0"#,
        "grayscope_store_queued_spans 0",
    ] {
        let (series, value) = sample.rsplit_once(' ').unwrap();
        assert_eq!(
            metric(&c, series).await,
            value.parse::<f64>().unwrap(),
            "{series}"
        );
    }
    let text = scrape(&c).await;
    assert!(text.contains("# TYPE grayscope_edges counter"), "{text}");
    assert!(text.contains("grayscope_store_lag_seconds"), "{text}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_service_names_make_at_most_cap_plus_one_label_values() {
    let mut args = test_args();
    args.max_label_values = Some(500);
    let c = spawn_collector(args).await;
    let client = RawClient::new(Wire::Http, c.otlp_http);
    for chunk in 0..10u128 {
        let mut b = RequestBuilder::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            // Each service calls out without the stage: one finding per service, on its own edge.
            b = b
                .resource(&format!("svc-{i}"), None)
                .span(
                    i + 1,
                    1,
                    None,
                    "GET",
                    SpanKind::Server,
                    &[(STAGE, "canary")],
                )
                .span(i + 1, 2, Some(1), "call", SpanKind::Client, &[]);
        }
        let r = client
            .send(b.build().encode_to_vec().into(), false)
            .await
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    c.flush().await;
    let text = scrape(&c).await;
    for metric_name in ["grayscope_edges_total", "grayscope_findings_total"] {
        let callers = label_values(&text, metric_name, "caller");
        assert!(
            callers.len() <= 501,
            "{metric_name}: {} callers",
            callers.len()
        );
        assert!(callers.contains("other"), "{metric_name}");
    }
    assert!(metric(&c, r#"grayscope_label_values_folded_total{label="caller"}"#).await > 9000.0);
    // Nothing is lost by folding: every finding is still counted.
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("grayscope_findings_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 10_000.0);
    c.shutdown().await.unwrap();
}
