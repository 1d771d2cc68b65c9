//! Every call of the window, a page at a time: what the overview's picture left out, broken ones
//! first, narrowed to a service or to the broken ones.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::overview::selected_graph;
use super::selection::Selection;
use super::service::{EdgeRow, page_of};
use super::{Params, WebError, param, url_part};
use crate::read::Reader;
use crate::read::subgraph;

#[derive(Template, WebTemplate)]
#[template(path = "edges.html")]
struct EdgesPage {
    window_label: String,
    stage: String,
    health: String,
    service: String,
    rows: Vec<EdgeRow>,
    total: usize,
    page: usize,
    prev: Option<String>,
    next: Option<String>,
}

pub(super) async fn edges(State(reader): State<Reader>, q: Params) -> Result<Response, WebError> {
    let sel = Selection::of(&q);
    let (view, _, window_label) = selected_graph(&reader, &sel).await?;
    let broken_only = param(&q, "health") == "broken";
    let service = param(&q, "service").trim().to_string();
    let query = sel.base_query();
    let mut rows: Vec<EdgeRow> = view
        .edges
        .iter()
        .filter(|e| !broken_only || subgraph::is_broken(e))
        .filter(|e| service.is_empty() || *e.caller == *service || *e.callee == *service)
        .map(|e| EdgeRow::of(e, &query))
        .collect();
    rows.sort_by(|a, b| {
        (b.breaks, b.calls, &a.caller, &a.callee).cmp(&(a.breaks, a.calls, &b.caller, &b.callee))
    });
    let total = rows.len();
    let (page, range) = page_of(&q, total);
    let link = |p: usize| {
        format!(
            "/edges?{query}&health={}&service={}&page={p}",
            if broken_only { "broken" } else { "all" },
            url_part(&service)
        )
    };
    let rows: Vec<EdgeRow> = rows.drain(range.clone()).collect();
    let (prev, next) = (
        (page > 1).then(|| link(page - 1)),
        (range.end < total).then(|| link(page + 1)),
    );
    Ok(EdgesPage {
        window_label,
        stage: sel.stage.clone(),
        health: if broken_only { "broken" } else { "all" }.into(),
        service,
        rows,
        total,
        prev,
        next,
        page,
    }
    .into_response())
}
