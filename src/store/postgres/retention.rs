//! Retention in PostgreSQL: rows older than `--retention` are deleted, and when the live data is
//! larger than `--max-store-bytes`, the oldest rows go first until it fits. Every instance runs it
//! every minute; a transaction-level advisory lock lets one of them do it and the others skip.
//!
//! Deleted rows' space is reused by autovacuum, not returned: the size that counts is the live
//! data, estimated as each table's live rows times the average size of a sample of them.

use deadpool_postgres::Pool;
use tokio_postgres::Transaction;

use crate::store::sql::EXAMPLES;
use crate::store::{Failure, StoreConfig};

/// Key of the advisory lock that lets one instance at a time run retention.
const RETENTION_LOCK: i64 = 0x6772_6179_7363_0002;
/// At most this many steps of "delete the oldest slice" per run, so one run stays short.
const MAX_STEPS: usize = 64;
const TABLES: [&str; 8] = [
    "findings",
    "traces",
    "edge_minutes",
    "edges",
    "edge_destinations",
    "edge_examples",
    "service_instances",
    "trace_minutes",
];

/// Rows deleted by one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub findings: u64,
    pub traces: u64,
    pub edge_minutes: u64,
}

impl Deleted {
    fn add(&mut self, o: Deleted) {
        self.findings += o.findings;
        self.traces += o.traces;
        self.edge_minutes += o.edge_minutes;
    }

    fn total(&self) -> u64 {
        self.findings + self.traces + self.edge_minutes
    }
}

async fn delete_before(tx: &Transaction<'_>, cutoff_ms: i64) -> Result<Deleted, Failure> {
    let minute = cutoff_ms.div_euclid(60_000);
    let d = Deleted {
        findings: tx
            .execute("DELETE FROM findings WHERE observed_ms < $1", &[&cutoff_ms])
            .await?,
        traces: tx
            .execute("DELETE FROM traces WHERE finalised_ms < $1", &[&cutoff_ms])
            .await?,
        edge_minutes: tx
            .execute("DELETE FROM edge_minutes WHERE minute < $1", &[&minute])
            .await?,
    };
    tx.execute(
        "DELETE FROM edge_examples WHERE seen_ms < $1",
        &[&cutoff_ms],
    )
    .await?;
    tx.execute("DELETE FROM trace_minutes WHERE minute < $1", &[&minute])
        .await?;
    tx.execute("DELETE FROM edges WHERE last_seen_ms < $1", &[&cutoff_ms])
        .await?;
    tx.execute(
        "DELETE FROM edge_destinations WHERE last_seen_ms < $1",
        &[&cutoff_ms],
    )
    .await?;
    tx.execute(
        "DELETE FROM service_instances WHERE last_seen_ms < $1",
        &[&cutoff_ms],
    )
    .await?;
    Ok(d)
}

/// The live data's size, estimated: each table's live rows times the average size of a sample.
pub async fn live_bytes(tx: &Transaction<'_>) -> Result<u64, Failure> {
    let mut total = 0.0;
    for table in TABLES {
        let rows: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 100001) t"),
                &[],
            )
            .await?
            .get(0);
        if rows == 0 {
            continue;
        }
        // Exact for small tables; beyond that, the planner's count and a 1 % sample's average.
        let (count, avg): (f64, f64) = if rows <= 100_000 {
            let r = tx
                .query_one(
                    &format!(
                        "SELECT count(*)::float8, avg(pg_column_size(t.*))::float8 FROM {table} t"
                    ),
                    &[],
                )
                .await?;
            (r.get(0), r.get::<_, Option<f64>>(1).unwrap_or(0.0))
        } else {
            let count: f64 = tx
                .query_one(
                    "SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE relname = $1",
                    &[&table],
                )
                .await?
                .get(0);
            let avg: Option<f64> = tx
                .query_one(
                    &format!(
                        "SELECT avg(pg_column_size(t.*))::float8 FROM {table} t TABLESAMPLE SYSTEM (1)"
                    ),
                    &[],
                )
                .await?
                .get(0);
            (count.max(rows as f64), avg.unwrap_or(0.0))
        };
        total += count * avg;
    }
    Ok(total as u64)
}

async fn oldest_ms(tx: &Transaction<'_>) -> Result<Option<i64>, Failure> {
    Ok(tx
        .query_one(
            "SELECT least(
                (SELECT min(observed_ms) FROM findings),
                (SELECT min(finalised_ms) FROM traces),
                (SELECT min(minute) * 60000 FROM edge_minutes))",
            &[],
        )
        .await?
        .get(0))
}

pub async fn enforce(pool: &Pool, cfg: &StoreConfig) -> Result<Deleted, Failure> {
    enforce_at(pool, cfg, crate::wall_ms() as i64).await
}

pub async fn enforce_at(pool: &Pool, cfg: &StoreConfig, now_ms: i64) -> Result<Deleted, Failure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])
        .await?
        .get(0);
    if !locked {
        // Another instance is at it.
        return Ok(Deleted::default());
    }
    let mut deleted = Deleted::default();
    let by_age = delete_before(&tx, now_ms - cfg.retention.as_millis() as i64).await?;
    // Keep only the newest few examples per edge and verdict.
    tx.execute(
        "DELETE FROM edge_examples e USING (
            SELECT caller, callee, verdict, trace_id, row_number() OVER (
                PARTITION BY caller, callee, verdict ORDER BY seen_ms DESC) AS n
            FROM edge_examples) old
         WHERE old.n > $1 AND e.caller = old.caller AND e.callee = old.callee
            AND e.verdict = old.verdict AND e.trace_id = old.trace_id",
        &[&(EXAMPLES as i64)],
    )
    .await?;
    deleted.add(by_age);
    let mut by_size = Deleted::default();
    for _ in 0..MAX_STEPS {
        if live_bytes(&tx).await? <= cfg.max_bytes {
            break;
        }
        let Some(oldest) = oldest_ms(&tx).await? else {
            break;
        };
        // Slices of a twentieth of what is stored (at least a minute): a few steps fit any overrun.
        let step = ((now_ms - oldest) / 20).max(60_000);
        by_size.add(delete_before(&tx, oldest + step).await?);
    }
    deleted.add(by_size);
    tx.commit().await?;
    if deleted.total() > 0 {
        tracing::info!(
            "store retention: deleted {} findings, {} traces and {} edge counters ({} past --retention, {} to fit --max-store-bytes)",
            deleted.findings,
            deleted.traces,
            deleted.edge_minutes,
            by_age.total(),
            by_size.total(),
        );
    }
    Ok(deleted)
}
