//! A raw OTLP client: sends bytes that are already an encoded `ExportTraceServiceRequest` (or
//! deliberately not one) over OTLP/gRPC or OTLP/HTTP, and returns what the server answered.
//!
//! Encoding once and sending many times keeps the load generator's own cost low, so that a benchmark
//! on one machine measures the collector rather than the client.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::security::{ClientAuth, SecurityError};

pub use crate::receive::grpc::EXPORT_PATH;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// OTLP/gRPC
    Grpc,
    /// OTLP/HTTP, binary protobuf
    Http,
    /// OTLP/HTTP, JSON
    HttpJson,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading the response failed: {0}")]
    Body(#[from] hyper::Error),
    #[error("building the request failed: {0}")]
    Build(#[from] http::Error),
}

/// What the server said.
#[derive(Debug, Clone)]
pub struct Reply {
    pub http: StatusCode,
    /// gRPC status code from trailers (or headers, for trailers-only answers); `None` over HTTP.
    pub grpc_status: Option<i32>,
    pub grpc_message: Option<String>,
    pub headers: http::HeaderMap,
    /// The response body; over gRPC, without the 5-byte frame header.
    pub body: Bytes,
}

impl Reply {
    /// Accepted: HTTP 200 / gRPC OK.
    pub fn is_ok(&self) -> bool {
        self.http == StatusCode::OK && self.grpc_status.is_none_or(|c| c == 0)
    }

    /// Refused with a retryable answer (HTTP 503 / gRPC UNAVAILABLE).
    pub fn is_retryable(&self) -> bool {
        self.http == StatusCode::SERVICE_UNAVAILABLE || self.grpc_status == Some(14)
    }
}

#[derive(Clone)]
pub struct RawClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    wire: Wire,
    uri: http::Uri,
    /// `Bearer ...`, sent with every request.
    authorization: Option<http::HeaderValue>,
}

impl RawClient {
    /// A plain-text client without a token.
    pub fn new(wire: Wire, addr: SocketAddr) -> Self {
        Self::with_auth(wire, addr, &ClientAuth::default(), false)
            .expect("a client without TLS files or a token builds")
    }

    /// `tls`: connect with TLS, trusting and presenting what `auth` says; `auth`'s token is sent
    /// either way. The server's certificate must name `addr`'s IP address.
    pub fn with_auth(
        wire: Wire,
        addr: SocketAddr,
        auth: &ClientAuth,
        tls: bool,
    ) -> Result<Self, SecurityError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let config = if tls {
            auth.tls.config()?
        } else {
            crate::security::ClientTls::plain()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        // One protocol each, as over plain TCP: gRPC speaks HTTP/2, OTLP/HTTP HTTP/1.1.
        let connector = if wire == Wire::Grpc {
            connector.enable_http2().wrap_connector(http)
        } else {
            connector.enable_http1().wrap_connector(http)
        };
        let mut b = Client::builder(TokioExecutor::new());
        if wire == Wire::Grpc {
            b.http2_only(true);
        }
        let path = match wire {
            Wire::Grpc => EXPORT_PATH,
            Wire::Http | Wire::HttpJson => "/v1/traces",
        };
        let scheme = if tls { "https" } else { "http" };
        let authorization = match &auth.authorization {
            Some(a) => Some(a.parse().map_err(|_| SecurityError::Tokens {
                message: "the token is not a valid header value".into(),
            })?),
            None => None,
        };
        Ok(RawClient {
            client: b.build(connector),
            wire,
            uri: format!("{scheme}://{addr}{path}")
                .parse()
                .expect("a socket address makes a valid URI"),
            authorization,
        })
    }

    /// Sends `payload` as the request message. `gzip`: compress it first (gRPC message compression,
    /// or HTTP `Content-Encoding: gzip`).
    pub async fn send(&self, payload: Bytes, gzip: bool) -> Result<Reply, ClientError> {
        let body = if gzip { compress(&payload) } else { payload };
        let req = match self.wire {
            Wire::Grpc => Request::post(self.uri.clone())
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("te", "trailers")
                .header("grpc-encoding", if gzip { "gzip" } else { "identity" })
                .body(Full::new(grpc_frame(&body, gzip)))?,
            Wire::Http | Wire::HttpJson => {
                let ct = if self.wire == Wire::Http {
                    "application/x-protobuf"
                } else {
                    "application/json"
                };
                let mut b = Request::post(self.uri.clone()).header(header::CONTENT_TYPE, ct);
                if gzip {
                    b = b.header(header::CONTENT_ENCODING, "gzip");
                }
                b.body(Full::new(body))?
            }
        };
        self.send_request(req).await
    }

    /// Sends a request built by the caller (for unusual headers).
    pub async fn send_request(&self, mut req: Request<Full<Bytes>>) -> Result<Reply, ClientError> {
        if let Some(a) = &self.authorization {
            req.headers_mut()
                .entry(header::AUTHORIZATION)
                .or_insert_with(|| a.clone());
        }
        let resp = self.client.request(req).await?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let mut body = collected.to_bytes();
        let grpc = |name: &str| {
            trailers
                .as_ref()
                .and_then(|t| t.get(name))
                .or_else(|| parts.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (grpc_status, grpc_message) = match self.wire {
            Wire::Grpc => {
                if body.len() >= 5 {
                    body = body.slice(5..);
                }
                (
                    grpc("grpc-status").and_then(|s| s.parse().ok()),
                    grpc("grpc-message").map(|m| {
                        percent_encoding::percent_decode_str(&m)
                            .decode_utf8_lossy()
                            .into_owned()
                    }),
                )
            }
            _ => (None, None),
        };
        Ok(Reply {
            http: parts.status,
            grpc_status,
            grpc_message,
            headers: parts.headers,
            body,
        })
    }
}

/// The gRPC length-prefixed message frame.
pub fn grpc_frame(message: &[u8], compressed: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(message.len() + 5);
    b.put_u8(compressed as u8);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

pub fn compress(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("writing to memory");
    e.finish().expect("writing to memory").into()
}
