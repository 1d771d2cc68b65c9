//! Messaging hops: a message's creation context (the producer's span) -> each consumer span that
//! handled it, as its parent in one trace or through a span link across traces.
//!
//! A link carries the producer's span context and never its baggage, so a consumer that only links
//! (every batch, most pull consumers) has the stage only if it restored it from the message's
//! headers: that is exactly what these edges check. Edges through a parent are judged inside the
//! trace; edges through a link are judged by [`judge_consumer`] once the linked producer spans
//! have been found (see [`crate::join`]), or counted `unresolved` when they cannot be.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::trace::EdgeOutcome;
use super::{Finding, Hop, NodeKey, Policy, Scope, TraceOutcome, Verdict, judge_edge};
use crate::model::{Link, Messaging, MessagingOp, SpanExtra, SpanKind, SpanRecord, Sym, TraceId};

pub use crate::model::DestinationPolicy;

/// Destination policies with their names interned.
#[derive(Debug, Default)]
pub struct Destinations {
    pub default: DestinationPolicy,
    pub by_name: HashMap<Sym, DestinationPolicy, RandomState>,
}

impl Destinations {
    pub fn of(&self, destination: Option<Sym>) -> DestinationPolicy {
        destination
            .and_then(|d| self.by_name.get(&d).copied())
            .unwrap_or(self.default)
    }
}

/// A span that may be a message's creation context: a PRODUCER span, or a `create` / `send`
/// messaging span of another kind.
pub fn is_creation(span: &SpanRecord, m: &Messaging) -> bool {
    span.kind == SpanKind::Producer || matches!(m.op, MessagingOp::Create | MessagingOp::Send)
}

/// A span that handles a received message: a CONSUMER span, or a `process` messaging span of
/// another kind.
///
/// A pull consumer's `receive` span (CLIENT since semantic conventions v1.28) is not one: it
/// fetches a batch before anyone has read the messages' headers, so it cannot carry their stage,
/// and its links are not hops to judge; the spans that process each message are. A CONSUMER
/// `receive` span is one: before v1.28 that is how push consumers (pika's, for one) named the
/// span that handles a message.
pub fn is_consumer(span: &SpanRecord, m: &Messaging) -> bool {
    match m.op {
        MessagingOp::Process => true,
        MessagingOp::Unknown | MessagingOp::Receive => span.kind == SpanKind::Consumer,
        _ => false,
    }
}

/// A messaging root that is normal: a pull consumer's `receive` (CLIENT since v1.28) or a
/// `settle` starts its own trace by design.
pub fn is_expected_root(span: &SpanRecord, m: &Messaging) -> bool {
    match m.op {
        MessagingOp::Receive => span.kind == SpanKind::Client,
        MessagingOp::Settle => matches!(span.kind, SpanKind::Client | SpanKind::Consumer),
        _ => false,
    }
}

/// True if a message the producer tagged with stage S was processed by a consumer instance of
/// another stage when its destination's policy does not allow that. Like [`super::is_misrouted`],
/// only an `ok` edge can be misrouted: a lost or changed stage is the cause to report.
pub fn is_message_misrouted(
    producer: &SpanRecord,
    consumer: &SpanRecord,
    verdict: Verdict,
    policy: DestinationPolicy,
    is_live: &dyn Fn(Sym, Sym) -> bool,
) -> bool {
    if verdict != Verdict::Ok {
        return false;
    }
    match (producer.stage, consumer.instance_stage) {
        (Some(sent), Some(served)) if sent != served => match policy {
            DestinationPolicy::Exclusive => true,
            DestinationPolicy::Fallback => is_live(consumer.service, sent),
            DestinationPolicy::Broadcast => false,
        },
        _ => false,
    }
}

/// The destination a hop is about: the consumer's, else the producer's (a consumer span may not
/// name what it read from).
pub fn merged(consumer: &Messaging, producer: Option<&Messaging>) -> Messaging {
    let p = producer.copied().unwrap_or_default();
    Messaging {
        system: consumer.system.or(p.system),
        destination: consumer.destination.or(p.destination),
        group: consumer.group,
        op: consumer.op,
    }
}

/// A creation-context span, offered to consumers in other traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerHalf {
    pub trace_id: TraceId,
    pub span: SpanRecord,
    pub messaging: Messaging,
}

/// A consumer span with links: its edges are judged once the linked spans are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerHalf {
    pub trace_id: TraceId,
    pub span: SpanRecord,
    pub messaging: Messaging,
    /// Distinct, without the span's own parent (that edge is judged inside the trace).
    pub links: Vec<Link>,
}

impl ConsumerHalf {
    /// The half of a consumer span that has links, if it has any that are not its parent.
    pub fn of(trace_id: TraceId, span: &SpanRecord, extra: &SpanExtra) -> Option<Self> {
        if !is_consumer(span, &extra.messaging) || extra.links.is_empty() {
            return None;
        }
        let mut links: Vec<Link> = Vec::with_capacity(extra.links.len());
        for l in &extra.links {
            let own_parent = l.trace_id == trace_id && Some(l.span_id) == span.parent;
            if !own_parent
                && !links
                    .iter()
                    .any(|x| x.trace_id == l.trace_id && x.span_id == l.span_id)
            {
                links.push(*l);
            }
        }
        (!links.is_empty()).then_some(ConsumerHalf {
            trace_id,
            span: *span,
            messaging: extra.messaging,
            links,
        })
    }
}

impl ConsumerHalf {
    /// The half of a consumer span whose parent is not in its trace as assembled (it lags
    /// behind its producer by more than the trace's idle time, so the producer's span went with
    /// the trace finalised before): the parent is followed like a link, first, through the
    /// producers kept for links. `None` for a span that is not a consumer or points nowhere.
    pub fn apart_from_parent(
        trace_id: TraceId,
        span: &SpanRecord,
        extra: Option<&SpanExtra>,
    ) -> Option<Self> {
        let messaging = extra.map(|e| e.messaging).unwrap_or_default();
        if !is_consumer(span, &messaging) {
            return None;
        }
        let mut half = extra
            .and_then(|e| ConsumerHalf::of(trace_id, span, e))
            .unwrap_or(ConsumerHalf {
                trace_id,
                span: *span,
                messaging,
                links: Vec::new(),
            });
        if let Some(parent) = span.parent {
            let link = Link {
                trace_id,
                span_id: parent,
                sampled: true,
            };
            half.links.insert(0, link);
        }
        (!half.links.is_empty()).then_some(half)
    }
}

/// Why a link could not be followed to its producer span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unresolved {
    /// The link's flags say the producer's span was not sampled: it will never arrive.
    Unsampled,
    /// The producer's span did not arrive within `--link-wait`.
    Expired,
    /// The wait was ended early by the memory bound.
    Evicted,
    /// The wait was ended by shutdown.
    Shutdown,
}

impl Unresolved {
    pub const ALL: [Unresolved; 4] = [
        Unresolved::Unsampled,
        Unresolved::Expired,
        Unresolved::Evicted,
        Unresolved::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unresolved::Unsampled => "unsampled",
            Unresolved::Expired => "expired",
            Unresolved::Evicted => "evicted",
            Unresolved::Shutdown => "shutdown",
        }
    }
}

/// One link of a consumer, followed or not.
pub type LinkEnd = Result<ProducerHalf, Unresolved>;

/// Judges the edges from a consumer's linked producer spans to it (`ends[i]` for `half.links[i]`).
///
/// Every edge is judged by the rules of any edge. A batch whose messages carry different stages
/// cannot carry them all on one span: its edges whose stage the span does not carry are
/// `mixed_batch` (low severity) instead of `changed` or `missing`. One span is one bug: the first
/// finding among its edges (high severity first) is the first break, the others its consequences.
pub fn judge_consumer(
    half: &ConsumerHalf,
    ends: &[LinkEnd],
    policy: &Policy,
    is_live: &dyn Fn(Sym, Sym) -> bool,
    observed_at_ms: u64,
) -> TraceOutcome {
    let c = &half.span;
    let mut stages: Vec<Option<Sym>> = Vec::new();
    for p in ends.iter().flatten() {
        if !stages.contains(&p.span.stage) {
            stages.push(p.span.stage);
        }
    }
    let mixed = stages.len() > 1;
    let mut edges = Vec::with_capacity(ends.len());
    let mut findings: Vec<Finding> = Vec::new();
    for end in ends {
        let p = match end {
            Ok(p) => p,
            Err(_) => {
                edges.push(EdgeOutcome {
                    hop: Hop {
                        caller: None,
                        callee: NodeKey::Service(c.service),
                    },
                    stage: c.stage,
                    instance_stage: c.instance_stage,
                    verdict: Some(Verdict::Unresolved),
                    call: false,
                    first_break: false,
                    destination: half.messaging.place(),
                });
                continue;
            }
        };
        let mut verdict = judge_edge(&p.span, c, policy);
        if mixed && p.span.stage != c.stage && verdict != Verdict::InvalidValue {
            verdict = Verdict::MixedBatch;
        }
        let messaging = merged(&half.messaging, Some(&p.messaging));
        let dest = policy.destinations.of(messaging.destination);
        if is_message_misrouted(&p.span, c, verdict, dest, is_live) {
            verdict = Verdict::Misrouted;
        }
        let hop = Hop {
            caller: Some(NodeKey::Service(p.span.service)),
            callee: NodeKey::Service(c.service),
        };
        edges.push(EdgeOutcome {
            hop,
            stage: p.span.stage.or(c.stage),
            instance_stage: c.instance_stage,
            verdict: Some(verdict),
            call: true,
            first_break: false,
            destination: messaging.place(),
        });
        if verdict.is_finding() {
            findings.push(Finding {
                trace_id: half.trace_id,
                kind: verdict,
                scope: Scope::Messaging,
                first_break: false,
                caller: Some(p.span),
                callee: *c,
                hop,
                observed_at_ms,
                messaging: Some(messaging),
            });
        }
    }
    let first = findings
        .iter()
        .position(|f| f.kind.severity() == super::Severity::High)
        .or((!findings.is_empty()).then_some(0));
    if let Some(i) = first {
        findings[i].first_break = true;
        let kind = findings[i].kind;
        let hop = findings[i].hop;
        if let Some(e) = edges
            .iter_mut()
            .find(|e| e.verdict == Some(kind) && e.hop == hop)
        {
            e.first_break = true;
        }
    }
    TraceOutcome {
        trace_id: half.trace_id,
        spans: 0,
        stage: None,
        edges,
        findings,
        finalised_at_ms: observed_at_ms,
        services: Vec::new(),
        joined: true,
        producers: Vec::new(),
        consumers: Vec::new(),
        orphans: Default::default(),
        earlier: Vec::new(),
    }
}
