//! A service's page: who calls it and whom it calls (one or two calls away), its instances, the
//! stages of the calls it served (does canary traffic reach its canary instance, does stable
//! traffic leak into it), its findings and its edges; and the services list that the search box
//! of every page lands on, with completion.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::matrix::Matrix;
use super::selection::Selection;
use super::svg::{self, Drawing};
use super::{Params, WebError, param, url_part};
use crate::read::Reader;
use crate::view::{EdgeView, ServiceView};

/// Rows on a page of a list.
pub const PAGE: usize = 50;
/// Names a completion answers with.
const COMPLETIONS: usize = 20;

pub struct EdgeRow {
    pub caller: String,
    pub callee: String,
    pub href: String,
    pub calls: u64,
    pub breaks: u64,
    pub label: String,
    pub class: &'static str,
}

impl EdgeRow {
    pub fn of(e: &EdgeView, query: &str) -> EdgeRow {
        let (health, label) = svg::edge_health(e);
        EdgeRow {
            caller: e.caller.to_string(),
            callee: e.callee.to_string(),
            href: format!(
                "/edges/{}/{}?{query}",
                url_part(&e.caller),
                url_part(&e.callee)
            ),
            calls: e.totals.calls,
            breaks: e.totals.first_breaks.values().sum(),
            label,
            class: health.class(),
        }
    }
}

struct FindingRow {
    observed: String,
    kind: &'static str,
    edge: String,
    trace_id: String,
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "service.html")]
struct ServicePage {
    name: String,
    name_q: String,
    group: String,
    stage_mode: String,
    last_seen: String,
    window_label: String,
    stage: String,
    query: String,
    depth: usize,
    svg: String,
    left_out: usize,
    instances: Vec<(String, String)>,
    matrix: Matrix,
    callers: Vec<EdgeRow>,
    callees: Vec<EdgeRow>,
    /// Its calls in all, when the tables show only the first page of either.
    calls_total: Option<usize>,
    page_rows: usize,
    findings: Vec<FindingRow>,
}

/// `depth` as asked: 1 or 2 calls away.
pub fn depth(q: &Params) -> usize {
    if param(q, "depth") == "2" { 2 } else { 1 }
}

pub(super) async fn service(
    State(reader): State<Reader>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Response, WebError> {
    let sel = Selection::of(&q);
    let (w, window_label) = sel.window()?;
    let depth = depth(&q);
    let stage = (!sel.stage.is_empty()).then_some(sel.stage.as_str());
    let d = reader
        .service_detail(&name, w, stage, depth)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("grayscope has not seen a service {name}")))?;
    let query = sel.base_query();
    let drawn = svg::draw(&Drawing::of_graph(&d.graph, &query, Some(&name)));
    let rows = |edges: &[EdgeView]| {
        let mut rows: Vec<EdgeRow> = edges.iter().map(|e| EdgeRow::of(e, &query)).collect();
        rows.sort_by_key(|r| (std::cmp::Reverse(r.breaks), std::cmp::Reverse(r.calls)));
        rows.truncate(PAGE);
        rows
    };
    let calls_total = d.callers.len() + d.callees.len();
    Ok(ServicePage {
        name_q: url_part(&name),
        group: d.service.group.as_deref().unwrap_or_default().to_string(),
        stage_mode: format!(
            "{}{}",
            d.service.stage_mode.as_str(),
            if d.service.stage_mode_configured {
                " (configured)"
            } else {
                " (learned)"
            }
        ),
        last_seen: d.service.last_seen.clone(),
        window_label,
        stage: sel.stage.clone(),
        depth,
        svg: drawn.svg,
        left_out: d.left_out_edges,
        instances: d
            .service
            .instances
            .iter()
            .map(|i| {
                (
                    i.stage.as_deref().unwrap_or("none").to_string(),
                    i.last_seen.clone(),
                )
            })
            .collect(),
        matrix: Matrix::of(&d.served, d.instance_stages.iter().cloned()),
        callers: rows(&d.callers),
        callees: rows(&d.callees),
        calls_total: (d.callers.len() > PAGE || d.callees.len() > PAGE).then_some(calls_total),
        page_rows: PAGE,
        findings: d
            .findings
            .iter()
            .map(|f| FindingRow {
                observed: f.observed_at.clone(),
                kind: f.kind.as_str(),
                edge: format!(
                    "{} -> {}",
                    f.edge.caller.as_deref().unwrap_or("(no caller)"),
                    f.edge.callee
                ),
                trace_id: f.trace_id.to_string(),
                detail: f.detail.clone(),
            })
            .collect(),
        query,
        name,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "services.html")]
struct ServicesPage {
    q: String,
    rows: Vec<ServiceRow>,
    total: usize,
    page: usize,
    prev: Option<String>,
    next: Option<String>,
}

struct ServiceRow {
    name: String,
    href: String,
    group: String,
    instances: String,
    last_seen: String,
}

/// Which page of a list of `total` rows `q` asks for (from 1), and that page's range.
pub fn page_of(q: &Params, total: usize) -> (usize, std::ops::Range<usize>) {
    let pages = total.div_ceil(PAGE).max(1);
    let page = param(q, "page")
        .parse::<usize>()
        .unwrap_or(1)
        .clamp(1, pages);
    let start = (page - 1) * PAGE;
    (page, start..(start + PAGE).min(total))
}

/// Services whose name contains `q` (any case), names starting with it first.
fn matching<'a>(services: &'a [ServiceView], q: &str) -> Vec<&'a ServiceView> {
    let q = q.to_lowercase();
    let mut found: Vec<&ServiceView> = services
        .iter()
        .filter(|s| s.name.to_lowercase().contains(&q))
        .collect();
    found.sort_by_key(|s| (!s.name.to_lowercase().starts_with(&q), s.name.clone()));
    found
}

/// The search box's target: the service named exactly, else every service that matches, a page
/// at a time.
pub(super) async fn services(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
    let all = reader.services().await?;
    let text = param(&q, "q").trim().to_string();
    if all.iter().any(|s| *s.name == *text) {
        return Ok(Redirect::to(&format!("/services/{}", url_part(&text))).into_response());
    }
    let found = matching(&all, &text);
    let (page, range) = page_of(&q, found.len());
    let link = |p: usize| format!("/services?q={}&page={p}", url_part(&text));
    Ok(ServicesPage {
        rows: found[range.clone()]
            .iter()
            .map(|s| ServiceRow {
                name: s.name.to_string(),
                href: format!("/services/{}", url_part(&s.name)),
                group: s.group.as_deref().unwrap_or_default().to_string(),
                instances: s
                    .instances
                    .iter()
                    .map(|i| i.stage.as_deref().unwrap_or("none"))
                    .collect::<Vec<_>>()
                    .join(", "),
                last_seen: s.last_seen.clone(),
            })
            .collect(),
        total: found.len(),
        prev: (page > 1).then(|| link(page - 1)),
        next: (range.end < found.len()).then(|| link(page + 1)),
        page,
        q: text,
    }
    .into_response())
}

/// Service names for the search box's completion: a JSON array, names starting with `q` first.
pub(super) async fn complete(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
    let all = reader.services().await?;
    let names: Vec<&str> = matching(&all, param(&q, "q").trim())
        .into_iter()
        .take(COMPLETIONS)
        .map(|s| &*s.name)
        .collect();
    Ok(axum::Json(names).into_response())
}
