//! A copy of one trace for readers (the trace API), detached from the worker that owns it.

use petgraph::visit::EdgeRef;

use crate::model::{SpanRecord, TraceId};
use crate::verify::{Finding, TraceGraph, Verdict};

#[derive(Clone, Debug)]
pub struct TraceSnapshot {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRecord>,
    /// (parent index, child index, verdict) into `spans`.
    pub edges: Vec<(u32, u32, Verdict)>,
    pub findings: Vec<Finding>,
    /// Finalised: verdicts and findings are final. Otherwise the trace is still being assembled and
    /// routing, orphans and first breaks are not judged yet.
    pub finalised: bool,
    /// Spans whose parent has not arrived, waiting for it (`--orphan-wait`): until then the
    /// trace is not final, whatever `finalised` says of the rest.
    pub waiting: u32,
}

impl TraceSnapshot {
    pub fn of(trace_id: TraceId, g: &TraceGraph, findings: Vec<Finding>, finalised: bool) -> Self {
        TraceSnapshot {
            trace_id,
            spans: g.node_weights().copied().collect(),
            edges: g
                .edge_references()
                .map(|e| {
                    (
                        e.source().index() as u32,
                        e.target().index() as u32,
                        *e.weight(),
                    )
                })
                .collect(),
            findings,
            finalised,
            waiting: 0,
        }
    }
}
