//! Verdict counters for Prometheus: what alerting rules and rollout tools query.
//!
//! Counted per batch of finalised traces under the aggregate's lock, keyed by symbols (integers),
//! and turned into label strings only when Prometheus scrapes. Every label is capped: the first
//! `--max-label-values` distinct values of a label are kept, later ones are counted as `other`
//! (and the folding itself is counted), so a flood of random service names cannot become a flood
//! of series.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::intern::Symbols;
use crate::model::Sym;
use crate::verify::{EdgeOutcome, Finding, NodeKey, Scope, TraceOutcome, Verdict};

/// A label's value: a kept value, none (no stage, no caller), or folded into `other`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Lv<K> {
    None,
    Other,
    Is(K),
}

/// The first `max` distinct values of one label.
struct Cap<K> {
    kept: HashSet<K, RandomState>,
    max: usize,
    folded: u64,
}

impl<K: Copy + Eq + Hash> Cap<K> {
    fn new(max: usize) -> Self {
        Cap {
            kept: HashSet::default(),
            max,
            folded: 0,
        }
    }

    fn of(&mut self, v: Option<K>) -> Lv<K> {
        let Some(v) = v else { return Lv::None };
        if self.kept.contains(&v) {
            return Lv::Is(v);
        }
        if self.kept.len() < self.max {
            self.kept.insert(v);
            return Lv::Is(v);
        }
        self.folded += 1;
        Lv::Other
    }
}

type Node = Lv<NodeKey>;
type Stage = Lv<Sym>;

/// Series per metric at most. Capping each label is not enough: 500 callers, callees and stages
/// could still combine into millions of series. A new combination past the cap is counted on the
/// series with every capped label `other`.
pub const MAX_SERIES: usize = 20_000;

/// Adds one to `key`'s series, or to `full`'s when the map is at [`MAX_SERIES`].
fn bump<K: Copy + Eq + Hash>(map: &mut HashMap<K, u64, RandomState>, key: K, full: K) {
    let at_cap = map.len() >= MAX_SERIES;
    match map.get_mut(&key) {
        Some(n) => *n += 1,
        None if at_cap => *map.entry(full).or_default() += 1,
        None => {
            map.insert(key, 1);
        }
    }
}

pub struct VerdictCounters {
    callers: Cap<NodeKey>,
    callees: Cap<NodeKey>,
    stages: Cap<Sym>,
    instances: Cap<Sym>,
    edges: HashMap<(Node, Node, Stage, Verdict), u64, RandomState>,
    findings: HashMap<(Verdict, Scope, Node, Node, Stage), u64, RandomState>,
    traces: HashMap<(Stage, bool), u64, RandomState>,
    misrouted: HashMap<(Node, Stage, Stage), u64, RandomState>,
}

/// The counters with their labels resolved, for one scrape.
#[derive(Default, Debug)]
pub struct VerdictSamples {
    /// (caller, callee, stage, verdict)
    pub edges: Vec<([Arc<str>; 3], Verdict, u64)>,
    /// (kind, scope, caller, callee, stage)
    pub findings: Vec<(Verdict, Scope, [Arc<str>; 3], u64)>,
    /// (stage, broken)
    pub traces: Vec<(Arc<str>, bool, u64)>,
    /// (callee, stage, instance stage)
    pub misrouted: Vec<([Arc<str>; 3], u64)>,
    /// Observations folded into `other`, by label.
    pub folded: Vec<(&'static str, u64)>,
}

impl VerdictCounters {
    pub fn new(max_label_values: usize) -> Self {
        VerdictCounters {
            callers: Cap::new(max_label_values),
            callees: Cap::new(max_label_values),
            stages: Cap::new(max_label_values),
            instances: Cap::new(max_label_values),
            edges: HashMap::default(),
            findings: HashMap::default(),
            traces: HashMap::default(),
            misrouted: HashMap::default(),
        }
    }

    pub fn count(&mut self, o: &TraceOutcome) {
        for e in &o.edges {
            self.edge(e);
        }
        for f in &o.findings {
            self.finding(f);
        }
        if o.joined {
            return;
        }
        let stage = self.stages.of(o.stage);
        let broken = o.is_broken();
        bump(&mut self.traces, (stage, broken), (Lv::Other, broken));
    }

    fn edge(&mut self, e: &EdgeOutcome) {
        let Some(v) = e.verdict else { return };
        let key = (
            self.callers.of(e.hop.caller),
            self.callees.of(Some(e.hop.callee)),
            self.stages.of(e.stage),
            v,
        );
        bump(&mut self.edges, key, (Lv::Other, Lv::Other, Lv::Other, v));
    }

    fn finding(&mut self, f: &Finding) {
        let stage = f.stage();
        if f.kind == Verdict::Misrouted {
            let key = (
                self.callees.of(Some(f.hop.callee)),
                self.stages.of(stage),
                self.instances.of(f.callee.instance_stage),
            );
            bump(&mut self.misrouted, key, (Lv::Other, Lv::Other, Lv::Other));
        }
        // One bug is one increment per trace: its consequences are not counted again.
        if f.first_break {
            let key = (
                f.kind,
                f.scope,
                self.callers.of(f.hop.caller),
                self.callees.of(Some(f.hop.callee)),
                self.stages.of(stage),
            );
            bump(
                &mut self.findings,
                key,
                (f.kind, f.scope, Lv::Other, Lv::Other, Lv::Other),
            );
        }
    }

    pub fn samples(&self, sym: &Symbols) -> VerdictSamples {
        let none: Arc<str> = Arc::from("none");
        let other: Arc<str> = Arc::from("other");
        let node = |v: Node| match v {
            Lv::None => none.clone(),
            Lv::Other => other.clone(),
            Lv::Is(n) => n.name(sym),
        };
        let stage = |v: Stage| match v {
            Lv::None => none.clone(),
            Lv::Other => other.clone(),
            Lv::Is(s) => sym.values.resolve(s),
        };
        VerdictSamples {
            edges: self
                .edges
                .iter()
                .map(|(&(a, b, s, v), &n)| ([node(a), node(b), stage(s)], v, n))
                .collect(),
            findings: self
                .findings
                .iter()
                .map(|(&(k, sc, a, b, s), &n)| (k, sc, [node(a), node(b), stage(s)], n))
                .collect(),
            traces: self
                .traces
                .iter()
                .map(|(&(s, broken), &n)| (stage(s), broken, n))
                .collect(),
            misrouted: self
                .misrouted
                .iter()
                .map(|(&(b, s, i), &n)| ([node(b), stage(s), stage(i)], n))
                .collect(),
            folded: vec![
                ("caller", self.callers.folded),
                ("callee", self.callees.folded),
                ("stage", self.stages.folded),
                ("instance_stage", self.instances.folded),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_label_keeps_its_first_values_and_folds_the_rest() {
        let mut c: Cap<u32> = Cap::new(2);
        assert_eq!(c.of(Some(1)), Lv::Is(1));
        assert_eq!(c.of(Some(2)), Lv::Is(2));
        assert_eq!(c.of(Some(3)), Lv::Other);
        assert_eq!(c.of(Some(1)), Lv::Is(1), "kept values stay kept");
        assert_eq!(c.of(None), Lv::None);
        assert_eq!(c.folded, 1);
    }
}
