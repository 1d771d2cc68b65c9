//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, served by the generated
//! tonic server of the `opentelemetry-proto` crate.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingest, Outcome, Protocol, RETRY_AFTER_SECS};
use crate::shard::SubmitError;
use crate::telemetry::{RequestLabels, Telemetry};

pub struct GrpcReceiver {
    ingest: Arc<Ingest>,
}

/// The TraceService, ready to add to a tonic server: gzip accepted, messages over `max_bytes`
/// (before or after decompression) refused.
pub fn service(ingest: Arc<Ingest>, max_bytes: usize) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(GrpcReceiver { ingest })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_bytes)
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self.ingest.export(req.get_ref(), Protocol::Grpc) {
            Ok(partial_success) => Ok(Response::new(ExportTraceServiceResponse {
                partial_success,
            })),
            Err(e @ SubmitError::Full { .. }) => Err(Status::with_error_details(
                Code::Unavailable,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
            )),
            Err(e @ SubmitError::Closed) => Err(Status::unavailable(e.to_string())),
        }
    }
}

/// tonic rejects some requests before grayscope sees them, with codes that OTLP senders would
/// misread: a message over the size limit as OUT_OF_RANGE (which OTLP clients retry: forever, for
/// a message that can never fit), and an undecodable, cut-short or corrupt-gzip message as INTERNAL. This maps
/// them, on the way out, to what the OTLP specification asks for, and counts them:
/// RESOURCE_EXHAUSTED without RetryInfo (not retryable) and INVALID_ARGUMENT. It also counts the
/// read timeouts of [`ReadTimeout`].
pub fn otlp_status<B>(telemetry: &Telemetry, mut resp: http::Response<B>) -> http::Response<B> {
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
        // Already the right code; counted here with the rest.
        Code::DeadlineExceeded if msg.starts_with(READ_TIMEOUT_MESSAGE) => {
            (Code::DeadlineExceeded, Outcome::Timeout)
        }
        _ => return resp,
    };
    telemetry
        .requests
        .get_or_create(&RequestLabels {
            protocol: Protocol::Grpc.as_str(),
            outcome: outcome.as_str(),
        })
        .inc();
    resp.headers_mut()
        .insert("grpc-status", http::HeaderValue::from(code as i32));
    resp
}

const READ_TIMEOUT_MESSAGE: &str = "request message not received within";

/// [`ReadTimeout`] for every service of a server.
#[derive(Clone, Copy, Debug)]
pub struct ReadTimeoutLayer(pub Duration);

impl<S> tower::Layer<S> for ReadTimeoutLayer {
    type Service = ReadTimeout<S>;

    fn layer(&self, inner: S) -> ReadTimeout<S> {
        ReadTimeout {
            inner,
            timeout: self.0,
        }
    }
}

/// Answers DEADLINE_EXCEEDED (retryable in OTLP) when a call has not produced its response within
/// `--read-timeout`. A unary call's response waits for the whole request message, so a sender that
/// stalls or trickles its message cannot hold a stream and its buffer for ever; a streaming
/// response (`WatchFindings`) starts at once and is not cut. tonic's own `Server::timeout` would
/// answer CANCELLED, which says the sender gave up.
#[derive(Clone, Debug)]
pub struct ReadTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for ReadTimeout<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
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
        let timeout = self.timeout;
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(r) => r,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "{READ_TIMEOUT_MESSAGE} {timeout:?} (--read-timeout)"
                ))
                .into_http()),
            }
        })
    }
}
