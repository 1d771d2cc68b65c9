//! OTLP/JSON, as the HTTP receiver decodes it, through verification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

#[path = "pipeline.rs"]
mod pipeline;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        pipeline::verify(&req);
    }
});
