//! The JSON API's endpoints, each documented for the OpenAPI document by its `#[utoipa::path]`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::params::{self, FindingParams, Params, WindowParams};
use super::{ApiError, ApiState, ErrorBody};
use crate::model::TraceId;
use crate::read::Found;
use crate::read::filter::{self, FindingFilter};
use crate::store::FindingQuery;
use crate::telemetry;
use crate::view::{self, GraphView, TraceView};

/// Findings, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/findings",
    tag = "findings",
    params(FindingParams),
    responses(
        (status = 200, description = "A page of findings, newest first", body = view::FindingsPage),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
pub async fn findings(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    let known: Vec<&str> = FindingFilter::PARAMS
        .into_iter()
        .chain(["since", "until", "limit", "cursor"])
        .collect();
    params::only(&q, &known)?;
    let query = FindingQuery {
        filter: FindingFilter::parse(&q.0)?,
        window: filter::window(&q.0)?,
        before: filter::cursor(&q.0)?,
        limit: filter::limit(&q.0)?,
    };
    let page = st.reader.findings(query).await?;
    Ok(axum::Json(view::FindingsPage {
        findings: page.findings,
        next: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

/// The service graph of a time window (default: everything stored).
#[utoipa::path(
    get,
    path = "/api/v1/graph",
    tag = "graph",
    params(WindowParams),
    responses(
        (status = 200, description = "Services and the calls between them, with verdict counts", body = GraphView),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
pub async fn graph(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params::only(&q, &params::WINDOW)?;
    let g = st.reader.graph(filter::window(&q.0)?).await?;
    Ok(axum::Json(st.reader.graph_view(&g, params::get(&q, "stage"))).into_response())
}

/// Every service seen, with its instance stages.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "graph",
    responses((status = 200, description = "Services by name", body = view::ServicesPage))
)]
pub async fn services(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params::only(&q, &[])?;
    let services = st.reader.services().await?;
    Ok(axum::Json(view::ServicesPage { services }).into_response())
}

/// One service: its callers and callees up to `depth` calls away, its instances, the stages of
/// the calls it served (request stage x instance stage), and its newest findings.
#[utoipa::path(
    get,
    path = "/api/v1/services/{name}",
    tag = "graph",
    params(
        ("name" = String, Path, description = "The service"),
        params::ServiceParams,
    ),
    responses(
        (status = 200, description = "The service and its neighbourhood", body = view::ServiceDetailView),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 404, description = "grayscope has not seen the service", body = ErrorBody),
    )
)]
pub async fn service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    params::only(&q, &["stage", "since", "until", "depth"])?;
    let depth = match params::get(&q, "depth") {
        None => 1,
        Some(d) => match d.parse::<usize>() {
            Ok(d @ 1..=2) => d,
            _ => {
                return Err(filter::BadParam {
                    name: "depth",
                    message: format!("'{d}' is not 1 or 2"),
                }
                .into());
            }
        },
    };
    let w = filter::window(&q.0)?;
    match st
        .reader
        .service_detail(&name, w, params::get(&q, "stage"), depth)
        .await?
    {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::NotFound(format!(
            "grayscope has not seen a service {name}"
        ))),
    }
}

/// One edge of the graph over time: counts per minute and example traces.
#[utoipa::path(
    get,
    path = "/api/v1/edges/{caller}/{callee}",
    tag = "graph",
    params(
        ("caller" = String, Path, description = "Service the calls come from"),
        ("callee" = String, Path, description = "Service (or uninstrumented callee) they go to"),
        WindowParams,
    ),
    responses(
        (status = 200, description = "Per-minute counts, oldest first", body = view::EdgeSeriesView),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 404, description = "Either service is unknown", body = ErrorBody),
    )
)]
pub async fn edge(
    State(st): State<ApiState>,
    Path((caller, callee)): Path<(String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    params::only(&q, &params::WINDOW)?;
    let w = filter::window(&q.0)?;
    let stage = params::get(&q, "stage").map(str::to_string);
    match st
        .reader
        .edge_series(caller.clone(), callee.clone(), stage, w)
        .await?
    {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no edge {caller} -> {callee}: grayscope has not seen both services"
        ))),
    }
}

/// One trace: its spans with both stages, every edge's verdict, and its findings; from memory
/// while it is assembled (on whichever instance of a cluster holds it), from the store afterwards.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{trace_id}",
    tag = "traces",
    params(
        ("trace_id" = String, Path, description = "32 hex digits"),
        ("local" = Option<bool>, Query, description = "Only this instance and the store: not the other instances of a cluster"),
    ),
    responses(
        (status = 200, description = "The trace; header `x-grayscope-member` names the instance that holds it when another one does", body = TraceView),
        (status = 400, description = "Not a trace id", body = ErrorBody),
        (status = 404, description = "Unknown trace", body = ErrorBody),
    )
)]
pub async fn trace(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let (trace_id, local) = trace_and_local(&id, &q)?;
    match st.reader.find_trace(trace_id, !local).await? {
        Found::Here(view) => Ok(axum::Json(view).into_response()),
        Found::Elsewhere { member, json } => Ok((
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::HeaderName::from_static("x-grayscope-member"),
                    member.id,
                ),
            ],
            json,
        )
            .into_response()),
        Found::Nowhere => Err(ApiError::NotFound(format!(
            "trace {trace_id} is unknown: it was never received, or it had no findings and was not sampled (--sample-clean), or it is past --retention"
        ))),
    }
}

/// The path's trace id and `?local=`, the only parameter of the trace endpoints.
fn trace_and_local(id: &str, q: &Params) -> Result<(TraceId, bool), ApiError> {
    params::only(q, &["local"])?;
    let trace_id = TraceId::from_hex(id).ok_or_else(|| {
        ApiError::bad("trace_id", format!("'{id}' is not a 32-digit hex trace id"))
    })?;
    let local =
        filter::Params::parse(&q.0, "local", "true or false", |s| s.parse().ok())?.unwrap_or(false);
    Ok((trace_id, local))
}

/// Most trace ids one request may ask about.
const MAX_TRACE_IDS: usize = 1000;

/// One trace's state and verdicts: what a client waiting for a trace polls.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{trace_id}/verdicts",
    tag = "traces",
    params(
        ("trace_id" = String, Path, description = "32 hex digits"),
        ("local" = Option<bool>, Query, description = "Only this instance and the store: not the other instances of a cluster"),
    ),
    responses(
        (status = 200, description = "The trace's state (`unknown` too) and its verdicts so far", body = view::TraceVerdicts),
        (status = 400, description = "Not a trace id", body = ErrorBody),
    )
)]
pub async fn trace_verdicts(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let (trace_id, local) = trace_and_local(&id, &q)?;
    Ok(axum::Json(st.reader.verdicts(trace_id, !local).await?).into_response())
}

/// The body of `POST /api/v1/traces/verdicts`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct TraceIds {
    /// At most 1000, each 32 hex digits.
    pub trace_ids: Vec<String>,
}

/// Many traces' states and verdicts at once, in the order asked.
#[utoipa::path(
    post,
    path = "/api/v1/traces/verdicts",
    tag = "traces",
    request_body = TraceIds,
    responses(
        (status = 200, description = "Each trace's state and verdicts, and `--trace-idle`", body = view::TraceVerdictsPage),
        (status = 400, description = "Not JSON of that shape, a bad trace id, or more than 1000", body = ErrorBody),
    )
)]
pub async fn traces_verdicts(
    State(st): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let ids: TraceIds = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("expected {{\"trace_ids\": [...]}}: {e}")))?;
    if ids.trace_ids.len() > MAX_TRACE_IDS {
        return Err(ApiError::bad(
            "trace_ids",
            format!(
                "{} trace ids; at most {MAX_TRACE_IDS} per request",
                ids.trace_ids.len()
            ),
        ));
    }
    let mut traces = Vec::with_capacity(ids.trace_ids.len());
    for (i, id) in ids.trace_ids.iter().enumerate() {
        let trace_id = TraceId::from_hex(id).ok_or_else(|| {
            ApiError::bad(
                "trace_ids",
                format!("[{i}]: '{id}' is not a 32-digit hex trace id"),
            )
        })?;
        traces.push(st.reader.verdicts(trace_id, true).await?);
    }
    Ok(axum::Json(view::TraceVerdictsPage {
        trace_idle_ms: st.trace_idle.as_millis() as u64,
        flush_interval_ms: st.flush_interval.as_millis() as u64,
        traces,
    })
    .into_response())
}

/// The grayscope instances sharing the store (with SQLite: this one).
#[utoipa::path(
    get,
    path = "/api/v1/members",
    tag = "meta",
    responses((status = 200, description = "Every instance with a live heartbeat", body = view::MembersPage))
)]
pub async fn members(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    params::only(&q, &[])?;
    Ok(axum::Json(members_page(&st.reader)).into_response())
}

pub fn members_page(reader: &crate::read::Reader) -> view::MembersPage {
    view::MembersPage {
        members: reader
            .members()
            .iter()
            .map(|m| view::MemberView::of(m, reader.me(), reader.active_within_ms()))
            .collect(),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
pub async fn openapi_json(
    axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Response {
    axum::Json(doc.as_ref().clone()).into_response()
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", content_type = "application/json"))
)]
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// grayscope's own metrics, in OpenMetrics text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(st): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        st.telemetry.encode(),
    )
        .into_response()
}
