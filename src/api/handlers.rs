//! The JSON API's endpoints, each documented for the OpenAPI document by its `#[utoipa::path]`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{Failed, Refused};
use super::params::{
    self, EdgePath, FindingParams, NoParams, Query, ServiceParams, ServicePath, TraceParams,
    TracePath, WindowParams,
};
use super::{ApiError, ApiState, ErrorBody};
use crate::model::TraceId;
use crate::read::Found;
use crate::read::filter::{self, FindingFilter};
use crate::read::param::{Rule, Segment, Value};
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
        Failed,
    )
)]
pub async fn findings(State(st): State<ApiState>, q: Query) -> Result<Response, ApiError> {
    FindingParams::SET.only(&q)?;
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
        Failed,
    )
)]
pub async fn graph(State(st): State<ApiState>, q: Query) -> Result<Response, ApiError> {
    WindowParams::SET.only(&q)?;
    let w = filter::window(&q.0)?;
    let stage = filter::STAGE.text(&q.0)?;
    let g = st.reader.graph(w).await?;
    Ok(axum::Json(st.reader.graph_view(&g, stage)).into_response())
}

/// Every service seen, with its instance stages.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "graph",
    params(NoParams),
    responses((status = 200, description = "Services by name", body = view::ServicesPage), Failed)
)]
pub async fn services(State(st): State<ApiState>, q: Query) -> Result<Response, ApiError> {
    NoParams::SET.only(&q)?;
    let services = st.reader.services().await?;
    Ok(axum::Json(view::ServicesPage { services }).into_response())
}

/// One service: its callers and callees up to `depth` calls away, its instances, the stages of
/// the calls it served (request stage x instance stage), and its newest findings.
#[utoipa::path(
    get,
    path = "/api/v1/services/{name}",
    tag = "graph",
    params(ServicePath, ServiceParams),
    responses(
        (status = 200, description = "The service and its neighbourhood", body = view::ServiceDetailView),
        (status = 404, description = "grayscope has not seen the service", body = ErrorBody),
        Failed,
    )
)]
pub async fn service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    q: Query,
) -> Result<Response, ApiError> {
    ServiceParams::SET.only(&q)?;
    params::NAME.need(params::NAME.text(&Segment(&name)))?;
    let depth = params::depth(&q)?;
    let w = filter::window(&q.0)?;
    match st
        .reader
        .service_detail(&name, w, filter::STAGE.text(&q.0)?, depth)
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
    params(EdgePath, WindowParams),
    responses(
        (status = 200, description = "Per-minute counts, oldest first", body = view::EdgeSeriesView),
        (status = 404, description = "Either service is unknown", body = ErrorBody),
        Failed,
    )
)]
pub async fn edge(
    State(st): State<ApiState>,
    Path((caller, callee)): Path<(String, String)>,
    q: Query,
) -> Result<Response, ApiError> {
    WindowParams::SET.only(&q)?;
    params::CALLER.need(params::CALLER.text(&Segment(&caller)))?;
    params::CALLEE.need(params::CALLEE.text(&Segment(&callee)))?;
    let w = filter::window(&q.0)?;
    let stage = filter::STAGE.text(&q.0)?.map(str::to_string);
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
    params(TracePath, TraceParams),
    responses(
        (status = 200, description = "The trace", body = TraceView, headers(
            ("x-grayscope-member" = String, description = "The instance of the cluster that holds the trace, when it is not the one asked"),
        )),
        (status = 404, description = "Unknown trace", body = ErrorBody),
        Failed,
    )
)]
pub async fn trace(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    q: Query,
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
fn trace_and_local(id: &str, q: &Query) -> Result<(TraceId, bool), ApiError> {
    TraceParams::SET.only(q)?;
    let trace_id = params::TRACE_ID.need(params::TRACE_ID.trace_id(&Segment(id)))?;
    let local = params::LOCAL.flag(&q.0)?.unwrap_or(false);
    Ok((trace_id, local))
}

/// Most trace ids one request may ask about.
const MAX_TRACE_IDS: usize = 1000;

/// One trace's state and verdicts: what a client waiting for a trace polls.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{trace_id}/verdicts",
    tag = "traces",
    params(TracePath, TraceParams),
    responses(
        (status = 200, description = "The trace's state (`unknown` too) and its verdicts so far", body = view::TraceVerdicts),
        Failed,
    )
)]
pub async fn trace_verdicts(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    q: Query,
) -> Result<Response, ApiError> {
    let (trace_id, local) = trace_and_local(&id, &q)?;
    Ok(axum::Json(st.reader.verdicts(trace_id, !local).await?).into_response())
}

/// The body of `POST /api/v1/traces/verdicts`.
#[derive(serde::Deserialize)]
pub struct TraceIds {
    pub trace_ids: Vec<String>,
}

impl utoipa::PartialSchema for TraceIds {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        params::object_schema(serde_json::json!({
            "type": "object",
            "required": ["trace_ids"],
            "properties": {"trace_ids": {
                "type": "array",
                "maxItems": MAX_TRACE_IDS,
                "items": params::TRACE_ID.rule.schema(true, false),
                "description": format!("At most {MAX_TRACE_IDS}, each {}", params::TRACE_ID.rule.expected()),
            }},
        }))
    }
}

impl utoipa::ToSchema for TraceIds {}

/// Many traces' states and verdicts at once, in the order asked.
#[utoipa::path(
    post,
    path = "/api/v1/traces/verdicts",
    tag = "traces",
    request_body = TraceIds,
    responses(
        (status = 200, description = "Each trace's state and verdicts, and `--trace-idle`", body = view::TraceVerdictsPage),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        Failed,
    )
)]
pub async fn traces_verdicts(
    State(st): State<ApiState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ApiError::body(body)?;
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
        let Some(Value::TraceId(trace_id)) = Rule::TraceId.read(id) else {
            return Err(ApiError::bad(
                "trace_ids",
                format!("[{i}]: '{id}' is not {}", Rule::TraceId.expected()),
            ));
        };
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
    params(NoParams),
    responses((status = 200, description = "Every instance with a live heartbeat", body = view::MembersPage), Refused)
)]
pub async fn members(State(st): State<ApiState>, q: Query) -> Result<Response, ApiError> {
    NoParams::SET.only(&q)?;
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
    axum::Extension(doc): axum::Extension<Arc<serde_json::Value>>,
) -> Response {
    axum::Json(doc.as_ref()).into_response()
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
