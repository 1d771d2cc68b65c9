//! One write into SQLite: a batch's [`Plan`], a statement per row, in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use rusqlite::{Connection, Transaction, params};

use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::Sym;
use crate::store::Failure;
use crate::store::sql::names::{NameKind, Names, SymIds};
use crate::store::sql::plan::{self, Ids, Plan, resolve};

/// Name ids looked up, or added, inside the write's transaction.
struct TxIds<'a, 't> {
    tx: &'a Transaction<'t>,
    names: &'a Names,
    sym: &'a Symbols,
    known: &'a SymIds,
    /// Found or added in this transaction; published once it commits.
    found: HashMap<(NameKind, Sym), i64, RandomState>,
    fresh: HashMap<(NameKind, Arc<str>), i64, RandomState>,
}

impl Ids for TxIds<'_, '_> {
    fn name(&mut self, kind: NameKind, s: Sym) -> Result<i64, Failure> {
        if let Some(id) = self.known.get(kind, s) {
            return Ok(id);
        }
        if let Some(&id) = self.found.get(&(kind, s)) {
            return Ok(id);
        }
        let name = resolve(self.sym, kind, s);
        let id = match self.names.id(kind, &name) {
            Some(id) => id,
            None => self.insert(kind, &name)?,
        };
        self.found.insert((kind, s), id);
        self.fresh.insert((kind, name), id);
        Ok(id)
    }
}

impl TxIds<'_, '_> {
    /// The database may hold the name already although the mirror does not (written by an earlier
    /// run): then its id is the one to use.
    fn insert(&self, kind: NameKind, name: &str) -> rusqlite::Result<i64> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO names (kind, name) VALUES (?1, ?2) ON CONFLICT (kind, name) DO NOTHING",
            )?
            .execute(params![kind as i64, name])?;
        if inserted == 1 {
            return Ok(self.tx.last_insert_rowid());
        }
        self.tx
            .prepare_cached("SELECT id FROM names WHERE kind = ?1 AND name = ?2")?
            .query_row(params![kind as i64, name], |r| r.get(0))
    }
}

pub fn write(
    conn: &mut Connection,
    names: &Names,
    known: &mut SymIds,
    sym: &Symbols,
    batch: &[Finalised],
) -> Result<(), Failure> {
    let tx = conn.transaction()?;
    let mut ids = TxIds {
        tx: &tx,
        names,
        sym,
        known,
        found: HashMap::default(),
        fresh: HashMap::default(),
    };
    let plan = plan::build(batch, sym, &mut ids)?;
    let (found, fresh) = (ids.found, ids.fresh);
    execute(&tx, &plan)?;
    tx.commit()?;
    names.publish(fresh);
    known.extend(found);
    Ok(())
}

fn execute(tx: &Transaction<'_>, plan: &Plan) -> rusqlite::Result<()> {
    let mut finding = tx.prepare_cached(
        "INSERT INTO findings (observed_ms, trace_id, kind, scope, first_break, stage, edge_caller, edge_callee,
            p_service, p_span, p_name, p_kind, p_stage, p_instance,
            c_service, c_span, c_name, c_kind, c_stage, c_instance, detail, m_system, m_destination, m_group)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    )?;
    for f in &plan.findings {
        let p = f.caller;
        let c = f.callee;
        finding.execute(params![
            f.observed_ms,
            &f.trace_id[..],
            f.kind,
            f.scope,
            f.first_break,
            f.stage,
            f.edge_caller,
            f.edge_callee,
            p.map(|p| p.0),
            p.map(|p| p.1),
            p.map(|p| p.2),
            p.map(|p| p.3),
            p.and_then(|p| p.4),
            p.and_then(|p| p.5),
            c.0,
            c.1,
            c.2,
            c.3,
            c.4,
            c.5,
            f.detail,
            f.messaging[0],
            f.messaging[1],
            f.messaging[2],
        ])?;
    }
    let mut trace = tx.prepare_cached(
        "INSERT OR REPLACE INTO traces (trace_id, finalised_ms, broken, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for t in &plan.traces {
        trace.execute(params![&t.trace_id[..], t.finalised_ms, t.broken, t.data])?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO edge_minutes (minute, caller, callee, stage, instance, verdict, count, first_breaks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT DO UPDATE SET count = count + excluded.count, first_breaks = first_breaks + excluded.first_breaks",
    )?;
    for ((m, a, b, s, i, v), n, fb) in &plan.minutes {
        upsert.execute(params![m, a, b, s, i, v, n, fb])?;
    }
    let mut edge = tx.prepare_cached(
        "INSERT INTO edges (caller, callee, last_seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for ((a, b), at) in &plan.edges {
        edge.execute(params![a, b, at])?;
    }
    let mut example = tx.prepare_cached(
        "INSERT OR REPLACE INTO edge_examples (caller, callee, verdict, trace_id, seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (a, b, v, t, at) in &plan.examples {
        example.execute(params![a, b, v, &t[..], at])?;
    }
    let mut service = tx.prepare_cached(
        "INSERT INTO service_instances (service, stage, last_seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for ((svc, st), at) in &plan.services {
        service.execute(params![svc, st, at])?;
    }
    let mut traces_per_minute = tx.prepare_cached(
        "INSERT INTO trace_minutes (minute, stage, broken, count) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET count = count + excluded.count",
    )?;
    for ((m, st, broken), n) in &plan.trace_minutes {
        traces_per_minute.execute(params![m, st, broken, n])?;
    }
    let mut destination = tx.prepare_cached(
        "INSERT INTO edge_destinations (caller, callee, system, destination, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for ((a, b, sys, d), at) in &plan.destinations {
        destination.execute(params![a, b, sys, d, at])?;
    }
    Ok(())
}

/// Every stored name, for the mirror.
pub fn load_names(conn: &Connection) -> rusqlite::Result<Vec<(i64, i64, String)>> {
    let mut stmt = conn.prepare("SELECT id, kind, name FROM names")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}
