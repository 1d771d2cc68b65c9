use std::sync::Arc;

use super::*;
use crate::assemble::{Assembler, AssemblerConfig};
use crate::instances::Instances;
use crate::model::{SpanBatch, SpanKind, SpanRecord};
use crate::testkit::Kit;
use crate::verify::{NodeKey, Policy, Scope, Verdict};

/// Finalises each trace through a real assembler, at wall time `at_ms`.
pub(super) fn finalise(
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
        };
        asm.insert(batch, 0, at_ms, &mut out);
    }
    asm.drain(0, at_ms, &mut out);
    out
}

/// A shutdown deadline no healthy test store gets near.
pub(super) fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

pub(super) fn config() -> StoreConfig {
    StoreConfig {
        queue_spans: 1 << 20,
        flush_interval: Duration::from_millis(50),
        // Long enough that the writer's own retention runs keep the test data of 2023.
        retention: Duration::from_secs(3650 * 24 * 3600),
        max_bytes: 1 << 30,
    }
}

/// users SERVER -> users CLIENT -> orders SERVER (canary instance); the callee's stage varies.
pub(super) fn call(k: &Kit, stage_on_callee: Option<&str>) -> Vec<SpanRecord> {
    call_to(k, "orders", stage_on_callee)
}

/// users SERVER -> users CLIENT -> `callee` SERVER (canary instance).
pub(super) fn call_to(k: &Kit, callee: &str, stage_on_callee: Option<&str>) -> Vec<SpanRecord> {
    let a = k.stage(k.span(1, None, "users", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "users", SpanKind::Client), "canary");
    let mut c = k.instance(k.span(3, Some(2), callee, SpanKind::Server), "canary");
    if let Some(s) = stage_on_callee {
        c = k.stage(c, s);
    }
    vec![a, b, c]
}

async fn stored(k: &Kit, dir: &Path, batches: Vec<Vec<Finalised>>) -> (Store, StoreTask) {
    let (store, task) =
        Store::open(&config(), DirLock::acquire(dir).unwrap(), k.sym.clone()).unwrap();
    for b in batches {
        store.submit(b).await.unwrap();
    }
    store.flush().await.unwrap();
    (store, task)
}

const MINUTE: u64 = 60_000;
pub(super) const T0: u64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_graph_counts_calls_verdicts_first_breaks_and_routing_per_stage() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let traces = vec![
        (1, call(&k, Some("canary"))),
        (2, call(&k, Some("canary"))),
        (3, call(&k, None)),
        (4, call(&k, Some("stable"))),
    ];
    let (store, task) = stored(&k, dir.path(), vec![finalise(&traces, T0, 0.0)]).await;
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
    task.stop(&store, deadline()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callee_known_by_peer_service_and_by_its_own_spans_is_one_node() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
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
    let (store, task) = stored(&k, dir.path(), vec![finalise(&[(1, spans)], T0, 0.0)]).await;
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
    task.stop(&store, deadline()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn findings_filter_and_page_without_gaps_or_duplicates() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
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
    let (store, task) = stored(&k, dir.path(), batches).await;
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
        kind: Some(v),
        ..Default::default()
    };
    assert_eq!(n(kind(Verdict::Missing)).await, 30);
    assert_eq!(n(kind(Verdict::Changed)).await, 10);
    assert_eq!(n(kind(Verdict::KeyMismatch)).await, 0);
    let stage = |s: &str| FindingQuery {
        stage: Some(s.into()),
        ..Default::default()
    };
    assert_eq!(n(stage("canary")).await, 40);
    assert_eq!(n(stage("none")).await, 0);
    assert_eq!(n(stage("never-seen")).await, 0);
    let edge = |caller: &str, callee: &str| FindingQuery {
        caller: Some(caller.into()),
        callee: Some(callee.into()),
        ..Default::default()
    };
    assert_eq!(n(edge("users", "orders")).await, 40);
    assert_eq!(n(edge("orders", "users")).await, 0);
    let scoped = |s| FindingQuery {
        scope: Some(s),
        first_break: Some(true),
        ..Default::default()
    };
    // The orders SERVER span lost or changed the stage: both are cross-service.
    assert_eq!(n(scoped(Scope::InProcess)).await, 0);
    assert_eq!(n(scoped(Scope::CrossService)).await, 40);
    let one = FindingQuery {
        trace_id: Some(TraceId(7)),
        ..Default::default()
    };
    let page = q(one).await;
    assert_eq!(page.findings.len(), 1);
    assert_eq!(page.findings[0].trace_id, TraceId(7));
    let time = |since: u64, until: u64| FindingQuery {
        since_ms: Some(since),
        until_ms: Some(until),
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
    task.stop(&store, deadline()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_with_findings_and_sampled_clean_ones_are_readable_after_a_restart() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let clean_ids: Vec<u128> = (100..400).collect();
    let mut traces = vec![(1u128, call(&k, None))];
    traces.extend(clean_ids.iter().map(|&t| (t, call(&k, Some("canary")))));
    let (store, task) = stored(&k, dir.path(), vec![finalise(&traces, T0, 0.1)]).await;
    task.stop(&store, deadline()).await;
    drop(store);

    // A new process: new symbols, the same file.
    let k2 = Kit::new();
    let (store, task) = Store::open(
        &config(),
        DirLock::acquire(dir.path()).unwrap(),
        k2.sym.clone(),
    )
    .unwrap();
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
    task.stop(&store, deadline()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_what_is_old_and_keeps_the_rest() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * 3600 * 1000;
    let old: Vec<_> = (1..=10u128).map(|t| (t, call(&k, None))).collect();
    let new: Vec<_> = (11..=20u128).map(|t| (t, call(&k, None))).collect();
    let (store, task) = stored(
        &k,
        dir.path(),
        vec![finalise(&old, T0, 0.0), finalise(&new, T0 + 8 * day, 0.0)],
    )
    .await;
    task.stop(&store, deadline()).await;
    drop(store);

    let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let cfg = StoreConfig {
        retention: Duration::from_secs(7 * 24 * 3600),
        ..config()
    };
    let deleted = retention::enforce_at(&mut conn, &cfg, (T0 + 9 * day) as i64).unwrap();
    assert_eq!(deleted.findings, 10);
    assert_eq!(deleted.traces, 10);
    assert!(deleted.edge_minutes > 0);
    let (store, task) = Store::open(
        &config(),
        DirLock::acquire(dir.path()).unwrap(),
        k.sym.clone(),
    )
    .unwrap();
    let left = store
        .findings(FindingQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.findings.len(), 10);
    assert!(left.findings.iter().all(|f| f.trace_id.0 > 10));
    assert!(store.trace(TraceId(3)).await.unwrap().is_none());
    assert!(store.trace(TraceId(13)).await.unwrap().is_some());
    task.stop(&store, deadline()).await;

    // By size: a bound below what is stored deletes the oldest first.
    let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let used = retention::used_bytes(&conn).unwrap();

    let small = StoreConfig {
        max_bytes: used / 2,
        ..cfg
    };
    let deleted = retention::enforce_at(&mut conn, &small, (T0 + 9 * day) as i64).unwrap();
    assert!(deleted.findings > 0, "{deleted:?}");
}

#[test]
fn a_store_from_a_newer_grayscope_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let k = Kit::new();
    let err = Store::open(
        &config(),
        DirLock::acquire(dir.path()).unwrap(),
        k.sym.clone(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("schema version 99, newer than this grayscope knows"),
        "{err}"
    );
}

#[test]
fn every_migration_applies_in_order_from_an_empty_file() {
    let mut conn = Connection::open_in_memory().unwrap();
    assert_eq!(schema::migrate(&mut conn).unwrap(), 0);
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, MIGRATIONS.len());
    // Idempotent: a second open applies nothing.
    assert_eq!(schema::migrate(&mut conn).unwrap(), MIGRATIONS.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_of_the_first_schema_version_is_migrated_with_its_data() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    // Version 1 as it was written: only the first migration applied, holding one finding.
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO names (id, kind, name) VALUES (1, 0, 'users'), (2, 0, 'orders'), (3, 3, 'GET'), (4, 2, 'canary');
             INSERT INTO findings (observed_ms, trace_id, kind, scope, first_break, stage, edge_caller, edge_callee,
                c_service, c_span, c_name, c_kind, c_stage, c_instance, detail)
             VALUES (1700000000000, x'0000000000000000000000000000002a', 2, 0, 1, 4, 1, 2, 2, 3, 3, 2, NULL, NULL, 'lost');",
        )
        .unwrap();
    }
    let (store, task) = Store::open(
        &config(),
        DirLock::acquire(dir.path()).unwrap(),
        k.sym.clone(),
    )
    .unwrap();
    let page = store
        .findings(FindingQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.findings.len(), 1);
    assert_eq!(page.findings[0].trace_id, TraceId(42));
    assert_eq!(&*page.findings[0].edge.callee, "orders");
    assert_eq!(page.findings[0].detail, "lost");
    // What version 2 added works on the migrated store.
    let traces = vec![(1u128, call(&k, None)), (2, call(&k, Some("canary")))];
    store.submit(finalise(&traces, T0, 0.0)).await.unwrap();
    store.flush().await.unwrap();
    let counts = store.trace_counts(Window::default()).await.unwrap();
    assert_eq!(counts, vec![(Some(std::sync::Arc::from("canary")), 1, 1)]);
    task.stop(&store, deadline()).await;
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, MIGRATIONS.len());
}
