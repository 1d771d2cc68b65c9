//! Aggregation: finalised traces in, the service graph, recent findings and trace totals out.
//!
//! Workers hand over finalised traces in batches (once per message or tick, never per span), so the
//! one lock here is taken a few hundred times a second, not per span; readers (the API) take it
//! briefly to copy what they need.

mod collector;
pub mod graph;
pub mod metrics;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;
use tokio::sync::broadcast;

pub use graph::{Count, EdgeStats, ServiceGraph, ServiceNode, StageStats};
pub use metrics::{VerdictCounters, VerdictSamples};

use crate::assemble::{Finalised, TraceSnapshot};
use crate::intern::Symbols;
use crate::model::{Sym, TraceId};
use crate::verify::Finding;

#[derive(Clone, Debug)]
pub struct AggregateConfig {
    /// Spans of finalised traces with findings kept for the trace API, in total.
    pub max_trace_spans: usize,
    /// Distinct values per metric label; the rest are counted as `other`.
    pub max_label_values: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            max_trace_spans: 500_000,
            max_label_values: 500,
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

/// Findings buffered for watchers; a watcher further behind than this is dropped.
pub const WATCH_BUFFER: usize = 1024;

pub struct Aggregate {
    symbols: Arc<Symbols>,
    cfg: AggregateConfig,
    state: Mutex<State>,
    watch: broadcast::Sender<Arc<Finding>>,
}

pub struct State {
    traces: RecentTraces,
    pub verdicts: VerdictCounters,
    pub totals: Totals,
}

#[derive(Default)]
struct RecentTraces {
    by_id: HashMap<TraceId, TraceSnapshot, RandomState>,
    order: VecDeque<TraceId>,
    spans: usize,
}

impl Aggregate {
    pub fn new(symbols: Arc<Symbols>, cfg: AggregateConfig) -> Self {
        let verdicts = VerdictCounters::new(cfg.max_label_values);
        Aggregate {
            symbols,
            cfg,
            state: Mutex::new(State {
                traces: RecentTraces::default(),
                verdicts,
                totals: Totals::default(),
            }),
            watch: broadcast::Sender::new(WATCH_BUFFER),
        }
    }

    pub fn symbols(&self) -> &Arc<Symbols> {
        &self.symbols
    }

    /// Counts finalised traces and keeps the ones worth opening (the store keeps them for good).
    pub fn absorb(&self, batch: &[Finalised]) {
        if batch.is_empty() {
            return;
        }
        let mut st = self.lock();
        for f in batch {
            let o = &f.outcome;
            st.verdicts.count(o);
            if !o.joined {
                *st.totals
                    .traces
                    .entry((o.stage, o.is_broken()))
                    .or_default() += 1;
            }
            st.totals.spans += o.spans as u64;
            st.totals.findings += o.findings.len() as u64;
            // Nobody watching, nothing copied.
            if self.watch.receiver_count() > 0 {
                for x in &o.findings {
                    let _ = self.watch.send(Arc::new(x.clone()));
                }
            }
            if let Some(snap) = &f.snapshot {
                st.traces.keep(snap.clone(), self.cfg.max_trace_spans);
            }
        }
    }

    /// The verdict counters with their labels resolved, for a scrape.
    pub fn verdict_samples(&self) -> VerdictSamples {
        self.lock().verdicts.samples(&self.symbols)
    }

    /// New findings from now on, as they are produced.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Finding>> {
        self.watch.subscribe()
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

pub use collector::register as register_metrics;

#[cfg(test)]
mod tests;
