//! The cost of joining messaging hops across traces: heap bytes per producer span kept for
//! `--link-wait` and per waiting consumer link (what `--max-link-producers` and `--max-link-waits`
//! cost), and the CPU time to join and judge a consumer span, with one link and with a batch of
//! ten.
//!
//! `cargo bench --bench join [-- PRODUCERS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use grayscope::assemble::{Finalised, Reason};
use grayscope::instances::Instances;
use grayscope::join::{JoinConfig, Joins, PRODUCER_BYTES, WAITING_LINK_BYTES};
use grayscope::model::{Link, Messaging, MessagingOp, SpanId, SpanKind, TraceId};
use grayscope::testkit::Kit;
use grayscope::verify::{ConsumerHalf, Policy, ProducerHalf, TraceOutcome};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn outcome(producers: Vec<ProducerHalf>, consumers: Vec<ConsumerHalf>) -> Vec<Finalised> {
    let mut o = TraceOutcome::joining(consumers, 0);
    o.producers = producers;
    vec![Finalised {
        outcome: o,
        reason: Reason::Idle,
        snapshot: None,
    }]
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let k = Kit::new();
    let m = Messaging {
        system: Some(k.v("kafka")),
        destination: Some(k.v("orders.placed")),
        group: Some(k.v("billing")),
        op: MessagingOp::Send,
    };
    let producer = |i: usize| ProducerHalf {
        trace_id: TraceId(i as u128 + 1),
        span: k.stage(k.span(2, Some(1), "orders", SpanKind::Producer), "canary"),
        messaging: m,
    };
    let link = |i: usize| Link {
        trace_id: TraceId(i as u128 + 1),
        span_id: SpanId::new(2).unwrap(),
        sampled: true,
    };
    let consumer = |t: usize, links: Vec<Link>| ConsumerHalf {
        trace_id: TraceId((1u128 << 64) + t as u128),
        span: k.stage(k.span(5, None, "billing", SpanKind::Consumer), "canary"),
        messaging: Messaging {
            op: MessagingOp::Process,
            ..m
        },
        links,
    };
    let joins = || {
        Joins::new(
            JoinConfig::new(Duration::from_secs(300), usize::MAX, usize::MAX),
            Arc::new(Policy::default()),
            Arc::new(Instances::new([], 60_000)),
        )
    };

    // Producers kept.
    let j = joins();
    let halves: Vec<ProducerHalf> = (0..n).map(producer).collect();
    let before = live();
    let mut batch = outcome(halves, vec![]);
    j.absorb(&mut batch, 0, 0);
    // The batch still holds the (emptied) list the halves came in, allocated before.
    let per_producer = (live() - before) as f64 / n as f64;
    drop(batch);
    println!(
        "producer spans kept: {n}, {per_producer:.1} heap bytes each (budgeted {PRODUCER_BYTES})"
    );

    // Consumers joined against them: one link each, then batches of ten.
    let singles: Vec<ConsumerHalf> = (0..n).map(|i| consumer(i, vec![link(i)])).collect();
    let t = Instant::now();
    let mut batch = outcome(vec![], singles);
    j.absorb(&mut batch, 1, 1);
    let single_ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(batch.len(), n + 1);
    drop(batch);
    let batches: Vec<ConsumerHalf> = (0..n / 10)
        .map(|b| consumer(n + b, (b * 10..b * 10 + 10).map(link).collect()))
        .collect();
    let t = Instant::now();
    let mut batch = outcome(vec![], batches);
    j.absorb(&mut batch, 2, 2);
    let batch_ns = t.elapsed().as_nanos() as f64 / (n / 10) as f64;
    drop(batch);
    println!(
        "join + judge per consumer span: {single_ns:.0} ns with one link, {batch_ns:.0} ns with a batch of ten"
    );

    // Consumers waiting for producers that are not there.
    let j = joins();
    let waiting: Vec<ConsumerHalf> = (0..n).map(|i| consumer(i, vec![link(i)])).collect();
    let mut batch = outcome(vec![], waiting);
    // The halves move into the join: count from before they were built into the batch.
    let before = live();
    j.absorb(&mut batch, 0, 0);
    let after = live();
    drop(batch);
    // Each consumer's links were allocated with it, before: they move into the join.
    let held = after - before + (n * std::mem::size_of::<Link>()) as isize;
    println!(
        "waiting consumer links: {}, {:.1} heap bytes each with their consumer span (budgeted {WAITING_LINK_BYTES})",
        j.stats().waiting_links,
        held as f64 / n as f64
    );
}
