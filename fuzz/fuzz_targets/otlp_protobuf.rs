//! OTLP protobuf, as the gRPC and HTTP receivers decode it, through verification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[path = "pipeline.rs"]
mod pipeline;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportTraceServiceRequest::decode(data) {
        pipeline::verify(&req);
    }
});
