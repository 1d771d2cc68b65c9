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
            orphan_wait_ms: 0,
            keep_ms: 0,
            max_kept: 0,
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
/// probe to read (`sample_clean` is 0 here); a root CLIENT span without a stage of a service that
/// receives calls is a broken trace.
#[test]
fn a_probe_trace_is_kept_and_its_root_client_is_not_broken() {
    let k = Kit::new();
    let mut root = k.span(10, None, "grayscope-probe", SpanKind::Client);
    let mut spans = chain(&k, false);
    spans[0].parent = Some(root.span_id);
    for probe in [false, true] {
        root.flags = root.flags.with(crate::model::SpanFlags::PROBE, probe);
        // A probe tags its requests; a call that lost its context carries no stage.
        root.stage = probe.then(|| k.v("canary"));
        let instances = Arc::new(Instances::new([], 60_000));
        instances.receives(k.svc("grayscope-probe"), 0);
        let mut asm = Assembler::new(assembler(1000).cfg, Arc::new(Policy::default()), instances);
        let mut out = Vec::new();
        let mut all = spans.clone();
        all.push(root);
        asm.insert(batch(1, &all), 0, 0, &mut out);
        asm.expire(100, 0, &mut out);
        let kinds: Vec<Verdict> = out[0]
            .outcome
            .findings
            .iter()
            .filter(|f| f.first_break)
            .map(|f| f.kind)
            .collect();
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

/// An assembler that keeps finalised traces for late spans: idle 100 ms, orphans wait 1 s, at
/// most `max_kept` in skeleton weight.
fn waiting_assembler(max_kept: usize) -> Assembler {
    Assembler::new(
        AssemblerConfig {
            orphan_wait_ms: 1000,
            keep_ms: 300,
            max_kept,
            ..assembler(1000).cfg
        },
        Arc::new(Policy::default()),
        Arc::new(Instances::new([], 60_000)),
    )
}

fn kinds(f: &[Finalised]) -> Vec<(Verdict, bool)> {
    f.iter()
        .flat_map(|f| &f.outcome.findings)
        .map(|x| (x.kind, x.first_break))
        .collect()
}

#[test]
fn a_late_parent_is_judged_when_it_arrives_and_its_child_never_called_broken() {
    let k = Kit::new();
    // The child arrives first and loses the stage; its parents come after the trace went idle.
    let spans = chain(&k, true);
    let mut asm = waiting_assembler(10_000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[2..]), 0, 0, &mut out);
    asm.expire(100, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].outcome.findings.is_empty(), "the orphan waits");
    assert_eq!(out[0].outcome.orphans.waiting, 1);
    assert!(
        !out[0].outcome.joined,
        "the first finalisation is the trace"
    );
    assert_eq!(asm.orphans_waiting(), 1);
    let snap = asm
        .snapshot(TraceId(1))
        .expect("kept while its orphan waits");
    assert_eq!((snap.finalised, snap.waiting), (false, 1));

    // 600 ms later (within the wait) the parents arrive: the trace reopens and the edge they
    // complete is judged once the trace is idle again.
    asm.insert(batch(1, &spans[..2]), 700, 0, &mut out);
    assert_eq!(
        asm.buffered_spans(),
        2,
        "the kept span is not counted again"
    );
    asm.expire(799, 0, &mut out);
    assert_eq!(out.len(), 1);
    asm.expire(800, 0, &mut out);
    assert_eq!(out.len(), 2);
    let late = &out[1].outcome;
    assert!(late.joined, "a part of a trace counted before");
    assert_eq!(late.spans, 2);
    assert_eq!(kinds(&out), vec![(Verdict::Missing, true)]);
    assert_eq!(late.edges.len(), 2, "both new edges, nothing counted twice");
    assert_eq!(late.orphans.resolved, 1);
    assert_eq!(asm.take_lateness(), vec![700]);
    assert_eq!(asm.orphans_waiting(), 0);
    let snap = out[1]
        .snapshot
        .as_ref()
        .expect("a trace with a finding is kept");
    assert_eq!((snap.spans.len(), snap.edges.len()), (3, 2));
    let s = asm.stats();
    assert_eq!((s.spans_idle, s.spans_late, s.orphans_resolved), (1, 2, 1));
    assert_eq!(s.finalised_idle, 1, "one trace");

    // Its wait never ends in a broken trace.
    asm.expire(5_000, 0, &mut out);
    assert_eq!(kinds(&out), vec![(Verdict::Missing, true)]);
    assert_eq!(asm.stats().orphans_expired_wait, 0);
}

#[test]
fn a_parent_that_never_comes_is_a_broken_trace_once_the_wait_is_over() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = waiting_assembler(10_000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[2..]), 0, 0, &mut out);
    asm.expire(100, 0, &mut out);
    assert!(kinds(&out).is_empty());
    asm.expire(1099, 0, &mut out);
    assert!(kinds(&out).is_empty(), "still waiting");
    asm.expire(1100, 0, &mut out);
    assert_eq!(kinds(&out), vec![(Verdict::BrokenTrace, true)]);
    let last = out.last().unwrap();
    assert!(last.outcome.joined);
    assert_eq!(
        last.outcome.spans, 0,
        "its span was counted when it arrived"
    );
    assert_eq!(
        last.outcome.edges.len(),
        1,
        "the finding is counted on its hop"
    );
    assert!(last.snapshot.is_some());
    assert_eq!(asm.stats().orphans_expired_wait, 1);
    assert_eq!(asm.orphans_waiting(), 0);
    assert_eq!(asm.kept(), (0, 0));
}

#[test]
fn a_late_child_is_judged_against_its_parent() {
    let k = Kit::new();
    let spans = chain(&k, true);
    let mut asm = waiting_assembler(10_000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[..2]), 0, 0, &mut out);
    asm.expire(100, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert!(kinds(&out).is_empty());
    // The child comes after its trace was finalised (an exporter's retry): it lost the stage.
    asm.insert(batch(1, &spans[2..]), 250, 0, &mut out);
    assert_eq!(asm.stats().late, 0, "judged, not merely counted");
    asm.expire(350, 0, &mut out);
    assert_eq!(kinds(&out), vec![(Verdict::Missing, true)]);
    let f = &out[1].outcome.findings[0];
    assert_eq!(f.caller.map(|c| c.span_id), Some(spans[1].span_id));
    // A retry of spans already kept is a duplicate, and reopens nothing new.
    asm.insert(batch(1, &spans), 400, 0, &mut out);
    assert_eq!(asm.stats().duplicates, 3);
    asm.expire(500, 0, &mut out);
    assert_eq!(kinds(&out).len(), 1);
    // Once the trace is no longer kept, a late span is counted.
    asm.expire(2_000, 0, &mut out);
    let mut other = spans[2];
    other.span_id = crate::model::SpanId::new(99).unwrap();
    asm.insert(batch(1, &[other]), 2_100, 0, &mut out);
    assert_eq!(
        asm.stats().late,
        0,
        "the trace id is remembered for less than it is kept"
    );
}

#[test]
fn kept_traces_are_bounded_and_waits_ended_early_are_counted_not_judged() {
    let k = Kit::new();
    let spans = chain(&k, false);
    // Each orphaned trace's skeleton weighs 2 (one span, one for itself).
    let mut asm = waiting_assembler(16);
    let mut out = Vec::new();
    for t in 1..=10 {
        asm.insert(batch(t, &spans[2..]), t as u64, 0, &mut out);
    }
    // A trace heavier than an eighth of the bound is not kept.
    asm.insert(batch(11, &spans), 11, 0, &mut out);
    let mut orphans = spans.clone();
    orphans[0].parent = crate::model::SpanId::new(77);
    asm.insert(batch(12, &orphans), 12, 0, &mut out);
    asm.expire(200, 0, &mut out);
    assert_eq!(asm.kept(), (8, 16));
    let s = asm.stats();
    assert_eq!((s.orphans_expired_memory, s.kept_evicted), (3, 4));
    asm.expire(10_000, 0, &mut out);
    assert_eq!(kinds(&out), vec![(Verdict::BrokenTrace, true); 8]);
    assert_eq!(asm.stats().orphans_expired_wait, 8);
}

#[test]
fn shutdown_counts_waiting_orphans_and_a_flush_judges_them() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = waiting_assembler(10_000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[2..]), 0, 0, &mut out);
    asm.insert(batch(2, &spans[2..]), 0, 0, &mut out);
    asm.expire(100, 0, &mut out);
    asm.insert(batch(3, &spans[2..]), 150, 0, &mut out);
    asm.drain(160, 0, &mut out);
    assert_eq!(kinds(&out), vec![(Verdict::BrokenTrace, true); 3]);
    assert_eq!(asm.stats().orphans_expired_flush, 2);

    let mut asm = waiting_assembler(10_000);
    let mut out = Vec::new();
    asm.insert(batch(1, &spans[2..]), 0, 0, &mut out);
    asm.expire(100, 0, &mut out);
    asm.insert(batch(2, &spans[2..]), 150, 0, &mut out);
    asm.stop(160, 0, &mut out);
    assert!(kinds(&out).is_empty());
    assert_eq!(asm.stats().orphans_expired_shutdown, 2);
    assert_eq!(asm.kept(), (0, 0));
}

#[test]
fn an_orphan_that_arrived_long_after_it_ended_is_unverifiable_not_broken() {
    let k = Kit::new();
    let spans = chain(&k, false);
    let mut asm = waiting_assembler(10_000);
    let mut out = Vec::new();
    // Wall clock: an hour after one span ended (by its own clock); the other one ended just now,
    // the idle time and its wait (1.1 s) before it.
    let wall_ms = 3_600_000;
    let mut fresh = spans[2];
    fresh.end_ns = (wall_ms - 1_050) * 1_000_000;
    asm.insert(batch(1, &spans[2..]), 0, wall_ms, &mut out);
    asm.insert(batch(2, &[fresh]), 0, wall_ms, &mut out);
    asm.expire(100, wall_ms, &mut out);
    asm.expire(1_100, wall_ms + 1_000, &mut out);
    let verdicts: Vec<_> = out
        .iter()
        .flat_map(|f| &f.outcome.edges)
        .filter_map(|e| e.verdict)
        .collect();
    assert_eq!(kinds(&out), vec![(Verdict::BrokenTrace, true)]);
    assert_eq!(
        out.iter()
            .flat_map(|f| &f.outcome.findings)
            .next()
            .unwrap()
            .trace_id,
        TraceId(2)
    );
    assert!(verdicts.contains(&Verdict::Unverifiable), "{verdicts:?}");
}
