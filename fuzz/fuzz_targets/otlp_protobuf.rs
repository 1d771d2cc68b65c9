//! OTLP protobuf, as the gRPC and HTTP receivers decode it (in place), through verification.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "pipeline.rs"]
mod pipeline;

fuzz_target!(|data: &[u8]| {
    pipeline::verify_protobuf(data);
});
