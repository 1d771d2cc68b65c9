//! The writer task: the one connection that writes, fed by a bounded queue.
//!
//! It batches whatever the workers finalise and commits it once per `--flush-interval`, or as soon
//! as half the queue is waiting: the queue bounds memory, and must not also cap throughput at one
//! queue per flush interval (workers wait for room, and senders are refused). When a
//! write fails it decides, by [`Reason`], between keeping the batch and retrying with backoff (the
//! store's fault: the queue fills and senders are told to retry) and repairing, isolating and
//! setting aside the traces that cannot be written (the batch's fault: the rest is written). It
//! stops when told to, after writing what is queued, or at once when abandoned at the shutdown
//! deadline, counting what it could not write.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failure::{self, Failure, Reason};
use super::stats::{Stats, Tally};
use super::{Health, StoreConfig, StoreError};
use crate::assemble::Finalised;

/// Batches of finalised traces queued for the writer at most.
const QUEUE_BATCHES: usize = 256;
/// After the shutdown deadline, how long an interrupted writer may take to notice.
const ABANDON_WAIT: Duration = Duration::from_secs(2);
/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// What a database does for the writer; everything else (queueing, backpressure, retries,
/// isolating a bad trace, accounting, the shutdown) is the writer's and is the same for all.
#[async_trait::async_trait]
pub trait Backend: Send + 'static {
    /// Writes `batch[range]` in one transaction: all of it, or (on error) none of it.
    async fn write(
        &mut self,
        batch: &Arc<Vec<Finalised>>,
        range: Range<usize>,
    ) -> Result<(), Failure>;

    /// Makes what the backend mirrors of the database (name ids) match it again, before the
    /// writer retries a batch that failed for the batch's sake.
    async fn repair(&mut self) -> Result<(), Failure>;

    /// Deletes what is past `--retention` and `--max-store-bytes`, and logs it.
    async fn retention(&mut self);
}

enum Msg {
    Batch(Vec<Finalised>, OwnedSemaphorePermit),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// How the shutdown talks to the writer: stop (write what is queued, then end) and abandon (the
/// deadline passed: count what is unwritten as lost, and end now).
#[derive(Clone, Default)]
struct Control {
    stop: CancellationToken,
    abandon: CancellationToken,
}

/// The write side of a store, over any [`Backend`]: the bounded queue the workers submit to, the
/// writer task that drains it, and the accounting of everything handed over.
pub struct WriteSide {
    tx: mpsc::Sender<Msg>,
    room: Arc<Semaphore>,
    capacity: usize,
    stats: Arc<Stats>,
    control: Control,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Cuts the backend's statement in progress short (the shutdown deadline).
    interrupt: Box<dyn Fn() + Send + Sync>,
}

impl WriteSide {
    /// Starts the writer task over `backend`; `location` names the store in its log lines.
    pub fn start<B: Backend>(
        backend: B,
        cfg: &StoreConfig,
        location: String,
        interrupt: impl Fn() + Send + Sync + 'static,
    ) -> WriteSide {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let stats = Arc::new(Stats::default());
        let control = Control::default();
        let writer = Writer {
            backend,
            stats: stats.clone(),
            control: control.clone(),
            location,
            next_write: Instant::now() + cfg.flush_interval,
            cfg: cfg.clone(),
            pending: Vec::new(),
            permits: Vec::new(),
            held: 0,
            failing: None,
            set_aside_logged: HashMap::new(),
        };
        WriteSide {
            tx,
            room: Arc::new(Semaphore::new(cfg.queue_spans)),
            capacity: cfg.queue_spans,
            stats,
            control,
            task: Mutex::new(Some(tokio::spawn(writer.run(rx)))),
            interrupt: Box::new(interrupt),
        }
    }

    pub async fn submit(&self, batch: Vec<Finalised>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let stats = &self.stats;
        let tally = Tally::of(&batch);
        stats.submitted.add(tally);
        let spans: usize = batch.iter().map(|f| f.outcome.spans.max(1) as usize).sum();
        let n = spans.min(self.capacity) as u32;
        let Ok(permit) = self.room.clone().acquire_many_owned(n).await else {
            stats.drop_as(Reason::Shutdown, tally);
            return Err(StoreError::Stopped);
        };
        self.tx
            .send(Msg::Batch(batch, permit))
            .await
            .map_err(|mpsc::error::SendError(msg)| {
                if let Msg::Batch(b, _) = msg {
                    stats.drop_as(Reason::Shutdown, Tally::of(&b));
                }
                StoreError::Stopped
            })
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| StoreError::Stopped)?;
        wait.await
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::Write)
    }

    pub async fn stop(&self, deadline: tokio::time::Instant) -> Tally {
        self.control.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout_at(deadline, &mut task).await.is_err()
        {
            self.abandon();
            if tokio::time::timeout(ABANDON_WAIT, &mut task).await.is_err() {
                tracing::error!(
                    "the store's writer did not stop within {ABANDON_WAIT:?} of being interrupted"
                );
            }
        }
        let stats = &self.stats;
        stats.queued() + stats.dropped[Reason::Shutdown.index()].get()
    }

    pub fn abandon(&self) {
        self.room.close();
        self.control.abandon.cancel();
        (self.interrupt)();
    }

    pub fn health(&self) -> Health {
        let stats = &self.stats;
        Health {
            queued_spans: self.capacity.saturating_sub(self.room.available_permits()),
            lag: match stats.oldest_pending_ms.load(Relaxed) {
                0 => Duration::ZERO,
                ms => Duration::from_millis(crate::wall_ms().saturating_sub(ms)),
            },
            failing: stats.failing.load(Relaxed),
            queued: stats.queued(),
            written: stats.written.get(),
            dropped: Reason::ALL
                .into_iter()
                .map(|r| (r, stats.dropped[r.index()].get()))
                .collect(),
            write_errors: Reason::ALL
                .into_iter()
                .map(|r| (r, stats.write_errors[r.index()].load(Relaxed)))
                .collect(),
        }
    }
}

/// At most one log line per reason a trace is set aside for, this often.
const SET_ASIDE_LOG_EVERY: Duration = Duration::from_secs(600);

/// A run of failed writes, from the first failure to the next success.
struct Failing {
    since: Instant,
    attempts: u32,
    /// Reasons already logged in this run: one line each, not one per attempt.
    logged: Vec<Reason>,
}

struct Writer<B> {
    backend: B,
    stats: Arc<Stats>,
    control: Control,
    location: String,
    cfg: StoreConfig,
    pending: Vec<Finalised>,
    /// Room in the queue taken by what is pending; released once it is all written or set aside.
    permits: Vec<OwnedSemaphorePermit>,
    /// Spans of room those permits hold.
    held: usize,
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

/// One attempt at a batch.
struct Attempt {
    fates: Vec<Fate>,
    /// Every write that failed, in order; the last one stopped the attempt if it was the store's.
    failures: Vec<Failure>,
}

impl<B: Backend> Writer<B> {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let ctl = self.control.clone();
        let mut retention = tokio::time::interval(RETENTION_EVERY);
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
                _ = retention.tick(), if self.failing.is_none() => self.backend.retention().await,
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
            self.stats.oldest_pending_ms.store(oldest, Relaxed);
        }
        self.pending.extend(batch);
        self.held += permit.num_permits();
        self.permits.push(permit);
        if self.failing.is_none() && self.held * 2 >= self.cfg.queue_spans {
            self.next_write = Instant::now();
        }
    }

    /// One attempt at everything pending; what it could not write stays pending.
    async fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = Arc::new(std::mem::take(&mut self.pending));
        let attempt = attempt(&mut self.backend, &batch).await;
        // A backend keeps no reference to a batch past its write.
        let batch = Arc::try_unwrap(batch)
            .unwrap_or_else(|_| unreachable!("a backend kept a batch after writing it"));
        self.settle(batch, attempt);
    }

    /// Counts and logs what an attempt did, and keeps what it left pending.
    fn settle(&mut self, batch: Vec<Finalised>, attempt: Attempt) {
        let stats = self.stats.clone();
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
            self.held = 0;
            stats.oldest_pending_ms.store(0, Relaxed);
            stats.failing.store(false, Relaxed);
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
        stats.failing.store(true, Relaxed);
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
                self.location,
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
        self.stats.drop_as(Reason::Shutdown, lost);
    }
}

/// Writes `batch`, and when that fails for the batch's sake: repairs the backend's mirror and
/// tries again, then halves the batch until the traces that still fail stand alone and are set
/// aside. A failure of the store's stops the attempt with the rest pending.
async fn attempt<B: Backend>(backend: &mut B, batch: &Arc<Vec<Finalised>>) -> Attempt {
    let mut a = Attempt {
        fates: vec![Fate::Pending; batch.len()],
        failures: Vec::new(),
    };
    let mut repaired = false;
    // A stack of slices to write, halved when one fails for its traces' sake.
    let all = 0..batch.len();
    let mut ranges = vec![all];
    while let Some(r) = ranges.pop() {
        match backend.write(batch, r.clone()).await {
            Ok(()) => a.fates[r].fill(Fate::Written),
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
                    if let Err(e) = backend.repair().await {
                        a.failures.push(e);
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
