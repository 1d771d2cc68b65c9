//! The JSON API, health and metrics on the `--http` address, and the gRPC query API.
//!
//! Handlers ask the read side ([`crate::read::Reader`]) and turn its answers into JSON; they never
//! reach into the pipeline. Errors are `{"error": "..."}` ([`ApiError`]).

mod error;
pub mod gate;
pub mod grpc;
mod handlers;
mod params;

use std::sync::Arc;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::read::Reader;
use crate::telemetry::Telemetry;
pub use error::{ApiError, ErrorBody};

#[derive(Clone)]
pub struct ApiState {
    pub reader: Reader,
    pub telemetry: Arc<Telemetry>,
    /// `--trace-idle` and `--flush-interval`, for clients that wait for traces to be finalised
    /// and their findings stored.
    pub trace_idle: std::time::Duration,
    pub flush_interval: std::time::Duration,
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
    use handlers::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(findings))
        .routes(routes!(graph))
        .routes(routes!(edge))
        .routes(routes!(services))
        .routes(routes!(service))
        .routes(routes!(trace))
        .routes(routes!(trace_verdicts))
        .routes(routes!(traces_verdicts))
        .routes(routes!(members))
        .routes(routes!(gate::gate_get))
        .routes(routes!(gate::gate_webhook))
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// The OpenAPI 3 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().into_openapi()
}

/// The API's routes. Paths it does not know fall through to whatever the router is merged with
/// (the dashboard); [`not_found`] answers the rest.
pub fn router(state: ApiState) -> Router {
    let (router, doc) = documented().split_for_parts();
    router
        .layer(axum::Extension(Arc::new(doc)))
        .with_state(state)
}

/// The answer for a path nothing serves.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API is described at /api/v1/openapi.json".into())
}
