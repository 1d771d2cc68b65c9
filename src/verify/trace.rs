//! Finalising one trace: the judgements that need all of its spans.
//!
//! Walks are iterative (explicit stacks), never recursive: a trace is untrusted input, and a chain a
//! hundred thousand spans deep must not overflow a worker's stack.

use petgraph::Direction::{Incoming, Outgoing};
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::messaging::{self, ConsumerHalf, ProducerHalf};
use super::{Finding, Hop, NodeKey, Policy, Scope, Verdict, is_misrouted, judge_edge};
use crate::model::{Messaging, SpanExtra, SpanRecord, StageMode, StageSource, Sym, TraceId};

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
    /// A messaging hop's (system, destination), when the destination is known.
    pub destination: Option<(Option<Sym>, Sym)>,
}

impl EdgeOutcome {
    /// Counted on `span`'s service itself, with no caller: a trace it started (`verdict` none, a
    /// call) or a verdict on no edge.
    fn on_service(span: &SpanRecord, verdict: Option<Verdict>) -> Self {
        EdgeOutcome {
            hop: Hop {
                caller: None,
                callee: NodeKey::Service(span.service),
            },
            stage: span.stage,
            instance_stage: span.instance_stage,
            verdict,
            call: verdict.is_none(),
            first_break: false,
            destination: None,
        }
    }
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
    /// A part of a trace counted before, not a trace of its own: edges judged across traces
    /// (messaging links), or what late spans added to a trace already finalised.
    pub joined: bool,
    /// The trace's message creation contexts, for consumers in other traces to link to.
    pub producers: Vec<ProducerHalf>,
    /// The trace's consumer spans whose producers are found through links.
    pub consumers: Vec<ConsumerHalf>,
    /// Spans whose parent had not arrived, left waiting for it ([`Orphans::Wait`]).
    pub orphans: OrphanCounts,
    /// Findings of spans judged before (a trace reopened by late spans), for the trace's
    /// snapshot: reported then, not again.
    pub earlier: Vec<Finding>,
}

/// What became of the spans whose parent had not arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrphanCounts {
    /// Left waiting for their parent, in all.
    pub waiting: u32,
    /// Of those, spans that arrived since the trace was last finalised.
    pub new_waiting: u32,
    /// Spans of an earlier finalisation whose parent has now arrived: judged now.
    pub resolved: u32,
}

impl TraceOutcome {
    pub fn is_broken(&self) -> bool {
        !self.findings.is_empty()
    }

    /// Consumer spans to be joined to their producers, outside any trace's finalisation.
    pub fn joining(consumers: Vec<ConsumerHalf>, at_ms: u64) -> Self {
        TraceOutcome {
            trace_id: consumers.first().map_or(TraceId(0), |c| c.trace_id),
            spans: 0,
            stage: None,
            edges: Vec::new(),
            findings: Vec::new(),
            finalised_at_ms: at_ms,
            services: Vec::new(),
            joined: true,
            producers: Vec::new(),
            consumers,
            orphans: OrphanCounts::default(),
            earlier: Vec::new(),
        }
    }
}

/// What finalisation does with a span whose parent has not arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphans {
    /// Judge it now: `broken_trace` (or `unverifiable`). For whole files, and for a span whose
    /// wait for its parent is over.
    Judge,
    /// Leave it unjudged and count it as waiting: its parent may still arrive (slow requests,
    /// exporter batching and retries), and the trace is kept for it.
    Wait,
    /// Leave it unjudged and uncounted: the trace was finalised early and is not kept.
    Ignore,
}

/// What finalisation needs besides the trace.
pub struct FinaliseContext<'a> {
    pub policy: &'a Policy,
    /// Whether a (service, stage) instance is live: see [`crate::instances::Instances::is_live`].
    pub is_live: &'a dyn Fn(Sym, Sym) -> bool,
    /// Whether a service receives calls: see [`crate::instances::Instances::is_receiver`].
    pub is_receiver: &'a dyn Fn(Sym) -> bool,
    /// Which spans of a service carry the stage: see
    /// [`crate::instances::Instances::stage_mode`]. `None` while no service can be in
    /// [`StageMode::Captured`] (none was configured or seen so): every span carries it, and
    /// finalisation skips asking per service.
    pub stage_mode: Option<&'a dyn Fn(Sym) -> StageMode>,
    pub observed_at_ms: u64,
    /// What to do with spans whose parent has not arrived.
    pub orphans: Orphans,
    /// Spans `0..settled` were judged when the trace was finalised before (a trace reopened by
    /// late spans): what they contributed was counted then. Only what the later spans add, and
    /// the verdicts of earlier spans whose parent has now arrived, are new.
    pub settled: usize,
    /// The instances behind the load balancer were changing: a span whose parent never arrived
    /// may have had it sent to another instance, so it is `unverifiable`, not a broken trace.
    pub unsettled: bool,
    /// Unix ns: a span whose parent never arrived that had ended before this (by its own clock)
    /// is `unverifiable`, not a broken trace. It reached grayscope long after it ended (a very
    /// late retry, a replayed backlog), so its parent most likely came and went before it. 0:
    /// none.
    pub stale_before_ns: u64,
}

/// The messaging attributes and links of the spans that have them, by node.
pub type Extras = [(NodeIndex, SpanExtra)];

/// Messaging attributes per node, for the few nodes that have any.
struct MessagingOf {
    by_node: Vec<Option<u32>>,
}

impl MessagingOf {
    fn new(g: &TraceGraph, extras: &Extras) -> Self {
        let mut by_node = Vec::new();
        if !extras.is_empty() {
            by_node = vec![None; g.node_count()];
            for (i, (v, _)) in extras.iter().enumerate() {
                if let Some(slot) = by_node.get_mut(v.index()) {
                    *slot = Some(i as u32);
                }
            }
        }
        MessagingOf { by_node }
    }

    fn extra<'e>(&self, extras: &'e Extras, v: NodeIndex) -> Option<&'e SpanExtra> {
        let i = (*self.by_node.get(v.index())?)?;
        Some(&extras[i as usize].1)
    }

    fn get(&self, extras: &Extras, v: NodeIndex) -> Messaging {
        self.extra(extras, v)
            .map(|e| e.messaging)
            .unwrap_or_default()
    }
}

/// Whether `p -> c` is a message from its producer to a consumer that handled it.
fn is_message_edge(
    g: &TraceGraph,
    m: &MessagingOf,
    extras: &Extras,
    p: NodeIndex,
    c: NodeIndex,
) -> bool {
    messaging::is_creation(&g[p], &m.get(extras, p))
        && messaging::is_consumer(&g[c], &m.get(extras, c))
}

/// Judges what needs the whole trace and returns the trace's outcome. Edge weights are updated in
/// place (`misrouted`), so a view of the graph taken afterwards shows the final verdicts.
pub fn finalise(
    trace_id: TraceId,
    g: &mut TraceGraph,
    extras: &Extras,
    cx: &FinaliseContext<'_>,
) -> TraceOutcome {
    let msg = MessagingOf::new(g, extras);
    judge_captured(g, cx);
    judge_routing(g, &msg, extras, cx);
    let n = g.node_count();
    let settled = cx.settled.min(n);
    let is_new = |v: NodeIndex| v.index() >= settled;
    let mut consumers = Vec::new();
    let mut orphans = OrphanCounts::default();
    // Root CLIENT/PRODUCER spans that started their trace (a browser, an app, a job).
    let mut starters = Vec::new();

    // The finding each span carries, if any: its incoming edge's, or one of its own as a root.
    let mut node_finding: Vec<Option<(Verdict, Option<NodeIndex>)>> = vec![None; n];
    let mut roots = Vec::new();
    // Orphans that may have lost their parent to another instance: counted, not findings.
    let mut unverifiable = Vec::new();
    for v in g.node_indices() {
        match g.edges_directed(v, Incoming).next() {
            Some(e) => {
                if !is_new(v) && is_new(e.source()) {
                    orphans.resolved += 1;
                }
                if e.weight().is_finding() {
                    node_finding[v.index()] = Some((*e.weight(), Some(e.source())));
                }
            }
            None => {
                roots.push(v);
                let span = &g[v];
                let extra = msg.extra(extras, v);
                let m = extra.map(|e| e.messaging).unwrap_or_default();
                if span.parent.is_some()
                    && let Some(half) = ConsumerHalf::apart_from_parent(trace_id, span, extra)
                {
                    if is_new(v) {
                        consumers.push(half);
                    }
                    continue;
                }
                if span.parent.is_some() && cx.orphans == Orphans::Wait {
                    orphans.waiting += 1;
                    orphans.new_waiting += u32::from(is_new(v));
                    continue;
                }
                match root_finding(span, &m, extra.is_some_and(|e| !e.links.is_empty()), cx) {
                    Some(Verdict::Unverifiable) => unverifiable.push(v),
                    other => node_finding[v.index()] = other.map(|k| (k, None)),
                }
                if is_new(v)
                    && span.parent.is_none()
                    && span.kind.is_outgoing()
                    && node_finding[v.index()].is_none_or(|(k, _)| k != Verdict::BrokenTrace)
                    && !messaging::is_consumer(span, &m)
                {
                    starters.push(v);
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
        if !is_new(e.source()) && !is_new(e.target()) {
            continue;
        }
        let (p, c) = (&g[e.source()], &g[e.target()]);
        let own = node_finding[e.target().index()].is_some_and(|(k, _)| k == *e.weight());
        edges.push(EdgeOutcome {
            hop: hop_of(g, e.source(), e.target()),
            stage: p.stage.or(c.stage),
            instance_stage: c.instance_stage,
            verdict: Some(*e.weight()),
            call: p.service != c.service
                || is_message_edge(g, &msg, extras, e.source(), e.target()),
            first_break: own && first_break[e.target().index()],
            destination: is_message_edge(g, &msg, extras, e.source(), e.target())
                .then(|| {
                    messaging::merged(
                        &msg.get(extras, e.target()),
                        Some(&msg.get(extras, e.source())),
                    )
                    .place()
                })
                .flatten(),
        });
    }
    // Calls to callees that export no spans: traffic on a virtual node.
    for v in g.node_indices().skip(settled) {
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
                destination: None,
            });
        }
    }

    // A trace started by a client: counted on the starter as an entry point of the graph.
    edges.extend(
        starters
            .iter()
            .map(|&v| EdgeOutcome::on_service(&g[v], None)),
    );
    edges.extend(
        unverifiable
            .iter()
            .map(|&v| EdgeOutcome::on_service(&g[v], Some(Verdict::Unverifiable))),
    );

    let mut findings = Vec::new();
    let mut earlier = Vec::new();
    for v in g.node_indices() {
        let Some((kind, parent)) = node_finding[v.index()] else {
            continue;
        };
        // Reported when the trace was finalised before, unless its span or the edge above it is
        // new, or it waited for a parent that never came.
        let fresh = match parent {
            _ if is_new(v) => true,
            Some(p) => is_new(p),
            None => g[v].parent.is_some(),
        };
        let callee = g[v];
        let caller = parent.map(|p| g[p]);
        let mut on_message = None;
        let (scope, hop) = match (caller, parent) {
            (Some(_), Some(pi)) if is_message_edge(g, &msg, extras, pi, v) => {
                on_message = Some(messaging::merged(
                    &msg.get(extras, v),
                    Some(&msg.get(extras, pi)),
                ));
                (Scope::Messaging, hop_of(g, pi, v))
            }
            (Some(p), Some(pi)) => (Scope::of(&p, &callee), hop_of(g, pi, v)),
            _ if callee.parent.is_none()
                && messaging::is_consumer(&callee, &msg.get(extras, v)) =>
            {
                (
                    Scope::Messaging,
                    Hop {
                        caller: None,
                        callee: NodeKey::Service(callee.service),
                    },
                )
            }
            _ if callee.parent.is_none() && callee.kind.is_outgoing() => (
                Scope::InProcess,
                Hop {
                    caller: Some(NodeKey::Service(callee.service)),
                    callee: call_target(g, v).unwrap_or(NodeKey::Service(callee.service)),
                },
            ),
            _ => (
                Scope::CrossService,
                Hop {
                    caller: None,
                    callee: NodeKey::Service(callee.service),
                },
            ),
        };
        if parent.is_none() && fresh {
            // Root findings are not on any edge above; count them on their hop.
            edges.push(EdgeOutcome {
                hop,
                stage: callee.stage,
                instance_stage: callee.instance_stage,
                verdict: Some(kind),
                call: false,
                first_break: first_break[v.index()],
                destination: None,
            });
        }
        let finding = Finding {
            trace_id,
            kind,
            scope,
            first_break: first_break[v.index()],
            caller,
            callee,
            hop,
            observed_at_ms: cx.observed_at_ms,
            messaging: on_message,
        };
        if fresh {
            findings.push(finding);
        } else {
            earlier.push(finding);
        }
    }

    let mut producers = Vec::new();
    for v in g.node_indices().skip(settled) {
        let extra = msg.extra(extras, v);
        let m = extra.map(|e| e.messaging).unwrap_or_default();
        if messaging::is_creation(&g[v], &m) {
            producers.push(ProducerHalf {
                trace_id,
                span: g[v],
                messaging: m,
            });
        }
        // Orphan consumers joined their parent above.
        let orphan = g[v].parent.is_some() && g.edges_directed(v, Incoming).next().is_none();
        if !orphan && let Some(half) = extra.and_then(|e| ConsumerHalf::of(trace_id, &g[v], e)) {
            consumers.push(half);
        }
    }

    // Traces touch a handful of services: a linear scan beats hashing.
    let mut services: Vec<(Sym, Option<Sym>)> = Vec::new();
    for s in g.node_weights().skip(settled) {
        let pair = (s.service, s.instance_stage);
        if !services.contains(&pair) {
            services.push(pair);
        }
    }
    TraceOutcome {
        trace_id,
        spans: (n - settled) as u32,
        stage: roots.first().and_then(|&r| g[r].stage),
        edges,
        findings,
        finalised_at_ms: cx.observed_at_ms,
        services,
        joined: settled > 0,
        producers,
        consumers,
        orphans,
        earlier,
    }
}

/// For services that carry the stage only on the spans that received a request
/// ([`StageMode::Captured`]): each of their other spans takes the stage its service received
/// ([`StageSource::Inbound`]), the edges to them are not applicable, and the edges from them
/// (the call to the next service) are judged with that stage. So a header that was not forwarded
/// is `missing` on the hop, from what the caller received to what the callee received.
fn judge_captured(g: &mut TraceGraph, cx: &FinaliseContext<'_>) {
    // Stages are filled in only once some service was captured, and that is never forgotten:
    // with no such service there is nothing to fill in and nothing filled in before.
    let Some(stage_mode) = cx.stage_mode else {
        return;
    };
    // Traces touch a handful of services: a linear scan beats hashing.
    let mut modes: Vec<(Sym, StageMode)> = Vec::new();
    let mut captured = vec![false; g.node_count()];
    let mut reset = vec![false; g.node_count()];
    let (mut any_captured, mut any_reset) = (false, false);
    for v in g.node_indices() {
        let service = g[v].service;
        let mode = match modes.iter().find(|(s, _)| *s == service) {
            Some(&(_, m)) => m,
            None => {
                let m = stage_mode(service);
                modes.push((service, m));
                m
            }
        };
        captured[v.index()] = mode == StageMode::Captured;
        any_captured |= captured[v.index()];
        // Filled in by an earlier finalisation (a trace reopened by late spans): again below.
        let span = &mut g[v];
        if span.stage_from == Some(StageSource::Inbound) {
            span.stage = None;
            span.stage_from = None;
            reset[v.index()] = true;
            any_reset = true;
        }
    }
    if !any_captured && !any_reset {
        return;
    }
    let cannot_carry =
        |s: &SpanRecord, captured: bool| captured && s.stage.is_none() && !s.is_inbound();
    // Down from the roots, parents before children; spans on a parent cycle (hostile input)
    // are never reached and take nothing.
    let mut stack: Vec<NodeIndex> = g
        .node_indices()
        .filter(|&v| g.edges_directed(v, Incoming).next().is_none())
        .collect();
    while let Some(v) = stack.pop() {
        let mut children = g.neighbors_directed(v, Outgoing).detach();
        while let Some(c) = children.next_node(g) {
            let (p, s) = (g[v], &mut g[c]);
            if cannot_carry(s, captured[c.index()]) && p.service == s.service && p.stage.is_some() {
                s.stage = p.stage;
                s.stage_from = Some(StageSource::Inbound);
            }
            stack.push(c);
        }
    }
    for i in 0..g.edge_count() {
        let e = petgraph::graph::EdgeIndex::new(i);
        let (p, c) = g.edge_endpoints(e).expect("index below edge_count");
        let (pi, ci) = (p.index(), c.index());
        if !(captured[pi] || captured[ci] || reset[pi] || reset[ci]) {
            continue;
        }
        // An edge to a stage filled in above is not applicable: `judge_edge` says so.
        let child = &g[c];
        g[e] = if cannot_carry(child, captured[ci]) {
            Verdict::NotApplicable
        } else {
            judge_edge(&g[p], child, cx.policy)
        };
    }
}

fn judge_routing(g: &mut TraceGraph, msg: &MessagingOf, extras: &Extras, cx: &FinaliseContext<'_>) {
    for i in 0..g.edge_count() {
        let e = petgraph::graph::EdgeIndex::new(i);
        let (p, c) = g.edge_endpoints(e).expect("index below edge_count");
        if g[e] == Verdict::Appeared && messaging::is_expected_root(&g[p], &msg.get(extras, p)) {
            // A batch `receive` span carries no message's stage; the spans that process each
            // message take theirs from its headers, not from it.
            g[e] = Verdict::Absent;
            continue;
        }
        let misrouted = if is_message_edge(g, msg, extras, p, c) {
            let m = messaging::merged(&msg.get(extras, c), Some(&msg.get(extras, p)));
            let policy = cx.policy.destinations.of(m.destination);
            messaging::is_message_misrouted(&g[p], &g[c], g[e], policy, cx.is_live)
        } else {
            is_misrouted(&g[p], &g[c], g[e], cx.is_live)
        };
        if misrouted {
            g[e] = Verdict::Misrouted;
        }
    }
}

/// A span with no parent edge: an orphan, an outgoing call with no inbound context, a consumer
/// with no trace of where its message came from, or a root whose stage is not an allowed value.
fn root_finding(
    span: &SpanRecord,
    m: &Messaging,
    has_links: bool,
    cx: &FinaliseContext<'_>,
) -> Option<Verdict> {
    let policy = cx.policy;
    if span.parent.is_some() {
        return match cx.orphans {
            Orphans::Wait | Orphans::Ignore => None,
            Orphans::Judge if cx.unsettled || span.end_ns < cx.stale_before_ns => {
                Some(Verdict::Unverifiable)
            }
            Orphans::Judge => Some(Verdict::BrokenTrace),
        };
    }
    let expected = span.probe()
        || policy.exempt(span)
        || messaging::is_expected_root(span, m)
        || starts_traces(span, cx);
    let lost = if messaging::is_consumer(span, m) {
        // Its links, if any, are judged as messaging hops.
        !has_links
    } else {
        span.kind.is_outgoing()
    };
    if lost && !expected {
        return Some(Verdict::BrokenTrace);
    }
    match span.stage {
        Some(s) if !policy.is_allowed(s) => Some(Verdict::InvalidValue),
        _ => None,
    }
}

/// Whether a root CLIENT/PRODUCER span started its trace rather than lost it, by evidence: it
/// carries a valid stage (a context that was lost carries none); its resource is a client
/// application (a browser, a mobile app); or its service never receives calls (a job, a
/// scheduler), so it has no inbound context to lose. Otherwise it is an outgoing call made
/// without the request's context: a broken trace.
fn starts_traces(span: &SpanRecord, cx: &FinaliseContext<'_>) -> bool {
    span.kind.is_outgoing()
        && (span.stage.is_some_and(|s| cx.policy.is_allowed(s))
            || span.client_app()
            || !(cx.is_receiver)(span.service))
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
