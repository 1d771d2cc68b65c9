//! The JSON API, health and metrics on the `--http` address.
//!
//! Handlers read the aggregate (finalised traces) and ask the workers for traces still being
//! assembled; they never reach into the receivers.

pub mod gate;
pub mod grpc;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::aggregate::Aggregate;
use crate::model::TraceId;
use crate::shard::Shards;
use crate::store::{FindingQuery, Store, StoreError, Window};
use crate::telemetry::{self, Telemetry};
use crate::verify::{Scope, Verdict};
use views::{GraphView, TraceView};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
pub struct ApiState {
    pub aggregate: Arc<Aggregate>,
    pub shards: Shards,
    pub store: Store,
    pub telemetry: Arc<Telemetry>,
}

impl ApiState {
    /// A trace wherever it is: being assembled, just finalised, or in the store.
    pub async fn trace(&self, id: TraceId) -> Result<Option<TraceView>, StoreError> {
        let live = match self.shards.snapshot(id).await {
            Some(s) => Some(s),
            None => self.aggregate.trace(id),
        };
        match live {
            Some(s) => Ok(Some(TraceView::of(&s, self.aggregate.symbols()))),
            None => self.store.trace(id).await,
        }
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "grayscope",
    description = "Gray-release (canary) stage propagation, verified on every hop of your traces: findings, the service graph, traces."
))]
struct ApiDoc;

/// Every route, each documented by its handler's `#[utoipa::path]`: the OpenAPI document is
/// generated from exactly the routes that are served, so the two cannot drift apart.
fn documented() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(findings))
        .routes(routes!(graph))
        .routes(routes!(edge))
        .routes(routes!(services))
        .routes(routes!(trace))
        .routes(routes!(gate_get))
        .routes(routes!(gate_webhook))
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// The OpenAPI 3 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().into_openapi()
}

pub fn router(state: ApiState) -> Router {
    let (router, doc) = documented().split_for_parts();
    let doc = Arc::new(doc);
    router
        .layer(axum::Extension(doc))
        .merge(crate::web::router())
        .fallback(|| async {
            ApiError::NotFound(
                "no such endpoint; the API is described at /api/v1/openapi.json".into(),
            )
        })
        .with_state(state)
}

/// The body of every error response.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the parameter when one was.
    pub error: String,
}

/// Errors as JSON `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid parameter '{name}': {message}")]
    BadParam { name: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot render the page: {0}")]
    Render(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Store(ref e) => {
                tracing::error!("API: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Render(ref e) => {
                tracing::error!("dashboard: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, axum::Json(json!({ "error": self.to_string() }))).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

fn parse<T>(
    q: &Params,
    name: &'static str,
    f: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    param(q, name)
        .map(|v| {
            f(v).ok_or_else(|| ApiError::BadParam {
                name,
                message: format!("'{v}' is not {expected}"),
            })
        })
        .transpose()
}

const KNOWN_FINDING_PARAMS: [&str; 11] = [
    "kind",
    "stage",
    "caller",
    "callee",
    "trace_id",
    "scope",
    "first_break",
    "since",
    "until",
    "limit",
    "cursor",
];

/// A point in time: RFC 3339 (`2026-11-24T10:00:00Z`), or a duration before now (`15m`, `2h`).
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
    }
    let ago = humantime::parse_duration(s).ok()?;
    Some(crate::wall_ms().saturating_sub(ago.as_millis() as u64))
}

const TIME: &str = "an RFC 3339 time (2026-11-24T10:00:00Z) or a duration before now (15m)";

fn check_params(q: &Params, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::BadParam {
            name: "query",
            message: format!("unknown parameter '{unknown}'; known: {}", known.join(", ")),
        }),
        None => Ok(()),
    }
}

/// Query parameters of `/api/v1/findings` (for the document; the handler parses them itself, to
/// name the parameter in every error).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct FindingParams {
    /// A finding verdict: missing, changed, appeared, key_mismatch, invalid_value, misrouted, broken_trace
    kind: Option<String>,
    /// The stage the finding concerns, or `none`
    stage: Option<String>,
    /// The service (or uninstrumented callee) the edge starts at
    caller: Option<String>,
    /// The service (or uninstrumented callee) the edge ends at
    callee: Option<String>,
    /// 32 hex digits
    trace_id: Option<String>,
    /// cross_service or in_process
    scope: Option<String>,
    first_break: Option<bool>,
    /// RFC 3339 time, or a duration before now (`15m`)
    since: Option<String>,
    /// RFC 3339 time, or a duration before now
    until: Option<String>,
    /// 1 to 1000, default 100
    limit: Option<usize>,
    /// `next` of the previous page
    cursor: Option<String>,
}

/// Findings, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/findings",
    tag = "findings",
    params(FindingParams),
    responses(
        (status = 200, description = "A page of findings, newest first", body = views::FindingsPage),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
async fn findings(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    check_params(&q, &KNOWN_FINDING_PARAMS)?;
    let kinds: Vec<&str> = Verdict::ALL
        .iter()
        .filter(|v| v.is_finding())
        .map(|v| v.as_str())
        .collect();
    let query = FindingQuery {
        kind: parse(
            &q,
            "kind",
            |s| Verdict::parse(s).filter(|v| v.is_finding()),
            &format!("one of {}", kinds.join(", ")),
        )?,
        stage: param(&q, "stage").map(str::to_string),
        caller: param(&q, "caller").map(str::to_string),
        callee: param(&q, "callee").map(str::to_string),
        trace_id: parse(&q, "trace_id", TraceId::from_hex, "a 32-digit hex trace id")?,
        scope: parse(&q, "scope", Scope::parse, "cross_service or in_process")?,
        first_break: parse(&q, "first_break", |s| s.parse().ok(), "true or false")?,
        since_ms: parse(&q, "since", parse_time, TIME)?,
        until_ms: parse(&q, "until", parse_time, TIME)?,
        before: parse(
            &q,
            "cursor",
            |s| s.parse::<i64>().ok().filter(|n| *n > 0),
            "a cursor from a previous page's 'next'",
        )?,
        limit: parse(
            &q,
            "limit",
            |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
            },
            "a number from 1 to 1000",
        )?
        .unwrap_or(DEFAULT_LIMIT),
    };
    let page = st.store.findings(query).await?;
    Ok(axum::Json(views::FindingsPage {
        findings: page.findings,
        next: page.next.map(|n| n.to_string()),
    })
    .into_response())
}

const WINDOW_PARAMS: [&str; 3] = ["stage", "since", "until"];

fn window(q: &Params) -> Result<Window, ApiError> {
    Ok(Window {
        since_ms: parse(q, "since", parse_time, TIME)?,
        until_ms: parse(q, "until", parse_time, TIME)?,
    })
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct WindowParams {
    /// Only this request stage, or `none`
    stage: Option<String>,
    /// RFC 3339 time, or a duration before now (`15m`); whole minutes
    since: Option<String>,
    /// RFC 3339 time, or a duration before now; whole minutes
    until: Option<String>,
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
async fn graph(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    check_params(&q, &WINDOW_PARAMS)?;
    let w = window(&q)?;
    let sym = st.aggregate.symbols().clone();
    let label = param(&q, "stage").map(str::to_string);
    let g = st.store.graph(w).await?;
    let stage = match label.as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(s) => match sym.values.get(s) {
            Some(v) => Some(Some(v)),
            // A stage never seen: nothing to show.
            None => {
                let empty = GraphView {
                    stage: label,
                    nodes: Vec::new(),
                    edges: Vec::new(),
                };
                return Ok(axum::Json(empty).into_response());
            }
        },
    };
    Ok(axum::Json(GraphView::of(&g, stage, label, &sym)).into_response())
}

/// Every service seen, with its instance stages.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "graph",
    responses((status = 200, description = "Services by name", body = views::ServicesPage))
)]
async fn services(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    check_params(&q, &[])?;
    let services = st.store.services().await?;
    Ok(axum::Json(views::ServicesPage { services }).into_response())
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
        (status = 200, description = "Per-minute counts, oldest first", body = views::EdgeSeriesView),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 404, description = "Either service is unknown", body = ErrorBody),
    )
)]
async fn edge(
    State(st): State<ApiState>,
    Path((caller, callee)): Path<(String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    check_params(&q, &WINDOW_PARAMS)?;
    let w = window(&q)?;
    let stage = param(&q, "stage").map(str::to_string);
    match st
        .store
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
/// while it is assembled, from the store afterwards.
#[utoipa::path(
    get,
    path = "/api/v1/traces/{trace_id}",
    tag = "traces",
    params(("trace_id" = String, Path, description = "32 hex digits")),
    responses(
        (status = 200, description = "The trace", body = TraceView),
        (status = 400, description = "Not a trace id", body = ErrorBody),
        (status = 404, description = "Unknown trace", body = ErrorBody),
    )
)]
async fn trace(State(st): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let trace_id = TraceId::from_hex(&id).ok_or_else(|| ApiError::BadParam {
        name: "trace_id",
        message: format!("'{id}' is not a 32-digit hex trace id"),
    })?;
    match st.trace(trace_id).await? {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::NotFound(format!(
            "trace {trace_id} is unknown: it was never received, or it had no findings and was not sampled (--sample-clean), or it is past --retention"
        ))),
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct GateParams {
    /// The stage being rolled out, e.g. `canary`
    stage: String,
    /// How far back to look, e.g. `5m` (default 5m; whole minutes)
    window: Option<String>,
    /// Findings (first breaks) allowed (default 0)
    max_findings: Option<u64>,
    /// Share of judged edges that must be ok or absent, 0 to 1 (default: not checked)
    min_consistency: Option<f64>,
    /// Only edges from this service
    caller: Option<String>,
    /// Only edges to this service
    callee: Option<String>,
    /// Pass when no edge carried the stage (default false: no traffic is no evidence)
    allow_empty: Option<bool>,
}

const GATE_PARAMS: [&str; 7] = [
    "stage",
    "window",
    "max_findings",
    "min_consistency",
    "caller",
    "callee",
    "allow_empty",
];

async fn run_gate(st: &ApiState, q: &gate::GateQuery) -> Result<gate::GateResult, ApiError> {
    let since = crate::wall_ms().saturating_sub(q.window.as_millis() as u64);
    let g = st
        .store
        .graph(Window {
            since_ms: Some(since),
            until_ms: None,
        })
        .await?;
    Ok(gate::judge(q, &g, st.aggregate.symbols()))
}

/// Whether a stage's traffic kept its tag over a recent window: for Argo Rollouts `web` metrics
/// (`successCondition: result.pass == true`). Always 200 with the verdict in `pass`.
#[utoipa::path(
    get,
    path = "/api/v1/gate",
    tag = "gate",
    params(GateParams),
    responses(
        (status = 200, description = "The verdict; `pass` says whether to promote", body = gate::GateResult),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
async fn gate_get(State(st): State<ApiState>, q: Params) -> Result<Response, ApiError> {
    check_params(&q, &GATE_PARAMS)?;
    let query = gate::GateQuery::parse(&q)
        .map_err(|(name, message)| ApiError::BadParam { name, message })?;
    Ok(axum::Json(run_gate(&st, &query).await?).into_response())
}

/// A Flagger webhook call; the gate's parameters come from its `metadata`.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)]
struct FlaggerWebhook {
    name: Option<String>,
    namespace: Option<String>,
    phase: Option<String>,
    /// The gate's parameters, as strings: `stage`, `window`, `max_findings`, ...
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// The gate as a Flagger webhook (`type: pre-rollout` or `rollout`): 200 when it passes, 412 with
/// the same body when it does not, so that Flagger halts the rollout.
#[utoipa::path(
    post,
    path = "/api/v1/gate/webhook",
    tag = "gate",
    request_body = FlaggerWebhook,
    responses(
        (status = 200, description = "Passed", body = gate::GateResult),
        (status = 412, description = "Did not pass", body = gate::GateResult),
        (status = 400, description = "Not a Flagger webhook payload, or bad metadata", body = ErrorBody),
    )
)]
async fn gate_webhook(
    State(st): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let hook: FlaggerWebhook = serde_json::from_slice(&body).map_err(|e| ApiError::BadParam {
        name: "body",
        message: format!("not a Flagger webhook payload: {e}"),
    })?;
    let query =
        gate::GateQuery::parse(&hook.metadata).map_err(|(name, message)| ApiError::BadParam {
            name,
            message: format!("{message} (in metadata)"),
        })?;
    let result = run_gate(&st, &query).await?;
    let status = if result.pass {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    Ok((status, axum::Json(result)).into_response())
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
async fn openapi_json(
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
async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// grayscope's own metrics, in OpenMetrics text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(st): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        st.telemetry.encode(),
    )
        .into_response()
}
