//! What the read side asks a store, whatever keeps it.

use std::sync::Arc;

use crate::model::TraceId;
use crate::verify::{Scope, Verdict};
use crate::view::FindingView;

/// Which findings: every field narrows; names are matched exactly. The same filter selects
/// stored findings ([`FindingQuery`]) and findings as they happen ([`FindingFilter::matches`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindingFilter {
    pub kind: Option<Verdict>,
    /// The stage the finding concerns, or `none` for findings without one.
    pub stage: Option<String>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub trace_id: Option<TraceId>,
    pub scope: Option<Scope>,
    pub first_break: Option<bool>,
}

impl FindingFilter {
    /// Whether a finding passes: the same rules as a store's query.
    pub fn matches(&self, f: &FindingView) -> bool {
        self.kind.is_none_or(|k| k == f.kind)
            && self.stage.as_deref().is_none_or(|s| match &f.stage {
                None => s == "none",
                Some(v) => **v == *s,
            })
            && self
                .caller
                .as_deref()
                .is_none_or(|c| f.edge.caller.as_deref() == Some(c))
            && self.callee.as_deref().is_none_or(|c| *f.edge.callee == *c)
            && self.trace_id.is_none_or(|t| t == f.trace_id)
            && self.scope.is_none_or(|s| s == f.scope)
            && self.first_break.is_none_or(|b| b == f.first_break)
    }
}

/// One page of stored findings.
#[derive(Clone, Debug, Default)]
pub struct FindingQuery {
    pub filter: FindingFilter,
    /// Observed within it.
    pub window: Window,
    /// Only findings older than this cursor (from a previous page's `next`).
    pub before: Option<i64>,
    pub limit: usize,
}

/// One page of findings, newest first, and the cursor of the next page when there is one.
#[derive(Debug)]
pub struct FindingPage {
    pub findings: Vec<FindingView>,
    pub next: Option<i64>,
}

/// A time window, Unix ms; open ends are unbounded. Counters are per minute, so a window is
/// widened to whole minutes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl Window {
    /// The window in whole minutes, open ends as the extremes: [first, last).
    pub fn minutes(&self) -> (i64, i64) {
        (
            self.since_ms.map_or(i64::MIN, |s| (s / 60_000) as i64),
            self.until_ms
                .map_or(i64::MAX, |u| u.div_ceil(60_000) as i64),
        )
    }

    /// The window in Unix ms, open ends as the extremes.
    pub fn ms(&self) -> (i64, i64) {
        (
            self.since_ms.map_or(i64::MIN, |s| s as i64),
            self.until_ms.map_or(i64::MAX, |u| u as i64),
        )
    }
}

/// (root stage, `None` when untagged; consistent traces; broken traces).
pub type StageTraces = (Option<Arc<str>>, u64, u64);
