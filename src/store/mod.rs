//! The durable store: findings, per-minute edge counters, instance sightings and sample traces,
//! behind one trait so that where they are kept is a choice of deployment, not of the code above.
//!
//! [`Store`] is what the rest of grayscope sees: the workers hand it finalised traces
//! ([`Store::submit`]), the read side asks it the questions the APIs answer, in the read model's
//! types ([`crate::view`]), and the shutdown stops it within a deadline. [`sqlite`] keeps
//! everything in one embedded file per process. Every implementation accounts for every trace it
//! is handed (written, set aside, or reported lost: [`Health`]), refuses nothing silently, and runs
//! the same test suite (`tests.rs`).

pub mod codec;
mod failure;
mod metrics;
pub mod postgres;
mod query;
pub mod sql;
pub mod sqlite;
mod stats;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::ServiceGraph;
use crate::assemble::Finalised;
use crate::membership::Member;
use crate::model::{SpanId, TraceId};
use crate::verify::ProducerHalf;
use crate::view::{EdgeSeriesView, ServiceView, TraceView};

pub use failure::{Failure, Reason};
pub use metrics::register_metrics;
pub use postgres::PostgresStore;
pub use query::{FindingFilter, FindingPage, FindingQuery, StageTraces, Window};
pub use sqlite::{DirLock, LockError, SqliteStore};
pub use stats::Tally;

/// A store shared by the workers, the read side and the shutdown.
pub type SharedStore = Arc<dyn Store>;

/// What every store is configured with.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Spans of finalised traces queued for writing at most; past it, [`Store::submit`] waits.
    pub queue_spans: usize,
    /// A finalised trace is written within this long.
    pub flush_interval: Duration,
    /// Data older than this is deleted.
    pub retention: Duration,
    /// Past this size the oldest data is deleted first.
    pub max_bytes: u64,
}

/// Store errors carry their cause in their own message and chain nothing: a database driver's
/// error often repeats itself through its sources, and `{:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {where_}: {cause}")]
    Open { where_: String, cause: String },
    #[error("cannot migrate the store {where_}: {cause}")]
    Migrate { where_: String, cause: String },
    #[error("store query failed: {0}")]
    Query(String),
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    #[error("the store's writer has stopped")]
    Stopped,
    #[error("writing to the store failed: {0}")]
    Write(String),
}

/// What became of what a store was handed, and how far behind it is: for its metrics, its
/// alerts and the shutdown's report.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Spans of finalised traces queued or being written.
    pub queued_spans: usize,
    /// Age of the oldest finalised trace not yet written.
    pub lag: Duration,
    /// Writes fail for a reason of the store's (it is down, full, locked): they are retried.
    pub failing: bool,
    /// Traces handed over and neither written nor dropped yet.
    pub queued: Tally,
    pub written: Tally,
    /// Traces set aside or lost, by reason.
    pub dropped: Vec<(Reason, Tally)>,
    /// Failed writes, by reason.
    pub write_errors: Vec<(Reason, u64)>,
}

impl Health {
    pub fn dropped(&self, reason: Reason) -> Tally {
        self.dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(Tally::default(), |(_, t)| *t)
    }

    pub fn write_errors(&self, reason: Reason) -> u64 {
        self.write_errors
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Where the data is, for logs and errors (a path, a database URL without its password).
    fn location(&self) -> String;

    /// Queues finalised traces for writing; waits while the queue is full (backpressure). Once
    /// the store has been abandoned, the traces are counted as lost instead.
    async fn submit(&self, batch: Vec<Finalised>) -> Result<(), StoreError>;

    /// Writes everything queued so far and returns when it is durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Writes what is queued and stops writing; if that is not done by `deadline`, abandons the
    /// rest. Returns what was never written. Reads keep working.
    async fn stop(&self, deadline: tokio::time::Instant) -> Tally;

    /// Gives up on writing at once: what is queued, and what waits for room, is counted as lost.
    fn abandon(&self);

    fn health(&self) -> Health;

    /// The service graph counted within `w`.
    async fn graph(&self, w: Window) -> Result<ServiceGraph, StoreError>;

    /// Finalised traces in `w` by root stage: (stage, consistent, broken).
    async fn trace_counts(&self, w: Window) -> Result<Vec<StageTraces>, StoreError>;

    async fn services(&self) -> Result<Vec<ServiceView>, StoreError>;

    /// One edge over time; `None` when either end is unknown.
    async fn edge_series(
        &self,
        caller: String,
        callee: String,
        stage: Option<String>,
        w: Window,
    ) -> Result<Option<EdgeSeriesView>, StoreError>;

    async fn findings(&self, q: FindingQuery) -> Result<FindingPage, StoreError>;

    /// A stored trace with its findings, if it was stored (it had findings, or was sampled).
    async fn trace(&self, id: TraceId) -> Result<Option<TraceView>, StoreError>;

    /// Whether several instances share this store (the cluster is more than this process).
    fn shared(&self) -> bool {
        false
    }

    /// Registers `me` (or renews its registration) and returns the members whose heartbeat is
    /// younger than `expiry_ms`, `me` among them. A store of one process has one member.
    async fn heartbeat(&self, me: &Member, _expiry_ms: u64) -> Result<Vec<Member>, StoreError> {
        Ok(vec![me.clone()])
    }

    /// Removes a member that stops: the others see it gone at once.
    async fn leave(&self, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Adds what this instance saw to the cluster's sightings and returns every sighting since
    /// `since_ms`: (service, instance stage, last seen Unix ms). A store of one process has only
    /// its own.
    async fn share_sightings(
        &self,
        _seen: Vec<Sighting>,
        _since_ms: u64,
    ) -> Result<Vec<Sighting>, StoreError> {
        Ok(Vec::new())
    }

    /// Offers producer spans of messaging hops to the other instances, and forgets those offered
    /// before `forget_before_ms` (Unix ms): a consumer's trace is usually judged by another
    /// instance than its producer's. A store of one process shares nothing.
    async fn share_producers(
        &self,
        _producers: &[ProducerHalf],
        _now_ms: u64,
        _forget_before_ms: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The producer spans among `keys` that some instance offered.
    async fn find_producers(
        &self,
        _keys: &[(TraceId, SpanId)],
    ) -> Result<Vec<ProducerHalf>, StoreError> {
        Ok(Vec::new())
    }
}

/// A service instance seen: (service, instance stage, last seen Unix ms).
pub type Sighting = (String, String, u64);

#[cfg(test)]
pub(crate) mod tests;
