//! A finding: one broken edge of one trace, with everything needed to explain it.

use std::fmt::Write;

use super::{Scope, Verdict};
use crate::intern::Symbols;
use crate::model::{Messaging, SpanRecord, Sym, TraceId};

/// A node of the service graph: an instrumented service, or an uninstrumented callee known only by
/// the `peer.service` / `server.address` of the calls made to it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum NodeKey {
    Service(Sym),
    Virtual(Sym),
}

impl NodeKey {
    pub fn name(self, sym: &Symbols) -> std::sync::Arc<str> {
        match self {
            NodeKey::Service(s) => sym.services.resolve(s),
            NodeKey::Virtual(s) => sym.values.resolve(s),
        }
    }

    pub fn is_virtual(self) -> bool {
        matches!(self, NodeKey::Virtual(_))
    }
}

/// The service-graph edge a span edge is counted on. For an edge inside one service that leads to an
/// outgoing call, that is the call's edge (`users` -> `orders` for a `users` CLIENT span that lost the
/// stage), so the broken hop shows where users look for it. `caller` is `None` when the parent span
/// never arrived.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Hop {
    pub caller: Option<NodeKey>,
    pub callee: NodeKey,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub trace_id: TraceId,
    pub kind: Verdict,
    pub scope: Scope,
    /// Nearest the root on its path: not caused by another finding above it.
    pub first_break: bool,
    /// The parent span; `None` when it never arrived or the judged span is a root.
    pub caller: Option<SpanRecord>,
    /// The span judged.
    pub callee: SpanRecord,
    pub hop: Hop,
    /// Unix time, milliseconds.
    pub observed_at_ms: u64,
    /// For a messaging hop: system, destination and consumer group.
    pub messaging: Option<Messaging>,
}

impl Finding {
    /// The stage this finding concerns: the one the caller sent, else the one the judged span
    /// has. Metrics, the store and every filter count a finding under it.
    pub fn stage(&self) -> Option<Sym> {
        self.caller.and_then(|c| c.stage).or(self.callee.stage)
    }

    /// One sentence on what most likely went wrong at this hop.
    pub fn detail(&self, sym: &Symbols) -> String {
        let svc = |s: &SpanRecord| sym.services.resolve(s.service);
        let name = |s: &SpanRecord| sym.names.resolve(s.name);
        let val = |v: Option<Sym>| v.map(|v| sym.values.resolve(v));
        let c = &self.callee;
        let mut out = String::new();
        match (self.kind, &self.caller) {
            (Verdict::BrokenTrace, None) if c.parent.is_some() => {
                let _ = write!(
                    out,
                    "parent span {} of {} '{}' never arrived: the trace context reached {} but the caller's span was not exported, or the context was not propagated",
                    c.parent.map(|p| p.to_string()).unwrap_or_default(),
                    svc(c),
                    name(c),
                    svc(c)
                );
            }
            (Verdict::BrokenTrace, None)
                if c.parent.is_none() && c.kind == crate::model::SpanKind::Consumer =>
            {
                let _ = write!(
                    out,
                    "{} handled a message ({} '{}') with neither a parent nor a link to where it was sent: the producer's context was not injected into the message, or the consumer did not extract it",
                    svc(c),
                    c.kind.as_str(),
                    name(c)
                );
            }
            (Verdict::BrokenTrace, _) if c.parent.is_none() && c.kind.is_outgoing() => {
                let _ = write!(
                    out,
                    "{} made an outgoing call ({} '{}') with no inbound context: a new trace started here, so the stage and the trace were lost. Not a trace starter: the span carries no stage, its resource is no client application (browser, mobile app), and {} receives calls itself (a job that only calls out would be exempt; or name it in --exempt-roots)",
                    svc(c),
                    c.kind.as_str(),
                    name(c),
                    svc(c)
                );
            }
            (Verdict::BrokenTrace, _) => {
                let _ = write!(
                    out,
                    "the span {} of {} is part of a parent cycle: the trace cannot be ordered",
                    c.span_id,
                    svc(c)
                );
            }
            (Verdict::InvalidValue, _) => {
                let _ = write!(
                    out,
                    "{} '{}' carries stage '{}', which is not an allowed value",
                    svc(c),
                    name(c),
                    val(c.stage).unwrap_or_default()
                );
            }
            (kind, Some(p)) if self.scope == Scope::Messaging => {
                let sent = val(p.stage).unwrap_or_default();
                let dest = self
                    .messaging
                    .and_then(|m| m.destination)
                    .map(|d| format!(" on '{}'", sym.values.resolve(d)))
                    .unwrap_or_default();
                let _ = match kind {
                    Verdict::Missing => write!(
                        out,
                        "{} handled a message{} from {} '{}' without its stage '{}': the producer did not put the baggage in the message's headers (a TraceContext-only propagator, a carrier without baggage), or the consumer did not restore it from them (a link carries no baggage)",
                        svc(c),
                        dest,
                        svc(p),
                        name(p),
                        sent
                    ),
                    Verdict::Changed => write!(
                        out,
                        "the stage of a message{} was overwritten: {} '{}' sent '{}', {} '{}' handled it as '{}'",
                        dest,
                        svc(p),
                        name(p),
                        sent,
                        svc(c),
                        name(c),
                        val(c.stage).unwrap_or_default()
                    ),
                    Verdict::Misrouted => write!(
                        out,
                        "a '{}' message{} from {} was processed by a {} consumer of {} although the destination's policy does not allow it ('{}' consumers of {} were live, or the policy is exclusive)",
                        sent,
                        dest,
                        svc(p),
                        val(c.instance_stage).unwrap_or_default(),
                        svc(c),
                        sent,
                        svc(c)
                    ),
                    Verdict::MixedBatch => write!(
                        out,
                        "{} '{}' handled a batch{} whose messages carried different stages; the span carries '{}', this message from {} carried '{}'",
                        svc(c),
                        name(c),
                        dest,
                        val(c.stage).unwrap_or_else(|| "none".into()),
                        svc(p),
                        if sent.is_empty() { "none".into() } else { sent }
                    ),
                    Verdict::Appeared => write!(
                        out,
                        "the stage '{}' appeared on {} '{}' although the message{} from {} carried none",
                        val(c.stage).unwrap_or_default(),
                        svc(c),
                        name(c),
                        dest,
                        svc(p)
                    ),
                    Verdict::KeyMismatch => write!(
                        out,
                        "{} '{}' carries '{}'='{}', a near miss of the configured stage key: the stage '{}' of the message{} from {} was lost to a misspelt key",
                        svc(c),
                        name(c),
                        val(c.near_miss_key).unwrap_or_default(),
                        val(c.near_miss_value).unwrap_or_default(),
                        sent,
                        dest,
                        svc(p)
                    ),
                    other => write!(out, "{} on a message{}", other.as_str(), dest),
                };
            }
            (kind, Some(p)) => {
                let sent = val(p.stage).unwrap_or_default();
                match (kind, self.scope) {
                    (Verdict::Missing, Scope::InProcess) => {
                        let _ = write!(
                            out,
                            "{} made an outgoing call without the request's context: the stage '{}' was present on {} '{}' and absent on {} '{}'",
                            svc(p),
                            sent,
                            p.kind.as_str(),
                            name(p),
                            c.kind.as_str(),
                            name(c)
                        );
                    }
                    (Verdict::Missing, Scope::CrossService) => {
                        let _ = write!(
                            out,
                            "{} did not receive or did not extract the stage: '{}' was on the caller {} '{}' and absent on {} '{}'",
                            svc(c),
                            sent,
                            svc(p),
                            name(p),
                            c.kind.as_str(),
                            name(c)
                        );
                    }
                    (Verdict::Changed, _) => {
                        let _ = write!(
                            out,
                            "the stage was overwritten: {} '{}' carried '{}', {} '{}' carries '{}'",
                            svc(p),
                            name(p),
                            sent,
                            svc(c),
                            name(c),
                            val(c.stage).unwrap_or_default()
                        );
                    }
                    (Verdict::Appeared, _) => {
                        let _ = write!(
                            out,
                            "the stage '{}' appeared on {} '{}' although {} '{}' carried none: a default was applied mid-chain",
                            val(c.stage).unwrap_or_default(),
                            svc(c),
                            name(c),
                            svc(p),
                            name(p)
                        );
                    }
                    (Verdict::KeyMismatch, _) => {
                        let _ = write!(
                            out,
                            "{} '{}' carries '{}'='{}', a near miss of the configured stage key: the stage '{}' sent by {} was lost to a misspelt or differently-cased key",
                            svc(c),
                            name(c),
                            val(c.near_miss_key).unwrap_or_default(),
                            val(c.near_miss_value).unwrap_or_default(),
                            sent,
                            svc(p)
                        );
                    }
                    (Verdict::Misrouted, _) => {
                        let _ = write!(
                            out,
                            "routed to a {} instance of {} although {} sent '{}' and '{}' instances of {} were live",
                            val(c.instance_stage).unwrap_or_default(),
                            svc(c),
                            svc(p),
                            sent,
                            sent,
                            svc(c)
                        );
                    }
                    (other, _) => {
                        let _ = write!(out, "{}", other.as_str());
                    }
                }
                if p.stage_from == Some(crate::model::StageSource::Inbound) {
                    let _ = write!(
                        out,
                        " ('{}' is the stage {} received: its spans carry the stage only where a request's header was captured)",
                        sent,
                        svc(p)
                    );
                }
            }
            (other, None) => {
                let _ = write!(out, "{} on {} '{}'", other.as_str(), svc(c), name(c));
            }
        }
        out
    }
}
