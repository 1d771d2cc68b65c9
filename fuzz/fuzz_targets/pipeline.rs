//! The path a request takes after it is decoded from the wire, as the collector runs it: span
//! validation, assembly with a tight memory bound (so early finalisation and tombstones run too),
//! verification, the verdict counters, the explanation of every finding, and a stored trace's
//! encoding and decoding.
// Each fuzz target includes this module and uses one of its entry points.
#![allow(dead_code)]

use std::sync::Arc;

use grayscope::aggregate::VerdictCounters;
use grayscope::assemble::{Assembler, AssemblerConfig};
use grayscope::instances::{Clock, Instances};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::join::{JoinConfig, Joins};
use grayscope::receive::Decoder;
use grayscope::receive::decode::Decoded;
use grayscope::store::codec;
use grayscope::verify::Policy;
use grayscope::verify::messaging::Unresolved;
use grayscope::view::TraceView;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// A request parsed into `opentelemetry-proto`'s structs (OTLP/JSON).
pub fn verify(req: &ExportTraceServiceRequest) {
    run(|decoder| Some(decoder.decode(req, 2)));
}

/// OTLP/protobuf bytes, decoded in place as the receivers decode them.
pub fn verify_protobuf(bytes: &[u8]) {
    run(|decoder| decoder.decode_protobuf(bytes, 2).ok());
}

fn run(decode: impl FnOnce(&Decoder) -> Option<Decoded>) {
    // Small tables, so that folding into "(other)" is reached as well.
    let symbols = Arc::new(Symbols::new(&SymbolLimits {
        services: 16,
        span_names: 16,
        values: 16,
    }));
    let instances = Arc::new(Instances::new([], 60_000));
    let clock = Clock::new();
    let decoder = Decoder::new(
        symbols.clone(),
        instances.clone(),
        clock,
        &[
            "x-release-stage".into(),
            "http.request.header.x-release-stage".into(),
        ],
        "deployment.stage",
    );
    let Some(decoded) = decode(&decoder) else {
        return;
    };
    let _ = decoded.error_message();
    let mut asm = Assembler::new(
        AssemblerConfig {
            idle_ms: 1_000,
            max_spans: 64,
            tombstones: 16,
            tombstone_ms: 1_000,
            sample_clean: 1.0,
            // Finalised traces kept and reopened by later spans, their orphans waiting.
            orphan_wait_ms: 2_000,
            keep_ms: 3_000,
            max_kept: 256,
        },
        Arc::new(Policy::default()),
        instances.clone(),
    );
    // Small bounds, so that evictions happen too.
    let joins = Joins::new(
        JoinConfig::new(std::time::Duration::from_secs(1), 16, 16),
        Arc::new(Policy::default()),
        instances,
    );
    let mut out = Vec::new();
    for (i, batch) in decoded.batches.into_iter().enumerate() {
        asm.insert(batch, i as u64, 0, &mut out);
        joins.absorb(&mut out, i as u64, 0);
    }
    asm.drain(1_000_000, 0, &mut out);
    joins.absorb(&mut out, 1_000_000, 0);
    joins.drain(Unresolved::Shutdown, 1_000_000, 0, &mut out);
    let s = joins.stats();
    assert_eq!((s.waiting_links, s.waiting_consumers), (0, 0));
    let mut counters = VerdictCounters::new(8);
    for f in &out {
        counters.count(&f.outcome);
        for finding in &f.outcome.findings {
            let _ = finding.detail(&symbols);
        }
        if let Some(s) = &f.snapshot {
            let view = TraceView::of(s, &symbols);
            let stored = codec::decode(s.trace_id, &codec::encode(s, &symbols))
                .expect("a trace grayscope encoded decodes");
            // Findings live in their own table; the blob holds spans and judged edges.
            assert_eq!(stored.spans.len(), view.spans.len());
            assert_eq!(stored.edges.len(), view.edges.len());
        }
    }
    let _ = counters.samples(&symbols);
}
