//! JSON shapes of the API: grayscope's records with their symbols resolved to strings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;

use crate::aggregate::{EdgeStats, ServiceGraph, StageStats};
use crate::assemble::TraceSnapshot;
use crate::intern::Symbols;
use crate::model::{
    Messaging, SpanId, SpanKind, SpanRecord, StageMode, StageSource, StatusCode, Sym, TraceId,
};
use crate::verify::{Finding, Scope, Severity, Verdict};

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct SpanRef {
    #[schema(value_type = String)]
    pub service: Arc<str>,
    #[schema(value_type = String, example = "00f067aa0ba902b7")]
    pub span_id: SpanId,
    #[schema(value_type = String)]
    pub span_name: Arc<str>,
    pub kind: &'static str,
    #[schema(value_type = Option<String>)]
    pub stage: Option<Arc<str>>,
    #[schema(value_type = Option<String>)]
    pub instance_stage: Option<Arc<str>>,
}

impl SpanRef {
    pub fn of(s: &SpanRecord, sym: &Symbols) -> Self {
        SpanRef {
            service: sym.services.resolve(s.service),
            span_id: s.span_id,
            span_name: sym.names.resolve(s.name),
            kind: s.kind.as_str(),
            stage: s.stage.map(|v| sym.values.resolve(v)),
            instance_stage: s.instance_stage.map(|v| sym.values.resolve(v)),
        }
    }
}

/// The body of `GET /api/v1/findings`.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct FindingsPage {
    pub findings: Vec<FindingView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next: Option<String>,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct HopView {
    #[schema(value_type = Option<String>)]
    pub caller: Option<Arc<str>>,
    #[schema(value_type = String)]
    pub callee: Arc<str>,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct FindingView {
    #[schema(value_type = String, example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    pub trace_id: TraceId,
    pub kind: Verdict,
    pub scope: Scope,
    pub first_break: bool,
    pub severity: Severity,
    pub caller: Option<SpanRef>,
    pub callee: SpanRef,
    /// The service-graph edge this finding is counted on.
    pub edge: HopView,
    pub detail: String,
    /// The stage the finding concerns ([`Finding::stage`]): what a stage filter matches.
    #[serde(skip)]
    pub stage: Option<Arc<str>>,
    pub observed_at: String,
    /// For a messaging hop: where the message went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messaging: Option<MessagingView>,
}

/// Where a message went, from the messaging attributes of its consumer (else its producer).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MessagingView {
    #[schema(value_type = Option<String>, example = "rabbitmq")]
    pub system: Option<Arc<str>>,
    #[schema(value_type = Option<String>, example = "orders.placed")]
    pub destination: Option<Arc<str>>,
    #[schema(value_type = Option<String>, example = "billing_gray")]
    pub consumer_group: Option<Arc<str>>,
}

impl MessagingView {
    pub fn of(m: &Messaging, sym: &Symbols) -> Self {
        let v = |s: Option<Sym>| s.map(|s| sym.values.resolve(s));
        MessagingView {
            system: v(m.system),
            destination: v(m.destination),
            consumer_group: v(m.group),
        }
    }
}

impl FindingView {
    pub fn of(f: &Finding, sym: &Symbols) -> Self {
        FindingView {
            trace_id: f.trace_id,
            kind: f.kind,
            scope: f.scope,
            first_break: f.first_break,
            severity: f.kind.severity(),
            caller: f.caller.as_ref().map(|c| SpanRef::of(c, sym)),
            callee: SpanRef::of(&f.callee, sym),
            edge: HopView {
                caller: f.hop.caller.map(|c| c.name(sym)),
                callee: f.hop.callee.name(sym),
            },
            detail: f.detail(sym),
            stage: f.stage().map(|v| sym.values.resolve(v)),
            observed_at: rfc3339(f.observed_at_ms),
            messaging: f.messaging.as_ref().map(|m| MessagingView::of(m, sym)),
        }
    }
}

/// Counts by verdict name, zeroes left out.
fn by_verdict(counts: &[u64; Verdict::COUNT]) -> BTreeMap<&'static str, u64> {
    Verdict::ALL
        .iter()
        .filter(|v| counts[**v as usize] > 0)
        .map(|v| (v.as_str(), counts[*v as usize]))
        .collect()
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct StatsView {
    pub calls: u64,
    pub verdicts: BTreeMap<&'static str, u64>,
    pub first_breaks: BTreeMap<&'static str, u64>,
    /// Share of judged edges on this hop that were `ok` or `absent`; `null` when none was judged.
    pub consistency: Option<f64>,
}

impl StatsView {
    fn of(s: &StageStats) -> Self {
        let judged = s.judged();
        let good = s.verdicts[Verdict::Ok as usize] + s.verdicts[Verdict::Absent as usize];
        StatsView {
            calls: s.calls,
            verdicts: by_verdict(&s.verdicts),
            first_breaks: by_verdict(&s.first_breaks),
            consistency: (judged > 0).then(|| good as f64 / judged as f64),
        }
    }
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct RoutingView {
    #[schema(value_type = Option<String>)]
    pub stage: Option<Arc<str>>,
    #[schema(value_type = Option<String>)]
    pub instance_stage: Option<Arc<str>>,
    pub calls: u64,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct EdgeView {
    #[schema(value_type = String)]
    pub caller: Arc<str>,
    #[schema(value_type = String)]
    pub callee: Arc<str>,
    #[serde(flatten)]
    pub totals: StatsView,
    /// The same counts per request stage (`none` for edges without one).
    pub stages: BTreeMap<String, StatsView>,
    pub routing: Vec<RoutingView>,
    /// Example trace ids per verdict, newest last.
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub examples: BTreeMap<&'static str, Vec<TraceId>>,
    pub last_seen: String,
    /// For a messaging hop (producer -> consumer through a broker): the destinations its messages
    /// went through, most recently seen first. Empty for calls.
    pub destinations: Vec<MessagingView>,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct NodeView {
    #[schema(value_type = String)]
    pub name: Arc<str>,
    /// An uninstrumented callee, known from `peer.service` / `server.address` (and not the name of
    /// any service that exports spans).
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// Findings with no caller (orphans, root calls), counted on the service itself; and, as
    /// `calls`, the traces it started (a browser, an app, a job: an entry point of the graph).
    pub own: StatsView,
    /// Traces it started, per request stage (`none` for those without one).
    pub starts: BTreeMap<String, u64>,
    /// Its group on the dashboard: the value of the `--group-key` resource attribute
    /// (`service.namespace`) its spans carry; `null` when they carry none.
    #[schema(value_type = Option<String>)]
    pub group: Option<Arc<str>>,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct GraphView {
    pub stage: Option<String>,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
}

fn stage_name(s: Option<Sym>, sym: &Symbols) -> String {
    s.map_or_else(|| "none".to_string(), |v| sym.values.resolve(v).to_string())
}

impl GraphView {
    /// `stage`: `None` for every stage, `Some(None)` for edges without a stage.
    pub fn of(
        g: &ServiceGraph,
        stage: Option<Option<Sym>>,
        label: Option<String>,
        sym: &Symbols,
    ) -> Self {
        let keep = |s: &Option<Sym>| stage.is_none_or(|want| want == *s);
        let mut edges = Vec::new();
        for e in g.graph.edge_indices() {
            let (a, b) = g.graph.edge_endpoints(e).expect("index from the graph");
            let st: &EdgeStats = &g.graph[e];
            if !st.by_stage.iter().any(|(s, _)| keep(s)) {
                continue;
            }
            edges.push(EdgeView {
                caller: g.graph[a].key.name(sym),
                callee: g.graph[b].key.name(sym),
                totals: StatsView::of(&st.stats(stage)),
                stages: st
                    .by_stage
                    .iter()
                    .filter(|(s, _)| keep(s))
                    .map(|(s, v)| (stage_name(*s, sym), StatsView::of(v)))
                    .collect(),
                routing: st
                    .routing
                    .iter()
                    .filter(|((s, _), _)| keep(s))
                    .map(|((s, i), n)| RoutingView {
                        stage: s.map(|v| sym.values.resolve(v)),
                        instance_stage: i.map(|v| sym.values.resolve(v)),
                        calls: *n,
                    })
                    .collect(),
                examples: st
                    .examples
                    .iter()
                    .map(|(v, ids)| (v.as_str(), ids.iter().copied().collect()))
                    .collect(),
                last_seen: rfc3339(st.last_seen_ms),
                destinations: st
                    .destinations
                    .iter()
                    .map(|&(system, destination)| MessagingView {
                        system: system.map(|s| sym.values.resolve(s)),
                        destination: Some(sym.values.resolve(destination)),
                        consumer_group: None,
                    })
                    .collect(),
            });
        }
        edges.sort_by(|a, b| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)));
        let mut nodes: Vec<NodeView> = g
            .graph
            .node_indices()
            .map(|n| {
                let node = &g.graph[n];
                NodeView {
                    name: node.key.name(sym),
                    is_virtual: node.key.is_virtual(),
                    own: StatsView::of(&node.own.stats(stage)),
                    starts: node
                        .own
                        .by_stage
                        .iter()
                        .filter(|(s, v)| keep(s) && v.calls > 0)
                        .map(|(s, v)| (stage_name(*s, sym), v.calls))
                        .collect(),
                    group: None,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        GraphView {
            stage: label,
            nodes,
            edges,
        }
    }
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct TraceSpanView {
    #[schema(value_type = String, example = "00f067aa0ba902b7")]
    pub span_id: SpanId,
    #[schema(value_type = Option<String>, example = "00f067aa0ba902b7")]
    pub parent_span_id: Option<SpanId>,
    #[schema(value_type = String)]
    pub service: Arc<str>,
    #[schema(value_type = String)]
    pub name: Arc<str>,
    pub kind: SpanKind,
    #[schema(value_type = Option<String>)]
    pub stage: Option<Arc<str>>,
    /// Where `stage` came from: the span's own attribute (`attribute`), a captured HTTP header
    /// (`http_header`) or gRPC metadata (`grpc_metadata`), or, for a span of a service that
    /// carries the stage only on the spans that received a request, that request's (`inbound`).
    pub stage_source: Option<StageSource>,
    #[schema(value_type = Option<String>)]
    pub instance_stage: Option<Arc<str>>,
    pub start_unix_nano: String,
    pub end_unix_nano: String,
    pub status: StatusCode,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct TraceEdgeView {
    #[schema(value_type = String, example = "00f067aa0ba902b7")]
    pub parent_span_id: SpanId,
    #[schema(value_type = String, example = "00f067aa0ba902b7")]
    pub span_id: SpanId,
    pub verdict: Verdict,
    pub scope: Scope,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct TraceView {
    #[schema(value_type = String, example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    pub trace_id: TraceId,
    /// `false` while the trace is still being assembled: routing, orphans and first breaks are
    /// judged at finalisation.
    pub finalised: bool,
    /// Spans whose parent had not arrived when the trace was finalised, still waiting for it
    /// (`--orphan-wait`): their verdicts are not final yet.
    pub waiting_spans: u32,
    pub spans: Vec<TraceSpanView>,
    pub edges: Vec<TraceEdgeView>,
    pub findings: Vec<FindingView>,
}

impl TraceView {
    pub fn of(t: &TraceSnapshot, sym: &Symbols) -> Self {
        let mut spans: Vec<&SpanRecord> = t.spans.iter().collect();
        spans.sort_by_key(|s| (s.start_ns, s.span_id));
        TraceView {
            trace_id: t.trace_id,
            finalised: t.finalised,
            waiting_spans: t.waiting,
            spans: spans
                .into_iter()
                .map(|s| TraceSpanView {
                    span_id: s.span_id,
                    parent_span_id: s.parent,
                    service: sym.services.resolve(s.service),
                    name: sym.names.resolve(s.name),
                    kind: s.kind,
                    stage: s.stage.map(|v| sym.values.resolve(v)),
                    stage_source: s.stage.and(s.stage_from),
                    instance_stage: s.instance_stage.map(|v| sym.values.resolve(v)),
                    start_unix_nano: s.start_ns.to_string(),
                    end_unix_nano: s.end_ns.to_string(),
                    status: s.status,
                })
                .collect(),
            edges: t
                .edges
                .iter()
                .map(|&(p, c, verdict)| {
                    let (p, c) = (&t.spans[p as usize], &t.spans[c as usize]);
                    TraceEdgeView {
                        parent_span_id: p.span_id,
                        span_id: c.span_id,
                        verdict,
                        scope: Scope::of(p, c),
                    }
                })
                .collect(),
            findings: t.findings.iter().map(|f| FindingView::of(f, sym)).collect(),
        }
    }
}

impl TraceView {
    /// Every judged parent->child edge, named by the service-graph hop it is counted on (as
    /// [`crate::verify`] attributes it): a call between services is its two services; an edge
    /// inside a service that leads to an outgoing call is counted on the hop that call makes.
    pub fn hops(&self) -> Vec<HopVerdictView> {
        let by_id: HashMap<SpanId, &TraceSpanView> =
            self.spans.iter().map(|s| (s.span_id, s)).collect();
        let first_breaks: HashSet<SpanId> = self
            .findings
            .iter()
            .filter(|f| f.first_break)
            .map(|f| f.callee.span_id)
            .collect();
        // Whom each outgoing span called: a child of it in another service.
        let mut called: HashMap<SpanId, &Arc<str>> = HashMap::new();
        for s in &self.spans {
            if let Some(p) = s.parent_span_id.and_then(|p| by_id.get(&p))
                && p.service != s.service
            {
                called.entry(p.span_id).or_insert(&s.service);
            }
        }
        self.edges
            .iter()
            .filter_map(|e| {
                let (p, c) = (by_id.get(&e.parent_span_id)?, by_id.get(&e.span_id)?);
                let callee = if p.service != c.service {
                    c.service.clone()
                } else if c.kind.is_outgoing() {
                    called
                        .get(&c.span_id)
                        .map_or_else(|| p.service.clone(), |&s| s.clone())
                } else {
                    p.service.clone()
                };
                Some(HopVerdictView {
                    caller: p.service.clone(),
                    callee,
                    scope: e.scope,
                    verdict: e.verdict,
                    sent: p.stage.clone(),
                    received: c.stage.clone(),
                    instance_stage: c.instance_stage.clone(),
                    first_break: first_breaks.contains(&c.span_id),
                    span_id: c.span_id,
                })
            })
            .collect()
    }
}

/// Where a trace is, for a client waiting for its verdicts.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceState {
    /// Nowhere: no span of it has arrived yet, or it was not kept (clean and not sampled) or is
    /// past retention.
    Unknown,
    /// Spans are arriving: verdicts so far; routing, orphans and first breaks are judged when it
    /// is finalised (about `--trace-idle` after its last span).
    Assembling,
    /// Finalised but for spans whose parent has not arrived: they wait for it (`--orphan-wait`)
    /// before they are judged.
    Waiting,
    /// Every verdict is final.
    Finalised,
}

/// One judged parent->child edge of a trace.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct HopVerdictView {
    #[schema(value_type = String)]
    pub caller: Arc<str>,
    #[schema(value_type = String)]
    pub callee: Arc<str>,
    pub scope: Scope,
    pub verdict: Verdict,
    /// The stage the parent span carried: what the caller sent.
    #[schema(value_type = Option<String>)]
    pub sent: Option<Arc<str>>,
    /// The stage the child span carried: what arrived.
    #[schema(value_type = Option<String>)]
    pub received: Option<Arc<str>>,
    /// Which deployment served the child span.
    #[schema(value_type = Option<String>)]
    pub instance_stage: Option<Arc<str>>,
    /// This edge's finding is a first break.
    pub first_break: bool,
    /// The child span.
    #[schema(value_type = String, example = "00f067aa0ba902b7")]
    pub span_id: SpanId,
}

/// A service, and which deployment of it, that served a span of the trace.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
pub struct ServedView {
    #[schema(value_type = String)]
    pub service: Arc<str>,
    #[schema(value_type = Option<String>)]
    pub instance_stage: Option<Arc<str>>,
}

/// A trace's state and verdicts: what `grayscope probe` waits for.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct TraceVerdicts {
    #[schema(value_type = String, example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    pub trace_id: TraceId,
    pub state: TraceState,
    /// The instance of the cluster assembling it, when another one is; its verdicts are there
    /// until it is finalised and stored.
    pub member: Option<String>,
    pub hops: Vec<HopVerdictView>,
    /// Every (service, instance stage) that served a span, sorted.
    pub served: Vec<ServedView>,
    /// Findings, including those on no edge (a span whose parent never arrived, a root CLIENT
    /// span).
    pub findings: Vec<FindingView>,
}

impl TraceVerdicts {
    pub fn of(view: TraceView) -> Self {
        let mut served: Vec<ServedView> = view
            .spans
            .iter()
            .map(|s| ServedView {
                service: s.service.clone(),
                instance_stage: s.instance_stage.clone(),
            })
            .collect();
        served.sort();
        served.dedup();
        TraceVerdicts {
            trace_id: view.trace_id,
            state: match (view.finalised, view.waiting_spans) {
                (_, 1..) => TraceState::Waiting,
                (true, 0) => TraceState::Finalised,
                (false, 0) => TraceState::Assembling,
            },
            member: None,
            hops: view.hops(),
            served,
            findings: view.findings,
        }
    }

    /// Known to no one (`member`: none), or being assembled by `member`.
    pub fn elsewhere(trace_id: TraceId, member: Option<String>) -> Self {
        TraceVerdicts {
            trace_id,
            state: if member.is_some() {
                TraceState::Assembling
            } else {
                TraceState::Unknown
            },
            member,
            hops: Vec::new(),
            served: Vec::new(),
            findings: Vec::new(),
        }
    }
}

/// The body of `POST /api/v1/traces/verdicts`.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct TraceVerdictsPage {
    /// `--trace-idle`: a trace is finalised about this long after its last span arrives.
    pub trace_idle_ms: u64,
    /// `--flush-interval`: a finalised trace's findings are stored, and listed by
    /// `/api/v1/findings`, within about this long.
    pub flush_interval_ms: u64,
    /// In the order asked.
    pub traces: Vec<TraceVerdicts>,
}

/// One deployment stage of a service.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct InstanceView {
    /// `null`: spans without an instance stage.
    #[schema(value_type = Option<String>)]
    pub stage: Option<Arc<str>>,
    pub last_seen: String,
}

/// The body of `GET /api/v1/services`: each service, its instance stages and when it was seen.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct ServiceView {
    #[schema(value_type = String)]
    pub name: Arc<str>,
    pub instances: Vec<InstanceView>,
    pub last_seen: String,
    /// Which of its spans carry the request stage: `every_span`, or `captured` (only the spans
    /// that received a request, from a captured header or metadata). As this instance learned it
    /// from the service's spans, or as `--stage-modes` configures it.
    pub stage_mode: StageMode,
    /// Whether `stage_mode` is configured (`--stage-modes`) rather than learned.
    pub stage_mode_configured: bool,
    /// Its group on the dashboard (`--group-key`, `service.namespace`); `null` when its spans
    /// carry none.
    #[schema(value_type = Option<String>)]
    pub group: Option<Arc<str>>,
}

/// The body of `GET /api/v1/services/{name}`: one service, who calls it and whom it calls, the
/// stages of the calls it served, and its latest findings.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct ServiceDetailView {
    pub service: ServiceView,
    /// How many calls away `graph` reaches, upstream and downstream.
    pub depth: usize,
    /// Its callers and callees up to `depth` calls away, and the calls between them.
    pub graph: GraphView,
    /// Calls within `depth` left out of `graph` to keep it legible (the least busy first).
    pub left_out_edges: usize,
    /// The calls it received, by caller.
    pub callers: Vec<EdgeView>,
    /// The calls it made, by callee.
    pub callees: Vec<EdgeView>,
    /// The calls it served, by the stage the caller sent and the stage of the instance that
    /// served them: off the diagonal is a request served by an instance of another stage.
    pub served: Vec<RoutingView>,
    /// Its instances by instance stage: the matrix's columns.
    pub instance_stages: Vec<String>,
    /// Its newest findings (as caller or callee), newest first.
    pub findings: Vec<FindingView>,
}

#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct ServicesPage {
    pub services: Vec<ServiceView>,
}

/// One minute of one edge.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct MinuteView {
    pub minute: String,
    pub calls: u64,
    pub verdicts: BTreeMap<&'static str, u64>,
    pub first_breaks: BTreeMap<&'static str, u64>,
}

/// The body of `GET /api/v1/edges/{caller}/{callee}`: the edge's counts per minute, oldest first,
/// and example traces per verdict.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct EdgeSeriesView {
    pub caller: String,
    pub callee: String,
    pub stage: Option<String>,
    pub minutes: Vec<MinuteView>,
    /// Example trace ids per verdict, newest last.
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub examples: BTreeMap<&'static str, Vec<TraceId>>,
}

impl MinuteView {
    pub fn of(minute: u64, s: &StageStats) -> Self {
        MinuteView {
            minute: rfc3339(minute * 60_000),
            calls: s.calls,
            verdicts: by_verdict(&s.verdicts),
            first_breaks: by_verdict(&s.first_breaks),
        }
    }
}

/// A grayscope instance sharing the store.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct MemberView {
    pub id: String,
    /// Where its API answers.
    pub address: String,
    pub started: String,
    pub last_heartbeat: String,
    /// When it last accepted spans; `null` if it never did.
    pub last_span: Option<String>,
    /// Receiving spans: in the load balancer's ring.
    pub active: bool,
    /// The instance that answered.
    pub this: bool,
}

#[derive(Serialize, Debug, ToSchema)]
pub struct MembersPage {
    pub members: Vec<MemberView>,
}

impl MemberView {
    pub fn of(m: &crate::membership::Member, me: &str, active_within_ms: u64) -> Self {
        MemberView {
            id: m.id.clone(),
            address: m.address.clone(),
            started: rfc3339(m.started_ms),
            last_heartbeat: rfc3339(m.heartbeat_ms),
            last_span: (m.last_span_ms > 0).then(|| rfc3339(m.last_span_ms)),
            active: m.is_active(crate::wall_ms(), active_within_ms),
            this: m.id == me,
        }
    }
}
