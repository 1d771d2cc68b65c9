//! The durable store: findings, per-minute edge counters and traces in an embedded SQLite file
//! (`--data DIR/grayscope.db`), so that a restart, or a crash, finds everything where it was.
//!
//! One process owns a data directory ([`DirLock`]). One writer task batches whatever the workers
//! finalise and writes it in one transaction every `--flush-interval`; a finding is durable within
//! that interval. Readers (the APIs) use their own connections: in WAL mode they never wait for
//! the writer. The queue to the writer is bounded; when the store cannot keep up, or fails, workers
//! wait, their queues fill, and senders are told to retry, exactly as when verification cannot keep
//! up. Every trace handed over is accounted for: written, set aside, or reported lost at shutdown.

pub mod codec;
mod failure;
mod lock;
mod metrics;
mod names;
mod read;
mod retention;
mod schema;
mod stats;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, InterruptHandle, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::ServiceGraph;
pub use failure::Reason;
pub use lock::{DirLock, LOCK_FILE, LockError};
pub use names::{NameKind, Names};
pub use read::{FindingPage, FindingQuery, StageTraces, Window};
pub use schema::{MIGRATIONS, MigrateError};
pub use stats::Tally;

use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::TraceId;
use crate::view::{EdgeSeriesView, ServiceView, TraceView};
use stats::Stats;

/// File name of the database inside `--data`.
pub const DB_FILE: &str = "grayscope.db";
/// Batches of finalised traces queued for the writer at most.
const QUEUE_BATCHES: usize = 256;
/// Read connections kept open for the APIs.
const READERS: usize = 4;
/// How long the writer waits for another connection's lock before the write counts as failed and
/// is retried with backoff; short, so that the shutdown deadline can cut a stuck write.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// After the shutdown deadline, how long an interrupted writer may take to notice.
const ABANDON_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub queue_spans: usize,
    pub flush_interval: Duration,
    pub retention: Duration,
    pub max_bytes: u64,
}

/// SQLite's errors carry their cause twice (as message and as source): shown with `{:#}` they
/// repeat themselves. These variants show it once, in their own message, and chain nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {}: {cause}", path.display())]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("cannot migrate the store {}: {cause}", path.display())]
    Migrate { path: PathBuf, cause: MigrateError },
    #[error("store query failed: {0}")]
    Query(rusqlite::Error),
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    #[error("the store's writer has stopped")]
    Stopped,
    #[error("writing to the store failed: {0}")]
    Write(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Query(e)
    }
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

struct Inner {
    stats: Stats,
    control: Control,
    path: PathBuf,
    names: Arc<Names>,
    symbols: Arc<Symbols>,
    readers: Mutex<Vec<Connection>>,
    /// Cuts the writer's statement short when the shutdown deadline passes.
    interrupt: InterruptHandle,
    /// Held for as long as anything may use the store.
    _lock: DirLock,
}

/// A handle on the store: cheap to clone, shared by the workers and the APIs.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
    room: Arc<Semaphore>,
    capacity: usize,
}

/// The writer task; [`StoreTask::stop`] ends it.
pub struct StoreTask(JoinHandle<()>);

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let open_err = |cause| StoreError::Open {
        path: path.to_path_buf(),
        cause,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", false)?;
        Ok(())
    };
    setup().map_err(open_err)?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) the store in the locked directory, migrates it, and starts the writer
    /// task. Must be called within a tokio runtime.
    pub fn open(
        cfg: &StoreConfig,
        lock: DirLock,
        symbols: Arc<Symbols>,
    ) -> Result<(Store, StoreTask), StoreError> {
        let path = lock.dir().join(DB_FILE);
        let mut conn = open_conn(&path, OpenFlags::default())?;
        let setup = |c: &Connection| -> rusqlite::Result<()> {
            // Incremental vacuum must be chosen before the first table exists; later it is a no-op.
            c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            // WAL + NORMAL: a commit survives a crash of the process; only a power loss can take
            // back the last commits, never corrupt the file.
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.busy_timeout(WRITER_BUSY_TIMEOUT)?;
            Ok(())
        };
        setup(&conn).map_err(|cause| StoreError::Open {
            path: path.clone(),
            cause,
        })?;
        schema::migrate(&mut conn).map_err(|cause| StoreError::Migrate {
            path: path.clone(),
            cause,
        })?;
        let names = Arc::new(Names::load(&conn)?);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_conn(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?);
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let inner = Arc::new(Inner {
            stats: Stats::default(),
            control: Control::default(),
            path,
            names,
            symbols,
            readers: Mutex::new(readers),
            interrupt: conn.get_interrupt_handle(),
            _lock: lock,
        });
        let store = Store {
            inner: inner.clone(),
            tx,
            room: Arc::new(Semaphore::new(cfg.queue_spans)),
            capacity: cfg.queue_spans,
        };
        let writer = writer::Writer::new(inner, conn, cfg.clone());
        Ok((store, StoreTask(tokio::spawn(writer.run(rx)))))
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Spans of finalised traces queued for the writer or waiting in its next write.
    pub fn queued_spans(&self) -> usize {
        self.capacity.saturating_sub(self.room.available_permits())
    }

    /// How far the store is behind: the age of the oldest finalised trace not yet committed.
    pub fn lag(&self) -> Duration {
        match self.inner.stats.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => Duration::from_millis(crate::wall_ms().saturating_sub(ms)),
        }
    }

    /// Traces (and their findings) handed to the store and not written or dropped yet.
    pub fn queued(&self) -> Tally {
        self.inner.stats.queued()
    }

    pub fn written(&self) -> Tally {
        self.inner.stats.written.get()
    }

    /// Traces set aside or lost, by reason.
    pub fn dropped(&self) -> impl Iterator<Item = (Reason, Tally)> + '_ {
        Reason::ALL
            .into_iter()
            .map(|r| (r, self.inner.stats.dropped[r.index()].get()))
    }

    /// Failed write transactions, by reason.
    pub fn write_errors(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.into_iter().map(|r| {
            (
                r,
                self.inner.stats.write_errors[r.index()].load(Ordering::Relaxed),
            )
        })
    }

    /// Queues finalised traces for the next write; waits while the writer is behind. Once the
    /// store has been abandoned at shutdown, the traces are counted as lost instead.
    pub async fn submit(&self, batch: Vec<Finalised>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let stats = &self.inner.stats;
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

    /// Gives up on writing: what waits for room, what is queued and what the writer holds are
    /// counted as lost, and a write in progress is interrupted. For the shutdown deadline.
    pub fn abandon(&self) {
        self.room.close();
        self.inner.control.abandon.cancel();
        self.inner.interrupt.interrupt();
    }

    /// Writes everything queued so far and returns when it is committed.
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

    /// Runs `f` on a read connection, off the async workers.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Names) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(
                    &inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?,
            };
            let out = f(&conn, &inner.names);
            let mut pool = inner.readers.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }

    /// The service graph counted within `w`.
    pub async fn graph(&self, w: Window) -> Result<ServiceGraph, StoreError> {
        let sym = self.inner.symbols.clone();
        self.read(move |c, n| Ok(read::graph(c, n, &sym, w)?)).await
    }

    /// Finalised traces in `w` by root stage: (stage, consistent, broken).
    pub async fn trace_counts(&self, w: Window) -> Result<Vec<StageTraces>, StoreError> {
        self.read(move |c, n| Ok(read::trace_counts(c, n, w)?))
            .await
    }

    pub async fn services(&self) -> Result<Vec<ServiceView>, StoreError> {
        self.read(|c, n| Ok(read::services(c, n)?)).await
    }

    /// One edge over time; `None` when either end is unknown.
    pub async fn edge_series(
        &self,
        caller: String,
        callee: String,
        stage: Option<String>,
        w: Window,
    ) -> Result<Option<EdgeSeriesView>, StoreError> {
        self.read(move |c, n| {
            Ok(read::edge_series(
                c,
                n,
                &caller,
                &callee,
                stage.as_deref(),
                w,
            )?)
        })
        .await
    }

    pub async fn findings(&self, q: FindingQuery) -> Result<FindingPage, StoreError> {
        self.read(move |c, n| Ok(read::findings(c, n, &q)?)).await
    }

    /// A stored trace with its findings, if it was stored (it had findings, or was sampled).
    pub async fn trace(&self, id: TraceId) -> Result<Option<TraceView>, StoreError> {
        self.read(move |c, n| {
            let Some(data) = write::stored_trace(c, id)? else {
                return Ok(None);
            };
            let mut view = codec::decode(id, &data)?;
            view.findings = read::trace_findings(c, n, id)?;
            Ok(Some(view))
        })
        .await
    }
}

impl StoreTask {
    /// Writes everything queued and stops the writer; call once nothing submits any more (the
    /// workers have stopped). If that is not done by `deadline`, abandons the rest. Returns what was
    /// never written: traces still queued, or lost when abandoned. Readers keep working.
    pub async fn stop(mut self, store: &Store, deadline: tokio::time::Instant) -> Tally {
        store.inner.control.stop.cancel();
        if tokio::time::timeout_at(deadline, &mut self.0)
            .await
            .is_err()
        {
            store.abandon();
            if tokio::time::timeout(ABANDON_WAIT, &mut self.0)
                .await
                .is_err()
            {
                tracing::error!(
                    "the store's writer did not stop within {ABANDON_WAIT:?} of being interrupted"
                );
            }
        }
        let stats = &store.inner.stats;
        stats.queued() + stats.dropped[Reason::Shutdown.index()].get()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod writer_tests;
