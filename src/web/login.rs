//! The dashboard's login: a read token typed once, exchanged for a session cookie
//! ([`crate::security::session`]), so that a browser needs no header tricks and the token never
//! sits in a URL or in the page's script.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::security::{Guard, Refused, session};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    refused: bool,
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Only a path of this site: never another origin (`//host`, `https://…`), so that a link to the
/// login page cannot send a user elsewhere after logging in.
fn local(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

fn page(next: &str, refused: bool, status: StatusCode) -> Response {
    match (LoginPage { next, refused }).render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => super::WebError::from(e).into_response(),
    }
}

fn see_other(to: &str, cookie: String) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, to.to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

pub async fn form(State(guard): State<Guard>, Query(q): Query<Next>) -> Response {
    let next = local(q.next.as_deref());
    if guard.is_open() {
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, next.to_string())],
        )
            .into_response();
    }
    page(next, false, StatusCode::OK)
}

pub async fn login(State(guard): State<Guard>, Form(f): Form<LoginForm>) -> Response {
    let next = local(f.next.as_deref());
    let Some(tokens) = guard.tokens() else {
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, next.to_string())],
        )
            .into_response();
    };
    let token = f.token.trim();
    let Some(digest) = tokens.digest_of(token.as_bytes()) else {
        guard.count(if token.is_empty() {
            Refused::Missing
        } else {
            Refused::Invalid
        });
        return page(next, true, StatusCode::UNAUTHORIZED);
    };
    let value = session::issue(&digest, crate::wall_ms() / 1000);
    see_other(next, session::set_cookie(&value))
}

pub async fn logout() -> Response {
    see_other("/login", session::clear_cookie())
}
