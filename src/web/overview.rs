//! The overview: consistency per stage, the service graph of the selected window and stage
//! (coloured by first-break share, the broken part of a large one), and the broken edges; its live
//! part is re-fetched every few seconds.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::selection::{Selection, WINDOWS};
use super::{Params, WebError, svg, url_part};
use crate::read::Reader;
use crate::view::GraphView;

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
    let bad: Vec<&crate::view::EdgeView> = view
        .edges
        .iter()
        .filter(|e| svg::edge_health(e).0 != svg::Health::Ok)
        .collect();
    let callers: BTreeSet<&str> = bad.iter().map(|e| &*e.caller).collect();
    let edges: Vec<crate::view::EdgeView> = view
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
pub(super) async fn selected_graph(
    reader: &Reader,
    sel: &Selection,
) -> Result<(GraphView, Vec<String>, String), WebError> {
    let (w, label) = sel.window()?;
    let g = reader.graph(w).await?;
    let all = reader.graph_view(&g, None);
    let stages: BTreeSet<String> = all
        .edges
        .iter()
        .flat_map(|e| e.stages.keys().cloned())
        .collect();
    let view = match sel.stage.as_str() {
        "" => all,
        s => reader.graph_view(&g, Some(s)),
    };
    Ok((view, stages.into_iter().collect(), label))
}

async fn live(reader: &Reader, sel: &Selection) -> Result<Live, WebError> {
    let (view, _, window_label) = selected_graph(reader, sel).await?;
    let (shown, focus) = focus(&view, sel);
    // Trace-level consistency per root stage: did the whole chain keep the tag?
    let (w, _) = sel.window()?;
    let counts = reader.trace_counts(w).await?;
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
        updated: crate::view::rfc3339(crate::wall_ms()),
    })
}

pub(super) async fn overview(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
    let sel = Selection::of(&q);
    let (_, stages, _) = selected_graph(&reader, &sel).await?;
    let live = live(&reader, &sel).await?;
    Ok(OverviewPage {
        stages,
        windows: WINDOWS.to_vec(),
        query: sel.query(),
        live: live.render()?,
        stage: sel.stage,
        window: sel.window,
        since: sel.since,
        until: sel.until,
    }
    .into_response())
}

/// The live part of the overview, re-fetched every few seconds by the page.
pub(super) async fn overview_fragment(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
    let live = live(&reader, &Selection::of(&q)).await?;
    Ok(axum::response::Html(live.render()?).into_response())
}
