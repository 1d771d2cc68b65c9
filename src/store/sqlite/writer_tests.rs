//! The writer when the store fails, on real SQLite files: names another writer added, traces the
//! store refuses, and a store that stays locked until the shutdown deadline.

use rusqlite::Connection;

use super::*;
use crate::store::tests::{T0, call, call_to, config, deadline, finalise};
use crate::testkit::Kit;

fn open(k: &Kit, dir: &Path, cfg: StoreConfig) -> SqliteStore {
    SqliteStore::open(&cfg, DirLock::acquire(dir).unwrap(), k.sym.clone()).unwrap()
}

fn errors(store: &SqliteStore, reason: Reason) -> u64 {
    store.health().write_errors(reason)
}

fn dropped(store: &SqliteStore, reason: Reason) -> Tally {
    store.health().dropped(reason)
}

async fn findings(store: &SqliteStore) -> Vec<crate::view::FindingView> {
    store
        .findings(FindingQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .findings
}

#[tokio::test(flavor = "multi_thread")]
async fn names_already_in_the_database_are_used_not_added_again() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&k, dir.path(), config());
    // Another writer adds names after this store read them.
    let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
    other
        .execute_batch("INSERT INTO names (kind, name) VALUES (0, 'orders'), (2, 'canary')")
        .unwrap();
    store
        .submit(finalise(&[(1, call(&k, None))], T0, 0.0))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let rows: i64 = other
        .query_row(
            "SELECT count(*) FROM names WHERE (kind, name) IN (VALUES (0, 'orders'), (2, 'canary'))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 2, "each name once");
    let found = findings(&store).await;
    assert_eq!(found.len(), 1);
    assert_eq!(&*found[0].callee.service, "orders");
    assert_eq!(found[0].callee.instance_stage.as_deref(), Some("canary"));
    assert!(store.health().write_errors.iter().all(|(_, n)| *n == 0));
    assert_eq!(
        store.health().written,
        Tally {
            traces: 1,
            findings: 1
        }
    );
    store.stop(deadline()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_the_store_refuses_are_set_aside_and_the_rest_is_written() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&k, dir.path(), config());
    // A rule of the database that some findings break, whoever writes them.
    Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON findings
             WHEN NEW.c_service IN (SELECT id FROM names WHERE kind = 0 AND name = 'poison')
             BEGIN SELECT RAISE(ABORT, 'poison is not stored'); END",
        )
        .unwrap();
    // 40 traces with a finding each; two of them are refused.
    let traces: Vec<_> = (1..=40u128)
        .map(|t| {
            let callee = if t == 7 || t == 31 {
                "poison"
            } else {
                "orders"
            };
            (t, call_to(&k, callee, None))
        })
        .collect();
    store.submit(finalise(&traces, T0, 0.0)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(findings(&store).await.len(), 38);
    assert_eq!(
        dropped(&store, Reason::Constraint),
        Tally {
            traces: 2,
            findings: 2
        }
    );
    assert_eq!(store.health().written.traces, 38);
    assert_eq!(store.health().queued, Tally::default());
    assert!(errors(&store, Reason::Constraint) >= 2);
    let mut ids: Vec<u128> = findings(&store)
        .await
        .iter()
        .map(|f| f.trace_id.0)
        .collect();
    ids.sort();
    let expected: Vec<u128> = (1..=40).filter(|t| *t != 7 && *t != 31).collect();
    assert_eq!(ids, expected, "exactly the refused traces are missing");

    // Later traces are written, on the first try.
    let before = errors(&store, Reason::Constraint);
    let later: Vec<_> = (41..=45u128).map(|t| (t, call(&k, None))).collect();
    store.submit(finalise(&later, T0, 0.0)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(findings(&store).await.len(), 43);
    assert_eq!(errors(&store, Reason::Constraint), before);
    store.stop(deadline()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_locked_for_good_is_abandoned_at_the_deadline_with_what_was_lost() {
    let k = Kit::new();
    let dir = tempfile::tempdir().unwrap();
    // Room for two traces of three spans.
    let store = open(
        &k,
        dir.path(),
        StoreConfig {
            queue_spans: 6,
            ..config()
        },
    );
    let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let traces: Vec<_> = (1..=2u128).map(|t| (t, call(&k, None))).collect();
    store.submit(finalise(&traces, T0, 0.0)).await.unwrap();
    while errors(&store, Reason::Busy) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The queue is full: a worker handing over more waits.
    let waiting = {
        let store = store.clone();
        let more = finalise(&[(3, call(&k, None))], T0, 0.0);
        tokio::spawn(async move { store.submit(more).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());

    let started = tokio::time::Instant::now();
    let unwritten = store.stop(started + Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(300) + WRITER_BUSY_TIMEOUT + Duration::from_millis(500),
        "{took:?}"
    );
    assert!(matches!(waiting.await.unwrap(), Err(StoreError::Stopped)));
    let lost = Tally {
        traces: 3,
        findings: 3,
    };
    assert_eq!(unwritten, lost);
    assert_eq!(dropped(&store, Reason::Shutdown), lost);
    assert_eq!(store.health().queued, Tally::default());
    assert_eq!(store.health().written, Tally::default());
    drop(other);
}
