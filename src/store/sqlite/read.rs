//! Queries: the store's rows turned into the shapes the APIs serve.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params, params_from_iter};

use super::names::{NameKind, Names};
use super::write::{CALL, scope_code, scope_of, trace_key};
use crate::aggregate::{Count, ServiceGraph, StageStats};
use crate::intern::Symbols;
use crate::model::Sym;
use crate::model::{SpanId, SpanKind, TraceId};
use crate::store::{FindingPage, FindingQuery, StageTraces, Window};
use crate::verify::NodeKey;
use crate::verify::Verdict;
use crate::view::{
    EdgeSeriesView, FindingView, HopView, InstanceView, MinuteView, ServiceView, SpanRef, rfc3339,
};

const FINDING_COLUMNS: &str =
    "id, observed_ms, trace_id, kind, scope, first_break, edge_caller, edge_callee,
    p_service, p_span, p_name, p_kind, p_stage, p_instance,
    c_service, c_span, c_name, c_kind, c_stage, c_instance, detail, stage";

pub fn findings(
    conn: &Connection,
    names: &Names,
    q: &FindingQuery,
) -> rusqlite::Result<FindingPage> {
    let empty = FindingPage {
        findings: Vec::new(),
        next: None,
    };
    let mut sql = format!("SELECT {FINDING_COLUMNS} FROM findings WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |sql_part: &str, v: Value, sql: &mut String| {
        sql.push_str(sql_part);
        args.push(v);
    };
    if let Some(k) = q.filter.kind {
        cond(" AND kind = ?", Value::Integer(k as i64), &mut sql);
    }
    match q.filter.stage.as_deref() {
        None => {}
        Some("none") => sql.push_str(" AND stage IS NULL"),
        Some(s) => match names.id(NameKind::Stage, s) {
            Some(id) => cond(" AND stage = ?", Value::Integer(id), &mut sql),
            None => return Ok(empty),
        },
    }
    for (column, name) in [
        ("edge_caller", &q.filter.caller),
        ("edge_callee", &q.filter.callee),
    ] {
        if let Some(name) = name {
            let ids = names.node_ids(name);
            if ids.is_empty() {
                return Ok(empty);
            }
            let list = ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(" AND {column} IN ({list})"));
        }
    }
    if let Some(t) = q.filter.trace_id {
        cond(
            " AND trace_id = ?",
            Value::Blob(trace_key(t).to_vec()),
            &mut sql,
        );
    }
    if let Some(s) = q.filter.scope {
        cond(" AND scope = ?", Value::Integer(scope_code(s)), &mut sql);
    }
    if let Some(b) = q.filter.first_break {
        cond(
            " AND first_break = ?",
            Value::Integer(i64::from(b)),
            &mut sql,
        );
    }
    if let Some(ms) = q.window.since_ms {
        cond(" AND observed_ms >= ?", Value::Integer(ms as i64), &mut sql);
    }
    if let Some(ms) = q.window.until_ms {
        cond(" AND observed_ms < ?", Value::Integer(ms as i64), &mut sql);
    }
    if let Some(id) = q.before {
        cond(" AND id < ?", Value::Integer(id), &mut sql);
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(q.limit as i64 + 1));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| finding_row(r, names))?;
    let mut out = Vec::with_capacity(q.limit.min(1024));
    let mut next = None;
    for row in rows {
        let (id, view) = row?;
        if out.len() == q.limit {
            next = Some(
                out.last()
                    .map_or(id, |(last, _): &(i64, FindingView)| *last),
            );
            break;
        }
        out.push((id, view));
    }
    Ok(FindingPage {
        findings: out.into_iter().map(|(_, v)| v).collect(),
        next,
    })
}

/// The findings of one trace, oldest first (the order they were produced in).
pub fn trace_findings(
    conn: &Connection,
    names: &Names,
    t: TraceId,
) -> rusqlite::Result<Vec<FindingView>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FINDING_COLUMNS} FROM findings WHERE trace_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([&trace_key(t)[..]], |r| finding_row(r, names))?;
    rows.map(|r| r.map(|(_, v)| v)).collect()
}

fn span_ref(r: &Row<'_>, at: usize, names: &Names) -> rusqlite::Result<Option<SpanRef>> {
    let Some(service) = r.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    let span: i64 = r.get(at + 1)?;
    let Some(span_id) = SpanId::new(span as u64) else {
        return Ok(None);
    };
    let stage = |i: usize| -> rusqlite::Result<Option<Arc<str>>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|id| names.name(id)))
    };
    Ok(Some(SpanRef {
        service: names.name(service),
        span_id,
        span_name: names.name(r.get(at + 2)?),
        kind: SpanKind::from_otlp(r.get::<_, i64>(at + 3)? as i32).as_str(),
        stage: stage(at + 4)?,
        instance_stage: stage(at + 5)?,
    }))
}

fn finding_row(r: &Row<'_>, names: &Names) -> rusqlite::Result<(i64, FindingView)> {
    let id: i64 = r.get(0)?;
    let trace: Vec<u8> = r.get(2)?;
    let kind = Verdict::ALL
        .get(r.get::<_, i64>(3)? as usize)
        .copied()
        .unwrap_or(Verdict::BrokenTrace);
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("finding {id}: {what}").into(),
        )
    };
    let callee = span_ref(r, 14, names)?.ok_or_else(|| bad("no judged span"))?;
    Ok((
        id,
        FindingView {
            trace_id: TraceId::from_bytes(&trace).ok_or_else(|| bad("bad trace id"))?,
            kind,
            scope: scope_of(r.get(4)?),
            first_break: r.get(5)?,
            severity: kind.severity(),
            caller: span_ref(r, 8, names)?,
            callee,
            edge: HopView {
                caller: r.get::<_, Option<i64>>(6)?.map(|i| names.name(i)),
                callee: names.name(r.get(7)?),
            },
            detail: r.get(20)?,
            stage: r.get::<_, Option<i64>>(21)?.map(|i| names.name(i)),
            observed_at: rfc3339(r.get::<_, i64>(1)? as u64),
        },
    ))
}

/// Maps the store's names onto the live symbol tables, so the graph is the same structure (and
/// view) whether it was counted a second ago or a week ago.
struct Nodes<'a> {
    names: &'a Names,
    sym: &'a Symbols,
}

impl Nodes<'_> {
    /// A callee known only by `peer.service` / `server.address` is a virtual node, unless a service
    /// of that name exports spans: then it is that service (the calls whose server span did not
    /// arrive count on its edge), not a second node of the same name.
    fn node(&self, id: i64) -> Option<NodeKey> {
        let (kind, name) = self.names.get(id)?;
        Some(match kind {
            NameKind::Virtual if self.names.id(NameKind::Service, &name).is_none() => {
                NodeKey::Virtual(self.sym.values.intern(&name))
            }
            _ => NodeKey::Service(self.sym.services.intern(&name)),
        })
    }

    fn stage(&self, id: i64) -> Option<Sym> {
        (id != 0).then(|| self.sym.values.intern(&self.names.name(id)))
    }
}

pub fn graph(
    conn: &Connection,
    names: &Names,
    sym: &Symbols,
    w: Window,
) -> rusqlite::Result<ServiceGraph> {
    let nodes = Nodes { names, sym };
    let other = sym.values.other();
    let mut g = ServiceGraph::default();
    let (from, to) = w.minutes();
    let mut stmt = conn.prepare_cached(
        "SELECT caller, callee, stage, instance, verdict, sum(count), sum(first_breaks) FROM edge_minutes
         WHERE minute >= ?1 AND minute < ?2 GROUP BY caller, callee, stage, instance, verdict",
    )?;
    let mut rows = stmt.query(params![from, to])?;
    while let Some(r) = rows.next()? {
        let (caller, callee): (i64, i64) = (r.get(0)?, r.get(1)?);
        let Some(callee) = nodes.node(callee) else {
            continue;
        };
        let caller = if caller == 0 {
            None
        } else {
            nodes.node(caller)
        };
        let verdict = r.get::<_, i64>(4)?;
        g.count(
            caller,
            callee,
            Count {
                stage: nodes.stage(r.get(2)?),
                instance: nodes.stage(r.get(3)?),
                verdict: (verdict != CALL)
                    .then(|| Verdict::ALL.get(verdict as usize).copied())
                    .flatten(),
                count: r.get::<_, i64>(5)? as u64,
                first_breaks: r.get::<_, i64>(6)? as u64,
            },
            other,
        );
    }
    let (since, until) = w.ms();
    let mut stmt = conn.prepare_cached(
        "SELECT caller, callee, verdict, trace_id FROM edge_examples
         WHERE seen_ms >= ?1 AND seen_ms < ?2 ORDER BY seen_ms",
    )?;
    let mut rows = stmt.query(params![since, until])?;
    while let Some(r) = rows.next()? {
        let (caller, callee, verdict): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let trace: Vec<u8> = r.get(3)?;
        let (Some(callee), Some(v), Some(t)) = (
            nodes.node(callee),
            Verdict::ALL.get(verdict as usize).copied(),
            TraceId::from_bytes(&trace),
        ) else {
            continue;
        };
        let caller = if caller == 0 {
            None
        } else {
            nodes.node(caller)
        };
        g.example(caller, callee, v, t);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT caller, callee, last_seen_ms FROM edges WHERE last_seen_ms >= ?1",
    )?;
    let mut rows = stmt.query(params![since])?;
    while let Some(r) = rows.next()? {
        if let (Some(a), Some(b)) = (nodes.node(r.get(0)?), nodes.node(r.get(1)?)) {
            g.seen(a, b, r.get::<_, i64>(2)? as u64);
        }
    }
    Ok(g)
}

pub fn services(conn: &Connection, names: &Names) -> rusqlite::Result<Vec<ServiceView>> {
    let mut stmt =
        conn.prepare_cached("SELECT service, stage, last_seen_ms FROM service_instances")?;
    let mut rows = stmt.query([])?;
    // service -> (instance stage, last seen ms)
    type Seen = Vec<(Option<Arc<str>>, u64)>;
    let mut by_service: BTreeMap<Arc<str>, Seen> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let stage: i64 = r.get(1)?;
        by_service.entry(names.name(r.get(0)?)).or_default().push((
            (stage != 0).then(|| names.name(stage)),
            r.get::<_, i64>(2)? as u64,
        ));
    }
    Ok(by_service
        .into_iter()
        .map(|(name, mut instances)| {
            instances.sort();
            let last = instances.iter().map(|(_, t)| *t).max().unwrap_or(0);
            ServiceView {
                name,
                instances: instances
                    .into_iter()
                    .map(|(stage, t)| InstanceView {
                        stage,
                        last_seen: rfc3339(t),
                    })
                    .collect(),
                last_seen: rfc3339(last),
            }
        })
        .collect())
}

/// One edge's counters per minute within `w` (only `stage`, if given), and its examples; `None`
/// when the store has never seen either end.
pub fn edge_series(
    conn: &Connection,
    names: &Names,
    caller: &str,
    callee: &str,
    stage: Option<&str>,
    w: Window,
) -> rusqlite::Result<Option<EdgeSeriesView>> {
    let (callers, callees) = (names.node_ids(caller), names.node_ids(callee));
    if callers.is_empty() || callees.is_empty() {
        return Ok(None);
    }
    let stage_id = match stage {
        None => None,
        Some("none") => Some(0),
        Some(s) => match names.id(NameKind::Stage, s) {
            Some(id) => Some(id),
            None => Some(-1),
        },
    };
    let list = |ids: &[i64]| {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (from, to) = w.minutes();
    let mut sql = format!(
        "SELECT minute, verdict, sum(count), sum(first_breaks) FROM edge_minutes
         WHERE caller IN ({}) AND callee IN ({}) AND minute >= ?1 AND minute < ?2",
        list(&callers),
        list(&callees)
    );
    if let Some(id) = stage_id {
        sql.push_str(&format!(" AND stage = {id}"));
    }
    sql.push_str(" GROUP BY minute, verdict ORDER BY minute");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params![from, to])?;
    let mut minutes: Vec<(u64, StageStats)> = Vec::new();
    while let Some(r) = rows.next()? {
        let minute = r.get::<_, i64>(0)? as u64;
        if minutes.last().is_none_or(|(m, _)| *m != minute) {
            minutes.push((minute, StageStats::default()));
        }
        let st = &mut minutes.last_mut().expect("just pushed").1;
        let (verdict, count, fb): (i64, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
        if verdict == CALL {
            st.calls += count as u64;
        } else if let Some(v) = Verdict::ALL.get(verdict as usize) {
            st.verdicts[*v as usize] += count as u64;
            st.first_breaks[*v as usize] += fb as u64;
        }
    }
    let (since, until) = w.ms();
    let mut stmt = conn.prepare(&format!(
        "SELECT verdict, trace_id FROM edge_examples
         WHERE caller IN ({}) AND callee IN ({}) AND seen_ms >= ?1 AND seen_ms < ?2
         ORDER BY seen_ms DESC",
        list(&callers),
        list(&callees)
    ))?;
    let mut rows = stmt.query(params![since, until])?;
    let mut examples: BTreeMap<&'static str, Vec<TraceId>> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let (v, t): (i64, Vec<u8>) = (r.get(0)?, r.get(1)?);
        if let (Some(v), Some(t)) = (Verdict::ALL.get(v as usize), TraceId::from_bytes(&t)) {
            let list = examples.entry(v.as_str()).or_default();
            if list.len() < super::write::EXAMPLES {
                list.push(t);
            }
        }
    }
    Ok(Some(EdgeSeriesView {
        caller: caller.to_string(),
        callee: callee.to_string(),
        stage: stage.map(str::to_string),
        minutes: minutes.iter().map(|(m, s)| MinuteView::of(*m, s)).collect(),
        examples,
    }))
}

/// Finalised traces in `w` by root stage.
pub fn trace_counts(
    conn: &Connection,
    names: &Names,
    w: Window,
) -> rusqlite::Result<Vec<StageTraces>> {
    let (from, to) = w.minutes();
    let mut stmt = conn.prepare_cached(
        "SELECT stage, broken, sum(count) FROM trace_minutes
         WHERE minute >= ?1 AND minute < ?2 GROUP BY stage, broken",
    )?;
    let mut rows = stmt.query(params![from, to])?;
    let mut by_stage: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let (stage, broken, n): (i64, bool, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let e = by_stage.entry(stage).or_default();
        if broken {
            e.1 += n as u64;
        } else {
            e.0 += n as u64;
        }
    }
    Ok(by_stage
        .into_iter()
        .map(|(s, (ok, broken))| ((s != 0).then(|| names.name(s)), ok, broken))
        .collect())
}
