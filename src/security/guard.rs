//! Who may use a listener: the token check in front of every request, its counter, and its answers
//! (HTTP 401 with `WWW-Authenticate`, gRPC UNAUTHENTICATED). A refused request is answered before
//! its body is read, so nothing of it is decoded or ingested.
//!
//! The answer is the same for a missing and a wrong token, and says nothing but that a token is
//! needed; the counter, which only the operator reads, tells the two apart.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::session;
use super::tokens::{Tokens, bearer};
use super::watch::Watched;
use crate::telemetry::Registry;

/// The challenge of every 401.
pub const CHALLENGE: &str = "Bearer realm=\"grayscope\"";

/// The message of every refusal.
pub const REFUSED_MESSAGE: &str = "authentication required";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    listener: &'static str,
    reason: &'static str,
}

/// Requests refused for their token, by listener and reason.
#[derive(Clone, Default)]
pub struct AuthMetrics {
    refused: Family<AuthLabels, Counter>,
}

impl AuthMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = AuthMetrics::default();
        r.register(
            "auth_refused",
            "Requests refused for a missing or wrong bearer token (or dashboard session), by listener; nothing of them was read",
            m.refused.clone(),
        );
        m
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization: Bearer` header (nor a session cookie).
    Missing,
    /// A token (or session) that is not accepted.
    Invalid,
}

/// One listener's token check for one kind of access (ingest or read).
#[derive(Clone)]
pub struct Guard {
    tokens: Option<Arc<Watched<Tokens>>>,
    missing: Counter,
    invalid: Counter,
}

impl Guard {
    /// `tokens`: `None` lets every request through (no token file configured for this access).
    pub fn new(
        metrics: &AuthMetrics,
        listener: &'static str,
        tokens: Option<Arc<Watched<Tokens>>>,
    ) -> Self {
        let counter = |reason| {
            let c = metrics
                .refused
                .get_or_create(&AuthLabels { listener, reason })
                .clone();
            // At zero from the start when it can count, so that a rate is 0 rather than absent.
            if tokens.is_some() {
                c.inc_by(0);
            }
            c
        };
        Guard {
            missing: counter("missing"),
            invalid: counter("invalid"),
            tokens,
        }
    }

    /// A guard that lets everything through (tests, tools).
    pub fn open() -> Self {
        Guard::new(&AuthMetrics::default(), "none", None)
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.as_ref().map(|t| t.get())
    }

    /// Checks the bearer token of `headers`, counting a refusal.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        self.judge(headers, false)
    }

    /// Like [`Guard::check`], also accepting a dashboard session cookie.
    pub fn check_with_session(&self, headers: &HeaderMap) -> Result<(), Refused> {
        self.judge(headers, true)
    }

    fn judge(&self, headers: &HeaderMap, cookie: bool) -> Result<(), Refused> {
        let Some(tokens) = self.tokens() else {
            return Ok(());
        };
        let verdict = match headers.get(header::AUTHORIZATION) {
            Some(v) => match bearer(v.as_bytes()) {
                Some(t) if tokens.accepts(t) => Ok(()),
                _ => Err(Refused::Invalid),
            },
            None if cookie => match session::from_headers(headers) {
                Some(s) if session::valid(s, &tokens, crate::wall_ms() / 1000) => Ok(()),
                Some(_) => Err(Refused::Invalid),
                None => Err(Refused::Missing),
            },
            None => Err(Refused::Missing),
        };
        if let Err(r) = verdict {
            self.count(r);
        }
        verdict
    }

    /// Counts a refusal decided elsewhere (a wrong token typed into the login page).
    pub fn count(&self, r: Refused) {
        match r {
            Refused::Missing => self.missing.inc(),
            Refused::Invalid => self.invalid.inc(),
        };
    }
}

/// HTTP 401 with the challenge and the API's error body.
pub fn unauthorized() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": REFUSED_MESSAGE })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    resp
}

/// Middleware: only requests with an accepted bearer token pass (OTLP/HTTP ingest).
pub async fn require_token(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    match guard.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(_) => unauthorized(),
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard::open()
    }
}

/// The token check of a gRPC server: methods under `ingest_prefix` need an ingest token, every
/// other method (the query API) a read token. A refusal is a trailers-only UNAUTHENTICATED answer;
/// the request's message is never read.
#[derive(Clone)]
pub struct GrpcGuardLayer {
    pub ingest_prefix: &'static str,
    pub ingest: Guard,
    pub read: Guard,
}

impl<S> tower::Layer<S> for GrpcGuardLayer {
    type Service = GrpcGuard<S>;
    fn layer(&self, inner: S) -> GrpcGuard<S> {
        GrpcGuard {
            inner,
            guards: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcGuard<S> {
    inner: S,
    guards: GrpcGuardLayer,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let g = &self.guards;
        let guard = if req.uri().path().starts_with(g.ingest_prefix) {
            &g.ingest
        } else {
            &g.read
        };
        match guard.check(req.headers()) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(_) => {
                let refused = tonic::Status::unauthenticated(REFUSED_MESSAGE).into_http();
                Box::pin(std::future::ready(Ok(refused)))
            }
        }
    }
}

/// Paths of the API listener that need no read token: liveness, the login page and what it loads.
pub const OPEN_PATHS: [&str; 5] = [
    "/healthz",
    "/login",
    "/logout",
    "/static/style.css",
    "/static/app.js",
];

/// Middleware of the API and dashboard listener: reading needs a read token or a dashboard session.
/// A browser asking for a page without either is sent to the login page; API clients get 401.
pub async fn require_reader(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if guard.is_open() || OPEN_PATHS.contains(&path) {
        return next.run(req).await;
    }
    if guard.check_with_session(req.headers()).is_ok() {
        return next.run(req).await;
    }
    let page =
        req.method() == http::Method::GET && !path.starts_with("/api/") && path != "/metrics";
    if !page {
        return unauthorized();
    }
    let wanted = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let to = format!(
        "/login?next={}",
        percent_encoding::utf8_percent_encode(&wanted, percent_encoding::NON_ALPHANUMERIC)
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}
