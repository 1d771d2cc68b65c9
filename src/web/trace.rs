//! A trace's page: its spans in tree order with both stages and every edge's verdict, the first
//! breaks explained at the top.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::WebError;
use crate::model::{StageSource, TraceId};
use crate::read::{Found, Reader};
use crate::view::TraceView;

struct SpanRow {
    span_id: String,
    depth: usize,
    name: String,
    service: String,
    kind: &'static str,
    stage: String,
    instance: String,
    verdict: String,
    explanation: Option<String>,
    first_break: bool,
    class: &'static str,
    start: String,
    duration: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "trace.html")]
pub struct TracePage {
    trace_id: String,
    finalised: bool,
    first_breaks: Vec<(&'static str, String, String)>,
    more_first_breaks: usize,
    rows: Vec<SpanRow>,
    total: usize,
    hidden: usize,
}

/// Rows a trace page shows in tree order; spans with findings past it are still shown (up to as
/// many again). A trace of 100,000 spans would otherwise be a page of tens of megabytes that no
/// browser lays out; the JSON API has every span.
const MAX_ROWS: usize = 2_000;
/// First breaks explained at the top of a trace page.
const MAX_FIRST_BREAKS: usize = 20;

pub(super) async fn trace(
    State(reader): State<Reader>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let trace_id = TraceId::from_hex(&id)
        .ok_or_else(|| WebError::BadRequest(format!("'{id}' is not a trace id (32 hex digits)")))?;
    match reader.find_trace(trace_id, true).await? {
        Found::Here(view) => Ok(trace_page(&view).into_response()),
        Found::Elsewhere { member, .. } => Err(WebError::Elsewhere(format!(
            "trace {trace_id} is still being assembled by grayscope instance {} \
             (http://{}/traces/{trace_id}); every instance shows it once it is finalised, within \
             --trace-idle",
            member.id, member.address
        ))),
        Found::Nowhere => Err(WebError::NotFound(format!(
            "trace {trace_id} is unknown: it was never received, or it had no findings and was \
             not sampled (--sample-clean), or it is past --retention"
        ))),
    }
}

pub fn trace_page(t: &TraceView) -> TracePage {
    let ids: BTreeSet<_> = t.spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<_, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in t.spans.iter().enumerate() {
        match s.parent_span_id.filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    let verdict_of: HashMap<_, _> = t
        .edges
        .iter()
        .map(|e| (e.span_id, (e.verdict, e.scope)))
        .collect();
    let finding_of: HashMap<_, _> = t.findings.iter().map(|f| (f.callee.span_id, f)).collect();
    let base: u64 = t
        .spans
        .iter()
        .filter_map(|s| s.start_unix_nano.parse::<u64>().ok())
        .min()
        .unwrap_or(0);
    let mut rows = Vec::with_capacity(t.spans.len().min(MAX_ROWS));
    let mut hidden = 0;
    // Depth-first, children in start order (spans are sorted by start already).
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        let s = &t.spans[i];
        let finding = finding_of.get(&s.span_id);
        if let Some(c) = children.get(&s.span_id) {
            for &k in c.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
        if rows.len() >= MAX_ROWS && (finding.is_none() || rows.len() >= 2 * MAX_ROWS) {
            hidden += 1;
            continue;
        }
        let first_break = finding.is_some_and(|f| f.first_break);
        let verdict = match (verdict_of.get(&s.span_id), finding) {
            (Some((v, scope)), _) => format!("{} ({})", v.as_str(), scope.as_str()),
            (None, Some(f)) => format!("{} (no parent)", f.kind.as_str()),
            (None, None) => "root".to_string(),
        };
        let start = s.start_unix_nano.parse::<u64>().unwrap_or(base);
        let end = s.end_unix_nano.parse::<u64>().unwrap_or(start);
        rows.push(SpanRow {
            span_id: s.span_id.to_string(),
            depth: depth.min(8),
            name: s.name.to_string(),
            service: s.service.to_string(),
            kind: s.kind.as_str(),
            stage: match (s.stage.as_deref(), s.stage_source) {
                (None, _) => "none".to_string(),
                (Some(v), Some(StageSource::HttpHeader)) => format!("{v} (captured header)"),
                (Some(v), Some(StageSource::GrpcMetadata)) => format!("{v} (captured metadata)"),
                (Some(v), Some(StageSource::Inbound)) => format!("{v} (as received)"),
                (Some(v), _) => v.to_string(),
            },
            instance: s.instance_stage.as_deref().unwrap_or("-").to_string(),
            verdict,
            explanation: finding.map(|f| f.detail.clone()),
            first_break,
            class: if first_break {
                "first-break"
            } else if finding.is_some() {
                "finding"
            } else {
                ""
            },
            start: format!("+{:.1} ms", (start.saturating_sub(base)) as f64 / 1e6),
            duration: format!("{:.1} ms", end.saturating_sub(start) as f64 / 1e6),
        });
    }
    let first_breaks: Vec<_> = t.findings.iter().filter(|f| f.first_break).collect();
    TracePage {
        trace_id: t.trace_id.to_string(),
        finalised: t.finalised,
        more_first_breaks: first_breaks.len().saturating_sub(MAX_FIRST_BREAKS),
        first_breaks: first_breaks
            .iter()
            .take(MAX_FIRST_BREAKS)
            .map(|f| {
                (
                    f.kind.as_str(),
                    format!(
                        "{} -> {}",
                        f.edge.caller.as_deref().unwrap_or("(no caller)"),
                        f.edge.callee
                    ),
                    f.detail.clone(),
                )
            })
            .collect(),
        rows,
        total: t.spans.len(),
        hidden,
    }
}
