use std::sync::Arc;

use super::*;
use crate::model::{SpanKind, SpanRecord};
use crate::testkit::Kit;
use crate::verify::Verdict;

fn assembler(max_spans: usize) -> Assembler {
    Assembler::new(
        AssemblerConfig {
            idle_ms: 100,
            max_spans,
            tombstones: 1000,
            tombstone_ms: 1000,
            sample_clean: 0.0,
        },
        Arc::new(Policy::default()),
        Arc::new(Instances::new([], 60_000)),
    )
}

fn batch(trace: u128, spans: &[SpanRecord]) -> SpanBatch {
    SpanBatch {
        spans: spans.iter().map(|s| (TraceId(trace), *s)).collect(),
        ..SpanBatch::default()
    }
}

/// gateway SERVER -> gateway CLIENT -> users SERVER, all canary unless `lose` drops the stage on the
/// users span.
fn chain(k: &Kit, lose: bool) -> Vec<SpanRecord> {
    let a = k.stage(k.span(1, None, "gateway", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "gateway", SpanKind::Client), "canary");
    let mut c = k.stage(k.span(3, Some(2), "users", SpanKind::Server), "canary");
    if lose {
        c.stage = None;
    }
    vec![a, b, c]
}

#[test]
fn any_arrival_order_gives_the_same_verdicts() {
    let k = Kit::new();
    let spans = chain(&k, true);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let mut asm = assembler(1000);
        let mut out = Vec::new();
        for &i in &order {
            asm.insert(batch(9, &[spans[i]]), 0, 0, &mut out);
        }
        asm.expire(100, 0, &mut out);
        assert_eq!(out.len(), 1, "{order:?}");
        let f = &out[0].outcome.findings;
        assert_eq!(f.len(), 1, "{order:?}");
        assert_eq!((f[0].kind, f[0].first_break), (Verdict::Missing, true));
        assert_eq!(out[0].reason, Reason::Idle);
        assert!(out[0].snapshot.is_some());
    }
}

#[test]
fn duplicates_are_counted_once() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = assembler(1000);
    let mut out = Vec::new();
    asm.insert(batch(9, &spans), 0, 0, &mut out);
    asm.insert(batch(9, &spans), 10, 0, &mut out);
    let mut changed = spans[1];
    changed.end_ns += 1;
    asm.insert(batch(9, &[changed]), 10, 0, &mut out);
    assert_eq!(asm.buffered_spans(), 3);
    let s = asm.stats();
    assert_eq!((s.spans_added, s.duplicates, s.conflicts), (3, 3, 1));
    asm.drain(20, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].outcome.edges.len(), 2);
    assert!(out[0].outcome.findings.is_empty());
}

#[test]
fn idle_traces_finalise_and_late_spans_are_counted_not_judged() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = assembler(1000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[..2]), 0, 0, &mut out);
    asm.insert(batch(2, &spans), 50, 0, &mut out);
    asm.expire(99, 0, &mut out);
    assert!(out.is_empty());
    asm.expire(100, 0, &mut out);
    assert_eq!(out.len(), 1, "only trace 1 is idle for 100 ms");
    assert_eq!(out[0].outcome.trace_id, TraceId(1));
    // The missing span of trace 1 arrives after finalisation: late, not a new broken trace.
    asm.insert(batch(1, &spans[2..]), 120, 0, &mut out);
    assert_eq!(asm.stats().late, 1);
    asm.expire(150, 0, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(asm.buffered_traces(), 0);
    assert_eq!(asm.buffered_spans(), 0);
}

#[test]
fn touching_a_trace_keeps_it_open() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = assembler(1000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[..1]), 0, 0, &mut out);
    asm.insert(batch(1, &spans[1..2]), 80, 0, &mut out);
    asm.expire(150, 0, &mut out);
    assert!(out.is_empty());
    asm.insert(batch(1, &spans[2..]), 170, 0, &mut out);
    asm.expire(269, 0, &mut out);
    assert!(out.is_empty());
    asm.expire(270, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].outcome.spans, 3);
}

#[test]
fn memory_bound_finalises_the_least_recently_active_first() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = assembler(7);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans), 0, 0, &mut out);
    asm.insert(batch(2, &spans), 1, 0, &mut out);
    asm.insert(batch(1, &spans[..1]), 2, 0, &mut out); // a duplicate does not add a span
    assert!(out.is_empty());
    asm.insert(batch(3, &spans), 3, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].reason, Reason::Early);
    assert_eq!(
        out[0].outcome.trace_id,
        TraceId(2),
        "trace 1 was touched after trace 2"
    );
    assert_eq!(asm.buffered_spans(), 6);
    assert_eq!(asm.stats().finalised_early, 1);
}

#[test]
fn wide_trace_with_children_first_links_every_edge() {
    let k = Kit::new();
    let mut spans: Vec<SpanRecord> = (2..=20_001u64)
        .map(|i| k.stage(k.span(i, Some(1), "fanout", SpanKind::Client), "canary"))
        .collect();
    spans.push(k.stage(k.span(1, None, "fanout", SpanKind::Server), "canary"));
    let mut asm = assembler(1_000_000);
    let mut out = Vec::new();
    for chunk in spans.chunks(1000) {
        asm.insert(batch(5, chunk), 0, 0, &mut out);
    }
    asm.drain(0, 0, &mut out);
    let o = &out[0].outcome;
    assert_eq!(o.spans, 20_001);
    assert_eq!(o.edges.len(), 20_000);
    assert!(o.edges.iter().all(|e| e.verdict == Some(Verdict::Ok)));
    assert!(o.findings.is_empty());
}

#[test]
fn live_snapshot_of_a_buffered_trace() {
    let k = Kit::new();
    let spans = chain(&k, true);
    let mut asm = assembler(1000);
    let mut out = Vec::new();
    asm.insert(batch(4, &spans), 0, 0, &mut out);
    let snap = asm.snapshot(TraceId(4)).unwrap();
    assert!(!snap.finalised);
    assert_eq!(snap.spans.len(), 3);
    assert_eq!(snap.edges.len(), 2);
    assert!(asm.snapshot(TraceId(5)).is_none());
}

#[test]
fn an_early_finalised_trace_does_not_call_a_late_parent_broken() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = assembler(2);
    let mut out = Vec::new();
    // Children first; the memory bound finalises the trace before its root arrives.
    asm.insert(batch(1, &spans[1..]), 0, 0, &mut out);
    asm.insert(batch(2, &spans[..1]), 1, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].reason, Reason::Early);
    assert!(
        out[0].outcome.findings.is_empty(),
        "{:?}",
        out[0].outcome.findings
    );
    assert_eq!(
        out[0].outcome.edges.len(),
        1,
        "the edge that was there is judged"
    );
    // The same orphan finalised when idle is a broken trace.
    let mut asm = assembler(10);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[1..]), 0, 0, &mut out);
    asm.expire(1000, 0, &mut out);
    assert_eq!(out[0].outcome.findings.len(), 1);
    assert_eq!(out[0].outcome.findings[0].kind, Verdict::BrokenTrace);
}

/// A probe's trace starts at its root CLIENT span, which is expected, and is always kept for the
/// probe to read (`sample_clean` is 0 here); any other root CLIENT span is a broken trace.
#[test]
fn a_probe_trace_is_kept_and_its_root_client_is_not_broken() {
    let k = Kit::new();
    let mut root = k.stage(
        k.span(10, None, "grayscope-probe", SpanKind::Client),
        "canary",
    );
    let mut spans = chain(&k, false);
    spans[0].parent = Some(root.span_id);
    for probe in [false, true] {
        root.probe = probe;
        let mut asm = assembler(1000);
        let mut out = Vec::new();
        let mut all = spans.clone();
        all.push(root);
        asm.insert(batch(1, &all), 0, 0, &mut out);
        asm.expire(100, 0, &mut out);
        let kinds: Vec<Verdict> = out[0].outcome.findings.iter().map(|f| f.kind).collect();
        if probe {
            assert!(kinds.is_empty(), "{kinds:?}");
            assert!(out[0].snapshot.is_some(), "a probe trace is kept");
        } else {
            assert_eq!(
                kinds,
                [Verdict::BrokenTrace],
                "a root CLIENT span elsewhere"
            );
        }
    }
}

#[test]
fn spans_with_many_links_count_against_the_memory_bound_for_what_they_hold() {
    use crate::model::{Link, MAX_LINKS, SpanExtra, SpanId};
    let k = Kit::new();
    let mut asm = assembler(100);
    let mut out = Vec::new();
    let links: Vec<Link> = (1..=MAX_LINKS as u64)
        .map(|i| Link {
            trace_id: TraceId(9),
            span_id: SpanId::new(i).unwrap(),
            sampled: true,
        })
        .collect();
    let extra = SpanExtra {
        links,
        ..SpanExtra::default()
    };
    assert!(extra.weight() > 30, "{}", extra.weight());
    for t in 1..=10u128 {
        let s = k.span(1, None, "billing", SpanKind::Consumer);
        let mut b = batch(t, &[s]);
        b.extras.push((TraceId(t), s.span_id, extra.clone()));
        asm.insert(b, 0, 0, &mut out);
    }
    // Ten spans, but each holds 128 links: most traces were finalised early to stay in bounds.
    assert!(out.len() >= 7, "{}", out.len());
    assert!(asm.stats().finalised_early >= 7);
    assert!(asm.buffered_spans() <= 3);
}
