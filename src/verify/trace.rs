//! Finalising one trace: the judgements that need all of its spans.
//!
//! Walks are iterative (explicit stacks), never recursive: a trace is untrusted input, and a chain a
//! hundred thousand spans deep must not overflow a worker's stack.

use petgraph::Direction::{Incoming, Outgoing};
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{Finding, Hop, NodeKey, Policy, Scope, Verdict, is_misrouted};
use crate::model::{SpanRecord, Sym, TraceId};

/// A trace's call graph while it is assembled: spans as nodes, parent->child edges carrying the
/// verdict judged when both ends arrived.
pub type TraceGraph = petgraph::Graph<SpanRecord, Verdict, petgraph::Directed, u32>;

/// One judged edge, as the service graph counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeOutcome {
    pub hop: Hop,
    /// The request stage the edge is counted under: the caller's, else the callee's (`appeared`).
    pub stage: Option<Sym>,
    /// The callee's deployment stage: with `stage` it makes the routing matrix.
    pub instance_stage: Option<Sym>,
    /// `None` for a call to an uninstrumented callee: traffic, but nothing to judge.
    pub verdict: Option<Verdict>,
    /// A call between services (traffic on the hop), as opposed to an edge inside one service.
    pub call: bool,
    pub first_break: bool,
}

/// Everything a finalised trace contributes downstream.
#[derive(Clone, Debug)]
pub struct TraceOutcome {
    pub trace_id: TraceId,
    pub spans: u32,
    /// The root span's request stage.
    pub stage: Option<Sym>,
    pub edges: Vec<EdgeOutcome>,
    pub findings: Vec<Finding>,
    /// Unix ms.
    pub finalised_at_ms: u64,
    /// The distinct (service, instance stage) pairs that served the trace.
    pub services: Vec<(Sym, Option<Sym>)>,
}

impl TraceOutcome {
    pub fn is_broken(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// What finalisation needs besides the trace.
pub struct FinaliseContext<'a> {
    pub policy: &'a Policy,
    /// Whether a (service, stage) instance is live: see [`crate::instances::Instances::is_live`].
    pub is_live: &'a dyn Fn(Sym, Sym) -> bool,
    pub observed_at_ms: u64,
    /// Finalised before it went idle (memory bound): a span whose parent has not arrived may only
    /// be early, so it is not reported as a broken trace.
    pub early: bool,
    /// The instances behind the load balancer were changing: a span whose parent never arrived
    /// may have had it sent to another instance, so it is `unverifiable`, not a broken trace.
    pub unsettled: bool,
}

/// Judges what needs the whole trace and returns the trace's outcome. Edge weights are updated in
/// place (`misrouted`), so a view of the graph taken afterwards shows the final verdicts.
pub fn finalise(trace_id: TraceId, g: &mut TraceGraph, cx: &FinaliseContext<'_>) -> TraceOutcome {
    judge_routing(g, cx);
    let n = g.node_count();

    // The finding each span carries, if any: its incoming edge's, or one of its own as a root.
    let mut node_finding: Vec<Option<(Verdict, Option<NodeIndex>)>> = vec![None; n];
    let mut roots = Vec::new();
    // Orphans that may have lost their parent to another instance: counted, not findings.
    let mut unverifiable = Vec::new();
    for v in g.node_indices() {
        match g.edges_directed(v, Incoming).next() {
            Some(e) => {
                if e.weight().is_finding() {
                    node_finding[v.index()] = Some((*e.weight(), Some(e.source())));
                }
            }
            None => {
                roots.push(v);
                match root_finding(&g[v], cx) {
                    Some(Verdict::Unverifiable) => unverifiable.push(v),
                    other => node_finding[v.index()] = other.map(|k| (k, None)),
                }
            }
        }
    }
    roots.sort_by_key(|&r| (g[r].parent.is_some(), g[r].start_ns));

    // Walk down from every root; a finding is a first break unless one lies above it.
    let mut first_break = vec![false; n];
    let mut visited = vec![false; n];
    let mut stack: Vec<(NodeIndex, bool)> = roots.iter().map(|&r| (r, false)).collect();
    walk(g, &mut stack, &node_finding, &mut visited, &mut first_break);
    // Spans still unvisited hang off a parent cycle (only hostile or corrupt input makes one).
    // Each climb ends on a cycle whose walk then visits every span climbed, so all climbs
    // together are linear in the trace, however many cycles it has.
    let mut climbed = vec![0u32; n];
    let mut round = 0;
    for v in g.node_indices() {
        if !visited[v.index()] {
            round += 1;
            let member = cycle_member(g, v, &mut climbed, round);
            let parent = g
                .edges_directed(member, Incoming)
                .next()
                .map(|e| e.source());
            node_finding[member.index()] = Some((Verdict::BrokenTrace, parent));
            stack.push((member, false));
            walk(g, &mut stack, &node_finding, &mut visited, &mut first_break);
        }
    }

    let mut edges = Vec::with_capacity(g.edge_count() + 1);
    for e in g.edge_references() {
        let (p, c) = (&g[e.source()], &g[e.target()]);
        let own = node_finding[e.target().index()].is_some_and(|(k, _)| k == *e.weight());
        edges.push(EdgeOutcome {
            hop: hop_of(g, e.source(), e.target()),
            stage: p.stage.or(c.stage),
            instance_stage: c.instance_stage,
            verdict: Some(*e.weight()),
            call: p.service != c.service,
            first_break: own && first_break[e.target().index()],
        });
    }
    // Calls to callees that export no spans: traffic on a virtual node.
    for v in g.node_indices() {
        let s = &g[v];
        if s.kind.is_outgoing()
            && let Some(peer) = s.peer
            && !g
                .neighbors_directed(v, Outgoing)
                .any(|c| g[c].service != s.service)
        {
            edges.push(EdgeOutcome {
                hop: Hop {
                    caller: Some(NodeKey::Service(s.service)),
                    callee: NodeKey::Virtual(peer),
                },
                stage: s.stage,
                instance_stage: None,
                verdict: None,
                call: true,
                first_break: false,
            });
        }
    }

    for &v in &unverifiable {
        let span = &g[v];
        edges.push(EdgeOutcome {
            hop: Hop {
                caller: None,
                callee: NodeKey::Service(span.service),
            },
            stage: span.stage,
            instance_stage: span.instance_stage,
            verdict: Some(Verdict::Unverifiable),
            call: false,
            first_break: false,
        });
    }

    let mut findings = Vec::new();
    for v in g.node_indices() {
        let Some((kind, parent)) = node_finding[v.index()] else {
            continue;
        };
        let callee = g[v];
        let caller = parent.map(|p| g[p]);
        let (scope, hop) = match caller {
            Some(p) => (
                Scope::of(&p, &callee),
                hop_of(g, parent.expect("caller has an index"), v),
            ),
            None if callee.parent.is_none() && callee.kind.is_outgoing() => (
                Scope::InProcess,
                Hop {
                    caller: Some(NodeKey::Service(callee.service)),
                    callee: call_target(g, v).unwrap_or(NodeKey::Service(callee.service)),
                },
            ),
            None => (
                Scope::CrossService,
                Hop {
                    caller: None,
                    callee: NodeKey::Service(callee.service),
                },
            ),
        };
        if parent.is_none() {
            // Root findings are not on any edge above; count them on their hop.
            edges.push(EdgeOutcome {
                hop,
                stage: callee.stage,
                instance_stage: callee.instance_stage,
                verdict: Some(kind),
                call: false,
                first_break: first_break[v.index()],
            });
        }
        findings.push(Finding {
            trace_id,
            kind,
            scope,
            first_break: first_break[v.index()],
            caller,
            callee,
            hop,
            observed_at_ms: cx.observed_at_ms,
        });
    }

    // Traces touch a handful of services: a linear scan beats hashing.
    let mut services: Vec<(Sym, Option<Sym>)> = Vec::new();
    for s in g.node_weights() {
        let pair = (s.service, s.instance_stage);
        if !services.contains(&pair) {
            services.push(pair);
        }
    }
    TraceOutcome {
        trace_id,
        spans: n as u32,
        stage: roots.first().and_then(|&r| g[r].stage),
        edges,
        findings,
        finalised_at_ms: cx.observed_at_ms,
        services,
    }
}

fn judge_routing(g: &mut TraceGraph, cx: &FinaliseContext<'_>) {
    for i in 0..g.edge_count() {
        let e = petgraph::graph::EdgeIndex::new(i);
        let (p, c) = g.edge_endpoints(e).expect("index below edge_count");
        if is_misrouted(&g[p], &g[c], g[e], cx.is_live) {
            g[e] = Verdict::Misrouted;
        }
    }
}

/// A span with no parent edge: an orphan, an outgoing call with no inbound context, or a root whose
/// stage is not an allowed value.
fn root_finding(span: &SpanRecord, cx: &FinaliseContext<'_>) -> Option<Verdict> {
    let policy = cx.policy;
    if span.parent.is_some() {
        return match (cx.early, cx.unsettled) {
            (true, _) => None,
            (false, true) => Some(Verdict::Unverifiable),
            (false, false) => Some(Verdict::BrokenTrace),
        };
    }
    if span.kind.is_outgoing() && !span.probe && !policy.exempt(span) {
        return Some(Verdict::BrokenTrace);
    }
    match span.stage {
        Some(s) if !policy.is_allowed(s) => Some(Verdict::InvalidValue),
        _ => None,
    }
}

fn walk(
    g: &TraceGraph,
    stack: &mut Vec<(NodeIndex, bool)>,
    node_finding: &[Option<(Verdict, Option<NodeIndex>)>],
    visited: &mut [bool],
    first_break: &mut [bool],
) {
    while let Some((v, broken_above)) = stack.pop() {
        if std::mem::replace(&mut visited[v.index()], true) {
            continue;
        }
        let here = node_finding[v.index()].is_some();
        first_break[v.index()] = here && !broken_above;
        for c in g.neighbors_directed(v, Outgoing) {
            if !visited[c.index()] {
                stack.push((c, broken_above || here));
            }
        }
    }
}

/// Follows parents up from `v` until a span repeats: that span is on the cycle. `climbed` marks the
/// spans seen in this `round` (one allocation for all the trace's cycles).
fn cycle_member(g: &TraceGraph, v: NodeIndex, climbed: &mut [u32], round: u32) -> NodeIndex {
    let mut cur = v;
    while std::mem::replace(&mut climbed[cur.index()], round) != round {
        match g.edges_directed(cur, Incoming).next() {
            Some(e) => cur = e.source(),
            None => return cur,
        }
    }
    cur
}

/// The service-graph edge that the span edge `p -> c` is counted on.
fn hop_of(g: &TraceGraph, p: NodeIndex, c: NodeIndex) -> Hop {
    let (ps, cs) = (&g[p], &g[c]);
    let caller = NodeKey::Service(ps.service);
    let callee = if ps.service != cs.service {
        NodeKey::Service(cs.service)
    } else if cs.kind.is_outgoing() {
        call_target(g, c).unwrap_or(caller)
    } else {
        caller
    };
    Hop {
        caller: Some(caller),
        callee,
    }
}

/// Whom an outgoing span called: the service of a child span in another service, else the peer
/// it names.
fn call_target(g: &TraceGraph, v: NodeIndex) -> Option<NodeKey> {
    let s = &g[v];
    g.neighbors_directed(v, Outgoing)
        .map(|c| g[c].service)
        .find(|&svc| svc != s.service)
        .map(NodeKey::Service)
        .or(s.peer.map(NodeKey::Virtual))
}
