//! Retention: rows older than `--retention` are deleted, and when the store is larger than
//! `--max-store-bytes`, the oldest rows go first until it fits. Runs on the writer's connection,
//! between writes, so it never contends with them.

use rusqlite::{Connection, params};

use super::StoreConfig;
use crate::store::sql::EXAMPLES;

/// At most this many steps of "delete the oldest slice" per run, so one run stays short.
const MAX_STEPS: usize = 64;

/// Rows deleted by one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub findings: usize,
    pub traces: usize,
    pub edge_minutes: usize,
}

impl Deleted {
    fn add(&mut self, o: Deleted) {
        self.findings += o.findings;
        self.traces += o.traces;
        self.edge_minutes += o.edge_minutes;
    }

    fn any(&self) -> bool {
        self.findings + self.traces + self.edge_minutes > 0
    }
}

/// Deletes every row older than `cutoff_ms` (Unix ms).
fn delete_before(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<Deleted> {
    let minute = cutoff_ms.div_euclid(60_000);
    let d = Deleted {
        findings: conn.execute(
            "DELETE FROM findings WHERE observed_ms < ?1",
            params![cutoff_ms],
        )?,
        traces: conn.execute(
            "DELETE FROM traces WHERE finalised_ms < ?1",
            params![cutoff_ms],
        )?,
        edge_minutes: conn.execute(
            "DELETE FROM edge_minutes WHERE minute < ?1",
            params![minute],
        )?,
    };
    conn.execute(
        "DELETE FROM edge_examples WHERE seen_ms < ?1",
        params![cutoff_ms],
    )?;
    conn.execute(
        "DELETE FROM trace_minutes WHERE minute < ?1",
        params![minute],
    )?;
    conn.execute(
        "DELETE FROM edges WHERE last_seen_ms < ?1",
        params![cutoff_ms],
    )?;
    conn.execute(
        "DELETE FROM edge_destinations WHERE last_seen_ms < ?1",
        params![cutoff_ms],
    )?;
    conn.execute(
        "DELETE FROM service_instances WHERE last_seen_ms < ?1",
        params![cutoff_ms],
    )?;
    Ok(d)
}

/// Bytes the store's pages hold (free pages not counted).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * page) as u64)
}

/// The time of the oldest row, Unix ms.
fn oldest_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT min(t) FROM (
            SELECT min(observed_ms) AS t FROM findings
            UNION ALL SELECT min(finalised_ms) FROM traces
            UNION ALL SELECT min(minute) * 60000 FROM edge_minutes)",
        [],
        |r| r.get(0),
    )
}

pub fn enforce(conn: &mut Connection, cfg: &StoreConfig) -> rusqlite::Result<Deleted> {
    enforce_at(conn, cfg, crate::wall_ms() as i64)
}

pub fn enforce_at(
    conn: &mut Connection,
    cfg: &StoreConfig,
    now_ms: i64,
) -> rusqlite::Result<Deleted> {
    let mut deleted = Deleted::default();
    let by_age = {
        let tx = conn.transaction()?;
        let d = delete_before(&tx, now_ms - cfg.retention.as_millis() as i64)?;
        // Keep only the newest few examples per edge and verdict.
        tx.execute(
            "DELETE FROM edge_examples WHERE (caller, callee, verdict, trace_id) IN (
                SELECT caller, callee, verdict, trace_id FROM (
                    SELECT caller, callee, verdict, trace_id, row_number() OVER (
                        PARTITION BY caller, callee, verdict ORDER BY seen_ms DESC) AS n
                    FROM edge_examples)
                WHERE n > ?1)",
            params![EXAMPLES as i64],
        )?;
        tx.commit()?;
        d
    };
    deleted.add(by_age);
    let mut by_size = Deleted::default();
    for _ in 0..MAX_STEPS {
        if used_bytes(conn)? <= cfg.max_bytes {
            break;
        }
        let Some(oldest) = oldest_ms(conn)? else {
            break;
        };
        // Slices of a twentieth of what is stored (at least a minute): a few steps fit any overrun.
        let step = ((now_ms - oldest) / 20).max(60_000);
        let tx = conn.transaction()?;
        let d = delete_before(&tx, oldest + step)?;
        tx.commit()?;
        by_size.add(d);
    }
    deleted.add(by_size);
    if deleted.any() {
        // Give freed pages back to the file system.
        conn.execute_batch("PRAGMA incremental_vacuum")?;
        tracing::info!(
            "store retention: deleted {} findings, {} traces and {} edge counters ({} past --retention, {} to fit --max-store-bytes)",
            deleted.findings,
            deleted.traces,
            deleted.edge_minutes,
            by_age.findings + by_age.traces + by_age.edge_minutes,
            by_size.findings + by_size.traces + by_size.edge_minutes,
        );
    }
    Ok(deleted)
}
