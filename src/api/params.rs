//! Query parameters as the OpenAPI document describes them. Handlers read them through
//! [`crate::read::filter`] instead of typed extractors, so that every error names the parameter;
//! these structs exist for the document.
#![allow(dead_code)]

use std::collections::HashMap;

use axum::extract::Query;
use utoipa::IntoParams;

use super::ApiError;
use crate::read::filter;

/// A request's query string.
pub type Params = Query<HashMap<String, String>>;

/// A parameter, empty meaning absent.
pub fn get<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    filter::Params::get(&q.0, name)
}

/// Fails on a parameter not in `known`.
pub fn only(q: &Params, known: &[&str]) -> Result<(), ApiError> {
    Ok(filter::only(q.keys().map(String::as_str), known)?)
}

/// Query parameters of `/api/v1/findings`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindingParams {
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

/// Query parameters of the graph and edge endpoints.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowParams {
    /// Only this request stage, or `none`
    stage: Option<String>,
    /// RFC 3339 time, or a duration before now (`15m`); whole minutes
    since: Option<String>,
    /// RFC 3339 time, or a duration before now; whole minutes
    until: Option<String>,
}

/// [`WindowParams`]' names.
pub const WINDOW: [&str; 3] = ["stage", "since", "until"];

/// Query parameters of `/api/v1/services/{name}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceParams {
    /// Only this request stage, or `none`
    stage: Option<String>,
    /// RFC 3339 time, or a duration before now (`15m`); whole minutes
    since: Option<String>,
    /// RFC 3339 time, or a duration before now; whole minutes
    until: Option<String>,
    /// How many calls away the graph reaches, upstream and downstream: 1 or 2 (default 1)
    #[param(minimum = 1, maximum = 2)]
    depth: Option<usize>,
}
