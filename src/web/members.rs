//! The instances sharing the store, and which of them receive spans.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::read::Reader;
use crate::view::MemberView;

#[derive(Template, WebTemplate)]
#[template(path = "members.html")]
struct MembersPage {
    members: Vec<MemberView>,
}

pub(super) async fn members(State(reader): State<Reader>) -> Response {
    let members = reader
        .members()
        .iter()
        .map(|m| MemberView::of(m, reader.me(), reader.active_within_ms()))
        .collect();
    MembersPage { members }.into_response()
}
