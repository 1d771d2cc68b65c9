//! What only the SQLite store has: its file's schema and migrations, its retention, its lock.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::*;
use crate::store::tests::{T0, call, config, deadline, finalise};
use crate::store::{SharedStore, StoreConfig};
use crate::testkit::Kit;

/// A SQLite store in `place`, locked.
pub(crate) fn open(k: &Kit, place: &Path) -> SharedStore {
    Arc::new(SqliteStore::open(&config(), DirLock::acquire(place).unwrap(), k.sym.clone()).unwrap())
}

/// The suite's opener for SQLite: always available.
pub(crate) fn opener<'a>(
    k: &'a Kit,
    place: &'a Path,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<SharedStore>> + Send + 'a>> {
    Box::pin(async move { Some(open(k, place)) })
}

async fn stored(k: &Kit, dir: &Path, batches: Vec<Vec<Finalised>>) -> SharedStore {
    let store = open(k, dir);
    for b in batches {
        store.submit(b).await.unwrap();
    }
    store.flush().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_what_is_old_and_keeps_the_rest() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * 3600 * 1000;
    let old: Vec<_> = (1..=10u128).map(|t| (t, call(&k, None))).collect();
    let new: Vec<_> = (11..=20u128).map(|t| (t, call(&k, None))).collect();
    let store = stored(
        &k,
        dir.path(),
        vec![finalise(&old, T0, 0.0), finalise(&new, T0 + 8 * day, 0.0)],
    )
    .await;
    store.stop(deadline()).await;
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
    let store = open(&k, dir.path());
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
    store.stop(deadline()).await;

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
    let err = SqliteStore::open(
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
    let store = open(&k, dir.path());
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
    store.stop(deadline()).await;
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, MIGRATIONS.len());
}

#[test]
fn failures_of_the_store_are_retried_and_failures_of_a_batch_are_not() {
    let sqlite =
        |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".into()));
    for (code, reason) in [
        (rusqlite::ffi::SQLITE_BUSY, Reason::Busy),
        (rusqlite::ffi::SQLITE_LOCKED, Reason::Busy),
        (rusqlite::ffi::SQLITE_IOERR_WRITE, Reason::Io),
        (rusqlite::ffi::SQLITE_FULL, Reason::Full),
        (rusqlite::ffi::SQLITE_NOTADB, Reason::Corrupt),
        (rusqlite::ffi::SQLITE_READONLY_DBMOVED, Reason::ReadOnly),
    ] {
        assert_eq!(super::reason(&sqlite(code)), reason);
        assert!(reason.is_store(), "{reason:?}");
    }
    for (code, reason) in [
        (rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, Reason::Constraint),
        (rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER, Reason::Constraint),
        (rusqlite::ffi::SQLITE_TOOBIG, Reason::TooBig),
        (rusqlite::ffi::SQLITE_MISMATCH, Reason::Other),
    ] {
        assert_eq!(super::reason(&sqlite(code)), reason);
        assert!(!reason.is_store(), "{reason:?}");
    }
    assert_eq!(
        reason(&rusqlite::Error::InvalidQuery),
        Reason::Other,
        "an error rusqlite raises itself"
    );
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}

/// The queue bounds memory, not throughput: with a flush interval of an hour, a writer whose
/// queue is half full writes at once, so submitting ten times the queue's room does not wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_full_queue_is_written_without_waiting_for_the_flush_interval() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        queue_spans: 12,
        flush_interval: Duration::from_secs(3600),
        ..config()
    };
    let store: SharedStore = Arc::new(
        SqliteStore::open(&cfg, DirLock::acquire(dir.path()).unwrap(), k.sym.clone()).unwrap(),
    );
    let submitted = async {
        for t in 1..=40u128 {
            // Three spans a trace: the queue holds four.
            store
                .submit(finalise(&[(t, call(&k, None))], T0, 1.0))
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), submitted)
        .await
        .expect("submitting never waits for the flush interval");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while store.trace(TraceId(36)).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < until, "trace 36 not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.stop(deadline()).await;
}
