use std::sync::Arc;

use super::*;
use crate::assemble::{Assembler, AssemblerConfig};
use crate::instances::Instances;
use crate::model::TraceId;
use crate::model::{SpanBatch, SpanKind, SpanRecord};
use crate::testkit::Kit;
use crate::verify::Policy;

/// Finalises each trace (trace id -> spans) through a real assembler into one aggregate.
fn aggregate(k: &Kit, traces: &[(u128, Vec<SpanRecord>)], cfg: AggregateConfig) -> Aggregate {
    let agg = Aggregate::new(k.sym.clone(), cfg);
    let mut asm = Assembler::new(
        AssemblerConfig {
            idle_ms: 10,
            max_spans: 1_000_000,
            tombstones: 0,
            tombstone_ms: 0,
            sample_clean: 0.0,
            orphan_wait_ms: 0,
            keep_ms: 0,
            max_kept: 0,
        },
        Arc::new(Policy::default()),
        Arc::new(Instances::new([], 1)),
    );
    let mut out = Vec::new();
    for (t, spans) in traces {
        let batch = SpanBatch {
            spans: spans.iter().map(|s| (TraceId(*t), *s)).collect(),
            ..SpanBatch::default()
        };
        asm.insert(batch, 0, 1_000, &mut out);
    }
    asm.drain(0, 1_000, &mut out);
    agg.absorb(&out);
    agg
}

fn call(k: &Kit, stage_on_callee: Option<&str>) -> Vec<SpanRecord> {
    let a = k.stage(k.span(1, None, "users", SpanKind::Server), "canary");
    let b = k.stage(k.span(2, Some(1), "users", SpanKind::Client), "canary");
    let mut c = k.instance(k.span(3, Some(2), "orders", SpanKind::Server), "canary");
    if let Some(s) = stage_on_callee {
        c = k.stage(c, s);
    }
    vec![a, b, c]
}

#[test]
fn totals_count_traces_by_root_stage_and_breakage() {
    let k = Kit::new();
    let traces = vec![
        (1, call(&k, Some("canary"))),
        (2, call(&k, Some("canary"))),
        (3, call(&k, None)),
        (4, call(&k, Some("stable"))),
    ];
    let agg = aggregate(&k, &traces, AggregateConfig::default());
    let st = agg.lock();
    assert_eq!(st.totals.traces.get(&(Some(k.v("canary")), true)), Some(&2));
    assert_eq!(
        st.totals.traces.get(&(Some(k.v("canary")), false)),
        Some(&2)
    );
    assert_eq!(st.totals.spans, 12);
}

#[test]
fn kept_traces_are_bounded_by_spans() {
    let k = Kit::new();
    let traces: Vec<_> = (1..=5u128).map(|t| (t, call(&k, None))).collect();
    let cfg = AggregateConfig {
        max_trace_spans: 6,
        ..AggregateConfig::default()
    };
    let agg = aggregate(&k, &traces, cfg);
    // 6 spans = the two newest broken traces.
    assert!(agg.trace(TraceId(5)).is_some());
    assert!(agg.trace(TraceId(4)).is_some());
    assert!(agg.trace(TraceId(3)).is_none());
    assert_eq!(agg.lock().totals.findings, 5);
}
