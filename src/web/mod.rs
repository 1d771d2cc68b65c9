//! The web dashboard on the `--http` address: the service graph coloured by stage consistency,
//! findings, edges over time, and traces down to the hop that broke.
//!
//! Rendered on the server (askama templates, SVG drawn here); the one script and the stylesheet
//! are compiled into the binary, so the pages need nothing but grayscope. Every string from a span
//! is escaped, and a Content-Security-Policy allows scripts, styles and fetches from grayscope
//! only.

mod edge;
mod edges;
mod error;
mod findings;
pub mod layout;
mod login;
mod matrix;
mod members;
mod overview;
mod selection;
mod service;
pub mod svg;
mod trace;
mod verdicts;

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::read::Reader;
pub use error::WebError;
pub use trace::{TracePage, trace_page};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's pages. Unknown paths are left to whatever the router is merged with.
pub fn router(reader: Reader) -> Router {
    Router::new()
        .route("/", get(overview::overview))
        .route("/fragments/overview", get(overview::overview_fragment))
        .route("/findings", get(findings::findings))
        .route("/edges", get(edges::edges))
        .route("/edges/{caller}/{callee}", get(edge::edge))
        .route("/services", get(service::services))
        .route("/services/{name}", get(service::service))
        .route("/complete/services", get(service::complete))
        .route("/traces/{trace_id}", get(trace::trace))
        .route("/verdicts", get(verdicts::verdicts))
        .route("/members", get(members::members))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(reader)
}

/// The login page and logout, with the read tokens they check.
pub fn login_router(guard: crate::security::Guard) -> Router {
    Router::new()
        .route("/login", get(login::form).post(login::login))
        .route("/logout", axum::routing::post(login::logout))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .with_state(guard)
}

/// Escapes text for HTML (and for SVG, and for attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/style.css"),
    )
        .into_response()
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a Params, name: &str) -> &'a str {
    q.get(name).map(String::as_str).unwrap_or("")
}
