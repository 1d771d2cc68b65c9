//! Verdicts: pure, synchronous judgement of caller->callee edges and whole traces.
//!
//! Nothing here does I/O or knows about tokio, so every rule of the verdict table is testable with
//! plain values. [`judge_edge`] runs the moment both spans of an edge are present (whatever order they
//! arrived in); [`trace::finalise`] runs once per trace and does what needs the whole trace: routing
//! (misrouted), orphans and root outgoing calls (broken_trace), and which finding is the first break.

mod finding;
pub mod messaging;
pub mod trace;

use std::collections::HashSet;

use foldhash::fast::RandomState;
use serde::Serialize;

pub use finding::{Finding, Hop, NodeKey};
pub use messaging::{ConsumerHalf, DestinationPolicy, Destinations, ProducerHalf};
pub use trace::{EdgeOutcome, OrphanCounts, Orphans, TraceGraph, TraceOutcome, finalise};

use crate::model::{SpanRecord, Sym};

/// One verdict per parent->child edge (see the README's verdict table).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Verdict {
    Ok,
    Absent,
    Missing,
    Changed,
    Appeared,
    KeyMismatch,
    InvalidValue,
    Misrouted,
    BrokenTrace,
    /// A span whose parent never arrived while the instances behind the load balancer were
    /// changing: the trace was likely split between two instances. Counted and shown, never a
    /// finding.
    Unverifiable,
    /// A batch consumer whose messages carried different stages: one span cannot carry them all.
    /// Low severity: the batch, not a hop, mixed the stages.
    MixedBatch,
    /// A link to a producer span that could not be found (not sampled, or not arrived within
    /// `--link-wait`): the hop is counted as seen, never a finding.
    Unresolved,
    /// An edge to a span that cannot carry the stage: a database or cache call without one, or,
    /// in a service that carries the stage only on the spans that received a request
    /// ([`crate::model::StageMode::Captured`]), any other span. Counted, never judged.
    NotApplicable,
}

impl Verdict {
    /// Every verdict, in the order of their codes (`Verdict as usize`).
    pub const COUNT: usize = 13;
    pub const ALL: [Verdict; Verdict::COUNT] = [
        Verdict::Ok,
        Verdict::Absent,
        Verdict::Missing,
        Verdict::Changed,
        Verdict::Appeared,
        Verdict::KeyMismatch,
        Verdict::InvalidValue,
        Verdict::Misrouted,
        Verdict::BrokenTrace,
        Verdict::Unverifiable,
        Verdict::MixedBatch,
        Verdict::Unresolved,
        Verdict::NotApplicable,
    ];

    /// The names of the verdicts that are findings, in code order: what a finding's `kind` may be.
    pub fn finding_names() -> Vec<&'static str> {
        Verdict::ALL
            .into_iter()
            .filter(|v| v.is_finding())
            .map(Verdict::as_str)
            .collect()
    }

    pub fn is_finding(self) -> bool {
        !matches!(
            self,
            Verdict::Ok
                | Verdict::Absent
                | Verdict::Unverifiable
                | Verdict::Unresolved
                | Verdict::NotApplicable
        )
    }

    /// Whether an edge with this verdict was judged at all: `unverifiable`, `unresolved` and
    /// `not_applicable` edges were not, so they count neither for nor against consistency.
    pub fn is_judged(self) -> bool {
        !matches!(
            self,
            Verdict::Unverifiable | Verdict::Unresolved | Verdict::NotApplicable
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Absent => "absent",
            Verdict::Missing => "missing",
            Verdict::Changed => "changed",
            Verdict::Appeared => "appeared",
            Verdict::KeyMismatch => "key_mismatch",
            Verdict::InvalidValue => "invalid_value",
            Verdict::Misrouted => "misrouted",
            Verdict::BrokenTrace => "broken_trace",
            Verdict::Unverifiable => "unverifiable",
            Verdict::MixedBatch => "mixed_batch",
            Verdict::Unresolved => "unresolved",
            Verdict::NotApplicable => "not_applicable",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// `appeared` is usually a default applied mid-chain: worth fixing, rarely an outage.
    pub fn severity(self) -> Severity {
        match self {
            Verdict::Ok
            | Verdict::Absent
            | Verdict::Unverifiable
            | Verdict::Unresolved
            | Verdict::NotApplicable => Severity::None,
            Verdict::Appeared | Verdict::MixedBatch => Severity::Low,
            _ => Severity::High,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    None,
    Low,
    High,
}

/// Where on an edge the stage was lost.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Between spans of two services: the caller's injection, the wire, or the callee's extraction.
    CrossService,
    /// Between two spans of one service: work done without the request's context.
    InProcess,
    /// From a message's producer span to a consumer span that handled it, through a broker.
    Messaging,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::CrossService, Scope::InProcess, Scope::Messaging];

    pub fn of(parent: &SpanRecord, child: &SpanRecord) -> Scope {
        if parent.service == child.service {
            Scope::InProcess
        } else {
            Scope::CrossService
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CrossService => "cross_service",
            Scope::InProcess => "in_process",
            Scope::Messaging => "messaging",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The verification rules that come from configuration, with their strings interned.
#[derive(Debug, Default)]
pub struct Policy {
    /// Empty: any value is allowed.
    pub allowed: HashSet<Sym, RandomState>,
    /// Services (optionally one span name of theirs) whose root CLIENT/PRODUCER spans are expected:
    /// jobs and schedulers that start traces by calling out.
    pub exempt_roots: Vec<(Sym, Option<Sym>)>,
    /// When a message may be processed by another stage's consumer.
    pub destinations: Destinations,
}

impl Policy {
    /// `allowed`: the stage values that are valid (empty: any); `exempt_roots`: (service, span
    /// name or any) whose root CLIENT/PRODUCER spans are expected; `destinations`: a policy per
    /// message destination, `*` for the rest.
    pub fn new(
        allowed: &[String],
        exempt_roots: &[(String, Option<String>)],
        destinations: &[(String, DestinationPolicy)],
        sym: &crate::intern::Symbols,
    ) -> Self {
        let mut dest = Destinations::default();
        for (name, p) in destinations {
            if name == "*" {
                dest.default = *p;
            } else {
                dest.by_name.insert(sym.values.intern(name), *p);
            }
        }
        Policy {
            allowed: allowed.iter().map(|s| sym.values.intern(s)).collect(),
            exempt_roots: exempt_roots
                .iter()
                .map(|(svc, span)| {
                    (
                        sym.services.intern(svc),
                        span.as_deref().map(|n| sym.names.intern(n)),
                    )
                })
                .collect(),
            destinations: dest,
        }
    }

    pub(crate) fn is_allowed(&self, stage: Sym) -> bool {
        self.allowed.is_empty() || self.allowed.contains(&stage)
    }

    fn exempt(&self, span: &SpanRecord) -> bool {
        self.exempt_roots
            .iter()
            .any(|&(svc, name)| svc == span.service && name.is_none_or(|n| n == span.name))
    }
}

/// The verdict of one edge from what both spans carry. Routing (`misrouted`) needs the instance
/// registry at finalisation and is judged by [`trace::finalise`] on top of this.
///
/// A database or cache call without a stage is no stage hop: the stage need not reach a back end
/// that does not route on it, and with a stage captured from requests it cannot.
///
/// A stage filled in from the request at finalisation ([`crate::model::StageSource::Inbound`]) is
/// not the span's own: the edge to it is not applicable either (a finalised trace judged again).
pub fn judge_edge(parent: &SpanRecord, child: &SpanRecord, policy: &Policy) -> Verdict {
    if (child.backend() && child.stage.is_none())
        || child.stage_from == Some(crate::model::StageSource::Inbound)
    {
        return Verdict::NotApplicable;
    }
    match (parent.stage, child.stage) {
        (_, Some(t)) if !policy.is_allowed(t) => Verdict::InvalidValue,
        (Some(s), Some(t)) if s == t => Verdict::Ok,
        (Some(_), Some(_)) => Verdict::Changed,
        (Some(_), None) if child.near_miss_key.is_some() => Verdict::KeyMismatch,
        (Some(_), None) => Verdict::Missing,
        (None, Some(_)) => Verdict::Appeared,
        (None, None) => Verdict::Absent,
    }
}

/// True if the caller sent a stage, the callee was served by an instance of another stage, and the
/// callee service had a live instance of the sent stage: routing ignored the tag.
///
/// Only an `ok` edge can become `misrouted`: the callee received exactly the stage the caller sent
/// and was still served by another stage's instance. When the stage arrived changed, routing most
/// likely followed the changed value; when it never arrived (`missing`, `key_mismatch`), the router
/// never saw it either. Either way that change or loss is the cause, and is what is reported.
pub fn is_misrouted(
    parent: &SpanRecord,
    child: &SpanRecord,
    verdict: Verdict,
    is_live: impl Fn(Sym, Sym) -> bool,
) -> bool {
    if verdict != Verdict::Ok || parent.service == child.service {
        return false;
    }
    match (parent.stage, child.instance_stage) {
        (Some(sent), Some(served)) => sent != served && is_live(child.service, sent),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
