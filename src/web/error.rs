//! What went wrong, as a page: the dashboard answers in HTML with the status that says whose fault
//! it was, never with the API's JSON.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::read::filter::BadParam;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    BadParam(#[from] BadParam),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Not an error: another instance of the cluster holds what was asked for.
    #[error("{0}")]
    Elsewhere(String),
    #[error("reading the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the page could not be rendered: {0}")]
    Render(#[from] askama::Error),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            WebError::BadParam(_) | WebError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "Bad request")
            }
            WebError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            WebError::Elsewhere(_) => (StatusCode::OK, "On another instance"),
            WebError::Store(_) | WebError::Render(_) => {
                tracing::error!("dashboard: {self}");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        };
        let page = ErrorPage {
            title,
            message: self.to_string(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => (status, e.to_string()).into_response(),
        }
    }
}
