//! The writer task: the one connection that writes, fed by a bounded queue.
//!
//! It batches whatever the workers finalise and commits it once per `--flush-interval`. When a
//! write fails it decides, by [`Reason`], between keeping the batch and retrying with backoff (the
//! store's fault: the queue fills and senders are told to retry) and repairing, isolating and
//! setting aside the traces that cannot be written (the batch's fault: the rest is written). It
//! stops when told to, after writing what is queued, or at once when abandoned at the shutdown
//! deadline, counting what it could not write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use super::{Inner, Msg, StoreConfig, names, retention, write};
use crate::assemble::Finalised;
use crate::store::failure::{self, Failure, Reason};
use crate::store::stats::Tally;

/// At most one log line per reason a trace is set aside for, this often.
const SET_ASIDE_LOG_EVERY: Duration = Duration::from_secs(600);

/// A run of failed writes, from the first failure to the next success.
struct Failing {
    since: Instant,
    attempts: u32,
    /// Reasons already logged in this run: one line each, not one per attempt.
    logged: Vec<Reason>,
}

pub(super) struct Writer {
    inner: Arc<Inner>,
    conn: Option<Connection>,
    sym_ids: names::SymIds,
    cfg: StoreConfig,
    pending: Vec<Finalised>,
    /// Room in the queue taken by what is pending; released once it is all written or set aside.
    permits: Vec<OwnedSemaphorePermit>,
    failing: Option<Failing>,
    next_write: Instant,
    set_aside_logged: HashMap<Reason, Instant>,
}

/// What became of each trace of a batch in one attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    Written,
    SetAside(Reason),
}

/// One attempt at a batch, made on a blocking thread.
struct Attempt {
    fates: Vec<Fate>,
    /// Every write that failed, in order; the last one stopped the attempt if it was the store's.
    failures: Vec<Failure>,
}

impl Writer {
    pub fn new(inner: Arc<Inner>, conn: Connection, cfg: StoreConfig) -> Writer {
        Writer {
            inner,
            conn: Some(conn),
            sym_ids: Default::default(),
            next_write: Instant::now() + cfg.flush_interval,
            cfg,
            pending: Vec::new(),
            permits: Vec::new(),
            failing: None,
            set_aside_logged: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let ctl = self.inner.control.clone();
        let mut retention = tokio::time::interval(retention::EVERY);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut drained = false;
        loop {
            // While writes fail, what is queued stays queued: that is the backpressure. Once
            // stopping, everything queued is final and is taken (the queue bounds it).
            let take = !drained && (self.failing.is_none() || stopping);
            tokio::select! {
                biased;
                _ = ctl.abandon.cancelled() => return self.abandon(rx).await,
                _ = ctl.stop.cancelled(), if !stopping => {
                    stopping = true;
                    // Senders are refused from here on; what they queued is still received.
                    rx.close();
                }
                msg = rx.recv(), if take => match msg {
                    Some(Msg::Batch(b, permit)) => self.take(b, permit),
                    Some(Msg::Flush(done)) => {
                        self.write().await;
                        let _ = done.send(match &self.failing {
                            None => Ok(()),
                            Some(_) => Err(format!("{} traces not written yet", self.pending.len())),
                        });
                    }
                    None => {
                        drained = true;
                        self.next_write = Instant::now();
                    }
                },
                _ = tokio::time::sleep_until(self.next_write), if !self.pending.is_empty() => {
                    self.write().await;
                }
                _ = retention.tick(), if self.failing.is_none() => self.enforce_retention().await,
            }
            if drained && self.pending.is_empty() {
                return;
            }
        }
    }

    fn take(&mut self, batch: Vec<Finalised>, permit: OwnedSemaphorePermit) {
        if self.pending.is_empty()
            && let Some(oldest) = batch.iter().map(|f| f.outcome.finalised_at_ms).min()
        {
            self.inner.stats.oldest_pending_ms.store(oldest, Relaxed);
        }
        self.pending.extend(batch);
        self.permits.push(permit);
    }

    /// One attempt at everything pending; what it could not write stays pending.
    async fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let inner = self.inner.clone();
        let mut sym_ids = std::mem::take(&mut self.sym_ids);
        let (conn, attempt, batch, sym_ids) = tokio::task::spawn_blocking(move || {
            let a = attempt(&mut conn, &inner, &mut sym_ids, &batch);
            (conn, a, batch, sym_ids)
        })
        .await
        .expect("a store write does not panic");
        self.conn = Some(conn);
        self.sym_ids = sym_ids;
        self.settle(batch, attempt);
    }

    /// Counts and logs what an attempt did, and keeps what it left pending.
    fn settle(&mut self, batch: Vec<Finalised>, attempt: Attempt) {
        let inner = self.inner.clone();
        let stats = &inner.stats;
        for f in &attempt.failures {
            stats.write_error(f.reason);
        }
        let mut set_aside: HashMap<Reason, Tally> = HashMap::new();
        let mut written = Tally::default();
        for (f, fate) in batch.into_iter().zip(attempt.fates) {
            let one = Tally::of(std::slice::from_ref(&f));
            match fate {
                Fate::Written => written = written + one,
                Fate::SetAside(r) => {
                    let t = set_aside.entry(r).or_default();
                    *t = *t + one;
                }
                Fate::Pending => self.pending.push(f),
            }
        }
        stats.written.add(written);
        for (&reason, &t) in &set_aside {
            stats.drop_as(reason, t);
            self.log_set_aside(reason, t, &attempt.failures);
        }
        let now = Instant::now();
        if self.pending.is_empty() {
            self.permits.clear();
            stats.oldest_pending_ms.store(0, Relaxed);
            if let Some(run) = self.failing.take() {
                tracing::info!(
                    "writing to the store works again, after {} failed attempts over {:.1?}",
                    run.attempts,
                    run.since.elapsed()
                );
            }
            self.next_write = now + self.cfg.flush_interval;
            tracing::trace!(
                traces = written.traces,
                findings = written.findings,
                "store write"
            );
            return;
        }
        // What is left failed for a reason of the store's: wait, then try again.
        let failure = attempt
            .failures
            .last()
            .expect("a trace stays pending only after a failure");
        if let Some(oldest) = self.pending.iter().map(|f| f.outcome.finalised_at_ms).min() {
            stats.oldest_pending_ms.store(oldest, Relaxed);
        }
        let run = self.failing.get_or_insert_with(|| Failing {
            since: now,
            attempts: 0,
            logged: Vec::new(),
        });
        run.attempts += 1;
        let delay = failure::backoff(self.cfg.flush_interval, run.attempts);
        if !run.logged.contains(&failure.reason) {
            run.logged.push(failure.reason);
            tracing::error!(
                "writing to the store {} failed: {failure}; {}. {} traces wait; retrying with \
                 backoff, and senders are asked to retry while the queue is full",
                inner.path.display(),
                failure.reason.advice(),
                self.pending.len(),
            );
        }
        self.next_write = now + delay;
    }

    fn log_set_aside(&mut self, reason: Reason, t: Tally, failures: &[Failure]) {
        let now = Instant::now();
        if self
            .set_aside_logged
            .get(&reason)
            .is_some_and(|at| now.duration_since(*at) < SET_ASIDE_LOG_EVERY)
        {
            return;
        }
        self.set_aside_logged.insert(reason, now);
        let why = failures
            .iter()
            .find(|f| f.reason == reason)
            .map_or_else(|| reason.label().to_string(), |f| f.to_string());
        tracing::error!(
            "the store refused {} traces with {} findings: {why}; they are set aside and \
             counted in grayscope_store_dropped_traces_total{{reason=\"{}\"}}, and later traces \
             are written",
            t.traces,
            t.findings,
            reason.label()
        );
    }

    /// The shutdown deadline passed: count everything not written as lost, and stop.
    async fn abandon(mut self, mut rx: mpsc::Receiver<Msg>) {
        rx.close();
        let mut lost = Tally::of(&self.pending);
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Batch(b, _) => lost = lost + Tally::of(&b),
                Msg::Flush(done) => {
                    let _ = done.send(Err("the store was abandoned at shutdown".into()));
                }
            }
        }
        self.pending.clear();
        self.inner.stats.drop_as(Reason::Shutdown, lost);
    }

    async fn enforce_retention(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let cfg = self.cfg.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = retention::enforce(&mut conn, &cfg);
            (conn, r)
        })
        .await
        .expect("retention does not panic");
        self.conn = Some(conn);
        if let Err(e) = result {
            tracing::error!("enforcing the store's retention failed: {e}");
        }
    }
}

use std::sync::atomic::Ordering::Relaxed;

/// Writes `batch`, and when that fails for the batch's sake: repairs the name mirror and tries
/// again, then halves the batch until the traces that still fail stand alone and are set aside.
/// A failure of the store's stops the attempt with the rest pending.
fn attempt(
    conn: &mut Connection,
    inner: &Inner,
    sym_ids: &mut names::SymIds,
    batch: &[Finalised],
) -> Attempt {
    let mut a = Attempt {
        fates: vec![Fate::Pending; batch.len()],
        failures: Vec::new(),
    };
    let once = |conn: &mut Connection, sym_ids: &mut names::SymIds, range| {
        write::write(conn, &inner.names, sym_ids, &inner.symbols, &batch[range])
            .map_err(Failure::from)
    };
    let all = 0..batch.len();
    let mut repaired = false;
    let mut ranges = vec![all];
    while let Some(r) = ranges.pop() {
        match once(conn, sym_ids, r.clone()) {
            Ok(_) => a.fates[r].fill(Fate::Written),
            Err(f) if f.reason.is_store() => {
                a.failures.push(f);
                return a;
            }
            Err(f) => {
                let reason = f.reason;
                a.failures.push(f);
                if !repaired {
                    // The mirror of the names table may be what is wrong (rows another writer
                    // added, or a file replaced underneath): read it again and retry as it was.
                    repaired = true;
                    *sym_ids = names::SymIds::default();
                    if let Err(e) = inner.names.reload(conn) {
                        a.failures.push(e.into());
                        return a;
                    }
                    ranges.push(r);
                } else if r.len() == 1 {
                    a.fates[r.start] = Fate::SetAside(reason);
                } else {
                    let mid = r.start + r.len() / 2;
                    ranges.push(mid..r.end);
                    ranges.push(r.start..mid);
                }
            }
        }
    }
    a
}
