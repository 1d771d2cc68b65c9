//! What happened to every finalised trace handed to the store: written, set aside, or still
//! queued. The counts add up (`submitted = written + dropped + queued`), which is how an operator,
//! and the tests, know that nothing acknowledged went missing without a number saying so.

use std::sync::atomic::{AtomicU64, Ordering};

use super::failure::Reason;
use crate::assemble::Finalised;

/// Traces and the findings in them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub traces: u64,
    pub findings: u64,
}

impl Tally {
    pub fn of(batch: &[Finalised]) -> Tally {
        Tally {
            traces: batch.len() as u64,
            findings: batch.iter().map(|f| f.outcome.findings.len() as u64).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traces == 0 && self.findings == 0
    }
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            traces: self.traces + o.traces,
            findings: self.findings + o.findings,
        }
    }
}

#[derive(Default)]
pub struct Counter {
    traces: AtomicU64,
    findings: AtomicU64,
}

impl Counter {
    pub fn add(&self, t: Tally) {
        self.traces.fetch_add(t.traces, Ordering::Relaxed);
        self.findings.fetch_add(t.findings, Ordering::Relaxed);
    }

    pub fn get(&self) -> Tally {
        Tally {
            traces: self.traces.load(Ordering::Relaxed),
            findings: self.findings.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
pub struct Stats {
    /// Finalisation time (Unix ms) of the oldest trace not yet committed; 0 when none.
    pub oldest_pending_ms: AtomicU64,
    pub submitted: Counter,
    pub written: Counter,
    /// By [`Reason`]: set aside, or unwritten at shutdown.
    pub dropped: [Counter; Reason::ALL.len()],
    /// Failed write transactions by [`Reason`].
    pub write_errors: [AtomicU64; Reason::ALL.len()],
    /// Writes are failing for a reason of the store's: from the first failure to the next success.
    pub failing: std::sync::atomic::AtomicBool,
}

impl Stats {
    pub fn drop_as(&self, reason: Reason, t: Tally) {
        self.dropped[reason.index()].add(t);
    }

    pub fn dropped_total(&self) -> Tally {
        self.dropped
            .iter()
            .fold(Tally::default(), |sum, c| sum + c.get())
    }

    /// Handed to the store and neither written nor dropped yet.
    pub fn queued(&self) -> Tally {
        // Read in the order they grow, so that a concurrent write never makes this negative.
        let (written, dropped) = (self.written.get(), self.dropped_total());
        let submitted = self.submitted.get();
        Tally {
            traces: submitted
                .traces
                .saturating_sub(written.traces + dropped.traces),
            findings: submitted
                .findings
                .saturating_sub(written.findings + dropped.findings),
        }
    }

    pub fn write_error(&self, reason: Reason) {
        self.write_errors[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}
