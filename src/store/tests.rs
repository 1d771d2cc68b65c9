//! The store suite: what every [`Store`] implementation must do, run against each through the
//! trait. A new implementation runs all of it by adding one line at the bottom.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::assemble::{Assembler, AssemblerConfig};
use crate::instances::Instances;
use crate::model::{SpanBatch, SpanKind, SpanRecord};
use crate::testkit::Kit;
use crate::verify::{NodeKey, Policy, Scope, Verdict};

/// Opens a store of one implementation at `place` (a fresh temporary directory; the same one
/// again for a restart), with [`config`] and `k`'s symbols; `None` when that implementation's
/// server is not available here (outside CI: a test that needs it then passes without running).
pub(crate) type Opener = for<'a> fn(
    &'a Kit,
    &'a Path,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<SharedStore>> + Send + 'a>,
>;

/// Finalises each trace through a real assembler, at wall time `at_ms`.
pub(crate) fn finalise(
    traces: &[(u128, Vec<SpanRecord>)],
    at_ms: u64,
    sample_clean: f64,
) -> Vec<Finalised> {
    let mut asm = Assembler::new(
        AssemblerConfig {
            sample_clean,
            ..AssemblerConfig::offline()
        },
        Arc::new(Policy::default()),
        Arc::new(Instances::new([], 1)),
    );
    let mut out = Vec::new();
    for (t, spans) in traces {
        let batch = SpanBatch {
            spans: spans.iter().map(|s| (TraceId(*t), *s)).collect(),
            ..SpanBatch::default()
        };
        asm.insert(batch, 0, at_ms, &mut out);
    }
    asm.drain(0, at_ms, &mut out);
    out
}

/// A shutdown deadline no healthy test store gets near.
pub(crate) fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

pub(crate) fn config() -> StoreConfig {
    StoreConfig {
        queue_spans: 1 << 20,
        flush_interval: Duration::from_millis(50),
        // Long enough that the writer's own retention runs keep the test data of 2023.
        retention: Duration::from_secs(3650 * 24 * 3600),
        max_bytes: 1 << 30,
    }
}

/// users SERVER -> users CLIENT -> orders SERVER (canary instance); the callee's stage varies.
pub(crate) fn call(k: &Kit, stage_on_callee: Option<&str>) -> Vec<SpanRecord> {
    call_to(k, "orders", stage_on_callee)
}

/// users SERVER -> users CLIENT -> `callee` SERVER (canary instance).
pub(crate) fn call_to(k: &Kit, callee: &str, stage_on_callee: Option<&str>) -> Vec<SpanRecord> {
    let a = k.stage(k.span(1, None, "users", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "users", SpanKind::Client), "canary");
    let mut c = k.instance(k.span(3, Some(2), callee, SpanKind::Server), "canary");
    if let Some(s) = stage_on_callee {
        c = k.stage(c, s);
    }
    vec![a, b, c]
}

const MINUTE: u64 = 60_000;
pub(crate) const T0: u64 = 1_700_000_000_000;

/// A store at `place` holding `batches`, written.
async fn stored(
    open: Opener,
    k: &Kit,
    place: &Path,
    batches: Vec<Vec<Finalised>>,
) -> Option<SharedStore> {
    let store = open(k, place).await?;
    for b in batches {
        store.submit(b).await.unwrap();
    }
    store.flush().await.unwrap();
    Some(store)
}

/// A healthy store writes everything it is handed and stops with nothing unwritten.
async fn everything_handed_over_is_written_and_accounted_for(open: Opener) {
    let k = Kit::new();
    let place = tempfile::tempdir().unwrap();
    let traces: Vec<_> = (1..=25u128)
        .map(|t| (t, call(&k, if t % 5 == 0 { None } else { Some("canary") })))
        .collect();
    let Some(store) = stored(open, &k, place.path(), vec![finalise(&traces, T0, 0.0)]).await else {
        return;
    };
    let h = store.health();
    assert_eq!(
        h.written,
        Tally {
            traces: 25,
            findings: 5
        }
    );
    assert_eq!(h.queued, Tally::default());
    assert!(h.dropped.iter().all(|(_, t)| t.is_empty()));
    assert!(h.write_errors.iter().all(|(_, n)| *n == 0));
    assert_eq!(h.queued_spans, 0);
    assert_eq!(h.lag, std::time::Duration::ZERO);
    assert_eq!(store.stop(deadline()).await, Tally::default());
}

async fn the_graph_counts_calls_verdicts_first_breaks_and_routing_per_stage(open: Opener) {
    let k = Kit::new();
    let place = tempfile::tempdir().unwrap();
    let traces = vec![
        (1, call(&k, Some("canary"))),
        (2, call(&k, Some("canary"))),
        (3, call(&k, None)),
        (4, call(&k, Some("stable"))),
    ];
    let Some(store) = stored(open, &k, place.path(), vec![finalise(&traces, T0, 0.0)]).await else {
        return;
    };
    let g = store.graph(Window::default()).await.unwrap();
    let users = NodeKey::Service(k.svc("users"));
    let orders = NodeKey::Service(k.svc("orders"));
    let e = g.find_edge(users, orders).expect("users -> orders");
    let all = e.stats(None);
    assert_eq!(all.calls, 4);
    // 4 in-process users SERVER -> CLIENT edges (counted on the call's hop) + 2 good calls.
    assert_eq!(all.verdicts[Verdict::Ok as usize], 6);
    assert_eq!(all.first_breaks[Verdict::Missing as usize], 1);
    assert_eq!(all.first_breaks[Verdict::Changed as usize], 1);
    assert_eq!(all.findings(), 2);
    assert_eq!(e.stats(Some(Some(k.v("canary")))).calls, 4);
    assert_eq!(e.stats(Some(Some(k.v("stable")))).calls, 0);
    assert_eq!(
        e.routing,
        vec![((Some(k.v("canary")), Some(k.v("canary"))), 4)]
    );
    let missing = &e
        .examples
        .iter()
        .find(|(v, _)| *v == Verdict::Missing)
        .unwrap()
        .1;
    assert_eq!(
        missing.iter().copied().collect::<Vec<_>>(),
        vec![TraceId(3)]
    );
    assert_eq!(e.last_seen_ms, T0);
    assert!(g.find_edge(users, users).is_none(), "no self edge");

    // A window that ends before the data has nothing; one around it has everything.
    let before = Window {
        since_ms: None,
        until_ms: Some(T0 - 2 * MINUTE),
    };
    assert!(
        store
            .graph(before)
            .await
            .unwrap()
            .find_edge(users, orders)
            .is_none()
    );
    let around = Window {
        since_ms: Some(T0 - MINUTE),
        until_ms: Some(T0 + MINUTE),
    };
    let g = store.graph(around).await.unwrap();
    assert_eq!(g.find_edge(users, orders).unwrap().stats(None).calls, 4);

    // Writes add to what is stored: counters continue.
    store.submit(finalise(&traces, T0 + 1, 0.0)).await.unwrap();
    store.flush().await.unwrap();
    let g = store.graph(Window::default()).await.unwrap();
    assert_eq!(g.find_edge(users, orders).unwrap().stats(None).calls, 8);
    store.stop(deadline()).await;
}

async fn a_callee_known_by_peer_service_and_by_its_own_spans_is_one_node(open: Opener) {
    let k = Kit::new();
    let place = tempfile::tempdir().unwrap();
    // users calls orders (whose server span arrives) and, by peer.service, orders again (whose
    // server span does not) and a database that exports no spans at all.
    let peer_call = |id: u64, peer: &str| {
        let mut c = k.stage(k.span(id, Some(1), "users", SpanKind::Client), "canary");
        c.peer = Some(k.v(peer));
        c
    };
    let mut spans = call(&k, Some("canary"));
    spans.push(peer_call(4, "orders"));
    spans.push(peer_call(5, "postgres"));
    let Some(store) = stored(
        open,
        &k,
        place.path(),
        vec![finalise(&[(1, spans)], T0, 0.0)],
    )
    .await
    else {
        return;
    };
    let g = store.graph(Window::default()).await.unwrap();
    let users = NodeKey::Service(k.svc("users"));
    let orders = NodeKey::Service(k.svc("orders"));
    assert_eq!(g.find_edge(users, orders).unwrap().stats(None).calls, 2);
    assert!(
        g.find_edge(users, NodeKey::Virtual(k.v("orders")))
            .is_none()
    );
    let postgres = NodeKey::Virtual(k.v("postgres"));
    assert_eq!(g.find_edge(users, postgres).unwrap().stats(None).calls, 1);
    let keys: Vec<NodeKey> = g.graph.node_weights().map(|n| n.key).collect();
    assert_eq!(keys.len(), 3, "users, orders and postgres: {keys:?}");
    store.stop(deadline()).await;
}

async fn findings_filter_and_page_without_gaps_or_duplicates(open: Opener) {
    let k = Kit::new();
    let place = tempfile::tempdir().unwrap();
    // One finding per trace: 1-30 missing, 31-40 changed; in three writes.
    let batches: Vec<Vec<Finalised>> = [(1..=15u128), (16..=30), (31..=40)]
        .into_iter()
        .map(|r| {
            let traces: Vec<_> = r
                .map(|t| (t, call(&k, if t > 30 { Some("stable") } else { None })))
                .collect();
            finalise(&traces, T0, 0.0)
        })
        .collect();
    let Some(store) = stored(open, &k, place.path(), batches).await else {
        return;
    };
    let q = |f: FindingQuery| {
        let store = store.clone();
        async move {
            store
                .findings(FindingQuery { limit: 100, ..f })
                .await
                .unwrap()
        }
    };
    assert_eq!(q(FindingQuery::default()).await.findings.len(), 40);
    let n = |f: FindingQuery| async { q(f).await.findings.len() };
    let kind = |v| FindingQuery {
        filter: FindingFilter {
            kind: Some(v),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(n(kind(Verdict::Missing)).await, 30);
    assert_eq!(n(kind(Verdict::Changed)).await, 10);
    assert_eq!(n(kind(Verdict::KeyMismatch)).await, 0);
    let stage = |s: &str| FindingQuery {
        filter: FindingFilter {
            stage: Some(s.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(n(stage("canary")).await, 40);
    assert_eq!(n(stage("none")).await, 0);
    assert_eq!(n(stage("never-seen")).await, 0);
    let edge = |caller: &str, callee: &str| FindingQuery {
        filter: FindingFilter {
            caller: Some(caller.into()),
            callee: Some(callee.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(n(edge("users", "orders")).await, 40);
    assert_eq!(n(edge("orders", "users")).await, 0);
    let scoped = |s| FindingQuery {
        filter: FindingFilter {
            scope: Some(s),
            first_break: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    // The orders SERVER span lost or changed the stage: both are cross-service.
    assert_eq!(n(scoped(Scope::InProcess)).await, 0);
    assert_eq!(n(scoped(Scope::CrossService)).await, 40);
    let one = FindingQuery {
        filter: FindingFilter {
            trace_id: Some(TraceId(7)),
            ..Default::default()
        },
        ..Default::default()
    };
    let page = q(one).await;
    assert_eq!(page.findings.len(), 1);
    assert_eq!(page.findings[0].trace_id, TraceId(7));
    let time = |since: u64, until: u64| FindingQuery {
        window: Window {
            since_ms: Some(since),
            until_ms: Some(until),
        },
        ..Default::default()
    };
    assert_eq!(n(time(T0, T0 + 1)).await, 40);
    assert_eq!(n(time(T0 + 1, T0 + 2)).await, 0);

    // Pages of 7, while more findings arrive between pages: every finding that existed when
    // paging started comes exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .findings(FindingQuery {
                before: cursor,
                limit: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.findings.iter().map(|f| f.trace_id.0));
        let late: Vec<_> = (1000 + seen.len() as u128..1001 + seen.len() as u128)
            .map(|t| (t, call(&k, None)))
            .collect();
        store.submit(finalise(&late, T0, 0.0)).await.unwrap();
        store.flush().await.unwrap();
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1..=40u128).rev().collect::<Vec<_>>());
    store.stop(deadline()).await;
}

async fn traces_with_findings_and_sampled_clean_ones_are_readable_after_a_restart(open: Opener) {
    let k = Kit::new();
    let place = tempfile::tempdir().unwrap();
    let clean_ids: Vec<u128> = (100..400).collect();
    let mut traces = vec![(1u128, call(&k, None))];
    traces.extend(clean_ids.iter().map(|&t| (t, call(&k, Some("canary")))));
    let Some(store) = stored(open, &k, place.path(), vec![finalise(&traces, T0, 0.1)]).await else {
        return;
    };
    store.stop(deadline()).await;
    drop(store);

    // A new process: new symbols, the same file.
    let k2 = Kit::new();
    let store = open(&k2, place.path()).await.expect("it opened before");
    let t = store
        .trace(TraceId(1))
        .await
        .unwrap()
        .expect("a broken trace is stored");
    assert!(t.finalised);
    assert_eq!(t.spans.len(), 3);
    assert_eq!(&*t.spans[2].service, "orders");
    assert_eq!(t.spans[2].instance_stage.as_deref(), Some("canary"));
    assert_eq!(t.spans[1].parent_span_id, Some(t.spans[0].span_id));
    assert_eq!(t.edges.len(), 2);
    assert_eq!(t.findings.len(), 1);
    assert_eq!(t.findings[0].kind, Verdict::Missing);
    let sampled = clean_ids
        .iter()
        .filter(|&&id| TraceId(id).sampled(0.1))
        .count();
    assert!((10..=60).contains(&sampled), "about 10% of 300: {sampled}");
    for &id in &clean_ids {
        let found = store.trace(TraceId(id)).await.unwrap().is_some();
        assert_eq!(found, TraceId(id).sampled(0.1), "trace {id}");
    }
    assert!(store.trace(TraceId(99_999)).await.unwrap().is_none());
    store.stop(deadline()).await;
}

/// A messaging hop's finding keeps its system, destination and consumer group, and its edge
/// the destinations it went through.
async fn messaging_findings_and_edges_keep_their_destination(open: Opener) {
    use crate::model::{Messaging, MessagingOp, SpanExtra};
    let k = Kit::new();
    let place = tempfile::tempdir().unwrap();
    let msg = |op, group: Option<&str>| SpanExtra {
        messaging: Messaging {
            system: Some(k.v("rabbitmq")),
            destination: Some(k.v("orders.placed")),
            group: group.map(|g| k.v(g)),
            op,
        },
        ..SpanExtra::default()
    };
    let a = k.stage(k.span(1, None, "orders", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "orders", SpanKind::Producer), "canary");
    let c = k.span(3, Some(2), "billing", SpanKind::Consumer);
    let t = TraceId(1);
    let batch = SpanBatch {
        spans: vec![(t, a), (t, b), (t, c)],
        extras: vec![
            (t, b.span_id, msg(MessagingOp::Send, None)),
            (
                t,
                c.span_id,
                msg(MessagingOp::Process, Some("billing_gray")),
            ),
        ],
    };
    let mut asm = Assembler::new(
        AssemblerConfig::offline(),
        Arc::new(Policy::default()),
        Arc::new(Instances::new([], 1)),
    );
    let mut out = Vec::new();
    asm.insert(batch, 0, T0, &mut out);
    asm.drain(0, T0, &mut out);
    let Some(store) = stored(open, &k, place.path(), vec![out]).await else {
        return;
    };
    let page = store
        .findings(FindingQuery {
            limit: 100,
            ..FindingQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.findings.len(), 1);
    let f = &page.findings[0];
    assert_eq!((f.kind, f.scope), (Verdict::Missing, Scope::Messaging));
    let m = f
        .messaging
        .as_ref()
        .expect("messaging on the stored finding");
    assert_eq!(
        (
            m.system.as_deref(),
            m.destination.as_deref(),
            m.consumer_group.as_deref()
        ),
        (
            Some("rabbitmq"),
            Some("orders.placed"),
            Some("billing_gray")
        )
    );
    let g = store.graph(Window::default()).await.unwrap();
    let e = g
        .find_edge(
            NodeKey::Service(k.svc("orders")),
            NodeKey::Service(k.svc("billing")),
        )
        .expect("orders -> billing");
    assert_eq!(
        e.destinations,
        vec![(Some(k.v("rabbitmq")), k.v("orders.placed"))]
    );
}

/// Runs every test of the suite against one implementation.
macro_rules! suite {
    ($implementation:ident, $open:expr) => {
        mod $implementation {
            suite!(@tests $open, the_graph_counts_calls_verdicts_first_breaks_and_routing_per_stage, a_callee_known_by_peer_service_and_by_its_own_spans_is_one_node, findings_filter_and_page_without_gaps_or_duplicates, traces_with_findings_and_sampled_clean_ones_are_readable_after_a_restart, everything_handed_over_is_written_and_accounted_for, messaging_findings_and_edges_keep_their_destination);
        }
    };
    (@tests $open:expr, $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                super::$test($open).await
            }
        )*
    };
}

suite!(sqlite, crate::store::sqlite::tests::opener);
suite!(postgres, crate::store::postgres::tests::opener);
