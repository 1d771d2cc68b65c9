//! The web dashboard on the `--http` address: the service graph coloured by stage consistency,
//! findings, edges over time, and traces down to the hop that broke.
//!
//! Rendered on the server (askama templates, SVG drawn here); the one script and the stylesheet
//! are compiled into the binary, so the pages need nothing but grayscope. Every string from a span
//! is escaped, and a Content-Security-Policy allows scripts, styles and fetches from grayscope
//! only.

pub mod layout;
pub mod svg;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::views::{GraphView, TraceView};
use crate::api::{ApiError, ApiState, parse_time};
use crate::model::TraceId;
use crate::store::{FindingQuery, Window};
use crate::verify::{Scope, Verdict};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The windows the overview offers.
const WINDOWS: [&str; 4] = ["5m", "1h", "24h", "custom"];

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(overview))
        .route("/fragments/overview", get(overview_fragment))
        .route("/findings", get(findings))
        .route("/edges/{caller}/{callee}", get(edge))
        .route("/traces/{trace_id}", get(trace))
        .route("/verdicts", get(verdicts))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

/// Escapes text for HTML (and for SVG, and for attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/style.css"),
    )
        .into_response()
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a Params, name: &str) -> &'a str {
    q.get(name).map(String::as_str).unwrap_or("")
}

/// The overview's selection: stage and window, as the user chose them.
struct Selection {
    stage: String,
    window: String,
    since: String,
    until: String,
    /// `all`, `broken`, or empty: all for small graphs, the broken part for large ones.
    view: String,
}

impl Selection {
    fn of(q: &Params) -> Selection {
        let window = param(q, "window");
        Selection {
            stage: param(q, "stage").to_string(),
            window: if WINDOWS.contains(&window) {
                window.to_string()
            } else {
                "1h".to_string()
            },
            since: param(q, "since").to_string(),
            until: param(q, "until").to_string(),
            view: match param(q, "view") {
                v @ ("all" | "broken") => v.to_string(),
                _ => String::new(),
            },
        }
    }

    fn query(&self) -> String {
        let mut q = format!("window={}", url_part(&self.window));
        for (k, v) in [
            ("stage", &self.stage),
            ("since", &self.since),
            ("until", &self.until),
            ("view", &self.view),
        ] {
            if !v.is_empty() {
                let _ = write!(q, "&{k}={}", url_part(v));
            }
        }
        q
    }

    fn window(&self) -> Result<(Window, String), ApiError> {
        if self.window != "custom" {
            let d = humantime::parse_duration(&self.window).expect("a listed window");
            let since = crate::wall_ms().saturating_sub(d.as_millis() as u64);
            return Ok((
                Window {
                    since_ms: Some(since),
                    until_ms: None,
                },
                format!("last {}", self.window),
            ));
        }
        let time = |name: &'static str, v: &str| -> Result<Option<u64>, ApiError> {
            if v.is_empty() {
                return Ok(None);
            }
            parse_time(v).map(Some).ok_or_else(|| ApiError::BadParam {
                name,
                message: format!("'{v}' is not an RFC 3339 time or a duration before now"),
            })
        };
        let w = Window {
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
        };
        Ok((
            w,
            format!(
                "from {} to {}",
                if self.since.is_empty() {
                    "the start"
                } else {
                    &self.since
                },
                if self.until.is_empty() {
                    "now"
                } else {
                    &self.until
                }
            ),
        ))
    }
}

struct StageRow {
    stage: String,
    consistency: String,
    judged: u64,
    class: &'static str,
}

struct BrokenEdge {
    caller: String,
    callee: String,
    href: String,
    calls: u64,
    breaks: u64,
    label: String,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "overview_live.html")]
struct Live {
    traces_seen: u64,
    stage_rows: Vec<StageRow>,
    kinds: Vec<(&'static str, u64)>,
    svg: String,
    broken: Vec<BrokenEdge>,
    window_label: String,
    updated: String,
    /// Set when only the broken part of a large graph is drawn: what is shown, and the links.
    focus: Option<Focus>,
}

struct Focus {
    shown_edges: usize,
    all_edges: usize,
    all_href: String,
}

/// Past this many services, the overview draws the broken part of the graph (broken edges and the
/// calls into their callers) unless asked for everything: a few hundred boxes help nobody find a
/// hop.
const FOCUS_NODES: usize = 40;

/// The part of `view` to draw, and a note when it is not all of it.
fn focus(view: &GraphView, sel: &Selection) -> (GraphView, Option<Focus>) {
    let large = view.nodes.len() > FOCUS_NODES;
    let broken_only = sel.view == "broken" || (sel.view.is_empty() && large);
    let whole = || GraphView {
        stage: view.stage.clone(),
        nodes: view.nodes.clone(),
        edges: view.edges.clone(),
    };
    if !broken_only {
        return (whole(), None);
    }
    let bad: Vec<&crate::api::views::EdgeView> = view
        .edges
        .iter()
        .filter(|e| svg::edge_health(e).0 != svg::Health::Ok)
        .collect();
    let callers: BTreeSet<&str> = bad.iter().map(|e| &*e.caller).collect();
    let edges: Vec<crate::api::views::EdgeView> = view
        .edges
        .iter()
        .filter(|e| svg::edge_health(e).0 != svg::Health::Ok || callers.contains(&*e.callee))
        .cloned()
        .collect();
    let names: BTreeSet<&str> = edges
        .iter()
        .flat_map(|e| [&*e.caller, &*e.callee])
        .chain(
            view.nodes
                .iter()
                .filter(|n| n.own.first_breaks.values().sum::<u64>() > 0)
                .map(|n| &*n.name),
        )
        .collect();
    let nodes = view
        .nodes
        .iter()
        .filter(|n| names.contains(&*n.name))
        .cloned()
        .collect();
    let all = Selection {
        view: "all".into(),
        stage: sel.stage.clone(),
        window: sel.window.clone(),
        since: sel.since.clone(),
        until: sel.until.clone(),
    };
    let shown_edges = edges.len();
    (
        GraphView {
            stage: view.stage.clone(),
            nodes,
            edges,
        },
        Some(Focus {
            shown_edges,
            all_edges: view.edges.len(),
            all_href: format!("/?{}", all.query()),
        }),
    )
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
struct OverviewPage {
    stage: String,
    stages: Vec<String>,
    window: String,
    windows: Vec<&'static str>,
    since: String,
    until: String,
    query: String,
    live: String,
}

/// The graph of the selection, and every stage seen in the window (for the selector).
async fn selected_graph(
    st: &ApiState,
    sel: &Selection,
) -> Result<(GraphView, Vec<String>, String), ApiError> {
    let (w, label) = sel.window()?;
    let g = st.store.graph(w).await?;
    let sym = st.aggregate.symbols();
    let all = GraphView::of(&g, None, None, sym);
    let stages: BTreeSet<String> = all
        .edges
        .iter()
        .flat_map(|e| e.stages.keys().cloned())
        .collect();
    let view = match sel.stage.as_str() {
        "" => all,
        "none" => GraphView::of(&g, Some(None), Some("none".into()), sym),
        s => match sym.values.get(s) {
            Some(v) => GraphView::of(&g, Some(Some(v)), Some(s.into()), sym),
            None => GraphView {
                stage: Some(s.into()),
                nodes: Vec::new(),
                edges: Vec::new(),
            },
        },
    };
    Ok((view, stages.into_iter().collect(), label))
}

async fn live(st: &ApiState, sel: &Selection) -> Result<Live, ApiError> {
    let (view, _, window_label) = selected_graph(st, sel).await?;
    let (shown, focus) = focus(&view, sel);
    // Trace-level consistency per root stage: did the whole chain keep the tag?
    let (w, _) = sel.window()?;
    let counts = st.store.trace_counts(w).await?;
    let traces_seen = counts.iter().map(|(_, ok, broken)| ok + broken).sum();
    let stage_rows = counts
        .into_iter()
        .filter_map(|(stage, ok, broken)| {
            let stage = stage?.to_string();
            let total = ok + broken;
            (total > 0).then(|| {
                let ratio = ok as f64 / total as f64;
                StageRow {
                    stage,
                    consistency: format!("{:.2}%", ratio * 100.0),
                    judged: total,
                    class: if broken == 0 {
                        "ok"
                    } else if ratio >= 0.95 {
                        "warn"
                    } else {
                        "bad"
                    },
                }
            })
        })
        .collect();
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &view.edges {
        for (k, n) in &e.totals.first_breaks {
            *kinds.entry(k).or_default() += n;
        }
    }
    for n in &view.nodes {
        for (k, c) in &n.own.first_breaks {
            *kinds.entry(k).or_default() += c;
        }
    }
    let query = sel.query();
    let mut broken: Vec<BrokenEdge> = view
        .edges
        .iter()
        .filter_map(|e| {
            let (health, label) = svg::edge_health(e);
            (health != svg::Health::Ok).then(|| BrokenEdge {
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
            })
        })
        .collect();
    broken.sort_by_key(|b| std::cmp::Reverse(b.breaks));
    Ok(Live {
        traces_seen,
        stage_rows,
        kinds: kinds.into_iter().collect(),
        svg: svg::graph(&shown, &query),
        focus,
        broken,
        window_label,
        updated: crate::api::views::rfc3339(crate::wall_ms()),
    })
}

async fn overview(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    let sel = Selection::of(&q);
    let (_, stages, _) = selected_graph(&st, &sel).await?;
    let live = live(&st, &sel).await?;
    Ok(OverviewPage {
        stages,
        windows: WINDOWS.to_vec(),
        query: sel.query(),
        live: live.render().map_err(render_error)?,
        stage: sel.stage,
        window: sel.window,
        since: sel.since,
        until: sel.until,
    }
    .into_response())
}

/// The live part of the overview, re-fetched every few seconds by the page.
async fn overview_fragment(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    let live = live(&st, &Selection::of(&q)).await?;
    Ok(axum::response::Html(live.render().map_err(render_error)?).into_response())
}

fn render_error(e: askama::Error) -> ApiError {
    ApiError::Render(e.to_string())
}

struct FindingRow {
    observed: String,
    kind: &'static str,
    scope: &'static str,
    first_break: bool,
    edge: String,
    edge_href: String,
    stage: String,
    trace_id: String,
    trace_short: String,
    detail: String,
}

/// The findings form, as the user filled it.
#[derive(Default)]
struct FindingForm {
    kind: String,
    stage: String,
    caller: String,
    callee: String,
    scope: String,
    first_break: String,
    since: String,
    until: String,
    trace_id: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "findings.html")]
struct FindingsPage {
    f: FindingForm,
    kinds: Vec<&'static str>,
    scopes: Vec<&'static str>,
    rows: Vec<FindingRow>,
    next: Option<String>,
    error: Option<String>,
}

async fn findings(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    let f = FindingForm {
        kind: param(&q, "kind").into(),
        stage: param(&q, "stage").into(),
        caller: param(&q, "caller").into(),
        callee: param(&q, "callee").into(),
        scope: param(&q, "scope").into(),
        first_break: param(&q, "first_break").into(),
        since: param(&q, "since").into(),
        until: param(&q, "until").into(),
        trace_id: param(&q, "trace_id").into(),
    };
    let kinds: Vec<&'static str> = Verdict::ALL
        .iter()
        .filter(|v| v.is_finding())
        .map(|v| v.as_str())
        .collect();
    let mut error = None;
    let mut bad = |what: &str| error = Some(what.to_string());
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let query = FindingQuery {
        kind: opt(&f.kind).and_then(|k| {
            let v = Verdict::parse(&k).filter(|v| v.is_finding());
            if v.is_none() {
                bad("unknown kind");
            }
            v
        }),
        stage: opt(&f.stage),
        caller: opt(&f.caller),
        callee: opt(&f.callee),
        trace_id: opt(&f.trace_id).and_then(|t| {
            let id = TraceId::from_hex(t.trim());
            if id.is_none() {
                bad("a trace id is 32 hex digits");
            }
            id
        }),
        scope: opt(&f.scope).and_then(|s| Scope::parse(&s)),
        first_break: opt(&f.first_break).and_then(|b| b.parse().ok()),
        since_ms: opt(&f.since).and_then(|s| {
            let t = parse_time(&s);
            if t.is_none() {
                bad("'since' is not an RFC 3339 time or a duration like 15m");
            }
            t
        }),
        until_ms: opt(&f.until).and_then(|s| {
            let t = parse_time(&s);
            if t.is_none() {
                bad("'until' is not an RFC 3339 time or a duration like 15m");
            }
            t
        }),
        before: param(&q, "cursor").parse().ok(),
        limit: 50,
    };
    let page = st.store.findings(query).await?;
    let rows = page
        .findings
        .iter()
        .map(|x| {
            let caller = x.edge.caller.as_deref().unwrap_or("(no caller)");
            let stage = x
                .caller
                .as_ref()
                .and_then(|c| c.stage.clone())
                .or(x.callee.stage.clone());
            let trace_id = x.trace_id.to_string();
            FindingRow {
                observed: x.observed_at.clone(),
                kind: x.kind.as_str(),
                scope: x.scope.as_str(),
                first_break: x.first_break,
                edge: format!("{caller} -> {}", x.edge.callee),
                edge_href: format!("/edges/{}/{}", url_part(caller), url_part(&x.edge.callee)),
                stage: stage.map_or_else(|| "none".into(), |s| s.to_string()),
                trace_short: trace_id[..12].to_string(),
                trace_id,
                detail: x.detail.clone(),
            }
        })
        .collect();
    let next = page.next.map(|n| {
        let mut qs: Vec<String> = q
            .iter()
            .filter(|(k, v)| *k != "cursor" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", url_part(k), url_part(v)))
            .collect();
        qs.sort();
        qs.push(format!("cursor={n}"));
        format!("/findings?{}", qs.join("&"))
    });
    Ok(FindingsPage {
        f,
        kinds,
        scopes: vec!["cross_service", "in_process"],
        rows,
        next,
        error,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "edge.html")]
struct EdgePage {
    caller: String,
    callee: String,
    caller_q: String,
    callee_q: String,
    stage: String,
    window_label: String,
    chart: String,
    legend: Vec<(&'static str, &'static str)>,
    columns: Vec<String>,
    matrix: Vec<MatrixRow>,
    examples: Vec<(&'static str, Vec<String>)>,
}

struct MatrixRow {
    stage: String,
    cells: Vec<(u64, &'static str)>,
}

fn verdict_class(v: &str) -> &'static str {
    match v {
        "ok" | "absent" => "ok",
        "appeared" => "warn",
        _ => "bad",
    }
}

async fn edge(
    State(st): State<ApiState>,
    Path((caller, callee)): Path<(String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    let sel = Selection::of(&q);
    let (w, window_label) = sel.window()?;
    let stage = (!sel.stage.is_empty()).then(|| sel.stage.clone());
    let series = st
        .store
        .edge_series(caller.clone(), callee.clone(), stage.clone(), w)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no edge {caller} -> {callee}: grayscope has not seen both services"
            ))
        })?;
    let (view, _, _) = selected_graph(&st, &sel).await?;
    let e = view
        .edges
        .iter()
        .find(|e| *e.caller == *caller && *e.callee == *callee);
    let mut rows: BTreeSet<String> = BTreeSet::new();
    let mut columns: BTreeSet<String> = BTreeSet::new();
    let mut calls: HashMap<(String, String), u64> = HashMap::new();
    for r in e.map(|e| e.routing.as_slice()).unwrap_or_default() {
        let s = r.stage.as_deref().unwrap_or("none").to_string();
        let i = r.instance_stage.as_deref().unwrap_or("none").to_string();
        rows.insert(s.clone());
        columns.insert(i.clone());
        *calls.entry((s, i)).or_default() += r.calls;
    }
    let columns: Vec<String> = columns.into_iter().collect();
    let matrix = rows
        .into_iter()
        .map(|s| MatrixRow {
            cells: columns
                .iter()
                .map(|c| {
                    let n = calls.get(&(s.clone(), c.clone())).copied().unwrap_or(0);
                    let off = n > 0 && *c != s && s != "none" && c != "none";
                    (n, if off { "bad" } else { "" })
                })
                .collect(),
            stage: s,
        })
        .collect();
    let (chart, legend) = chart(&series.minutes);
    Ok(EdgePage {
        caller_q: url_part(&caller),
        callee_q: url_part(&callee),
        caller,
        callee,
        stage: sel.stage.clone(),
        window_label,
        chart,
        legend,
        columns,
        matrix,
        examples: series
            .examples
            .iter()
            .map(|(v, ids)| (*v, ids.iter().map(|t| t.to_string()).collect()))
            .collect(),
    }
    .into_response())
}

/// A small line chart of verdict counts per minute, one line per verdict.
fn chart(minutes: &[crate::api::views::MinuteView]) -> (String, Vec<(&'static str, &'static str)>) {
    let (w, h, pad) = (720.0, 180.0, 28.0);
    let verdicts: BTreeSet<&'static str> = minutes
        .iter()
        .flat_map(|m| m.verdicts.keys().copied())
        .collect();
    let max = minutes
        .iter()
        .flat_map(|m| m.verdicts.values().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut s = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="verdicts per minute">"#
    );
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{y}" x2="{x2}" y2="{y}" stroke="#d0d7de"/><text x="2" y="{ty}">{max}</text><text x="2" y="{y}">0</text>"##,
        y = h - pad,
        x2 = w - 4.0,
        ty = pad,
        max = max as u64
    );
    let n = minutes.len().max(2) - 1;
    let x = |i: usize| pad + (w - pad - 8.0) * i as f64 / n as f64;
    let y = |v: u64| (h - pad) - (h - 2.0 * pad) * v as f64 / max;
    for v in &verdicts {
        let points: Vec<String> = minutes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "{:.1},{:.1}",
                    x(i),
                    y(m.verdicts.get(v).copied().unwrap_or(0))
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="{}" points="{}"><title>{}</title></polyline>"#,
            verdict_class(v),
            points.join(" "),
            v
        );
    }
    if let (Some(first), Some(last)) = (minutes.first(), minutes.last()) {
        let _ = write!(
            s,
            r#"<text x="{pad}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            h - 8.0,
            esc(&first.minute[11..16]),
            w - 4.0,
            h - 8.0,
            esc(&last.minute[11..16])
        );
    }
    s.push_str("</svg>");
    (
        s,
        verdicts
            .into_iter()
            .map(|v| (v, verdict_class(v)))
            .collect(),
    )
}

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
struct TracePage {
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

async fn trace(State(st): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let trace_id = TraceId::from_hex(&id).ok_or_else(|| ApiError::BadParam {
        name: "trace_id",
        message: format!("'{id}' is not a 32-digit hex trace id"),
    })?;
    let view = st
        .trace(trace_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("trace {trace_id} is unknown")))?;
    Ok(trace_page(&view).into_response())
}

fn trace_page(t: &TraceView) -> TracePage {
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
            stage: s.stage.as_deref().unwrap_or("none").to_string(),
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

/// The README's verdict table, served as a page (the README is compiled in).
async fn verdicts() -> Response {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Verdicts")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or("");
    let mut html = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>grayscope: verdicts</title><link rel="stylesheet" href="/static/style.css"></head><body><header><a class="brand" href="/">grayscope</a></header><main><h1>Verdicts</h1><table>"#,
    );
    for line in section.lines().filter(|l| l.starts_with('|')) {
        if line.starts_with("|---") {
            continue;
        }
        html.push_str("<tr>");
        for cell in line.trim_matches('|').split(" | ") {
            let _ = write!(html, "<td>{}</td>", esc(cell.trim().trim_matches('`')));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    for p in section
        .split("\n\n")
        .filter(|p| !p.trim_start().starts_with('|') && !p.trim().is_empty())
    {
        let _ = write!(html, "<p>{}</p>", esc(p.trim()));
    }
    html.push_str("</main></body></html>");
    axum::response::Html(html).into_response()
}
