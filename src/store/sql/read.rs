//! The read queries, the same for every SQL store: rows turned into the read model's shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::names::{NameKind, Names};
use super::{CALL, Db, EXAMPLES, Row, Value, id_list, scope_code, scope_of, trace_key};
use crate::aggregate::{Count, ServiceGraph, StageStats};
use crate::intern::Symbols;
use crate::model::{SpanId, SpanKind, Sym, TraceId};
use crate::store::{FindingPage, FindingQuery, StageTraces, StoreError, Window, codec};
use crate::verify::{NodeKey, Verdict};
use crate::view::{
    EdgeSeriesView, FindingView, HopView, InstanceView, MessagingView, MinuteView, ServiceView,
    SpanRef, TraceView, rfc3339,
};

const FINDING_COLUMNS: &str =
    "id, observed_ms, trace_id, kind, scope, first_break, edge_caller, edge_callee,
    p_service, p_span, p_name, p_kind, p_stage, p_instance,
    c_service, c_span, c_name, c_kind, c_stage, c_instance, detail, stage,
    m_system, m_destination, m_group";

/// Columns of [`FINDING_COLUMNS`] that hold name ids.
const FINDING_NAME_COLUMNS: [usize; 14] = [6, 7, 8, 10, 12, 13, 14, 16, 18, 19, 21, 22, 23, 24];

/// Fetches the names of every id in these columns of these rows.
async fn ensure_names(
    db: &dyn Db,
    names: &Names,
    rows: &[Row],
    columns: &[usize],
) -> Result<(), StoreError> {
    let mut ids = Vec::new();
    for r in rows {
        for &c in columns {
            if let Ok(Some(id)) = r.opt_int(c) {
                ids.push(id);
            }
        }
    }
    names.ensure(db, ids).await
}

pub async fn findings(
    db: &dyn Db,
    names: &Names,
    q: &FindingQuery,
) -> Result<FindingPage, StoreError> {
    let empty = FindingPage {
        findings: Vec::new(),
        next: None,
    };
    let mut sql = format!("SELECT {FINDING_COLUMNS} FROM findings WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |column: &str, v: Value, sql: &mut String| {
        args.push(v);
        sql.push_str(&format!(" AND {column} ${}", args.len()));
    };
    let f = &q.filter;
    if let Some(k) = f.kind {
        cond("kind =", Value::Int(k as i64), &mut sql);
    }
    match f.stage.as_deref() {
        None => {}
        Some("none") => sql.push_str(" AND stage IS NULL"),
        Some(s) => match names.find(db, NameKind::Stage, s).await? {
            Some(id) => cond("stage =", Value::Int(id), &mut sql),
            None => return Ok(empty),
        },
    }
    for (column, name) in [("edge_caller", &f.caller), ("edge_callee", &f.callee)] {
        if let Some(name) = name {
            let ids = names.node_ids(db, name).await?;
            if ids.is_empty() {
                return Ok(empty);
            }
            sql.push_str(&format!(" AND {column} IN ({})", id_list(&ids)));
        }
    }
    if let Some(t) = f.trace_id {
        cond("trace_id =", Value::Bytes(trace_key(t).to_vec()), &mut sql);
    }
    if let Some(s) = f.scope {
        cond("scope =", Value::Int(scope_code(s)), &mut sql);
    }
    if let Some(b) = f.first_break {
        cond("first_break =", Value::Int(i64::from(b)), &mut sql);
    }
    if let Some(ms) = q.window.since_ms {
        cond("observed_ms >=", Value::Int(ms as i64), &mut sql);
    }
    if let Some(ms) = q.window.until_ms {
        cond("observed_ms <", Value::Int(ms as i64), &mut sql);
    }
    if let Some(id) = q.before {
        cond("id <", Value::Int(id), &mut sql);
    }
    args.push(Value::Int(q.limit as i64 + 1));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let rows = db.query(&sql, args).await?;
    ensure_names(db, names, &rows, &FINDING_NAME_COLUMNS).await?;
    let mut out: Vec<(i64, FindingView)> = Vec::with_capacity(q.limit.min(1024));
    let mut next = None;
    for row in &rows {
        if out.len() == q.limit {
            next = out.last().map(|(last, _)| *last);
            break;
        }
        out.push(finding_row(row, names)?);
    }
    Ok(FindingPage {
        findings: out.into_iter().map(|(_, v)| v).collect(),
        next,
    })
}

/// The findings of one trace, oldest first (the order they were produced in).
pub async fn trace_findings(
    db: &dyn Db,
    names: &Names,
    t: TraceId,
) -> Result<Vec<FindingView>, StoreError> {
    let rows = db
        .query(
            &format!("SELECT {FINDING_COLUMNS} FROM findings WHERE trace_id = $1 ORDER BY id"),
            vec![Value::Bytes(trace_key(t).to_vec())],
        )
        .await?;
    ensure_names(db, names, &rows, &FINDING_NAME_COLUMNS).await?;
    rows.iter()
        .map(|r| finding_row(r, names).map(|(_, v)| v))
        .collect()
}

/// A stored trace with its findings.
pub async fn trace(
    db: &dyn Db,
    names: &Names,
    id: TraceId,
) -> Result<Option<TraceView>, StoreError> {
    let rows = db
        .query(
            "SELECT data FROM traces WHERE trace_id = $1",
            vec![Value::Bytes(trace_key(id).to_vec())],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut view = codec::decode(id, row.bytes(0)?)?;
    view.findings = trace_findings(db, names, id).await?;
    Ok(Some(view))
}

fn span_ref(r: &Row, at: usize, names: &Names) -> Result<Option<SpanRef>, StoreError> {
    let Some(service) = r.opt_int(at)? else {
        return Ok(None);
    };
    let Some(span_id) = SpanId::new(r.int(at + 1)? as u64) else {
        return Ok(None);
    };
    let stage = |i: usize| -> Result<Option<Arc<str>>, StoreError> {
        Ok(r.opt_int(i)?.map(|id| names.name(id)))
    };
    Ok(Some(SpanRef {
        service: names.name(service),
        span_id,
        span_name: names.name(r.int(at + 2)?),
        kind: SpanKind::from_otlp(r.int(at + 3)? as i32).as_str(),
        stage: stage(at + 4)?,
        instance_stage: stage(at + 5)?,
    }))
}

fn finding_row(r: &Row, names: &Names) -> Result<(i64, FindingView), StoreError> {
    let id = r.int(0)?;
    let kind = Verdict::ALL
        .get(r.int(3)? as usize)
        .copied()
        .unwrap_or(Verdict::BrokenTrace);
    let bad = |what: &str| StoreError::Query(format!("finding {id}: {what}"));
    let callee = span_ref(r, 14, names)?.ok_or_else(|| bad("no judged span"))?;
    Ok((
        id,
        FindingView {
            trace_id: TraceId::from_bytes(r.bytes(2)?).ok_or_else(|| bad("bad trace id"))?,
            kind,
            scope: scope_of(r.int(4)?),
            first_break: r.int(5)? != 0,
            severity: kind.severity(),
            caller: span_ref(r, 8, names)?,
            callee,
            edge: HopView {
                caller: r.opt_int(6)?.map(|i| names.name(i)),
                callee: names.name(r.int(7)?),
            },
            detail: r.text(20)?.to_string(),
            stage: r.opt_int(21)?.map(|i| names.name(i)),
            observed_at: rfc3339(r.int(1)? as u64),
            messaging: {
                let m = [r.opt_int(22)?, r.opt_int(23)?, r.opt_int(24)?];
                m.iter().any(Option::is_some).then(|| MessagingView {
                    system: m[0].map(|i| names.name(i)),
                    destination: m[1].map(|i| names.name(i)),
                    consumer_group: m[2].map(|i| names.name(i)),
                })
            },
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
        if id == 0 {
            return None;
        }
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

/// Node names are resolved against services too (a virtual callee that is also a service): the
/// mirror needs every service name as well as the ids the rows name.
async fn ensure_node_names(
    db: &dyn Db,
    names: &Names,
    rows: &[Row],
    columns: &[usize],
) -> Result<(), StoreError> {
    ensure_names(db, names, rows, columns).await?;
    let services = db
        .query("SELECT DISTINCT service FROM service_instances", Vec::new())
        .await?;
    ensure_names(db, names, &services, &[0]).await
}

pub async fn graph(
    db: &dyn Db,
    names: &Names,
    sym: &Symbols,
    w: Window,
) -> Result<ServiceGraph, StoreError> {
    let nodes = Nodes { names, sym };
    let other = sym.values.other();
    let mut g = ServiceGraph::default();
    let (from, to) = w.minutes();
    let counts = db
        .query(
            "SELECT caller, callee, stage, instance, verdict,
                CAST(sum(count) AS BIGINT), CAST(sum(first_breaks) AS BIGINT) FROM edge_minutes
             WHERE minute >= $1 AND minute < $2 GROUP BY caller, callee, stage, instance, verdict",
            vec![Value::Int(from), Value::Int(to)],
        )
        .await?;
    let (since, until) = w.ms();
    let examples = db
        .query(
            "SELECT caller, callee, verdict, trace_id FROM edge_examples
             WHERE seen_ms >= $1 AND seen_ms < $2 ORDER BY seen_ms",
            vec![Value::Int(since), Value::Int(until)],
        )
        .await?;
    let seen = db
        .query(
            "SELECT caller, callee, last_seen_ms FROM edges WHERE last_seen_ms >= $1",
            vec![Value::Int(since)],
        )
        .await?;
    let destinations = db
        .query(
            "SELECT caller, callee, system, destination FROM edge_destinations
             WHERE last_seen_ms >= $1 ORDER BY last_seen_ms DESC",
            vec![Value::Int(since)],
        )
        .await?;
    ensure_node_names(db, names, &counts, &[0, 1, 2, 3]).await?;
    ensure_node_names(db, names, &destinations, &[0, 1, 2, 3]).await?;
    ensure_names(db, names, &examples, &[0, 1]).await?;
    ensure_names(db, names, &seen, &[0, 1]).await?;
    for r in &counts {
        let Some(callee) = nodes.node(r.int(1)?) else {
            continue;
        };
        let verdict = r.int(4)?;
        g.count(
            nodes.node(r.int(0)?),
            callee,
            Count {
                stage: nodes.stage(r.int(2)?),
                instance: nodes.stage(r.int(3)?),
                verdict: (verdict != CALL)
                    .then(|| Verdict::ALL.get(verdict as usize).copied())
                    .flatten(),
                count: r.int(5)? as u64,
                first_breaks: r.int(6)? as u64,
            },
            other,
        );
    }
    for r in &examples {
        let (Some(callee), Some(v), Some(t)) = (
            nodes.node(r.int(1)?),
            Verdict::ALL.get(r.int(2)? as usize).copied(),
            TraceId::from_bytes(r.bytes(3)?),
        ) else {
            continue;
        };
        g.example(nodes.node(r.int(0)?), callee, v, t);
    }
    for r in &seen {
        if let (Some(a), Some(b)) = (nodes.node(r.int(0)?), nodes.node(r.int(1)?)) {
            g.seen(a, b, r.int(2)? as u64);
        }
    }
    for r in &destinations {
        if let (Some(b), Some(d)) = (nodes.node(r.int(1)?), nodes.stage(r.int(3)?)) {
            g.destination(nodes.node(r.int(0)?), b, nodes.stage(r.int(2)?), d);
        }
    }
    Ok(g)
}

pub async fn services(db: &dyn Db, names: &Names) -> Result<Vec<ServiceView>, StoreError> {
    let rows = db
        .query(
            "SELECT service, stage, max(last_seen_ms) FROM service_instances GROUP BY service, stage",
            Vec::new(),
        )
        .await?;
    ensure_names(db, names, &rows, &[0, 1]).await?;
    // service -> (instance stage, last seen ms)
    type Seen = Vec<(Option<Arc<str>>, u64)>;
    let mut by_service: BTreeMap<Arc<str>, Seen> = BTreeMap::new();
    for r in &rows {
        let stage = r.int(1)?;
        by_service
            .entry(names.name(r.int(0)?))
            .or_default()
            .push(((stage != 0).then(|| names.name(stage)), r.int(2)? as u64));
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
                // What the store knows nothing of; the read side fills it in.
                stage_mode: Default::default(),
                stage_mode_configured: false,
                group: None,
            }
        })
        .collect())
}

/// One edge's counters per minute within `w` (only `stage`, if given), and its examples; `None`
/// when the store has never seen either end.
pub async fn edge_series(
    db: &dyn Db,
    names: &Names,
    caller: &str,
    callee: &str,
    stage: Option<&str>,
    w: Window,
) -> Result<Option<EdgeSeriesView>, StoreError> {
    let (callers, callees) = (
        names.node_ids(db, caller).await?,
        names.node_ids(db, callee).await?,
    );
    if callers.is_empty() || callees.is_empty() {
        return Ok(None);
    }
    let stage_id = match stage {
        None => None,
        Some("none") => Some(0),
        Some(s) => Some(names.find(db, NameKind::Stage, s).await?.unwrap_or(-1)),
    };
    let (from, to) = w.minutes();
    let mut sql = format!(
        "SELECT minute, verdict, CAST(sum(count) AS BIGINT), CAST(sum(first_breaks) AS BIGINT)
         FROM edge_minutes WHERE caller IN ({}) AND callee IN ({}) AND minute >= $1 AND minute < $2",
        id_list(&callers),
        id_list(&callees)
    );
    if let Some(id) = stage_id {
        sql.push_str(&format!(" AND stage = {id}"));
    }
    sql.push_str(" GROUP BY minute, verdict ORDER BY minute");
    let rows = db
        .query(&sql, vec![Value::Int(from), Value::Int(to)])
        .await?;
    let mut minutes: Vec<(u64, StageStats)> = Vec::new();
    for r in &rows {
        let minute = r.int(0)? as u64;
        if minutes.last().is_none_or(|(m, _)| *m != minute) {
            minutes.push((minute, StageStats::default()));
        }
        let st = &mut minutes.last_mut().expect("just pushed").1;
        let (verdict, count, fb) = (r.int(1)?, r.int(2)?, r.int(3)?);
        if verdict == CALL {
            st.calls += count as u64;
        } else if let Some(v) = Verdict::ALL.get(verdict as usize) {
            st.verdicts[*v as usize] += count as u64;
            st.first_breaks[*v as usize] += fb as u64;
        }
    }
    let (since, until) = w.ms();
    let rows = db
        .query(
            &format!(
                "SELECT verdict, trace_id FROM edge_examples
                 WHERE caller IN ({}) AND callee IN ({}) AND seen_ms >= $1 AND seen_ms < $2
                 ORDER BY seen_ms DESC",
                id_list(&callers),
                id_list(&callees)
            ),
            vec![Value::Int(since), Value::Int(until)],
        )
        .await?;
    let mut examples: BTreeMap<&'static str, Vec<TraceId>> = BTreeMap::new();
    for r in &rows {
        if let (Some(v), Some(t)) = (
            Verdict::ALL.get(r.int(0)? as usize),
            TraceId::from_bytes(r.bytes(1)?),
        ) {
            let list = examples.entry(v.as_str()).or_default();
            if list.len() < EXAMPLES {
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
pub async fn trace_counts(
    db: &dyn Db,
    names: &Names,
    w: Window,
) -> Result<Vec<StageTraces>, StoreError> {
    let (from, to) = w.minutes();
    let rows = db
        .query(
            "SELECT stage, broken, CAST(sum(count) AS BIGINT) FROM trace_minutes
             WHERE minute >= $1 AND minute < $2 GROUP BY stage, broken",
            vec![Value::Int(from), Value::Int(to)],
        )
        .await?;
    ensure_names(db, names, &rows, &[0]).await?;
    let mut by_stage: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for r in &rows {
        let (stage, broken, n) = (r.int(0)?, r.int(1)? != 0, r.int(2)?);
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
