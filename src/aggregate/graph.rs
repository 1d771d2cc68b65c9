//! The service graph: services (and virtual nodes for uninstrumented callees) joined by the calls
//! between them, each edge carrying per-stage verdict counters.
//!
//! Bounded like everything fed by senders: at most [`MAX_EDGES`] edges and [`MAX_STAGES_PER_EDGE`]
//! stage values per edge (the rest are folded into the `(other)` stage) and a few example trace ids
//! per verdict.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use petgraph::stable_graph::{NodeIndex, StableGraph};

use crate::model::{Sym, TraceId};
use crate::verify::{EdgeOutcome, NodeKey, Verdict};

pub const MAX_EDGES: usize = 100_000;
pub const MAX_STAGES_PER_EDGE: usize = 32;
pub const EXAMPLES_PER_VERDICT: usize = 5;

/// Counts for one request stage on one edge (or one node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Calls between services on this hop (traffic).
    pub calls: u64,
    /// Judged span edges counted on this hop, by verdict (`Verdict as usize`).
    pub verdicts: [u64; 9],
    /// Findings that were first breaks, by verdict.
    pub first_breaks: [u64; 9],
}

impl StageStats {
    fn add(&mut self, e: &EdgeOutcome) {
        if e.call {
            self.calls += 1;
        }
        if let Some(v) = e.verdict {
            self.verdicts[v as usize] += 1;
            if e.first_break {
                self.first_breaks[v as usize] += 1;
            }
        }
    }

    pub fn merge(&mut self, o: &StageStats) {
        self.calls += o.calls;
        for i in 0..9 {
            self.verdicts[i] += o.verdicts[i];
            self.first_breaks[i] += o.first_breaks[i];
        }
    }

    pub fn findings(&self) -> u64 {
        Verdict::ALL
            .iter()
            .filter(|v| v.is_finding())
            .map(|&v| self.first_breaks[v as usize])
            .sum()
    }
}

/// (request stage, callee instance stage).
pub type RoutingKey = (Option<Sym>, Option<Sym>);

#[derive(Clone, Debug, Default)]
pub struct EdgeStats {
    pub by_stage: Vec<(Option<Sym>, StageStats)>,
    /// Calls by (request stage, callee instance stage): misrouting shows as off-diagonal counts.
    pub routing: Vec<(RoutingKey, u64)>,
    pub examples: Vec<(Verdict, VecDeque<TraceId>)>,
    /// Unix ms.
    pub last_seen_ms: u64,
}

impl EdgeStats {
    fn add(&mut self, e: &EdgeOutcome, trace: TraceId, wall_ms: u64, other: Sym) {
        let stage = stage_slot(&self.by_stage, e.stage, other);
        match self.by_stage.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, st)) => st.add(e),
            None => {
                let mut st = StageStats::default();
                st.add(e);
                self.by_stage.push((stage, st));
            }
        }
        if e.call {
            let key = (stage, e.instance_stage);
            if let Some((_, n)) = self.routing.iter_mut().find(|(k, _)| *k == key) {
                *n += 1;
            } else if self.routing.len() < MAX_STAGES_PER_EDGE * 4 {
                self.routing.push((key, 1));
            }
        }
        if let Some(v) = e.verdict {
            let ex = match self.examples.iter_mut().position(|(x, _)| *x == v) {
                Some(i) => &mut self.examples[i].1,
                None => {
                    self.examples.push((v, VecDeque::new()));
                    &mut self.examples.last_mut().expect("just pushed").1
                }
            };
            if !ex.contains(&trace) {
                if ex.len() == EXAMPLES_PER_VERDICT {
                    ex.pop_front();
                }
                ex.push_back(trace);
            }
        }
        self.last_seen_ms = self.last_seen_ms.max(wall_ms);
    }

    /// Totals over every stage, or over one.
    pub fn stats(&self, stage: Option<Option<Sym>>) -> StageStats {
        let mut t = StageStats::default();
        for (s, st) in &self.by_stage {
            if stage.is_none_or(|want| want == *s) {
                t.merge(st);
            }
        }
        t
    }
}

fn stage_slot(slots: &[(Option<Sym>, StageStats)], stage: Option<Sym>, other: Sym) -> Option<Sym> {
    if slots.len() >= MAX_STAGES_PER_EDGE && !slots.iter().any(|(s, _)| *s == stage) {
        Some(other)
    } else {
        stage
    }
}

#[derive(Clone, Debug)]
pub struct ServiceNode {
    pub key: NodeKey,
    /// Findings with no caller (orphans, roots), counted on the service itself.
    pub own: EdgeStats,
}

#[derive(Default)]
pub struct ServiceGraph {
    pub graph: StableGraph<ServiceNode, EdgeStats>,
    nodes: HashMap<NodeKey, NodeIndex, RandomState>,
    edges: HashMap<(NodeIndex, NodeIndex), petgraph::stable_graph::EdgeIndex, RandomState>,
    /// Outcomes not counted because the graph was at [`MAX_EDGES`].
    pub dropped: u64,
}

impl ServiceGraph {
    fn node(&mut self, key: NodeKey) -> NodeIndex {
        *self.nodes.entry(key).or_insert_with(|| {
            self.graph.add_node(ServiceNode {
                key,
                own: EdgeStats::default(),
            })
        })
    }

    /// Counts one judged edge of a finalised trace. `other` is the values table's `(other)` symbol.
    pub fn add(&mut self, e: &EdgeOutcome, trace: TraceId, wall_ms: u64, other: Sym) {
        let callee = self.node(e.hop.callee);
        let Some(caller) = e.hop.caller else {
            self.graph[callee].own.add(e, trace, wall_ms, other);
            return;
        };
        let caller = self.node(caller);
        let idx = match self.edges.get(&(caller, callee)) {
            Some(&i) => i,
            None if self.edges.len() >= MAX_EDGES => {
                self.dropped += 1;
                return;
            }
            None => {
                let i = self.graph.add_edge(caller, callee, EdgeStats::default());
                self.edges.insert((caller, callee), i);
                i
            }
        };
        self.graph[idx].add(e, trace, wall_ms, other);
    }

    pub fn find_edge(&self, caller: NodeKey, callee: NodeKey) -> Option<&EdgeStats> {
        let (a, b) = (self.nodes.get(&caller)?, self.nodes.get(&callee)?);
        self.edges.get(&(*a, *b)).map(|&i| &self.graph[i])
    }
}
