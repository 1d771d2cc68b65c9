//! The durable store: findings, per-minute edge counters and traces in an embedded SQLite file
//! (`--data DIR/grayscope.db`), so that a restart, or a crash, finds everything where it was.
//!
//! One writer task batches whatever the workers finalise and writes it in one transaction every
//! `--flush-interval`; a finding is durable within that interval. Readers (the APIs) use their
//! own connections: in WAL mode they never wait for the writer. The queue to the writer is
//! bounded; when the disk cannot keep up, workers wait, their queues fill, and senders are told to
//! retry, exactly as when verification cannot keep up.

pub mod codec;
mod names;
mod read;
mod retention;
mod schema;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::aggregate::ServiceGraph;
pub use names::{NameKind, Names};
pub use read::{FindingPage, FindingQuery, StageTraces, Window};
pub use schema::{MIGRATIONS, MigrateError};

use crate::api::views::{EdgeSeriesView, ServiceView, TraceView};
use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::TraceId;

/// File name of the database inside `--data`.
pub const DB_FILE: &str = "grayscope.db";
/// Batches of finalised traces queued for the writer at most.
const QUEUE_BATCHES: usize = 256;
/// Spans in finalised traces queued or pending for the writer at most: past it, workers wait.
/// Counted in spans, not traces, so that the memory it holds is bounded whatever the traces' size
/// (at most about 150 bytes a span: its edge outcome, and its snapshot for a stored trace).
pub const QUEUE_SPANS: usize = 524_288;
/// Read connections kept open for the APIs.
const READERS: usize = 4;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub flush_interval: Duration,
    pub retention: Duration,
    pub max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot migrate the store {path}: {source}")]
    Migrate { path: PathBuf, source: MigrateError },
    #[error("store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    #[error("the store's writer has stopped")]
    Stopped,
    #[error("writing to the store failed: {0}")]
    Write(String),
}

enum Msg {
    Batch(Vec<Finalised>, OwnedSemaphorePermit),
    Flush(oneshot::Sender<Result<(), String>>),
    Stop,
}

/// What the store's metrics show.
#[derive(Default)]
struct Stats {
    /// Finalisation time (Unix ms) of the oldest trace not yet committed; 0 when none.
    oldest_pending_ms: AtomicU64,
}

struct Inner {
    stats: Arc<Stats>,
    path: PathBuf,
    names: Arc<Names>,
    symbols: Arc<Symbols>,
    readers: Mutex<Vec<Connection>>,
}

/// A handle on the store: cheap to clone, shared by the workers and the APIs.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
    room: Arc<Semaphore>,
}

/// The writer task; [`StoreTask::stop`] ends it.
pub struct StoreTask(JoinHandle<()>);

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", false)?;
        Ok(())
    };
    setup().map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) the store in `cfg.dir`, migrates it, and starts the writer task. Must be
    /// called within a tokio runtime.
    pub fn open(
        cfg: &StoreConfig,
        symbols: Arc<Symbols>,
    ) -> Result<(Store, StoreTask), StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| StoreError::Dir {
            path: cfg.dir.clone(),
            source,
        })?;
        let path = cfg.dir.join(DB_FILE);
        let mut conn = open_conn(&path, OpenFlags::default())?;
        let setup = |c: &Connection| -> rusqlite::Result<()> {
            // Incremental vacuum must be chosen before the first table exists; later it is a no-op.
            c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            // WAL + NORMAL: a commit survives a crash of the process; only a power loss can take
            // back the last commits, never corrupt the file.
            c.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(())
        };
        setup(&conn).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        schema::migrate(&mut conn).map_err(|source| StoreError::Migrate {
            path: path.clone(),
            source,
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
        let stats = Arc::new(Stats::default());
        let store = Store {
            inner: Arc::new(Inner {
                stats: stats.clone(),
                path,
                names: names.clone(),
                symbols: symbols.clone(),
                readers: Mutex::new(readers),
            }),
            tx,
            room: Arc::new(Semaphore::new(QUEUE_SPANS)),
        };
        let writer = Writer {
            stats,
            conn: Some(conn),
            names,
            sym_ids: Default::default(),
            symbols,
            cfg: cfg.clone(),
            pending: Vec::new(),
            permits: Vec::new(),
            failing: false,
        };
        Ok((store, StoreTask(tokio::spawn(writer.run(rx)))))
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Spans of finalised traces queued for the writer or waiting in its next write.
    pub fn queued_spans(&self) -> usize {
        QUEUE_SPANS - self.room.available_permits()
    }

    /// How far the store is behind: the age of the oldest finalised trace not yet committed.
    pub fn lag(&self) -> Duration {
        match self.inner.stats.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => Duration::from_millis(crate::wall_ms().saturating_sub(ms)),
        }
    }

    /// Queues finalised traces for the next write; waits while the writer is behind.
    pub async fn submit(&self, batch: Vec<Finalised>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let spans: usize = batch.iter().map(|f| f.outcome.spans.max(1) as usize).sum();
        let n = spans.min(QUEUE_SPANS) as u32;
        let permit = self
            .room
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| StoreError::Stopped)?;
        self.tx
            .send(Msg::Batch(batch, permit))
            .await
            .map_err(|_| StoreError::Stopped)
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
    /// workers have stopped). Readers keep working.
    pub async fn stop(self, store: &Store) {
        if store.tx.send(Msg::Stop).await.is_ok()
            && let Err(e) = self.0.await
        {
            tracing::error!("the store's writer failed: {e}");
        }
    }
}

struct Writer {
    stats: Arc<Stats>,
    conn: Option<Connection>,
    names: Arc<Names>,
    sym_ids: names::SymIds,
    symbols: Arc<Symbols>,
    cfg: StoreConfig,
    pending: Vec<Finalised>,
    /// Room in the queue taken by what is pending; released once it is written.
    permits: Vec<OwnedSemaphorePermit>,
    /// The last write failed: take nothing new until it succeeds, so the queue, not memory,
    /// absorbs the backlog and senders are slowed down.
    failing: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(self.cfg.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retention = tokio::time::interval(retention::EVERY);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv(), if !self.failing => match msg {
                    Some(Msg::Batch(b, permit)) => {
                        if self.pending.is_empty()
                            && let Some(oldest) = b.iter().map(|f| f.outcome.finalised_at_ms).min()
                        {
                            self.stats.oldest_pending_ms.store(oldest, Ordering::Relaxed);
                        }
                        self.pending.extend(b);
                        self.permits.push(permit);
                    }
                    Some(Msg::Flush(done)) => {
                        let _ = done.send(self.write().await);
                    }
                    Some(Msg::Stop) | None => {
                        let _ = self.write().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    let _ = self.write().await;
                }
                _ = retention.tick() => self.enforce_retention().await,
            }
        }
    }

    /// Writes everything pending in one transaction, on a blocking thread.
    async fn write(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let Some(mut conn) = self.conn.take() else {
            return Err("no connection".into());
        };
        let (names, symbols) = (self.names.clone(), self.symbols.clone());
        let mut sym_ids = std::mem::take(&mut self.sym_ids);
        let (conn, result, batch, sym_ids) = tokio::task::spawn_blocking(move || {
            let r = write::write(&mut conn, &names, &mut sym_ids, &symbols, &batch);
            (conn, r, batch, sym_ids)
        })
        .await
        .expect("the store write does not panic");
        self.conn = Some(conn);
        self.sym_ids = sym_ids;
        match result {
            Ok(w) => {
                self.failing = false;
                self.permits.clear();
                self.stats.oldest_pending_ms.store(0, Ordering::Relaxed);
                tracing::trace!(findings = w.findings, traces = w.traces, "store write");
                Ok(())
            }
            Err(e) => {
                // Keep the batch for the next attempt: a full disk or a locked file may clear.
                if !self.failing {
                    tracing::error!(
                        "writing to the store failed (retrying every --flush-interval): {e}"
                    );
                }
                self.failing = true;
                self.pending = batch;
                Err(e.to_string())
            }
        }
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

#[cfg(test)]
mod tests;
