//! One write into PostgreSQL: a batch's [`Plan`] in one transaction, one multi-row statement per
//! table.
//!
//! The plan is built once with provisional ids (negative) for names the mirror does not know; they
//! are upserted in one statement, and the plan's ids are mapped to the real ones. Rows go in sorted
//! by key, so concurrent writers lock shared rows (counters, names) in one order and do not
//! deadlock each other.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use deadpool_postgres::Pool;
use foldhash::fast::RandomState;
use tokio_postgres::NoTls;

use super::CancelSlot;
use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::Sym;
use crate::store::sql::names::{NameKind, Names, SymIds};
use crate::store::sql::plan::{self, Ids, Plan, resolve};
use crate::store::writer::Backend;
use crate::store::{Failure, StoreConfig};

/// Ids for a plan: known ones as they are, unknown names numbered -1, -2, ... in order.
struct Provisional<'a> {
    names: &'a Names,
    sym: &'a Symbols,
    known: &'a SymIds,
    needed: Vec<(NameKind, Sym, Arc<str>)>,
    index: HashMap<(NameKind, Sym), i64, RandomState>,
}

impl Ids for Provisional<'_> {
    fn name(&mut self, kind: NameKind, s: Sym) -> Result<i64, Failure> {
        if let Some(id) = self.known.get(kind, s) {
            return Ok(id);
        }
        if let Some(&id) = self.index.get(&(kind, s)) {
            return Ok(id);
        }
        let name = resolve(self.sym, kind, s);
        let id = match self.names.id(kind, &name) {
            Some(id) => id,
            None => {
                self.needed.push((kind, s, name));
                -(self.needed.len() as i64)
            }
        };
        self.index.insert((kind, s), id);
        Ok(id)
    }
}

pub struct PgBackend {
    pool: Pool,
    names: Arc<Names>,
    symbols: Arc<Symbols>,
    sym_ids: SymIds,
    cfg: StoreConfig,
    cancel: CancelSlot,
}

impl PgBackend {
    pub fn new(pool: Pool, names: Arc<Names>, symbols: Arc<Symbols>, cfg: StoreConfig) -> Self {
        PgBackend {
            pool,
            names,
            symbols,
            sym_ids: SymIds::default(),
            cfg,
            cancel: Default::default(),
        }
    }

    pub fn cancel_handle(&self) -> CancelSlot {
        self.cancel.clone()
    }
}

/// Cancels the statement the writer's connection is running, if any (the shutdown deadline).
pub fn cancel(slot: &CancelSlot) {
    let token = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(token) = token {
        tokio::spawn(async move {
            let _ = token.cancel_query(NoTls).await;
        });
    }
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    async fn write(
        &mut self,
        batch: &Arc<Vec<Finalised>>,
        range: Range<usize>,
    ) -> Result<(), Failure> {
        let mut ids = Provisional {
            names: &self.names,
            sym: &self.symbols,
            known: &self.sym_ids,
            needed: Vec::new(),
            index: HashMap::default(),
        };
        let mut plan = plan::build(&batch[range], &self.symbols, &mut ids)?;
        let (needed, index) = (ids.needed, ids.index);
        let mut client = self.pool.get().await?;
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.cancel_token());
        let tx = client.transaction().await?;
        let resolved = upsert_names(&tx, &needed).await?;
        plan.map_ids(|id| {
            if id < 0 {
                resolved[(-id - 1) as usize]
            } else {
                id
            }
        });
        execute(&tx, plan).await?;
        tx.commit().await?;
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.names.publish(
            needed
                .iter()
                .zip(&resolved)
                .map(|((kind, _, name), id)| ((*kind, name.clone()), *id)),
        );
        self.sym_ids.extend(index.into_iter().map(|(k, id)| {
            let id = if id < 0 {
                resolved[(-id - 1) as usize]
            } else {
                id
            };
            (k, id)
        }));
        Ok(())
    }

    async fn repair(&mut self) -> Result<(), Failure> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT id, kind, name FROM names", &[])
            .await?;
        self.names
            .replace(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        self.sym_ids = SymIds::default();
        Ok(())
    }

    async fn retention(&mut self) {
        if let Err(e) = super::retention::enforce(&self.pool, &self.cfg).await {
            tracing::error!("enforcing the store's retention failed: {}", e.message);
        }
    }
}

/// The ids of `needed` names, in order: added, or found where another writer added them first.
async fn upsert_names(
    tx: &tokio_postgres::Transaction<'_>,
    needed: &[(NameKind, Sym, Arc<str>)],
) -> Result<Vec<i64>, Failure> {
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted: Vec<(i64, &str)> = needed
        .iter()
        .map(|(k, _, n)| (*k as i64, n.as_ref()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let kinds: Vec<i64> = sorted.iter().map(|(k, _)| *k).collect();
    let texts: Vec<&str> = sorted.iter().map(|(_, n)| *n).collect();
    tx.execute(
        "INSERT INTO names (kind, name) SELECT * FROM UNNEST($1::bigint[], $2::text[])
         ON CONFLICT (kind, name) DO NOTHING",
        &[&kinds, &texts],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT n.id, n.kind, n.name FROM names n
             JOIN UNNEST($1::bigint[], $2::text[]) AS w(kind, name) ON n.kind = w.kind AND n.name = w.name",
            &[&kinds, &texts],
        )
        .await?;
    let found: HashMap<(i64, String), i64> = rows
        .iter()
        .map(|r| ((r.get(1), r.get(2)), r.get(0)))
        .collect();
    needed
        .iter()
        .map(|(k, _, n)| {
            found
                .get(&(*k as i64, n.to_string()))
                .copied()
                .ok_or_else(|| Failure {
                    reason: crate::store::Reason::Other,
                    message: format!("the name '{n}' was neither added nor found"),
                })
        })
        .collect()
}

async fn execute(tx: &tokio_postgres::Transaction<'_>, mut plan: Plan) -> Result<(), Failure> {
    if !plan.findings.is_empty() {
        let f = &plan.findings;
        let col = |g: &dyn Fn(&plan::FindingRow) -> i64| f.iter().map(g).collect::<Vec<i64>>();
        let opt = |g: &dyn Fn(&plan::FindingRow) -> Option<i64>| {
            f.iter().map(g).collect::<Vec<Option<i64>>>()
        };
        let trace_ids: Vec<&[u8]> = f.iter().map(|r| &r.trace_id[..]).collect();
        let details: Vec<&str> = f.iter().map(|r| r.detail.as_str()).collect();
        tx.execute(
            "INSERT INTO findings (observed_ms, trace_id, kind, scope, first_break, stage, edge_caller, edge_callee,
                p_service, p_span, p_name, p_kind, p_stage, p_instance,
                c_service, c_span, c_name, c_kind, c_stage, c_instance, detail,
                m_system, m_destination, m_group)
             SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[],
                $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[],
                $18::bigint[], $19::bigint[], $20::bigint[], $21::text[], $22::bigint[], $23::bigint[],
                $24::bigint[])",
            &[
                &col(&|r| r.observed_ms),
                &trace_ids,
                &col(&|r| r.kind),
                &col(&|r| r.scope),
                &col(&|r| r.first_break),
                &opt(&|r| r.stage),
                &opt(&|r| r.edge_caller),
                &col(&|r| r.edge_callee),
                &opt(&|r| r.caller.map(|p| p.0)),
                &opt(&|r| r.caller.map(|p| p.1)),
                &opt(&|r| r.caller.map(|p| p.2)),
                &opt(&|r| r.caller.map(|p| p.3)),
                &opt(&|r| r.caller.and_then(|p| p.4)),
                &opt(&|r| r.caller.and_then(|p| p.5)),
                &col(&|r| r.callee.0),
                &col(&|r| r.callee.1),
                &col(&|r| r.callee.2),
                &col(&|r| r.callee.3),
                &opt(&|r| r.callee.4),
                &opt(&|r| r.callee.5),
                &details,
                &opt(&|r| r.messaging[0]),
                &opt(&|r| r.messaging[1]),
                &opt(&|r| r.messaging[2]),
            ],
        )
        .await?;
    }
    if !plan.traces.is_empty() {
        // One row per trace id, the latest: a statement cannot upsert the same row twice.
        plan.traces.reverse();
        plan.traces.sort_by_key(|t| t.trace_id);
        plan.traces.dedup_by_key(|t| t.trace_id);
        let t = &plan.traces;
        let ids: Vec<&[u8]> = t.iter().map(|r| &r.trace_id[..]).collect();
        let at: Vec<i64> = t.iter().map(|r| r.finalised_ms).collect();
        let broken: Vec<i64> = t.iter().map(|r| r.broken).collect();
        let data: Vec<&[u8]> = t.iter().map(|r| r.data.as_slice()).collect();
        tx.execute(
            "INSERT INTO traces (trace_id, finalised_ms, broken, data)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[])
             ON CONFLICT (trace_id) DO UPDATE SET finalised_ms = excluded.finalised_ms,
                broken = excluded.broken, data = excluded.data",
            &[&ids, &at, &broken, &data],
        )
        .await?;
    }
    if !plan.minutes.is_empty() {
        plan.minutes.sort_unstable_by_key(|(k, _, _)| *k);
        let m = &plan.minutes;
        let c = |i: usize| -> Vec<i64> {
            m.iter()
                .map(|((a, b, c, d, e, f), n, fb)| [*a, *b, *c, *d, *e, *f, *n, *fb][i])
                .collect()
        };
        tx.execute(
            "INSERT INTO edge_minutes (minute, caller, callee, stage, instance, verdict, count, first_breaks)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                $6::bigint[], $7::bigint[], $8::bigint[])
             ON CONFLICT (minute, caller, callee, stage, instance, verdict) DO UPDATE SET
                count = edge_minutes.count + excluded.count,
                first_breaks = edge_minutes.first_breaks + excluded.first_breaks",
            &[&c(0), &c(1), &c(2), &c(3), &c(4), &c(5), &c(6), &c(7)],
        )
        .await?;
    }
    if !plan.edges.is_empty() {
        plan.edges.sort_unstable();
        let e = &plan.edges;
        let (a, b, t): (Vec<i64>, Vec<i64>, Vec<i64>) = (
            e.iter().map(|((a, _), _)| *a).collect(),
            e.iter().map(|((_, b), _)| *b).collect(),
            e.iter().map(|(_, t)| *t).collect(),
        );
        tx.execute(
            "INSERT INTO edges (caller, callee, last_seen_ms)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])
             ON CONFLICT (caller, callee) DO UPDATE SET
                last_seen_ms = GREATEST(edges.last_seen_ms, excluded.last_seen_ms)",
            &[&a, &b, &t],
        )
        .await?;
    }
    if !plan.destinations.is_empty() {
        plan.destinations.sort_unstable();
        let d = &plan.destinations;
        let col = |i: usize| -> Vec<i64> {
            d.iter()
                .map(|((a, b, s, x), t)| [*a, *b, *s, *x, *t][i])
                .collect()
        };
        tx.execute(
            "INSERT INTO edge_destinations (caller, callee, system, destination, last_seen_ms)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
             ON CONFLICT (caller, callee, system, destination) DO UPDATE SET
                last_seen_ms = GREATEST(edge_destinations.last_seen_ms, excluded.last_seen_ms)",
            &[&col(0), &col(1), &col(2), &col(3), &col(4)],
        )
        .await?;
    }
    if !plan.examples.is_empty() {
        plan.examples.sort_unstable();
        let x = &plan.examples;
        let ints = |i: usize| -> Vec<i64> {
            x.iter()
                .map(|(a, b, v, _, t)| [*a, *b, *v, *t][i])
                .collect()
        };
        let ids: Vec<&[u8]> = x.iter().map(|(_, _, _, id, _)| &id[..]).collect();
        tx.execute(
            "INSERT INTO edge_examples (caller, callee, verdict, trace_id, seen_ms)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[])
             ON CONFLICT (caller, callee, verdict, trace_id) DO UPDATE SET seen_ms = excluded.seen_ms",
            &[&ints(0), &ints(1), &ints(2), &ids, &ints(3)],
        )
        .await?;
    }
    if !plan.services.is_empty() {
        plan.services.sort_unstable();
        let s = &plan.services;
        let (svc, st, t): (Vec<i64>, Vec<i64>, Vec<i64>) = (
            s.iter().map(|((a, _), _)| *a).collect(),
            s.iter().map(|((_, b), _)| *b).collect(),
            s.iter().map(|(_, t)| *t).collect(),
        );
        tx.execute(
            "INSERT INTO service_instances (service, stage, last_seen_ms)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])
             ON CONFLICT (service, stage) DO UPDATE SET
                last_seen_ms = GREATEST(service_instances.last_seen_ms, excluded.last_seen_ms)",
            &[&svc, &st, &t],
        )
        .await?;
    }
    if !plan.trace_minutes.is_empty() {
        plan.trace_minutes.sort_unstable();
        let m = &plan.trace_minutes;
        let c =
            |i: usize| -> Vec<i64> { m.iter().map(|((a, b, c), n)| [*a, *b, *c, *n][i]).collect() };
        tx.execute(
            "INSERT INTO trace_minutes (minute, stage, broken, count)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
             ON CONFLICT (minute, stage, broken) DO UPDATE SET
                count = trace_minutes.count + excluded.count",
            &[&c(0), &c(1), &c(2), &c(3)],
        )
        .await?;
    }
    Ok(())
}
