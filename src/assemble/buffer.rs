//! One trace while it is assembled: its call graph, and the spans still waiting for their parent.
//!
//! Most traces are small, so both lookups start as linear scans over a few entries and switch to hash
//! maps only when a trace grows: a small trace then costs its records and graph links, not a hash
//! table per trace. A large or adversarial trace (200,000 spans, every child before its parent) still
//! costs O(1) per span.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use petgraph::graph::NodeIndex;

use super::kept::Skeleton;
use crate::model::{SpanExtra, SpanId, SpanRecord, TraceId};
use crate::verify::{Policy, TraceGraph, judge_edge};

/// Past this many spans (or waiting children), lookups use a hash map.
const SMALL: usize = 16;

#[allow(
    clippy::box_collection,
    reason = "boxed so that the many small traces, which have none, stay small"
)]
pub(super) struct TraceBuffer {
    pub trace_id: TraceId,
    pub graph: TraceGraph,
    /// Boxed: only large traces have one, and the buffer of every small trace stays small.
    index: Option<Box<HashMap<SpanId, NodeIndex, RandomState>>>,
    waiting: Waiting,
    /// Messaging attributes and links of the spans that have them (few do).
    pub extras: Vec<(NodeIndex, SpanExtra)>,
    /// What `extras` weigh, in spans ([`SpanExtra::weight`]).
    pub extra_weight: usize,
    pub last_touch_ms: u64,
    /// Matches this trace's newest entry in the assembler's idle queue.
    pub stamp: u32,
    /// Spans (nodes `0..settled`) that came from the skeleton of an earlier finalisation: the
    /// trace was reopened by a late span.
    pub settled: usize,
    /// Where the kept trace stood, when reopened.
    pub reopened: Option<KeptState>,
    /// Settled spans whose parent arrived since this was last read (orphans resolved late).
    pub resolved: u32,
}

/// Where a kept trace stands: kept in its skeleton, and carried over when a late span reopens it.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeptState {
    /// When the trace last received a span before its earlier finalisation.
    pub last_touch_ms: u64,
    /// Its orphans' wait, if it had any.
    pub waiting: u32,
    pub until_ms: u64,
    pub unsettled: bool,
    /// Unix ms of the trace's first finalisation.
    pub first_wall_ms: u64,
}

/// Children whose parent has not arrived yet, by parent id.
#[allow(
    clippy::box_collection,
    reason = "boxed so that the many small traces, which have none, stay small"
)]
enum Waiting {
    Few(Vec<(SpanId, NodeIndex)>),
    Many(Box<HashMap<SpanId, Vec<NodeIndex>, RandomState>>),
}

pub(super) enum Insert {
    Added,
    /// Same span id and same content: an exporter retry.
    Duplicate,
    /// Same span id, different content: the first one is kept.
    Conflict,
}

impl TraceBuffer {
    pub fn new(trace_id: TraceId, now_ms: u64, stamp: u32) -> Self {
        TraceBuffer {
            trace_id,
            graph: TraceGraph::default(),
            index: None,
            waiting: Waiting::Few(Vec::new()),
            extras: Vec::new(),
            extra_weight: 0,
            last_touch_ms: now_ms,
            stamp,
            settled: 0,
            reopened: None,
            resolved: 0,
        }
    }

    /// A finalised trace reopened by a late span: its kept spans are assembled again (every edge
    /// among them judged as before) and marked settled. They weigh against the memory bound as
    /// buffered spans do (`extra_weight`) without counting as spans received again.
    pub fn reopen(k: Skeleton, now_ms: u64, stamp: u32, policy: &Policy) -> Self {
        let mut b = TraceBuffer::new(k.trace_id, now_ms, stamp);
        b.reserve(k.spans.len());
        for span in k.spans.iter() {
            b.insert(*span, policy);
        }
        b.settled = b.len();
        b.extra_weight = b.settled;
        for (i, e) in k.extras {
            b.extra_weight += e.weight();
            b.extras.push((NodeIndex::new(i as usize), e));
        }
        b.resolved = 0;
        b.reopened = Some(KeptState {
            last_touch_ms: k.last_touch_ms,
            waiting: k.waiting,
            until_ms: k.until_ms,
            unsettled: k.unsettled,
            first_wall_ms: k.first_wall_ms,
        });
        b
    }

    /// The skeleton to keep once finalised: its spans in node order, and their extras.
    pub fn skeleton(self, state: KeptState) -> Skeleton {
        let (nodes, _) = self.graph.into_nodes_edges();
        Skeleton {
            trace_id: self.trace_id,
            spans: nodes.into_iter().map(|n| n.weight).collect(),
            extras: self
                .extras
                .into_iter()
                .map(|(v, e)| (v.index() as u32, e))
                .collect(),
            last_touch_ms: state.last_touch_ms,
            waiting: state.waiting,
            until_ms: state.until_ms,
            unsettled: state.unsettled,
            first_wall_ms: state.first_wall_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Heap bytes this trace holds, from capacities.
    pub fn heap_bytes(&self) -> usize {
        let (nodes, edges) = self.graph.capacity();
        let index = self.index.as_ref().map_or(0, |m| m.capacity() * 13 + 48);
        let waiting = match &self.waiting {
            Waiting::Few(v) => v.capacity() * std::mem::size_of::<(SpanId, NodeIndex)>(),
            Waiting::Many(m) => m.capacity() * 40 + 48,
        };
        let extras = self.extras.capacity() * std::mem::size_of::<(NodeIndex, SpanExtra)>()
            + self
                .extras
                .iter()
                .map(|(_, e)| e.links.capacity() * std::mem::size_of::<crate::model::Link>())
                .sum::<usize>();
        nodes * std::mem::size_of::<petgraph::graph::Node<SpanRecord, u32>>()
            + edges * std::mem::size_of::<petgraph::graph::Edge<crate::verify::Verdict, u32>>()
            + index
            + waiting
            + extras
    }

    /// Attaches the messaging attributes and links of the span just added; returns their
    /// weight ([`SpanExtra::weight`]).
    pub fn attach_last(&mut self, extra: SpanExtra) -> usize {
        let v = NodeIndex::new(self.graph.node_count() - 1);
        let w = extra.weight();
        self.extras.push((v, extra));
        self.extra_weight += w;
        w
    }

    /// Makes room for exactly `spans` more spans (and their parent edges). Capacity is most of a
    /// buffered span's cost, so it grows by what each batch brings, not by doubling.
    pub fn reserve(&mut self, spans: usize) {
        self.graph.reserve_exact_nodes(spans);
        self.graph.reserve_exact_edges(spans);
    }

    fn find(&self, id: SpanId) -> Option<NodeIndex> {
        match &self.index {
            Some(ix) => ix.get(&id).copied(),
            None => self
                .graph
                .node_indices()
                .find(|&n| self.graph[n].span_id == id),
        }
    }

    /// Adds a span and judges every edge it completes: to its parent if present, and to any
    /// children that arrived before it.
    pub fn insert(&mut self, span: SpanRecord, policy: &Policy) -> Insert {
        if let Some(existing) = self.find(span.span_id) {
            return if self.graph[existing] == span {
                Insert::Duplicate
            } else {
                Insert::Conflict
            };
        }
        let v = self.graph.add_node(span);
        match &mut self.index {
            Some(ix) => {
                ix.insert(span.span_id, v);
            }
            None if self.graph.node_count() > SMALL => {
                let g = &self.graph;
                self.index = Some(Box::new(
                    g.node_indices().map(|n| (g[n].span_id, n)).collect(),
                ));
            }
            None => {}
        }

        if let Some(pid) = span.parent {
            match self.find(pid) {
                Some(p) => {
                    let verdict = judge_edge(&self.graph[p], &span, policy);
                    self.graph.add_edge(p, v, verdict);
                }
                None => self.wait(pid, v),
            }
        }
        for c in self.take_waiting(span.span_id) {
            if c.index() < self.settled {
                self.resolved += 1;
            }
            let verdict = judge_edge(&span, &self.graph[c], policy);
            self.graph.add_edge(v, c, verdict);
        }
        Insert::Added
    }

    fn wait(&mut self, parent: SpanId, child: NodeIndex) {
        match &mut self.waiting {
            Waiting::Few(v) if v.len() < SMALL => v.push((parent, child)),
            Waiting::Few(v) => {
                let mut m: HashMap<SpanId, Vec<NodeIndex>, RandomState> = HashMap::default();
                for (p, c) in v.drain(..).chain(std::iter::once((parent, child))) {
                    m.entry(p).or_default().push(c);
                }
                self.waiting = Waiting::Many(Box::new(m));
            }
            Waiting::Many(m) => m.entry(parent).or_default().push(child),
        }
    }

    fn take_waiting(&mut self, parent: SpanId) -> Vec<NodeIndex> {
        match &mut self.waiting {
            Waiting::Few(v) => {
                if !v.iter().any(|(p, _)| *p == parent) {
                    return Vec::new();
                }
                let mut out = Vec::new();
                v.retain(|&(p, c)| {
                    if p == parent {
                        out.push(c);
                        false
                    } else {
                        true
                    }
                });
                if v.is_empty() {
                    *v = Vec::new();
                }
                out
            }
            Waiting::Many(m) => m.remove(&parent).unwrap_or_default(),
        }
    }
}
