//! Sharding: each trace belongs to one worker (by trace id), and each worker owns its traces.
//!
//! Admission is all-or-nothing per request: a receiver reserves room for every batch of a request on
//! every worker it touches before it sends any of them, so a request is either wholly queued or wholly
//! refused with a retryable error. Room is counted in spans (a semaphore per worker, released when the
//! worker has processed the batch), which bounds queue memory whatever the request sizes.

mod metrics;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::aggregate::Aggregate;
use crate::assemble::{AssembleStats, Assembler, AssemblerConfig, TraceSnapshot};
use crate::instances::{Clock, Instances};
use crate::join::Joins;
use crate::model::{SpanBatch, TraceId};
use crate::store::SharedStore;
use crate::verify::Policy;
use crate::verify::messaging::Unresolved;
use metrics::WorkerGauges;
pub use metrics::WorkerMetrics;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("verification queue of worker {worker} is full; retry later")]
    Full { worker: usize },
    #[error("grayscope is shutting down")]
    Closed,
}

enum Msg {
    Spans(SpanBatch, OwnedSemaphorePermit),
    Snapshot(TraceId, oneshot::Sender<Option<TraceSnapshot>>),
    Flush(oneshot::Sender<()>),
    Stop,
}

struct Lane {
    tx: mpsc::UnboundedSender<Msg>,
    room: Arc<Semaphore>,
    capacity: usize,
}

/// The receivers' handle on the workers.
#[derive(Clone)]
pub struct Shards {
    lanes: Arc<[Lane]>,
}

/// Everything a worker needs; one per worker.
pub struct WorkerSetup {
    pub workers: usize,
    pub queue_spans: usize,
    /// One worker's assembler.
    pub assembler: AssemblerConfig,
    pub policy: Arc<Policy>,
    pub instances: Arc<Instances>,
    pub aggregate: Arc<Aggregate>,
    pub store: SharedStore,
    pub metrics: Arc<WorkerMetrics>,
    pub clock: Clock,
    /// Shared by every worker: a messaging hop's halves are often in traces of two workers.
    pub joins: Arc<Joins>,
}

impl Shards {
    /// Starts the workers on the current tokio runtime.
    pub fn spawn(setup: WorkerSetup) -> (Shards, Vec<JoinHandle<()>>) {
        let mut lanes = Vec::with_capacity(setup.workers);
        let mut handles = Vec::with_capacity(setup.workers);
        for i in 0..setup.workers {
            let (tx, rx) = mpsc::unbounded_channel();
            let room = Arc::new(Semaphore::new(setup.queue_spans));
            let asm = Assembler::new(
                setup.assembler.clone(),
                setup.policy.clone(),
                setup.instances.clone(),
            );
            let w = Worker {
                index: i,
                gauges: setup.metrics.gauges(i),
                asm,
                aggregate: setup.aggregate.clone(),
                joins: setup.joins.clone(),
                store: setup.store.clone(),
                metrics: setup.metrics.clone(),
                clock: setup.clock,
                room: room.clone(),
                capacity: setup.queue_spans,
            };
            handles.push(tokio::spawn(w.run(rx, setup.assembler.tick())));

            lanes.push(Lane {
                tx,
                room,
                capacity: setup.queue_spans,
            });
        }
        (
            Shards {
                lanes: lanes.into(),
            },
            handles,
        )
    }

    /// Lanes with no workers behind them: the caller takes the batches, and room in a lane is freed
    /// as it does. For tests of admission, and for consumers other than grayscope's workers.
    pub fn unattended(lanes: usize, queue_spans: usize) -> (Shards, Vec<LaneReceiver>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lane = Lane {
                    tx,
                    room: Arc::new(Semaphore::new(queue_spans)),
                    capacity: queue_spans,
                };
                (lane, LaneReceiver { rx })
            })
            .unzip();
        (
            Shards {
                lanes: senders.into(),
            },
            receivers,
        )
    }

    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Queues one batch per worker (index = worker), or none of them.
    pub fn submit(&self, batches: Vec<SpanBatch>) -> Result<(), SubmitError> {
        let mut permits = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            if b.spans.is_empty() {
                permits.push(None);
                continue;
            }
            let lane = &self.lanes[i];
            // A batch larger than the whole queue waits for an empty queue rather than never fitting.
            let n = b.weight().min(lane.capacity) as u32;
            match lane.room.clone().try_acquire_many_owned(n) {
                Ok(p) => permits.push(Some(p)),
                Err(TryAcquireError::NoPermits) => return Err(SubmitError::Full { worker: i }),
                Err(TryAcquireError::Closed) => return Err(SubmitError::Closed),
            }
        }
        for ((lane, batch), permit) in self.lanes.iter().zip(batches).zip(permits) {
            if let Some(p) = permit {
                lane.tx
                    .send(Msg::Spans(batch, p))
                    .map_err(|_| SubmitError::Closed)?;
            }
        }
        Ok(())
    }

    /// The trace as its worker holds it now, if it is being assembled.
    pub async fn snapshot(&self, id: TraceId) -> Option<TraceSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.lanes[id.shard(self.lanes.len())]
            .tx
            .send(Msg::Snapshot(id, tx))
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Finalises everything buffered, on every worker, and waits until the aggregate has it.
    pub async fn flush(&self) {
        let mut waits = Vec::new();
        for lane in self.lanes.iter() {
            let (tx, rx) = oneshot::channel();
            if lane.tx.send(Msg::Flush(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// Asks every worker to finalise what it holds and stop. Batches queued before this are processed.
    pub fn stop(&self) {
        for lane in self.lanes.iter() {
            lane.room.close();
            let _ = lane.tx.send(Msg::Stop);
        }
    }
}

/// The receiving end of an [`Shards::unattended`] lane.
pub struct LaneReceiver {
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl LaneReceiver {
    /// The next queued batch; its room in the lane is freed when this returns.
    pub async fn next_batch(&mut self) -> Option<SpanBatch> {
        loop {
            match self.rx.recv().await? {
                Msg::Spans(batch, _permit) => return Some(batch),
                Msg::Snapshot(_, reply) => {
                    let _ = reply.send(None);
                }
                Msg::Flush(reply) => {
                    let _ = reply.send(());
                }
                Msg::Stop => return None,
            }
        }
    }
}

struct Worker {
    index: usize,
    gauges: WorkerGauges,
    asm: Assembler,
    aggregate: Arc<Aggregate>,
    joins: Arc<Joins>,
    store: SharedStore,
    metrics: Arc<WorkerMetrics>,
    clock: Clock,
    room: Arc<Semaphore>,
    capacity: usize,
}

impl Worker {
    /// Passes finalised traces on: counted in memory, queued for the store. Waits while the store
    /// is behind, which backs up this worker's queue and so tells senders to retry.
    async fn hand_over(&self, out: &mut Vec<crate::assemble::Finalised>) {
        // Also on ticks with nothing finalised: waits for linked producers expire.
        self.joins
            .absorb(out, self.clock.now_ms(), crate::wall_ms());
        if out.is_empty() {
            return;
        }
        self.aggregate.absorb(out);
        // Refused only once the store is abandoned at shutdown, which counts and reports them.
        if let Err(e) = self.store.submit(std::mem::take(out)).await {
            tracing::debug!("worker {}: {e}", self.index);
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = Vec::new();
        let mut published = AssembleStats::default();
        // Walking every trace to size it is not free: once a second is plenty for a gauge.
        let mut sized_at = tokio::time::Instant::now();
        loop {
            let stop = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Spans(batch, permit)) => {
                        self.asm.insert(batch, self.clock.now_ms(), crate::wall_ms(), &mut out);
                        drop(permit);
                        false
                    }
                    Some(Msg::Snapshot(id, reply)) => {
                        let _ = reply.send(self.asm.snapshot(id));
                        false
                    }
                    Some(Msg::Flush(reply)) => {
                        self.asm.drain(self.clock.now_ms(), crate::wall_ms(), &mut out);
                        self.hand_over(&mut out).await;
                        let _ = reply.send(());
                        false
                    }
                    Some(Msg::Stop) | None => true,
                },
                _ = ticker.tick() => {
                    self.asm.expire(self.clock.now_ms(), crate::wall_ms(), &mut out);
                    if sized_at.elapsed() >= Duration::from_secs(1) {
                        sized_at = tokio::time::Instant::now();
                        self.gauges.bytes.set(self.asm.memory_bytes() as i64);
                    }
                    false
                }
            };
            if stop {
                self.asm
                    .stop(self.clock.now_ms(), crate::wall_ms(), &mut out);
                self.joins
                    .absorb(&mut out, self.clock.now_ms(), crate::wall_ms());
                self.joins.drain(
                    Unresolved::Shutdown,
                    self.clock.now_ms(),
                    crate::wall_ms(),
                    &mut out,
                );
            }
            self.hand_over(&mut out).await;
            self.publish(&mut published);
            if stop {
                tracing::debug!(worker = self.index, "worker stopped");
                return;
            }
        }
    }

    fn publish(&mut self, published: &mut AssembleStats) {
        let now = self.asm.stats();
        self.metrics.add_assembly(published, &now);
        self.metrics.observe_lateness(&self.asm.take_lateness());
        *published = now;
        let g = &self.gauges;
        g.spans.set(self.asm.buffered_spans() as i64);
        g.traces.set(self.asm.buffered_traces() as i64);
        let (kept, weight) = self.asm.kept();
        g.kept_traces.set(kept as i64);
        g.kept_spans.set(weight as i64);
        g.orphans_waiting.set(self.asm.orphans_waiting() as i64);
        g.queued
            .set(self.capacity.saturating_sub(self.room.available_permits()) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Kit;

    fn batch(k: &Kit, n: usize) -> SpanBatch {
        let s = k.span(1, None, "a", crate::model::SpanKind::Server);
        SpanBatch {
            spans: (0..n).map(|i| (TraceId(i as u128 + 1), s)).collect(),
            ..SpanBatch::default()
        }
    }

    #[tokio::test]
    async fn admission_is_all_or_nothing_and_room_returns_as_batches_are_taken() {
        let k = Kit::new();
        let (shards, mut lanes) = Shards::unattended(2, 10);
        shards.submit(vec![batch(&k, 6), batch(&k, 6)]).unwrap();
        // Lane 0 has room for 4, lane 1 has room for 4: a request needing 5 on lane 1 is refused
        // whole, so lane 0's room is untouched.
        assert_eq!(
            shards.submit(vec![batch(&k, 4), batch(&k, 5)]),
            Err(SubmitError::Full { worker: 1 })
        );
        shards
            .submit(vec![batch(&k, 4), SpanBatch::default()])
            .unwrap();
        assert_eq!(
            shards.submit(vec![batch(&k, 1), SpanBatch::default()]),
            Err(SubmitError::Full { worker: 0 })
        );
        assert_eq!(lanes[0].next_batch().await.unwrap().spans.len(), 6);
        shards
            .submit(vec![batch(&k, 6), SpanBatch::default()])
            .unwrap();
        // A batch larger than a whole lane waits for an empty lane instead of never fitting.
        assert_eq!(lanes[1].next_batch().await.unwrap().spans.len(), 6);
        shards
            .submit(vec![SpanBatch::default(), batch(&k, 50)])
            .unwrap();
        assert_eq!(lanes[1].next_batch().await.unwrap().spans.len(), 50);
        shards.stop();
        assert_eq!(
            shards.submit(vec![batch(&k, 1), SpanBatch::default()]),
            Err(SubmitError::Closed)
        );
    }
}
