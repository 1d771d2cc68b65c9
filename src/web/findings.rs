//! The findings page: the same filter as the JSON API's, as a form, a page of 50 at a time.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Params, WebError, param, url_part};
use crate::read::Reader;
use crate::read::filter::{self, FindingFilter};
use crate::store::FindingQuery;
use crate::verify::Verdict;

/// Findings on a page.
const PAGE: usize = 50;

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

pub(super) async fn findings(
    State(reader): State<Reader>,
    q: Params,
) -> Result<Response, WebError> {
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
    let kinds = Verdict::finding_names();
    let form = filter::Form(&q.0);
    let parsed = FindingFilter::parse(&form).and_then(|filter| {
        Ok(FindingQuery {
            filter,
            window: filter::window(&form)?,
            before: filter::cursor(&form)?,
            limit: PAGE,
        })
    });
    let query = match parsed {
        Ok(query) => query,
        // The form again, with what was wrong in it: the user corrects it there.
        Err(e) => {
            let page = FindingsPage {
                f,
                kinds,
                scopes: vec!["cross_service", "in_process"],
                rows: Vec::new(),
                next: None,
                error: Some(e.to_string()),
            };
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let page = reader.findings(query).await?;
    let rows = page
        .findings
        .iter()
        .map(|x| {
            let caller = x.edge.caller.as_deref().unwrap_or("(no caller)");
            let stage = x.stage.clone();
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
        error: None,
    }
    .into_response())
}
