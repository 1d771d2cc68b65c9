//! Heap bytes per buffered span: the memory behind `--max-buffered-spans`.
//!
//! Feeds the assembler the load generator's traffic (decoded in place, as the receivers decode
//! it), with no trace finalised, and counts the heap bytes the assembler holds with a counting
//! allocator. Also reports the time per span for decode and insert on one core, and what decoding
//! a request allocates per byte, in place and through prost.
//!
//! `cargo bench --bench buffered_memory [-- SPANS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use grayscope::assemble::{Assembler, AssemblerConfig};
use grayscope::instances::{Clock, Instances};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::loadgen::{Template, Wire};
use grayscope::model::StageMode;
use grayscope::receive::Decoder;
use grayscope::verify::Policy;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rand::SeedableRng;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
/// The most `LIVE` has been since it was last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(live: isize) {
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(LIVE.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let d = new as isize - l.size() as isize;
        grew(LIVE.fetch_add(d, Ordering::Relaxed) + d);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let spans: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let symbols = Arc::new(Symbols::new(&SymbolLimits::default()));
    let instances = Arc::new(Instances::new([], u64::MAX / 2));
    let clock = Clock::new();
    let decoder = Decoder::new(
        symbols,
        instances.clone(),
        clock,
        &[
            "x-release-stage".into(),
            "http.request.header.x-release-stage".into(),
        ],
        "deployment.stage",
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let templates: Vec<Template> = (0..16)
        .map(|_| Template::build(1000, (0.01, &[]), Wire::Http, &mut rng))
        .collect();
    let requests = spans.div_ceil(templates[0].spans);
    let bodies: Vec<Vec<u8>> = (0..requests as u64)
        .map(|n| templates[n as usize % templates.len()].instance(7, n, None))
        .collect();

    // What a request costs while it is handled, per byte of protobuf: what decoding allocates
    // (the batches made from it, and with prost the request's structs too), at its peak. The
    // memory budget's in-flight term rests on this.
    #[derive(Clone, Copy, PartialEq)]
    enum Path {
        InPlace,
        Prost,
        Json,
    }
    let expansion = |body: &[u8], path: Path| {
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let decoded = match path {
            Path::InPlace => decoder.decode_protobuf(body, 2).expect("decodes"),
            Path::Prost => {
                let req = ExportTraceServiceRequest::decode(body).expect("decodes");
                decoder.decode(&req, 2)
            }
            Path::Json => {
                let req: ExportTraceServiceRequest = serde_json::from_slice(body).expect("decodes");
                decoder.decode(&req, 2)
            }
        };
        let held = PEAK.load(Ordering::Relaxed) - before;
        drop(decoded);
        held as f64 / body.len() as f64
    };
    let smallest = smallest_spans(1 << 20);
    let as_json = |b: &[u8]| {
        serde_json::to_vec(&ExportTraceServiceRequest::decode(b).expect("decodes")).expect("JSON")
    };
    for (what, path) in [
        ("in place", Path::InPlace),
        ("prost", Path::Prost),
        ("OTLP/JSON", Path::Json),
    ] {
        let (typical, small) = if path == Path::Json {
            (as_json(&bodies[0]), as_json(&smallest))
        } else {
            (bodies[0].clone(), smallest.clone())
        };
        println!(
            "decoded bytes per request byte, {what}: {:.1} (load generator spans), {:.1} (smallest valid spans)",
            expansion(&typical, path),
            expansion(&small, path)
        );
    }
    for (what, in_place) in [("in place", true), ("prost", false)] {
        let t = Instant::now();
        let mut n = 0;
        for body in bodies.iter().take(200) {
            let d = if in_place {
                decoder.decode_protobuf(body, 2).expect("decodes")
            } else {
                decoder.decode(
                    &ExportTraceServiceRequest::decode(&body[..]).expect("decodes"),
                    2,
                )
            };
            n += d.accepted;
        }
        println!(
            "decode ns per span, {what}: {:.0}",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }

    // Every trace keeps its snapshot, as traces with findings do: the most a finalised span holds.
    let mut asm = Assembler::new(
        AssemblerConfig {
            sample_clean: 1.0,
            ..AssemblerConfig::offline()
        },
        Arc::new(Policy::default()),
        instances,
    );
    let mut out = Vec::new();
    let before = LIVE.load(Ordering::Relaxed);
    let blocks_before = BLOCKS.load(Ordering::Relaxed);
    let (mut decode_ns, mut insert_ns) = (0u128, 0u128);
    for body in &bodies {
        let t = Instant::now();
        let decoded = decoder.decode_protobuf(body, 1).expect("template decodes");
        let t2 = Instant::now();
        decode_ns += (t2 - t).as_nanos();
        for batch in decoded.batches {
            asm.insert(batch, 0, 0, &mut out);
        }
        insert_ns += t2.elapsed().as_nanos();
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    let n = asm.buffered_spans();
    assert!(out.is_empty(), "nothing finalised");
    println!("buffered spans:            {n}");
    println!("buffered traces:           {}", asm.buffered_traces());
    println!("heap bytes per span:       {:.1}", held as f64 / n as f64);
    println!(
        "  by capacity estimate:    {:.1}",
        asm.memory_bytes() as f64 / n as f64
    );
    println!(
        "heap blocks per trace:     {:.2}",
        (BLOCKS.load(Ordering::Relaxed) - blocks_before) as f64 / asm.buffered_traces() as f64
    );
    println!(
        "decode ns per span:        {:.0}",
        decode_ns as f64 / n as f64
    );
    println!(
        "assemble ns per span:      {:.0}",
        insert_ns as f64 / n as f64
    );
    let t = Instant::now();
    asm.drain(0, 0, &mut out);
    println!(
        "finalise ns per span:      {:.0}",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    // Finalised traces are what the store queue and the API's recent traces hold: the memory
    // budget's per-span cost for both rests on this (the assembler keeps only tombstones now).
    println!(
        "heap bytes per finalised span: {:.1}",
        (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64
    );
    println!(
        "findings:                  {}",
        out.iter().map(|f| f.outcome.findings.len()).sum::<usize>()
    );
    drop(out);
    drop(asm);

    // Finalised traces kept for their late spans: the memory behind `--max-kept-spans`, per
    // unit of weight (a span, or a skeleton's own bookkeeping). What the assembler holds once
    // every trace is finalised, kept and not: the difference is the skeletons.
    let finalised = |keep: bool, mode: Option<StageMode>| {
        let mut asm = Assembler::new(
            AssemblerConfig {
                idle_ms: 1,
                orphan_wait_ms: if keep { 60_000 } else { 0 },
                keep_ms: if keep { 60_000 } else { 0 },
                max_kept: if keep { usize::MAX / 2 } else { 0 },
                ..AssemblerConfig::offline()
            },
            Arc::new(Policy::default()),
            Arc::new(Instances::new([], u64::MAX / 2).with_stage_modes([], mode)),
        );
        let mut out = Vec::new();
        let before = LIVE.load(Ordering::Relaxed);
        for body in &bodies {
            for batch in decoder.decode_protobuf(body, 1).expect("decodes").batches {
                asm.insert(batch, 0, 0, &mut out);
            }
        }
        let t = Instant::now();
        asm.expire(10, 0, &mut out);
        let ns = t.elapsed().as_nanos();
        drop(out);
        let held = LIVE.load(Ordering::Relaxed) - before;
        (held, asm.kept(), ns)
    };
    let (plain, _, plain_ns) = finalised(false, None);
    let (kept, (traces, weight), kept_ns) = finalised(true, None);
    // Every service judged as if it captured the stage from requests only: every edge judged
    // again with the stage each service received.
    let (_, _, captured_ns) = finalised(false, Some(StageMode::Captured));
    println!("kept traces:               {traces}");
    println!(
        "heap bytes per kept span:  {:.1} (per unit of --max-kept-spans weight)",
        (kept - plain) as f64 / weight as f64
    );
    println!(
        "finalise ns per span:      {:.0} kept for late spans, {:.0} not",
        kept_ns as f64 / n as f64,
        plain_ns as f64 / n as f64
    );
    println!(
        "finalise ns per span:      {:.0} not kept, every service in captured mode",
        captured_ns as f64 / n as f64
    );
}

/// A request of about `bytes` bytes made of the smallest valid spans (ids only): the most decoded
/// memory per byte a sender can cause.
fn smallest_spans(bytes: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let n = bytes / 30;
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
