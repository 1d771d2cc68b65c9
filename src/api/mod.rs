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

/// The OpenAPI 3 document of the API; `secured` when reading needs a token (`--read-tokens`),
/// which the document then says: the scheme, and a 401 on every operation but `/healthz`.
pub fn openapi(secured: bool) -> serde_json::Value {
    let mut doc = serde_json::to_value(documented().into_openapi()).expect("a document of JSON");
    if secured {
        secure(&mut doc);
    }
    doc
}

fn secure(doc: &mut serde_json::Value) {
    use serde_json::json;
    doc["components"]["securitySchemes"]["bearer"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "A read token (--read-tokens); the dashboard's session cookie also passes",
    });
    doc["security"] = json!([{"bearer": []}]);
    let refused = json!({
        "description": "No read token, or not one of --read-tokens",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": true}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for op in operations.values_mut() {
            if crate::security::OPEN_PATHS.contains(&path.as_str()) {
                op["security"] = json!([]);
            } else {
                op["responses"]["401"] = refused.clone();
            }
        }
    }
}

/// The API's routes. Paths it does not know fall through to whatever the router is merged with
/// (the dashboard); [`not_found`] answers the rest.
pub fn router(state: ApiState, secured: bool) -> Router {
    let (router, _) = documented().split_for_parts();
    router
        .layer(axum::extract::DefaultBodyLimit::max(error::MAX_BODY))
        .layer(axum::Extension(Arc::new(openapi(secured))))
        .with_state(state)
}

/// The answer for a path nothing serves.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API is described at /api/v1/openapi.json".into())
}
