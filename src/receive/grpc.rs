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

use super::{Ingest, Protocol, RETRY_AFTER_SECS};
use crate::shard::SubmitError;

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

/// tonic answers a message over the size limit with OUT_OF_RANGE; OTLP senders expect
/// RESOURCE_EXHAUSTED (without RetryInfo: not retryable), as tonic already answers for a
/// decompressed message over the limit. This rewrites the one case, on the way out.
pub fn size_limit_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers();
    let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message").is_some_and(|m| {
            m.as_bytes()
                .starts_with(b"Error,%20decoded%20message%20length%20too%20large")
        });
    if too_large {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}
