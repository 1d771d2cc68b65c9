//! Aggregation: finalised traces in, the service graph, recent findings and trace totals out.
//!
//! Workers hand over finalised traces in batches (once per message or tick, never per span), so the
//! one lock here is taken a few hundred times a second, not per span; readers (the API) take it
//! briefly to copy what they need.

pub mod graph;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;

pub use graph::{EdgeStats, ServiceGraph, ServiceNode, StageStats};

use crate::assemble::{Finalised, TraceSnapshot};
use crate::intern::Symbols;
use crate::model::{Sym, TraceId};
use crate::verify::{Finding, NodeKey, Scope, Verdict};

#[derive(Clone, Debug)]
pub struct AggregateConfig {
    /// Findings kept in memory for the API, newest first.
    pub max_findings: usize,
    /// Spans of finalised traces with findings kept for the trace API, in total.
    pub max_trace_spans: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            max_findings: 100_000,
            max_trace_spans: 500_000,
        }
    }
}

/// Totals over all finalised traces.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Finalised traces by (root request stage, broken).
    pub traces: HashMap<(Option<Sym>, bool), u64, RandomState>,
    pub spans: u64,
    pub findings: u64,
}

impl Totals {
    pub fn trace_count(&self) -> u64 {
        self.traces.values().sum()
    }
}

pub struct Aggregate {
    symbols: Arc<Symbols>,
    cfg: AggregateConfig,
    state: Mutex<State>,
}

#[derive(Default)]
pub struct State {
    pub graph: ServiceGraph,
    findings: VecDeque<Finding>,
    traces: RecentTraces,
    pub totals: Totals,
}

#[derive(Default)]
struct RecentTraces {
    by_id: HashMap<TraceId, TraceSnapshot, RandomState>,
    order: VecDeque<TraceId>,
    spans: usize,
}

/// Which findings to list; every field narrows.
#[derive(Clone, Debug, Default)]
pub struct FindingFilter {
    pub kind: Option<Verdict>,
    /// A stage value, or `none` for findings without one.
    pub stage: Option<String>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub trace_id: Option<TraceId>,
    pub scope: Option<Scope>,
    pub first_break: Option<bool>,
}

impl Aggregate {
    pub fn new(symbols: Arc<Symbols>, cfg: AggregateConfig) -> Self {
        Aggregate {
            symbols,
            cfg,
            state: Mutex::new(State::default()),
        }
    }

    pub fn symbols(&self) -> &Arc<Symbols> {
        &self.symbols
    }

    /// Takes the finalised traces out of `batch` and counts them.
    pub fn absorb(&self, batch: &mut Vec<Finalised>) {
        if batch.is_empty() {
            return;
        }
        let other = self.symbols.values.other();
        let mut st = self.lock();
        for f in batch.drain(..) {
            let o = &f.outcome;
            for e in &o.edges {
                st.graph.add(e, o.trace_id, o.finalised_at_ms, other);
            }
            *st.totals
                .traces
                .entry((o.stage, o.is_broken()))
                .or_default() += 1;
            st.totals.spans += o.spans as u64;
            st.totals.findings += o.findings.len() as u64;
            for finding in &o.findings {
                if st.findings.len() >= self.cfg.max_findings {
                    st.findings.pop_front();
                }
                st.findings.push_back(finding.clone());
            }
            if let Some(snap) = f.snapshot {
                st.traces.keep(snap, self.cfg.max_trace_spans);
            }
        }
    }

    /// Findings matching `filter`, newest first, at most `limit`.
    pub fn findings(&self, filter: &FindingFilter, limit: usize) -> Vec<Finding> {
        let Some(m) = Matcher::new(filter, &self.symbols) else {
            return Vec::new();
        };
        let st = self.lock();
        st.findings
            .iter()
            .rev()
            .filter(|f| m.matches(f))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A finalised trace with findings, if it is still kept.
    pub fn trace(&self, id: TraceId) -> Option<TraceSnapshot> {
        self.lock().traces.by_id.get(&id).cloned()
    }

    /// Read access for views that need several parts at once.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RecentTraces {
    fn keep(&mut self, snap: TraceSnapshot, max_spans: usize) {
        if snap.spans.len() > max_spans {
            return;
        }
        let id = snap.trace_id;
        self.spans += snap.spans.len();
        match self.by_id.insert(id, snap) {
            Some(old) => self.spans -= old.spans.len(),
            None => self.order.push_back(id),
        }
        while self.spans > max_spans {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_id.remove(&old) {
                self.spans -= gone.spans.len();
            }
        }
    }
}

/// A filter with its names turned into symbols once, so matching is integer comparison.
struct Matcher {
    kind: Option<Verdict>,
    stage: Option<Option<Sym>>,
    caller: Option<Vec<NodeKey>>,
    callee: Option<Vec<NodeKey>>,
    trace_id: Option<TraceId>,
    scope: Option<Scope>,
    first_break: Option<bool>,
}

impl Matcher {
    /// `None` when a name in the filter was never seen: nothing can match.
    fn new(f: &FindingFilter, sym: &Symbols) -> Option<Self> {
        let node = |name: &Option<String>| -> Option<Option<Vec<NodeKey>>> {
            let Some(name) = name else { return Some(None) };
            let keys: Vec<NodeKey> = sym
                .services
                .get(name)
                .map(NodeKey::Service)
                .into_iter()
                .chain(sym.values.get(name).map(NodeKey::Virtual))
                .collect();
            (!keys.is_empty()).then_some(Some(keys))
        };
        let stage = match f.stage.as_deref() {
            None => None,
            Some("none") => Some(None),
            Some(s) => Some(Some(sym.values.get(s)?)),
        };
        Some(Matcher {
            kind: f.kind,
            stage,
            caller: node(&f.caller)?,
            callee: node(&f.callee)?,
            trace_id: f.trace_id,
            scope: f.scope,
            first_break: f.first_break,
        })
    }

    fn matches(&self, f: &Finding) -> bool {
        self.kind.is_none_or(|k| k == f.kind)
            && self.stage.is_none_or(|s| s == finding_stage(f))
            && self
                .caller
                .as_ref()
                .is_none_or(|c| f.hop.caller.is_some_and(|h| c.contains(&h)))
            && self
                .callee
                .as_ref()
                .is_none_or(|c| c.contains(&f.hop.callee))
            && self.trace_id.is_none_or(|t| t == f.trace_id)
            && self.scope.is_none_or(|s| s == f.scope)
            && self.first_break.is_none_or(|b| b == f.first_break)
    }
}

/// The stage a finding concerns: the one the caller sent, else the one the callee carries.
pub fn finding_stage(f: &Finding) -> Option<Sym> {
    f.caller.and_then(|c| c.stage).or(f.callee.stage)
}

#[cfg(test)]
mod tests;
