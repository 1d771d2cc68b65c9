//! Late spans, as slow requests and exporters make them: a parent span is exported only when it
//! ends, after its children, plus the batch delay, so it often arrives after its trace went idle.
//! Services instrumented with the OpenTelemetry SDK export real OTLP to an in-process collector
//! with a 2 s `--trace-idle`; the findings must be exactly the seeded ones, never a
//! `broken_trace` for a parent that was only late.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::binary::sum;
use common::*;
use grayscope::app::Collector;
use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceState,
};

/// `caller` calls `callee` under `from`; `lose` drops the baggage on the wire (the seeded bug).
fn call(
    caller: &Service,
    from: &Context,
    callee: &Service,
    name: &str,
    lose: bool,
) -> (Context, Context) {
    let client = caller.span(name, SpanKind::Client, from);
    let mut headers: HashMap<String, String> = inject(&client);
    if lose {
        headers.remove("baggage");
    }
    let server = callee.span(name, SpanKind::Server, &extract(&headers));
    (client, server)
}

async fn flush(services: &[&Service]) {
    let providers: Vec<_> = services.iter().map(|s| s.provider.clone()).collect();
    tokio::task::spawn_blocking(move || {
        for p in providers {
            p.force_flush().expect("spans exported");
        }
    })
    .await
    .unwrap();
}

/// Polls the findings until `want` are there (or `within` is over), then checks that nothing
/// else is.
async fn await_findings(
    c: &Collector,
    want: &[(String, String, String, String, bool)],
    within: Duration,
) -> Vec<(String, String, String, String, bool)> {
    let deadline = Instant::now() + within;
    loop {
        let got = findings(c).await;
        if got.len() >= want.len() || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn args(orphan_wait: &str) -> grayscope::config::ServeArgs {
    grayscope::config::ServeArgs {
        trace_idle: Some("2s".parse().unwrap()),
        orphan_wait: Some(orphan_wait.parse().unwrap()),
        ..test_args()
    }
}

/// Parents 5 s, 13 s and 50 s behind their children, each for a clean request and one whose
/// gateway -> users hop loses the stage; a child 5 s behind its parents that lost the stage; and
/// a span whose parent never comes.
#[tokio::test(flavor = "multi_thread")]
async fn late_parents_and_children_give_exactly_the_seeded_findings() {
    let c = spawn_collector(args("75s")).await;
    let users = Service::new(&c, "users", Some("stable"), Export::HttpProtobuf);
    let audit = Service::new(&c, "audit", Some("stable"), Export::Grpc);
    let ledger = Service::new(&c, "ledger", Some("stable"), Export::HttpJson);
    let mut pending = Vec::new();
    for delay in [5u64, 13, 50] {
        let gateway = Service::new(&c, "gateway", Some("stable"), Export::Grpc);
        let mut open = Vec::new();
        for lose in [false, true] {
            let gw = gateway.span("GET /checkout", SpanKind::Server, &entry(Some("canary")));
            let (gc, us) = call(&gateway, &gw, &users, "GET /users/me", lose);
            end(&us);
            open.push((gw, gc));
        }
        pending.push((delay, gateway, open));
    }
    // The child comes late: gateway's spans are exported now, audit's 5 s later.
    let late_child_gateway = Service::new(&c, "gateway", Some("stable"), Export::Grpc);
    let gw = late_child_gateway.span("POST /audit", SpanKind::Server, &entry(Some("canary")));
    let (gc, au) = call(&late_child_gateway, &gw, &audit, "POST /audit", true);
    end(&au);
    end(&gc);
    end(&gw);
    // ledger's parent is a span nobody sends.
    let ghost = SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes([0x42; 16]),
        SpanId::from_bytes([7; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let orphan = ledger.span(
        "POST /entries",
        SpanKind::Server,
        &entry(Some("canary")).with_remote_span_context(ghost),
    );
    end(&orphan);

    let t0 = Instant::now();
    flush(&[&users, &ledger, &late_child_gateway]).await;
    let mut audit_sent = false;
    for (delay, gateway, open) in &pending {
        let at = t0 + Duration::from_secs(*delay);
        if !audit_sent && *delay >= 5 {
            tokio::time::sleep_until((t0 + Duration::from_secs(5)).into()).await;
            flush(&[&audit]).await;
            audit_sent = true;
        }
        tokio::time::sleep_until(at.into()).await;
        // The parents end now, as a request that took this long does.
        for (gw, gc) in open {
            end(gc);
            end(gw);
        }
        flush(&[gateway]).await;
    }

    let missing = f("missing", "cross_service", "gateway", "users", true);
    let want = vec![
        f("broken_trace", "cross_service", "-", "ledger", true),
        f("missing", "cross_service", "gateway", "audit", true),
        missing.clone(),
        missing.clone(),
        missing,
    ];
    // Every late parent is in by 50 s; ledger's wait ends 75 s after its trace went idle.
    let got = await_findings(&c, &want, Duration::from_secs(40)).await;
    assert_eq!(got, want);
    // Nothing more comes: no duplicate of a late verdict, no broken trace for a late parent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(findings(&c).await, want);

    // Six spans waited for a parent that came; one waited in vain.
    assert_eq!(metric(&c, "grayscope_orphans_resolved_total").await, 6.0);
    assert_eq!(
        metric(&c, "grayscope_orphans_expired_total{reason=\"wait\"}").await,
        1.0
    );
    assert_eq!(
        metric(&c, "grayscope_orphan_lateness_seconds_count").await,
        6.0
    );
    // How late, from the children's arrival: two 5 s, two 13 s, two 50 s (each well inside its
    // bucket: the parent's own export adds to it, more on a busy machine).
    let le = |b: &str| format!("grayscope_orphan_lateness_seconds_bucket{{le=\"{b}\"}}");
    assert_eq!(metric(&c, &le("2.0")).await, 0.0);
    assert_eq!(metric(&c, &le("10.0")).await, 2.0);
    assert_eq!(metric(&c, &le("15.0")).await, 4.0);
    assert_eq!(metric(&c, &le("30.0")).await, 4.0);
    assert_eq!(metric(&c, &le("60.0")).await, 6.0);
    assert_eq!(metric(&c, "grayscope_late_spans_total").await, 0.0);
    // One trace per request, not one more for each late arrival; every span judged once.
    let m = scrape(&c).await;
    assert_eq!(sum(&m, "grayscope_traces_total"), 8);
    assert_eq!(sum(&m, "grayscope_spans_finalised_total"), 6 * 3 + 3 + 1);
    c.shutdown().await.unwrap();
}

/// A request that takes longer than `--trace-idle`, through services exporting with the SDK's
/// batch processor left at its defaults (a 5 s delay): the parents arrive seconds after the
/// trace went idle, and nothing is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn slow_requests_with_default_batching_have_no_findings() {
    let c = spawn_collector(args("2m")).await;
    let gateway = Service::new(&c, "gateway", Some("stable"), Export::Grpc);
    let users = Service::new(&c, "users", Some("stable"), Export::HttpProtobuf);
    let orders = Service::new(&c, "orders", Some("stable"), Export::HttpJson);
    let mut requests = Vec::new();
    for i in 0..6 {
        let stage = if i % 2 == 0 { "canary" } else { "stable" };
        let gw = gateway.span("GET /checkout", SpanKind::Server, &entry(Some(stage)));
        let (gc, us) = call(&gateway, &gw, &users, "GET /users/me", false);
        let (uc, os) = call(&users, &us, &orders, "POST /orders", false);
        end(&os);
        end(&uc);
        requests.push((gw, gc, us));
    }
    // users answers after 3 s, gateway after 8 s: four times the idle time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (_, _, us) in &requests {
        end(us);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (gw, gc, _) in &requests {
        end(gc);
        end(gw);
    }
    // The batch processors export on their own schedule; wait for every span to be judged.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&c).await;
        let judged = sum(&m, "grayscope_spans_finalised_total");
        if judged == 30 && sum(&m, "grayscope_orphan_spans_waiting") == 0 {
            assert_eq!(sum(&m, "grayscope_traces_total"), 6);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{judged} of 30 spans judged; waiting: {}",
            sum(&m, "grayscope_orphan_spans_waiting")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(findings(&c).await, vec![]);
    assert!(
        metric(&c, "grayscope_orphans_resolved_total").await > 0.0,
        "the parents did arrive after their traces went idle"
    );
    assert_eq!(metric(&c, "grayscope_late_spans_total").await, 0.0);
    c.shutdown().await.unwrap();
}

/// What a client waiting for verdicts (`grayscope probe`) sees: a trace finalised with a span
/// whose parent has not arrived is `waiting`, not `finalised`, until the parent comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_trace_with_a_span_waiting_for_its_parent_is_not_final_yet() {
    let c = spawn_collector(grayscope::config::ServeArgs {
        trace_idle: Some("300ms".parse().unwrap()),
        orphan_wait: Some("1m".parse().unwrap()),
        // Clean traces kept too, as the probe's are: a finalised one is then found.
        sample_clean: Some(1.0),
        ..test_args()
    })
    .await;
    let gateway = Service::new(&c, "gateway", Some("stable"), Export::Grpc);
    let users = Service::new(&c, "users", Some("stable"), Export::HttpProtobuf);
    let gw = gateway.span("GET /checkout", SpanKind::Server, &entry(Some("canary")));
    let (gc, us) = call(&gateway, &gw, &users, "GET /users/me", false);
    let id = us.span().span_context().trace_id().to_string();
    let path = format!("/api/v1/traces/{id}/verdicts");
    end(&us);
    flush(&[&users]).await;
    let state = |v: &serde_json::Value| v["state"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = get_json(&c, &path).await;
        if state(&v) != "assembling" {
            break v;
        }
        assert!(Instant::now() < deadline, "never finalised: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state(&v), "waiting", "{v}");
    assert_eq!(v["findings"], serde_json::json!([]), "{v}");
    let trace = get_json(&c, &format!("/api/v1/traces/{id}")).await;
    assert_eq!(trace["waiting_spans"], 1, "{trace}");

    end(&gc);
    end(&gw);
    flush(&[&gateway]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = get_json(&c, &path).await;
        if state(&v) == "finalised" {
            break v;
        }
        assert!(Instant::now() < deadline, "never final: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hops: Vec<_> = v["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["caller"].clone(),
                h["callee"].clone(),
                h["verdict"].clone(),
            )
        })
        .collect();
    assert!(
        hops.contains(&("gateway".into(), "users".into(), "ok".into())),
        "{v}"
    );
    assert_eq!(v["findings"], serde_json::json!([]), "{v}");
    c.shutdown().await.unwrap();
}
