//! Queries: the store's rows turned into the shapes the APIs serve.

use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};

use super::names::{NameKind, Names};
use super::write::{scope_code, scope_of, trace_key};
use crate::api::views::{FindingView, HopView, SpanRef, rfc3339};
use crate::model::{SpanId, SpanKind, TraceId};
use crate::verify::{Scope, Verdict};

/// Which findings to read; every field narrows. Names are matched exactly.
#[derive(Clone, Debug, Default)]
pub struct FindingQuery {
    pub kind: Option<Verdict>,
    /// A stage value, or `none` for findings without one.
    pub stage: Option<String>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub trace_id: Option<TraceId>,
    pub scope: Option<Scope>,
    pub first_break: Option<bool>,
    /// Unix ms, inclusive.
    pub since_ms: Option<u64>,
    /// Unix ms, exclusive.
    pub until_ms: Option<u64>,
    /// Only findings older than this cursor (from a previous page's `next`).
    pub before: Option<i64>,
    pub limit: usize,
}

/// One page of findings, newest first, and the cursor of the next page when there is one.
#[derive(Debug)]
pub struct FindingPage {
    pub findings: Vec<FindingView>,
    pub next: Option<i64>,
}

const FINDING_COLUMNS: &str =
    "id, observed_ms, trace_id, kind, scope, first_break, edge_caller, edge_callee,
    p_service, p_span, p_name, p_kind, p_stage, p_instance,
    c_service, c_span, c_name, c_kind, c_stage, c_instance, detail";

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
    if let Some(k) = q.kind {
        cond(" AND kind = ?", Value::Integer(k as i64), &mut sql);
    }
    match q.stage.as_deref() {
        None => {}
        Some("none") => sql.push_str(" AND stage IS NULL"),
        Some(s) => match names.id(NameKind::Stage, s) {
            Some(id) => cond(" AND stage = ?", Value::Integer(id), &mut sql),
            None => return Ok(empty),
        },
    }
    for (column, name) in [("edge_caller", &q.caller), ("edge_callee", &q.callee)] {
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
    if let Some(t) = q.trace_id {
        cond(
            " AND trace_id = ?",
            Value::Blob(trace_key(t).to_vec()),
            &mut sql,
        );
    }
    if let Some(s) = q.scope {
        cond(" AND scope = ?", Value::Integer(scope_code(s)), &mut sql);
    }
    if let Some(b) = q.first_break {
        cond(
            " AND first_break = ?",
            Value::Integer(i64::from(b)),
            &mut sql,
        );
    }
    if let Some(ms) = q.since_ms {
        cond(" AND observed_ms >= ?", Value::Integer(ms as i64), &mut sql);
    }
    if let Some(ms) = q.until_ms {
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
            observed_at: rfc3339(r.get::<_, i64>(1)? as u64),
        },
    ))
}
