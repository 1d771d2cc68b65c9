//! An edge's page: its verdicts per minute, the request-stage x instance-stage matrix of its calls,
//! and example traces per verdict.

use std::collections::BTreeSet;
use std::fmt::Write;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::matrix::Matrix;
use super::overview::selected_graph;
use super::selection::Selection;
use super::{Params, WebError, esc, url_part};
use crate::read::Reader;

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
    matrix: Matrix,
    examples: Vec<(&'static str, Vec<String>)>,
    /// A messaging hop's (system, destination) pairs; empty for calls.
    destinations: Vec<(String, String)>,
}

fn verdict_class(v: &str) -> &'static str {
    match v {
        "ok" | "absent" => "ok",
        "appeared" => "warn",
        _ => "bad",
    }
}

pub(super) async fn edge(
    State(reader): State<Reader>,
    Path((caller, callee)): Path<(String, String)>,
    q: Params,
) -> Result<Response, WebError> {
    let sel = Selection::of(&q);
    let (w, window_label) = sel.window()?;
    let stage = (!sel.stage.is_empty()).then(|| sel.stage.clone());
    let series = reader
        .edge_series(caller.clone(), callee.clone(), stage.clone(), w)
        .await?
        .ok_or_else(|| {
            WebError::NotFound(format!(
                "no edge {caller} -> {callee}: grayscope has not seen both services"
            ))
        })?;
    let (view, _, _) = selected_graph(&reader, &sel).await?;
    let e = view
        .edges
        .iter()
        .find(|e| *e.caller == *caller && *e.callee == *callee);
    let matrix = Matrix::of(e.map(|e| e.routing.as_slice()).unwrap_or_default(), []);
    let (chart, legend) = chart(&series.minutes);
    let destinations = e
        .map(|e| e.destinations.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d.system.as_deref().unwrap_or("messaging").to_string(),
                d.destination.as_deref().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Ok(EdgePage {
        destinations,
        caller_q: url_part(&caller),
        callee_q: url_part(&callee),
        caller,
        callee,
        stage: sel.stage.clone(),
        window_label,
        chart,
        legend,
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
fn chart(minutes: &[crate::view::MinuteView]) -> (String, Vec<(&'static str, &'static str)>) {
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
