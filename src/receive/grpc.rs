//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The service is written out here rather than generated, for its codec: the request message is
//! handed over as the bytes it arrived in and decoded in place ([`super::decode::wire`]), never
//! into `opentelemetry-proto`'s structs. Compression, the message size limit and the status
//! mapping stay tonic's.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::IngestMetrics;
use super::{
    Admission, BUSY_MESSAGE, ExportError, InFlight, Ingest, Outcome, Protocol, RETRY_AFTER_SECS,
};
use crate::shard::SubmitError;

/// The TraceService, ready to add to a tonic server: gzip accepted, messages over `max_bytes`
/// (before or after decompression) refused.
#[derive(Clone)]
pub struct TraceService {
    ingest: Arc<Ingest>,
    max_bytes: usize,
}

pub fn service(ingest: Arc<Ingest>, max_bytes: usize) -> TraceService {
    TraceService { ingest, max_bytes }
}

impl NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower::Service<http::Request<B>> for TraceService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let (ingest, max) = (self.ingest.clone(), self.max_bytes);
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(OtlpCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(Export(ingest), req).await)
        })
    }
}

/// The export call itself.
struct Export(Arc<Ingest>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            match ingest.export_protobuf(req.get_ref(), Protocol::Grpc) {
                Ok(partial_success) => Ok(Response::new(ExportTraceServiceResponse {
                    partial_success,
                })),
                Err(ExportError::Invalid(e)) => {
                    ingest.count(Protocol::Grpc, Outcome::Invalid);
                    Err(Status::invalid_argument(e.to_string()))
                }
                Err(ExportError::Submit(e @ SubmitError::Full { .. })) => {
                    Err(Status::with_error_details(
                        Code::Unavailable,
                        e.to_string(),
                        ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
                    ))
                }
                Err(ExportError::Submit(e @ SubmitError::Closed)) => {
                    Err(Status::unavailable(e.to_string()))
                }
            }
        })
    }
}

/// Requests as their bytes, responses encoded by prost.
struct OtlpCodec;

impl Codec for OtlpCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// tonic rejects some requests before grayscope sees them, with codes that OTLP senders would
/// misread: a message over the size limit as OUT_OF_RANGE (which OTLP clients retry: forever, for
/// a message that can never fit), and an undecodable, cut-short or corrupt-gzip message as INTERNAL. This maps
/// them, on the way out, to what the OTLP specification asks for, and counts them:
/// RESOURCE_EXHAUSTED without RetryInfo (not retryable) and INVALID_ARGUMENT. It also counts the
/// read timeouts of [`InFlightService`].
pub fn otlp_status<B>(metrics: &IngestMetrics, mut resp: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(resp.headers()) else {
        return resp;
    };
    let msg = status.message();
    let (code, outcome) = match status.code() {
        Code::OutOfRange if msg.starts_with("Error, decoded message length too large") => {
            (Code::ResourceExhausted, Outcome::TooLarge)
        }
        Code::ResourceExhausted if msg.starts_with("Error decompressing: size limit") => {
            (Code::ResourceExhausted, Outcome::TooLarge)
        }
        Code::Internal
            if msg.starts_with("failed to decode Protobuf message")
                || msg.starts_with("Error decompressing")
                || msg.starts_with("Unexpected EOF decoding stream") =>
        {
            (Code::InvalidArgument, Outcome::Invalid)
        }
        // Already the right codes; counted here with the rest.
        Code::DeadlineExceeded if msg.starts_with(READ_TIMEOUT_MESSAGE) => {
            (Code::DeadlineExceeded, Outcome::Timeout)
        }
        Code::Unavailable if msg == BUSY_MESSAGE => (Code::Unavailable, Outcome::Refused),
        _ => return resp,
    };
    metrics.request(Protocol::Grpc, outcome);
    resp.headers_mut()
        .insert("grpc-status", http::HeaderValue::from(code as i32));
    resp
}

const READ_TIMEOUT_MESSAGE: &str = "request message not received within";

/// The OTLP/gRPC trace service's methods start with this.
pub const SERVICE_PREFIX: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/";

/// The OTLP/gRPC export method's path.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// [`InFlightService`] for every service of a server.
#[derive(Clone, Debug)]
pub struct InFlightLayer(pub InFlight);

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> InFlightService<S> {
        InFlightService {
            inner,
            in_flight: self.0.clone(),
        }
    }
}

/// Export calls take their turn at the receivers' [`InFlight`] limit before their message is read and
/// decoded; every unary call must produce its response within `--read-timeout`, or is answered
/// DEADLINE_EXCEEDED (retryable in OTLP). A unary call's response waits for the whole request
/// message, so a sender that stalls or trickles it cannot hold a stream and its buffer for ever;
/// a streaming response (`WatchFindings`) starts at once and is not cut. (tonic's own
/// `Server::timeout` would answer CANCELLED, which says the sender gave up.)
#[derive(Clone, Debug)]
pub struct InFlightService<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, B> tower::Service<http::Request<B>> for InFlightService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let in_flight = self.in_flight.clone();
        let export = req.uri().path() == EXPORT_PATH;
        let call = self.inner.call(req);
        Box::pin(async move {
            let answer = if export {
                in_flight.run(call).await
            } else {
                match tokio::time::timeout(in_flight.read_timeout(), call).await {
                    Ok(r) => Admission::Done(r),
                    Err(_) => Admission::TimedOut,
                }
            };
            match answer {
                Admission::Done(r) => r,
                Admission::Busy => Ok(Status::with_error_details(
                    Code::Unavailable,
                    BUSY_MESSAGE,
                    ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
                )
                .into_http()),
                Admission::TimedOut => Ok(Status::deadline_exceeded(format!(
                    "{READ_TIMEOUT_MESSAGE} {:?} (--read-timeout)",
                    in_flight.read_timeout()
                ))
                .into_http()),
            }
        })
    }
}
