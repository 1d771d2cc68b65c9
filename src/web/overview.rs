//! The overview: consistency per stage, a picture of the service graph of the selected window
//! and stage, and the broken edges; its live part is re-fetched every few seconds.
//!
//! A small mesh is drawn whole. A large one is drawn as what matters: its broken edges and the
//! calls around them (capped), or grouped by `--group-key` (`service.namespace`) with groups
//! opened one by one, or around one service; the page always says what it left out, and links
//! to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::selection::{Selection, WINDOWS};
use super::service::EdgeRow;
use super::svg::{self, DrawEdge, DrawNode, Drawing};
use super::{Params, WebError, url_part};
use crate::read::Reader;
use crate::read::subgraph;
use crate::view::GraphView;

struct StageRow {
    stage: String,
    consistency: String,
    judged: u64,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "overview_live.html")]
struct Live {
    traces_seen: u64,
    stage_rows: Vec<StageRow>,
    kinds: Vec<(&'static str, u64)>,
    svg: String,
    /// What the picture shows and leaves out, with links to the rest.
    note: Note,
    broken: Vec<EdgeRow>,
    broken_total: usize,
    broken_href: String,
    window_label: String,
    updated: String,
}

#[derive(Default)]
struct Note {
    text: String,
    links: Vec<(String, String)>,
}

/// Past this many services the whole graph is not drawn unless asked for.
const LARGE: usize = 40;
/// Edges drawn around the broken ones, or around a service.
const EDGE_CAP: usize = 80;
/// Edges drawn when the whole graph is asked for: past it, the busiest and the broken ones.
const ALL_CAP: usize = 1500;
/// Broken edges listed on the overview; the edges page lists them all.
const BROKEN_ROWS: usize = 20;
/// The group of services whose spans name none.
const NO_GROUP: &str = "(no group)";

/// The picture of `view` that `sel` asks for, and what it leaves out.
fn picture(view: &GraphView, sel: &Selection) -> (Drawing, Note) {
    let (d, mut note) = shown(view, sel);
    if !sel.focus.is_empty() && !d.nodes.iter().any(|n| n.classes.contains("centre")) {
        note.text = format!("No service {} in this window. {}", sel.focus, note.text);
    }
    (d, note)
}

fn shown(view: &GraphView, sel: &Selection) -> (Drawing, Note) {
    let q = sel.base_query();
    let (services, calls) = (view.nodes.len(), view.edges.len());
    let link = |label: &str, s: Selection| (label.to_string(), format!("/?{}", s.query()));
    let list = |health: &str| {
        (
            "List every call".to_string(),
            format!("/edges?{q}&health={health}"),
        )
    };
    if let Some(p) = (!sel.focus.is_empty())
        .then(|| subgraph::around(view, &sel.focus, 1, EDGE_CAP))
        .flatten()
    {
        let text = format!(
            "Around {}: its {} callers and callees and the calls between them{}.",
            sel.focus,
            p.graph.nodes.len().saturating_sub(1),
            left_out(p.left_out)
        );
        return (
            Drawing::of_graph(&p.graph, &q, Some(&sel.focus)),
            Note {
                text,
                links: vec![
                    (
                        format!("{}'s page", sel.focus),
                        format!("/services/{}?{q}", url_part(&sel.focus)),
                    ),
                    link("Back to the overview", sel.with(&sel.view, "", &sel.expand)),
                ],
            },
        );
    }
    let large = services > LARGE;
    let broken = view.edges.iter().filter(|e| subgraph::is_broken(e)).count();
    let mode = match sel.view.as_str() {
        "" if large && broken > 0 => "broken",
        "" if large => "groups",
        "" => "all",
        v => v,
    };
    let others = |except: &str| -> Vec<(String, String)> {
        let mut links = Vec::new();
        if except != "broken" {
            links.push(link("Broken part", sel.with("broken", "", "")));
        }
        if except != "groups" {
            links.push(link("By group", sel.with("groups", "", "")));
        }
        if except != "all" {
            links.push(link("Whole graph", sel.with("all", "", "")));
        }
        links.push(list("all"));
        links
    };
    match mode {
        "broken" => {
            let p = subgraph::broken_part(view, EDGE_CAP);
            let shown = p.graph.edges.len();
            let drawn_broken = p
                .graph
                .edges
                .iter()
                .filter(|e| subgraph::is_broken(e))
                .count();
            let text = if broken == 0 {
                format!(
                    "No call broke in this window ({services} services, {}).",
                    n_calls(calls)
                )
            } else {
                format!(
                    "{services} services, {}: showing {} broken{} and {} around them{}.",
                    n_calls(calls),
                    n_calls(drawn_broken),
                    if drawn_broken < broken {
                        format!(" (those with most findings, of {broken})")
                    } else {
                        String::new()
                    },
                    n_calls(shown - drawn_broken),
                    left_out(p.left_out)
                )
            };
            (
                Drawing::of_graph(&p.graph, &q, None),
                Note {
                    text,
                    links: others("broken"),
                },
            )
        }
        "groups" => grouped(view, sel),
        _ => {
            let whole = large || sel.view == "all";
            // Past the cap: the broken part, as far as it fits.
            let g = if calls <= ALL_CAP {
                view.clone()
            } else {
                subgraph::broken_part(view, ALL_CAP).graph
            };
            let text = if whole {
                format!(
                    "The whole graph: {services} services, {}{}.",
                    n_calls(g.edges.len()),
                    left_out(calls - g.edges.len())
                )
            } else {
                String::new()
            };
            (
                Drawing::of_graph(&g, &q, None),
                Note {
                    text,
                    links: if whole { others("all") } else { Vec::new() },
                },
            )
        }
    }
}

fn n_calls(n: usize) -> String {
    match n {
        1 => "1 call".into(),
        n => format!("{n} calls"),
    }
}

fn left_out(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => "; 1 call is left out".into(),
        n => format!("; {n} calls are left out"),
    }
}

/// One box per group, except the groups being looked into, whose services are drawn; calls
/// between boxes are summed.
fn grouped(view: &GraphView, sel: &Selection) -> (Drawing, Note) {
    let q = sel.base_query();
    let expanded: BTreeSet<&str> = sel.expand.split(',').filter(|g| !g.is_empty()).collect();
    let group_of: HashMap<&str, &str> = view
        .nodes
        .iter()
        .map(|n| (&*n.name, n.group.as_deref().unwrap_or(NO_GROUP)))
        .collect();
    let mut members: BTreeMap<&str, Vec<&crate::view::NodeView>> = BTreeMap::new();
    for n in &view.nodes {
        members.entry(group_of[&*n.name]).or_default().push(n);
    }
    let toggled = |g: &str| -> String {
        let mut set = expanded.clone();
        if !set.remove(g) {
            set.insert(g);
        }
        let list: Vec<&str> = set.into_iter().collect();
        format!("/?{}", sel.with("groups", "", &list.join(",")).query())
    };
    let mut d = Drawing {
        ring: true,
        ..Drawing::default()
    };
    // Where each service is drawn: its own box, or its group's; and the group of each group box.
    let mut box_of: HashMap<&str, usize> = HashMap::new();
    let mut group_box: HashMap<usize, &str> = HashMap::new();
    for (g, ns) in &members {
        if expanded.contains(g) {
            let part = GraphView {
                stage: None,
                nodes: ns.iter().map(|n| (*n).clone()).collect(),
                edges: Vec::new(),
            };
            for mut node in Drawing::of_graph(&part, &q, None).nodes {
                box_of.insert(
                    ns.iter()
                        .find(|n| *n.name == node.key)
                        .map(|n| &*n.name)
                        .expect("drawn from these"),
                    d.nodes.len(),
                );
                node.title = format!("{} (group {g})", node.title);
                d.nodes.push(node);
            }
        } else {
            let own: u64 = ns
                .iter()
                .map(|n| n.own.first_breaks.values().sum::<u64>())
                .sum();
            for n in ns {
                box_of.insert(&n.name, d.nodes.len());
            }
            group_box.insert(d.nodes.len(), g);
            d.nodes.push(DrawNode {
                key: format!("group:{g}"),
                label: format!("{g} ({})", ns.len()),
                title: format!("group {g}: {} services; open it", ns.len()),
                classes: if own > 0 {
                    " group broken".into()
                } else {
                    " group".into()
                },
                href: Some(toggled(g)),
            });
        }
    }
    // (from box, to box) -> (calls, first breaks by kind, the one edge when it is a single call)
    type Sum<'a> = (
        u64,
        BTreeMap<&'static str, u64>,
        Vec<&'a crate::view::EdgeView>,
    );
    let mut sums: BTreeMap<(usize, usize), Sum> = BTreeMap::new();
    let mut inside = 0;
    for e in &view.edges {
        let (a, b) = (box_of[&*e.caller], box_of[&*e.callee]);
        if a == b && group_box.contains_key(&a) {
            inside += 1;
            continue;
        }
        let s = sums.entry((a, b)).or_default();
        s.0 += e.totals.calls;
        for (k, n) in &e.totals.first_breaks {
            *s.1.entry(k).or_default() += n;
        }
        s.2.push(e);
    }
    for ((a, b), (calls, breaks, edges)) in sums {
        let (health, label) = svg::health(calls, &breaks);
        let (from, to) = (&d.nodes[a].key, &d.nodes[b].key);
        let single = match edges.as_slice() {
            [e] if !group_box.contains_key(&a) && !group_box.contains_key(&b) => Some(e),
            _ => None,
        };
        let href = match single {
            Some(e) => format!("/edges/{}/{}?{q}", url_part(&e.caller), url_part(&e.callee)),
            None => {
                let mut set = expanded.clone();
                set.extend([a, b].iter().filter_map(|i| group_box.get(i).copied()));
                let list: Vec<&str> = set.into_iter().collect();
                format!("/?{}", sel.with("groups", "", &list.join(",")).query())
            }
        };
        d.edges.push(DrawEdge {
            from: a,
            to: b,
            caller: from.clone(),
            callee: to.clone(),
            calls,
            health,
            title: format!(
                "{} -> {}: {} calls in {} edges, {label}",
                d.nodes[a].label,
                d.nodes[b].label,
                calls,
                edges.len()
            ),
            label,
            href,
            messaging: false,
        });
    }
    let groups = members.len();
    let mut links: Vec<(String, String)> = expanded
        .iter()
        .map(|g| (format!("Close {g}"), toggled(g)))
        .collect();
    links.push((
        "Broken part".into(),
        format!("/?{}", sel.with("broken", "", "").query()),
    ));
    links.push(("List every call".into(), format!("/edges?{q}&health=all")));
    let text = if members.keys().all(|g| *g == NO_GROUP) {
        format!(
            "No service names a group (--group-key, service.namespace): {} services in one box.",
            view.nodes.len()
        )
    } else {
        format!(
            "{} services in {groups} groups by --group-key; click a group to open it. {inside} calls within closed groups are not drawn.",
            view.nodes.len()
        )
    };
    (d, Note { text, links })
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
    view: String,
    focus: String,
    expand: String,
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

async fn live(
    reader: &Reader,
    sel: &Selection,
    (view, window_label): (GraphView, String),
) -> Result<Live, WebError> {
    let (drawing, mut note) = picture(&view, sel);
    let drawn = svg::draw(&drawing);
    if drawn.labels_left_out > 0 {
        note.text.push_str(&format!(
            " {} labels had no free spot: their calls are in the table below.",
            drawn.labels_left_out
        ));
    }
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
    let query = sel.base_query();
    let mut broken: Vec<EdgeRow> = view
        .edges
        .iter()
        .filter(|e| subgraph::is_broken(e))
        .map(|e| EdgeRow::of(e, &query))
        .collect();
    broken.sort_by_key(|b| std::cmp::Reverse(b.breaks));
    let broken_total = broken.len();
    broken.truncate(BROKEN_ROWS);
    Ok(Live {
        traces_seen,
        stage_rows,
        kinds: kinds.into_iter().collect(),
        svg: drawn.svg,
        note,
        broken,
        broken_total,
        broken_href: format!("/edges?{query}&health=broken"),
        window_label,
        updated: crate::view::rfc3339(crate::wall_ms()),
    })
}

pub(super) async fn overview(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
    let sel = Selection::of(&q);
    let (view, stages, label) = selected_graph(&reader, &sel).await?;
    let live = live(&reader, &sel, (view, label)).await?;
    Ok(OverviewPage {
        stages,
        windows: WINDOWS.to_vec(),
        query: sel.query(),
        live: live.render()?,
        stage: sel.stage,
        window: sel.window,
        since: sel.since,
        until: sel.until,
        view: sel.view,
        focus: sel.focus,
        expand: sel.expand,
    }
    .into_response())
}

/// The live part of the overview, re-fetched every few seconds by the page.
pub(super) async fn overview_fragment(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
    let sel = Selection::of(&q);
    let (view, _, label) = selected_graph(&reader, &sel).await?;
    let live = live(&reader, &sel, (view, label)).await?;
    Ok(axum::response::Html(live.render()?).into_response())
}
