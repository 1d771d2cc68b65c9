//! OTLP/HTTP: `POST /v1/traces`, binary protobuf or JSON, optionally gzip-compressed.
//!
//! The body is read up to `--max-request-bytes` and decompressed up to the same limit, so neither a
//! large body nor a gzip bomb can make grayscope allocate more than the limit; it must arrive within
//! `--read-timeout`, so a slow or stalled sender cannot hold a task and its buffer. Errors are answered in
//! the request's own encoding with a `google.rpc.Status`, as the OTLP specification asks.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::Code;

use crate::security::{Guard, guard};

use super::{
    Admission, BUSY_MESSAGE, ExportError, InFlight, Ingest, Outcome, Protocol, RETRY_AFTER_SECS,
};

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

#[derive(Clone)]
struct HttpReceiver {
    ingest: Arc<Ingest>,
    max_bytes: usize,
    in_flight: InFlight,
    guard: Guard,
}

/// The `/v1/traces` route.
/// `guard`: the ingest token check, before anything of the body is read. `cors_origins`: the web
/// origins whose pages may export here (a browser asks before it sends spans across origins);
/// `*` for any.
pub fn router(
    ingest: Arc<Ingest>,
    max_bytes: usize,
    in_flight: InFlight,
    guard: Guard,
    cors_origins: &[String],
) -> Router {
    let router = Router::new()
        .route("/v1/traces", post(export))
        .layer(DefaultBodyLimit::disable())
        .with_state(HttpReceiver {
            ingest,
            max_bytes,
            in_flight,
            guard,
        });
    if cors_origins.is_empty() {
        return router;
    }
    router.layer(cors(cors_origins))
}

/// What a browser's preflight is told: POST of OTLP bodies, compressed or not, with a bearer token
/// if ingest needs one.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([axum::http::Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::AUTHORIZATION,
        ])
        .max_age(std::time::Duration::from_secs(7200))
}

/// An error on its way back to the sender.
struct Failure {
    status: StatusCode,
    code: Code,
    outcome: Outcome,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: Code, outcome: Outcome, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            outcome,
            message: message.into(),
        }
    }

    fn too_large(max: usize) -> Self {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            Outcome::TooLarge,
            format!("request body exceeds the limit of {max} bytes (--max-request-bytes)"),
        )
    }
}

async fn export(State(rx): State<HttpReceiver>, headers: HeaderMap, body: Body) -> Response {
    if rx.guard.check(&headers).is_err() {
        let protocol = match content_type(&headers) {
            Some(PROTOBUF) => Protocol::HttpProtobuf,
            _ => Protocol::HttpJson,
        };
        let f = Failure::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            Outcome::Refused,
            guard::REFUSED_MESSAGE,
        );
        let mut resp = reply_error(protocol, f);
        let h = resp.headers_mut();
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(guard::CHALLENGE),
        );
        // The body is not read: the connection cannot carry another request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let protocol = match content_type(&headers) {
        Some(PROTOBUF) => Protocol::HttpProtobuf,
        Some(JSON) => Protocol::HttpJson,
        other => {
            rx.ingest.count(Protocol::HttpOther, Outcome::Unsupported);
            let f = Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                Outcome::Unsupported,
                format!(
                    "unsupported Content-Type {:?}: send {PROTOBUF} or {JSON}",
                    other.unwrap_or("(none)")
                ),
            );
            return reply_error(Protocol::HttpJson, f);
        }
    };
    let answer = match rx
        .in_flight
        .run(handle(&rx, &headers, body, protocol))
        .await
    {
        Admission::Done(answer) => answer,
        Admission::Busy => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            Outcome::Refused,
            BUSY_MESSAGE,
        )),
        Admission::TimedOut => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            Outcome::Timeout,
            format!(
                "request body not received within {:?} (--read-timeout)",
                rx.in_flight.read_timeout()
            ),
        )),
    };
    match answer {
        Ok(resp) => resp,
        Err(f) => {
            rx.ingest.count(protocol, f.outcome);
            let outcome = f.outcome;
            let mut resp = reply_error(protocol, f);
            if matches!(outcome, Outcome::Timeout | Outcome::Refused) {
                // The body was not read (or not all of it): the connection cannot carry another
                // request.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if outcome == Outcome::Refused {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            resp
        }
    }
}

async fn handle(
    rx: &HttpReceiver,
    headers: &HeaderMap,
    body: Body,
    protocol: Protocol,
) -> Result<Response, Failure> {
    let max = rx.max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Failure::too_large(max));
    }
    let raw = axum::body::to_bytes(body, max).await.map_err(|e| {
        if is_length_limit(&e) {
            Failure::too_large(max)
        } else {
            Failure::new(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                Outcome::Invalid,
                format!("cannot read request body: {e}"),
            )
        }
    })?;
    let body = decompress(headers, raw, max)?;
    let exported = match protocol {
        Protocol::HttpJson => {
            let req = serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| {
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    Outcome::Invalid,
                    format!("invalid OTLP/JSON: {e}"),
                )
            })?;
            rx.ingest
                .export(&req, protocol)
                .map_err(ExportError::Submit)
        }
        _ => rx.ingest.export_protobuf(&body, protocol),
    };
    match exported {
        Ok(partial_success) => Ok(reply(
            protocol,
            StatusCode::OK,
            &ExportTraceServiceResponse { partial_success },
        )),
        Err(ExportError::Invalid(e)) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            Outcome::Invalid,
            format!("invalid OTLP protobuf: {e}"),
        )),
        // Already counted as refused by `Ingest::export`.
        Err(ExportError::Submit(e)) => {
            let mut resp = reply_error(
                protocol,
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    Outcome::Refused,
                    e.to_string(),
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            Ok(resp)
        }
    }
}

/// The media type without parameters, lower-cased.
fn content_type(headers: &HeaderMap) -> Option<&'static str> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = v.split(';').next()?.trim();
    if essence.eq_ignore_ascii_case(PROTOBUF) {
        Some(PROTOBUF)
    } else if essence.eq_ignore_ascii_case(JSON) {
        Some(JSON)
    } else {
        None
    }
}

fn decompress(headers: &HeaderMap, raw: Bytes, max: usize) -> Result<Bytes, Failure> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| {
        v.to_str()
            .unwrap_or("(not text)")
            .trim()
            .to_ascii_lowercase()
    });
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") => {
            let mut out = Vec::with_capacity((raw.len() * 4).min(max));
            flate2::read::GzDecoder::new(&raw[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    Failure::new(
                        StatusCode::BAD_REQUEST,
                        Code::InvalidArgument,
                        Outcome::Invalid,
                        format!("invalid gzip body: {e}"),
                    )
                })?;
            if out.len() > max {
                return Err(Failure::too_large(max));
            }
            Ok(out.into())
        }
        Some(other) => Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            Outcome::Unsupported,
            format!("unsupported Content-Encoding {other:?}: send gzip or no encoding"),
        )),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn reply(protocol: Protocol, status: StatusCode, msg: &ExportTraceServiceResponse) -> Response {
    match protocol {
        Protocol::HttpJson => {
            let body = serde_json::to_vec(msg).expect("a response always serialises");
            (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
        }
        _ => (
            status,
            [(header::CONTENT_TYPE, PROTOBUF)],
            msg.encode_to_vec(),
        )
            .into_response(),
    }
}

fn reply_error(protocol: Protocol, f: Failure) -> Response {
    match protocol {
        Protocol::HttpJson => {
            let body = serde_json::json!({ "code": f.code as i32, "message": f.message });
            (f.status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
        }
        _ => {
            let st = tonic_types::Status {
                code: f.code as i32,
                message: f.message,
                details: Vec::new(),
            };
            (
                f.status,
                [(header::CONTENT_TYPE, PROTOBUF)],
                st.encode_to_vec(),
            )
                .into_response()
        }
    }
}
