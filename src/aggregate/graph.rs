//! The service graph: services (and virtual nodes for uninstrumented callees) joined by the calls
//! between them, each edge carrying per-stage verdict counters. The store builds one from its
//! counters for any time window; the API shows it.
//!
//! Bounded like everything fed by senders: at most [`MAX_EDGES`] edges and [`MAX_STAGES_PER_EDGE`]
//! stage values per edge (the rest are folded into the `(other)` stage) and a few example trace ids
//! per verdict.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use petgraph::stable_graph::{NodeIndex, StableGraph};

use crate::model::{Sym, TraceId};
use crate::verify::{NodeKey, Verdict};

pub const MAX_EDGES: usize = 100_000;
pub const MAX_STAGES_PER_EDGE: usize = 32;
/// Destinations listed per messaging edge.
pub const MAX_DESTINATIONS_PER_EDGE: usize = 16;
pub const EXAMPLES_PER_VERDICT: usize = 5;

/// Counts for one request stage on one edge (or one node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Calls between services on this hop (traffic).
    pub calls: u64,
    /// Judged span edges counted on this hop, by verdict (`Verdict as usize`).
    pub verdicts: [u64; Verdict::COUNT],
    /// Findings that were first breaks, by verdict.
    pub first_breaks: [u64; Verdict::COUNT],
}

impl StageStats {
    fn add(&mut self, c: &Count) {
        match c.verdict {
            None => self.calls += c.count,
            Some(v) => {
                self.verdicts[v as usize] += c.count;
                self.first_breaks[v as usize] += c.first_breaks;
            }
        }
    }

    pub fn merge(&mut self, o: &StageStats) {
        self.calls += o.calls;
        for i in 0..Verdict::COUNT {
            self.verdicts[i] += o.verdicts[i];
            self.first_breaks[i] += o.first_breaks[i];
        }
    }

    /// Edges judged: every verdict but `unverifiable`, `unresolved` and `not_applicable`.
    pub fn judged(&self) -> u64 {
        Verdict::ALL
            .iter()
            .filter(|v| v.is_judged())
            .map(|&v| self.verdicts[v as usize])
            .sum()
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

/// A counter of one edge: calls (no verdict), or judged span edges of one verdict.
#[derive(Clone, Copy, Debug)]
pub struct Count {
    pub stage: Option<Sym>,
    /// The callee's instance stage; counted for calls only.
    pub instance: Option<Sym>,
    pub verdict: Option<Verdict>,
    pub count: u64,
    pub first_breaks: u64,
}

#[derive(Clone, Debug, Default)]
pub struct EdgeStats {
    pub by_stage: Vec<(Option<Sym>, StageStats)>,
    /// Calls by (request stage, callee instance stage): misrouting shows as off-diagonal counts.
    pub routing: Vec<(RoutingKey, u64)>,
    pub examples: Vec<(Verdict, VecDeque<TraceId>)>,
    /// Unix ms.
    pub last_seen_ms: u64,
    /// A messaging hop's (system, destination) pairs, most recently seen first (capped).
    pub destinations: Vec<(Option<Sym>, Sym)>,
}

impl EdgeStats {
    fn add(&mut self, c: &Count, other: Sym) {
        let stage = stage_slot(&self.by_stage, c.stage, other);
        match self.by_stage.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, st)) => st.add(c),
            None => {
                let mut st = StageStats::default();
                st.add(c);
                self.by_stage.push((stage, st));
            }
        }
        if c.verdict.is_none() {
            let key = (stage, c.instance);
            if let Some((_, n)) = self.routing.iter_mut().find(|(k, _)| *k == key) {
                *n += c.count;
            } else if self.routing.len() < MAX_STAGES_PER_EDGE * 4 {
                self.routing.push((key, c.count));
            }
        }
    }

    fn example(&mut self, v: Verdict, trace: TraceId) {
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

    /// The stats of an edge, or of the callee itself when there is no caller; `None` past
    /// [`MAX_EDGES`].
    fn stats(&mut self, caller: Option<NodeKey>, callee: NodeKey) -> Option<&mut EdgeStats> {
        let callee = self.node(callee);
        let Some(caller) = caller else {
            return Some(&mut self.graph[callee].own);
        };
        let caller = self.node(caller);
        let idx = match self.edges.get(&(caller, callee)) {
            Some(&i) => i,
            None if self.edges.len() >= MAX_EDGES => {
                self.dropped += 1;
                return None;
            }
            None => {
                let i = self.graph.add_edge(caller, callee, EdgeStats::default());
                self.edges.insert((caller, callee), i);
                i
            }
        };
        Some(&mut self.graph[idx])
    }

    /// Adds a counter. `other` is the values table's `(other)` symbol, for stages past the cap.
    pub fn count(&mut self, caller: Option<NodeKey>, callee: NodeKey, c: Count, other: Sym) {
        if let Some(st) = self.stats(caller, callee) {
            st.add(&c, other);
        }
    }

    /// Records a trace as an example of `verdict` on an edge.
    pub fn example(
        &mut self,
        caller: Option<NodeKey>,
        callee: NodeKey,
        v: Verdict,
        trace: TraceId,
    ) {
        if let Some(st) = self.stats(caller, callee) {
            st.example(v, trace);
        }
    }

    /// Records when an edge already in the graph was last seen (Unix ms).
    pub fn seen(&mut self, caller: NodeKey, callee: NodeKey, ms: u64) {
        let (Some(a), Some(b)) = (self.nodes.get(&caller), self.nodes.get(&callee)) else {
            return;
        };
        if let Some(&i) = self.edges.get(&(*a, *b)) {
            let st = &mut self.graph[i];
            st.last_seen_ms = st.last_seen_ms.max(ms);
        }
    }

    /// Records a destination of an edge already in the graph.
    pub fn destination(
        &mut self,
        caller: Option<NodeKey>,
        callee: NodeKey,
        system: Option<Sym>,
        destination: Sym,
    ) {
        if let Some(st) = self.stats(caller, callee)
            && st.destinations.len() < MAX_DESTINATIONS_PER_EDGE
            && !st.destinations.contains(&(system, destination))
        {
            st.destinations.push((system, destination));
        }
    }

    pub fn find_edge(&self, caller: NodeKey, callee: NodeKey) -> Option<&EdgeStats> {
        let (a, b) = (self.nodes.get(&caller)?, self.nodes.get(&callee)?);
        self.edges.get(&(*a, *b)).map(|&i| &self.graph[i])
    }
}
