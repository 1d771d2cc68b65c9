//! The in-place OTLP/protobuf decoder against prost and `opentelemetry-proto`'s structs: on any
//! input both give the same records, or both refuse it. The one allowed difference: prost refuses
//! a string that is not UTF-8 anywhere in the request, the in-place decoder only in what it uses.
#![no_main]

use std::sync::Arc;

use grayscope::instances::{Clock, Instances};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::receive::Decoder;
use grayscope::receive::decode::Decoded;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn records(d: &Decoded) -> Vec<String> {
    d.batches
        .iter()
        .flat_map(|b| b.spans.iter())
        .map(|(t, r)| format!("{t:?} {r:?}"))
        .chain(
            d.batches
                .iter()
                .flat_map(|b| b.extras.iter())
                .map(|(t, s, e)| format!("{t:?} {s:?} {e:?}")),
        )
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // One decoder for both, so that equal strings are equal symbols.
    let decoder = Decoder::new(
        Arc::new(Symbols::new(&SymbolLimits::default())),
        Arc::new(Instances::new([], 60_000)),
        Clock::new(),
        &["x-release-stage".into(), "http.request.header.x-release-stage".into()],
        "deployment.stage",
    );
    let in_place = decoder.decode_protobuf(data, 3);
    let prost = ExportTraceServiceRequest::decode(data);
    match (&in_place, &prost) {
        (Ok(w), Ok(req)) => {
            let p = decoder.decode(req, 3);
            assert_eq!(records(w), records(&p));
            assert_eq!((w.accepted, w.rejected), (p.accepted, p.rejected));
            assert_eq!(w.reasons, p.reasons);
            assert_eq!(w.error_message(), p.error_message());
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => assert!(
            e.to_string().contains("not UTF-8"),
            "accepted what prost refuses: {e}"
        ),
        (Err(e), Ok(_)) => panic!("refused what prost accepts: {e}"),
    }
});
