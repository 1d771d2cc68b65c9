//! How the JSON API answers what went wrong: `{"error": "..."}` with the status that says whose
//! fault it was.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::read::filter::BadParam;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the parameter when one was.
    pub error: String,
}

/// What an endpoint that reads the store can answer besides its own responses.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Failed {
    /// A parameter, or the body, is not what this document says; `error` names it.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The store cannot answer now (it is down, or busy): ask again later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The store holds data this grayscope cannot read.
    #[response(status = 500)]
    Broken(ErrorBody),
}

/// What an endpoint that only checks its parameters can answer besides its own responses.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Refused {
    /// A parameter is not what this document says; `error` names it.
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    BadParam(#[from] BadParam),
    #[error("{0}")]
    NotFound(String),
    #[error("the body is over {} bytes", MAX_BODY)]
    TooLarge,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The largest request body the API reads: a thousand trace ids take 35 KiB.
pub const MAX_BODY: usize = 256 * 1024;

impl ApiError {
    /// A body as axum read it, or why it could not.
    pub fn body(
        b: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<bytes::Bytes, ApiError> {
        b.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            _ => ApiError::bad("body", e.body_text()),
        })
    }

    pub fn bad(name: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadParam(BadParam {
            name,
            message: message.into(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadParam(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // What it stores, read back, is not what this grayscope can read: a bug or a damaged
            // store, not worth retrying.
            ApiError::Store(ref e @ StoreError::Decode(_)) => {
                tracing::error!("API: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Store(ref e) => {
                tracing::warn!("API: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, axum::Json(body)).into_response()
    }
}
