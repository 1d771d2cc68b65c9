//! One write: a batch of finalised traces into the store, in one transaction.
//!
//! Counters are summed in memory first, so a batch of thousands of traces becomes a few upserts
//! per edge and minute, not a statement per span edge.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::names::{NameKind, NameWriter, Names, SymIds};
use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::{SpanRecord, Sym, TraceId};
use crate::store::codec;
use crate::verify::{NodeKey, Scope};

/// `edge_minutes.verdict` of the row counting calls.
pub const CALL: i64 = 9;
/// Example trace ids kept per edge and verdict.
pub const EXAMPLES: usize = 5;

pub fn trace_key(t: TraceId) -> [u8; 16] {
    t.0.to_be_bytes()
}

/// What one write stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    pub findings: u64,
    pub traces: u64,
}

/// (minute, caller, callee, stage, instance, verdict): the key of `edge_minutes`.
type MinuteKey = (i64, i64, i64, i64, i64, i64);
/// (caller, callee, verdict).
type EdgeVerdict = (i64, i64, i64);

struct Ids<'x, 'n, 't> {
    tx: &'x Transaction<'t>,
    names: NameWriter<'n>,
    sym: &'n Symbols,
    known: &'n SymIds,
    /// Symbols looked up in this transaction; they join `known` once it commits.
    found: HashMap<(NameKind, Sym), i64, RandomState>,
}

impl Ids<'_, '_, '_> {
    fn name(&mut self, kind: NameKind, s: Sym) -> rusqlite::Result<i64> {
        if let Some(id) = self.known.get(kind, s) {
            return Ok(id);
        }
        if let Some(&id) = self.found.get(&(kind, s)) {
            return Ok(id);
        }
        let interner = match kind {
            NameKind::Service => &self.sym.services,
            NameKind::Virtual | NameKind::Stage => &self.sym.values,
            NameKind::Span => &self.sym.names,
        };
        let id = self.names.id(self.tx, kind, &interner.resolve(s))?;
        self.found.insert((kind, s), id);
        Ok(id)
    }

    fn node(&mut self, n: NodeKey) -> rusqlite::Result<i64> {
        match n {
            NodeKey::Service(s) => self.name(NameKind::Service, s),
            NodeKey::Virtual(v) => self.name(NameKind::Virtual, v),
        }
    }

    fn service(&mut self, s: Sym) -> rusqlite::Result<i64> {
        self.name(NameKind::Service, s)
    }

    /// A stage id, or 0 for none (a key column cannot be NULL and still be unique).
    fn stage0(&mut self, s: Option<Sym>) -> rusqlite::Result<i64> {
        match s {
            Some(v) => self.name(NameKind::Stage, v),
            None => Ok(0),
        }
    }

    fn stage(&mut self, s: Option<Sym>) -> rusqlite::Result<Option<i64>> {
        s.map(|v| self.name(NameKind::Stage, v)).transpose()
    }

    /// (service, span id, name, kind, stage, instance) of a span.
    #[allow(clippy::type_complexity)]
    fn span(
        &mut self,
        s: &SpanRecord,
    ) -> rusqlite::Result<(i64, i64, i64, i64, Option<i64>, Option<i64>)> {
        Ok((
            self.service(s.service)?,
            s.span_id.get() as i64,
            self.name(NameKind::Span, s.name)?,
            s.kind as i64,
            self.stage(s.stage)?,
            self.stage(s.instance_stage)?,
        ))
    }
}

pub fn write(
    conn: &mut Connection,
    names: &Names,
    known: &mut SymIds,
    sym: &Symbols,
    batch: &[Finalised],
) -> rusqlite::Result<Written> {
    let tx = conn.transaction()?;
    let mut written = Written::default();
    let mut ids = Ids {
        tx: &tx,
        names: NameWriter::new(names),
        sym,
        known,
        found: HashMap::default(),
    };
    let mut minutes: HashMap<MinuteKey, (i64, i64), RandomState> = HashMap::default();
    let mut last_seen: HashMap<(i64, i64), i64, RandomState> = HashMap::default();
    let mut examples: HashMap<EdgeVerdict, Vec<(TraceId, i64)>, RandomState> = HashMap::default();
    let mut services: HashMap<(i64, i64), i64, RandomState> = HashMap::default();
    let mut trace_minutes: HashMap<(i64, i64, bool), i64, RandomState> = HashMap::default();
    {
        let mut finding = tx.prepare_cached(
            "INSERT INTO findings (observed_ms, trace_id, kind, scope, first_break, stage, edge_caller, edge_callee,
                p_service, p_span, p_name, p_kind, p_stage, p_instance,
                c_service, c_span, c_name, c_kind, c_stage, c_instance, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
        )?;
        let mut trace = tx.prepare_cached(
            "INSERT OR REPLACE INTO traces (trace_id, finalised_ms, broken, data) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for f in batch {
            let o = &f.outcome;
            let at = o.finalised_at_ms as i64;
            let minute = at / 60_000;
            for e in &o.edges {
                let caller = match e.hop.caller {
                    Some(n) => ids.node(n)?,
                    None => 0,
                };
                let callee = ids.node(e.hop.callee)?;
                let stage = ids.stage0(e.stage)?;
                if e.call {
                    let instance = ids.stage0(e.instance_stage)?;
                    minutes
                        .entry((minute, caller, callee, stage, instance, CALL))
                        .or_default()
                        .0 += 1;
                }
                if let Some(v) = e.verdict {
                    let c = minutes
                        .entry((minute, caller, callee, stage, 0, v as i64))
                        .or_default();
                    c.0 += 1;
                    c.1 += i64::from(e.first_break);
                    let ex = examples.entry((caller, callee, v as i64)).or_default();
                    if !ex.iter().any(|(t, _)| *t == o.trace_id) {
                        if ex.len() == EXAMPLES {
                            ex.remove(0);
                        }
                        ex.push((o.trace_id, at));
                    }
                }
                let seen = last_seen.entry((caller, callee)).or_default();
                *seen = (*seen).max(at);
            }
            for x in &o.findings {
                let p = x.caller.as_ref().map(|p| ids.span(p)).transpose()?;
                let c = ids.span(&x.callee)?;
                let stage = ids.stage(x.stage())?;
                let edge_caller = x.hop.caller.map(|n| ids.node(n)).transpose()?;
                let edge_callee = ids.node(x.hop.callee)?;
                finding.execute(params![
                    x.observed_at_ms as i64,
                    &trace_key(x.trace_id)[..],
                    x.kind as i64,
                    scope_code(x.scope),
                    x.first_break,
                    stage,
                    edge_caller,
                    edge_callee,
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
                    x.detail(sym),
                ])?;
                written.findings += 1;
            }
            if let Some(s) = &f.snapshot {
                trace.execute(params![
                    &trace_key(o.trace_id)[..],
                    at,
                    o.is_broken(),
                    codec::encode(s, sym),
                ])?;
                written.traces += 1;
            }
            *trace_minutes
                .entry((minute, ids.stage0(o.stage)?, o.is_broken()))
                .or_default() += 1;
            for &(svc, inst) in &o.services {
                let key = (ids.service(svc)?, ids.stage0(inst)?);
                let seen = services.entry(key).or_default();
                *seen = (*seen).max(at);
            }
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO edge_minutes (minute, caller, callee, stage, instance, verdict, count, first_breaks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, first_breaks = first_breaks + excluded.first_breaks",
        )?;
        for ((m, a, b, s, i, v), (n, fb)) in &minutes {
            upsert.execute(params![m, a, b, s, i, v, n, fb])?;
        }
        let mut edge = tx.prepare_cached(
            "INSERT INTO edges (caller, callee, last_seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
        )?;
        for ((a, b), at) in &last_seen {
            edge.execute(params![a, b, at])?;
        }
        let mut example = tx.prepare_cached(
            "INSERT OR REPLACE INTO edge_examples (caller, callee, verdict, trace_id, seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for ((a, b, v), list) in &examples {
            for (t, at) in list {
                example.execute(params![a, b, v, &trace_key(*t)[..], at])?;
            }
        }
        let mut service = tx.prepare_cached(
            "INSERT INTO service_instances (service, stage, last_seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
        )?;
        for ((svc, st), at) in &services {
            service.execute(params![svc, st, at])?;
        }
        let mut traces_per_minute = tx.prepare_cached(
            "INSERT INTO trace_minutes (minute, stage, broken, count) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET count = count + excluded.count",
        )?;
        for ((m, st, broken), n) in &trace_minutes {
            traces_per_minute.execute(params![m, st, broken, n])?;
        }
    }
    let (names, found) = (ids.names, ids.found);
    tx.commit()?;
    names.publish();
    known.extend(found);
    Ok(written)
}

pub fn scope_code(s: Scope) -> i64 {
    match s {
        Scope::CrossService => 0,
        Scope::InProcess => 1,
    }
}

pub fn scope_of(code: i64) -> Scope {
    if code == 1 {
        Scope::InProcess
    } else {
        Scope::CrossService
    }
}

/// The stored trace with this id, if any: (finalised ms, data).
pub fn stored_trace(conn: &Connection, id: TraceId) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row(
        "SELECT data FROM traces WHERE trace_id = ?1",
        params![&trace_key(id)[..]],
        |r| r.get(0),
    )
    .optional()
}
