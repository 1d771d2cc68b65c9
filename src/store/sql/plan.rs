//! What one write stores, as rows with name ids: built once from a batch of finalised traces,
//! then written by each database its own way (a statement per row in SQLite, one multi-row
//! statement per table in PostgreSQL), in one transaction.
//!
//! Counters are summed here first, so a batch of thousands of traces becomes a few upserts per
//! edge and minute, not a statement per span edge.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::names::NameKind;
use super::{CALL, EXAMPLES, scope_code, trace_key};
use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::{SpanRecord, Sym, TraceId};
use crate::store::{Failure, codec};
use crate::verify::NodeKey;

/// Where name ids come from while a plan is built: looked up (or added) in the write's
/// transaction, or collected first and resolved in one go.
pub trait Ids {
    fn name(&mut self, kind: NameKind, sym: Sym) -> Result<i64, Failure>;
}

/// An [`Ids`] that only notes which names a batch needs; every id it gives is 0.
#[derive(Default)]
pub struct Needed(
    pub Vec<(NameKind, Sym)>,
    HashMap<(NameKind, Sym), (), RandomState>,
);

impl Ids for Needed {
    fn name(&mut self, kind: NameKind, sym: Sym) -> Result<i64, Failure> {
        if self.1.insert((kind, sym), ()).is_none() {
            self.0.push((kind, sym));
        }
        Ok(0)
    }
}

/// The string of a symbol of `kind`.
pub fn resolve(sym: &Symbols, kind: NameKind, s: Sym) -> std::sync::Arc<str> {
    match kind {
        NameKind::Service => sym.services.resolve(s),
        NameKind::Virtual | NameKind::Stage => sym.values.resolve(s),
        NameKind::Span => sym.names.resolve(s),
    }
}

/// (service, span id, name, kind, stage, instance) of a span.
pub type SpanCols = (i64, i64, i64, i64, Option<i64>, Option<i64>);

pub struct FindingRow {
    pub observed_ms: i64,
    pub trace_id: [u8; 16],
    pub kind: i64,
    pub scope: i64,
    pub first_break: i64,
    pub stage: Option<i64>,
    pub edge_caller: Option<i64>,
    pub edge_callee: i64,
    /// The parent span; `None` when it never arrived.
    pub caller: Option<SpanCols>,
    pub callee: SpanCols,
    pub detail: String,
    /// Messaging system, destination and consumer group (stage-kind names).
    pub messaging: [Option<i64>; 3],
}

pub struct TraceRow {
    pub trace_id: [u8; 16],
    pub finalised_ms: i64,
    pub broken: i64,
    pub data: Vec<u8>,
}

/// (minute, caller, callee, stage, instance, verdict): the key of `edge_minutes`.
pub type MinuteKey = (i64, i64, i64, i64, i64, i64);

#[derive(Default)]
pub struct Plan {
    pub findings: Vec<FindingRow>,
    pub traces: Vec<TraceRow>,
    /// key -> (count, first breaks), to add to what is stored.
    pub minutes: Vec<(MinuteKey, i64, i64)>,
    /// (caller, callee) -> last seen ms.
    pub edges: Vec<((i64, i64), i64)>,
    /// (caller, callee, verdict, trace id, seen ms)
    pub examples: Vec<(i64, i64, i64, [u8; 16], i64)>,
    /// (service, instance stage or 0) -> last seen ms.
    pub services: Vec<((i64, i64), i64)>,
    /// (minute, root stage or 0, broken) -> traces.
    pub trace_minutes: Vec<((i64, i64, i64), i64)>,
    /// ((caller, callee, system or 0, destination), last seen ms) of messaging hops.
    pub destinations: Vec<((i64, i64, i64, i64), i64)>,
}

/// The latest examples of one (caller, callee, verdict): (trace, seen ms).
type Examples = Vec<(TraceId, i64)>;

struct Resolve<'a, I> {
    ids: &'a mut I,
}

impl<I: Ids> Resolve<'_, I> {
    fn node(&mut self, n: NodeKey) -> Result<i64, Failure> {
        match n {
            NodeKey::Service(s) => self.ids.name(NameKind::Service, s),
            NodeKey::Virtual(v) => self.ids.name(NameKind::Virtual, v),
        }
    }

    /// A stage id, or 0 for none (a key column cannot be NULL and still be unique).
    fn stage0(&mut self, s: Option<Sym>) -> Result<i64, Failure> {
        match s {
            Some(v) => self.ids.name(NameKind::Stage, v),
            None => Ok(0),
        }
    }

    fn stage(&mut self, s: Option<Sym>) -> Result<Option<i64>, Failure> {
        s.map(|v| self.ids.name(NameKind::Stage, v)).transpose()
    }

    fn span(&mut self, s: &SpanRecord) -> Result<SpanCols, Failure> {
        Ok((
            self.ids.name(NameKind::Service, s.service)?,
            s.span_id.get() as i64,
            self.ids.name(NameKind::Span, s.name)?,
            s.kind as i64,
            self.stage(s.stage)?,
            self.stage(s.instance_stage)?,
        ))
    }
}

/// The rows that store `batch`.
pub fn build<I: Ids>(batch: &[Finalised], sym: &Symbols, ids: &mut I) -> Result<Plan, Failure> {
    let mut r = Resolve { ids };
    let mut plan = Plan::default();
    let mut minutes: HashMap<MinuteKey, (i64, i64), RandomState> = HashMap::default();
    let mut last_seen: HashMap<(i64, i64), i64, RandomState> = HashMap::default();
    let mut examples: HashMap<(i64, i64, i64), Examples, RandomState> = HashMap::default();
    let mut services: HashMap<(i64, i64), i64, RandomState> = HashMap::default();
    let mut trace_minutes: HashMap<(i64, i64, i64), i64, RandomState> = HashMap::default();
    let mut destinations: HashMap<(i64, i64, i64, i64), i64, RandomState> = HashMap::default();
    for f in batch {
        let o = &f.outcome;
        let at = o.finalised_at_ms as i64;
        let minute = at / 60_000;
        for e in &o.edges {
            let caller = match e.hop.caller {
                Some(n) => r.node(n)?,
                None => 0,
            };
            let callee = r.node(e.hop.callee)?;
            let stage = r.stage0(e.stage)?;
            if e.call {
                let instance = r.stage0(e.instance_stage)?;
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
            if let Some((system, dest)) = e.destination {
                let key = (caller, callee, r.stage0(system)?, r.stage0(Some(dest))?);
                let seen = destinations.entry(key).or_default();
                *seen = (*seen).max(at);
            }
        }
        for x in &o.findings {
            plan.findings.push(FindingRow {
                observed_ms: x.observed_at_ms as i64,
                trace_id: trace_key(x.trace_id),
                kind: x.kind as i64,
                scope: scope_code(x.scope),
                first_break: i64::from(x.first_break),
                stage: r.stage(x.stage())?,
                edge_caller: x.hop.caller.map(|n| r.node(n)).transpose()?,
                edge_callee: r.node(x.hop.callee)?,
                caller: x.caller.as_ref().map(|p| r.span(p)).transpose()?,
                callee: r.span(&x.callee)?,
                detail: x.detail(sym),
                messaging: match &x.messaging {
                    Some(m) => [
                        r.stage(m.system)?,
                        r.stage(m.destination)?,
                        r.stage(m.group)?,
                    ],
                    None => [None; 3],
                },
            });
        }
        if let Some(s) = &f.snapshot {
            plan.traces.push(TraceRow {
                trace_id: trace_key(o.trace_id),
                finalised_ms: at,
                broken: i64::from(o.is_broken()),
                data: codec::encode(s, sym),
            });
        }
        if !o.joined {
            *trace_minutes
                .entry((minute, r.stage0(o.stage)?, i64::from(o.is_broken())))
                .or_default() += 1;
        }
        for &(svc, inst) in &o.services {
            let key = (r.ids.name(NameKind::Service, svc)?, r.stage0(inst)?);
            let seen = services.entry(key).or_default();
            *seen = (*seen).max(at);
        }
    }
    plan.minutes = minutes.into_iter().map(|(k, (n, fb))| (k, n, fb)).collect();
    plan.edges = last_seen.into_iter().collect();
    plan.examples = examples
        .into_iter()
        .flat_map(|((a, b, v), list)| {
            list.into_iter()
                .map(move |(t, at)| (a, b, v, trace_key(t), at))
        })
        .collect();
    plan.services = services.into_iter().collect();
    plan.trace_minutes = trace_minutes.into_iter().collect();
    plan.destinations = destinations.into_iter().collect();
    Ok(plan)
}

impl Plan {
    /// Applies `f` to every name id in the plan (and nothing else): for ids given provisionally
    /// while the plan was built and known only once its names are stored.
    pub fn map_ids(&mut self, f: impl Fn(i64) -> i64) {
        let span = |c: &mut SpanCols| {
            c.0 = f(c.0);
            c.2 = f(c.2);
            c.4 = c.4.map(&f);
            c.5 = c.5.map(&f);
        };
        for r in &mut self.findings {
            r.stage = r.stage.map(&f);
            r.edge_caller = r.edge_caller.map(&f);
            r.edge_callee = f(r.edge_callee);
            if let Some(c) = &mut r.caller {
                span(c);
            }
            span(&mut r.callee);
            for m in &mut r.messaging {
                *m = m.map(&f);
            }
        }
        for ((_, caller, callee, stage, instance, _), _, _) in &mut self.minutes {
            (*caller, *callee, *stage, *instance) =
                (f(*caller), f(*callee), f(*stage), f(*instance));
        }
        for ((caller, callee), _) in &mut self.edges {
            (*caller, *callee) = (f(*caller), f(*callee));
        }
        for (caller, callee, _, _, _) in &mut self.examples {
            (*caller, *callee) = (f(*caller), f(*callee));
        }
        for ((service, stage), _) in &mut self.services {
            (*service, *stage) = (f(*service), f(*stage));
        }
        for ((_, stage, _), _) in &mut self.trace_minutes {
            *stage = f(*stage);
        }
        for ((caller, callee, system, dest), _) in &mut self.destinations {
            (*caller, *callee, *system, *dest) = (f(*caller), f(*callee), f(*system), f(*dest));
        }
    }
}
