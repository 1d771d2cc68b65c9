//! The README's verdict table, served as a page (the README is compiled in).

use std::fmt::Write;

use axum::response::{IntoResponse, Response};

use super::esc;

pub(super) async fn verdicts() -> Response {
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
