//! The store in an embedded SQLite file (`--data DIR/grayscope.db`), so that a restart, or a
//! crash, finds everything where it was.
//!
//! One process owns a data directory ([`DirLock`]). One writer task batches whatever the workers
//! finalise and writes it in one transaction every `--flush-interval`; a finding is durable within
//! that interval. Readers (the APIs) use their own connections: in WAL mode they never wait for
//! the writer. The queue to the writer is bounded; when the store cannot keep up, or fails, workers
//! wait, their queues fill, and senders are told to retry, exactly as when verification cannot keep
//! up. Every trace handed over is accounted for: written, set aside, or reported lost at shutdown.

mod lock;
mod retention;
mod schema;
mod write;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use lock::{DirLock, LOCK_FILE, LockError};
pub use schema::{MIGRATIONS, MigrateError};

use super::sql::names::{Names, SymIds};
use super::sql::{Db, Row, Value, read};
use super::stats::Tally;
use super::writer::{Backend, WriteSide};
use super::{
    Failure, FindingPage, FindingQuery, Health, Reason, StageTraces, Store, StoreConfig,
    StoreError, Window,
};
use crate::aggregate::ServiceGraph;
use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::model::TraceId;
use crate::view::{EdgeSeriesView, ServiceView, TraceView};

/// File name of the database inside `--data`.
pub const DB_FILE: &str = "grayscope.db";
/// Read connections kept open for the APIs.
const READERS: usize = 4;
/// How long the writer waits for another connection's lock before the write counts as failed and
/// is retried with backoff; short, so that the shutdown deadline can cut a stuck write.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Query(e.to_string())
    }
}

impl From<MigrateError> for StoreError {
    fn from(e: MigrateError) -> Self {
        StoreError::Query(e.to_string())
    }
}

/// Why SQLite failed, as the writer decides on it.
pub fn reason(e: &rusqlite::Error) -> Reason {
    use rusqlite::ErrorCode as C;
    let Some(code) = e.sqlite_error_code() else {
        return Reason::Other;
    };
    match code {
        C::DatabaseBusy | C::DatabaseLocked => Reason::Busy,
        C::SystemIoFailure
        | C::FileLockingProtocolFailed
        | C::NoLargeFileSupport
        | C::CannotOpen => Reason::Io,
        C::DiskFull => Reason::Full,
        C::OutOfMemory => Reason::Memory,
        C::OperationInterrupted => Reason::Interrupted,
        C::DatabaseCorrupt | C::NotADatabase => Reason::Corrupt,
        C::ReadOnly | C::PermissionDenied | C::AuthorizationForStatementDenied => Reason::ReadOnly,
        C::ConstraintViolation => Reason::Constraint,
        C::TooBig => Reason::TooBig,
        _ => Reason::Other,
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure {
            reason: reason(&e),
            message: e.to_string(),
        }
    }
}

/// What the readers share.
struct Inner {
    path: PathBuf,
    names: Arc<Names>,
    symbols: Arc<Symbols>,
    pool: Arc<Readers>,
    /// Held for as long as anything may use the store.
    _lock: DirLock,
}

/// The writer's connection, on blocking threads.
struct SqliteBackend {
    conn: Option<Connection>,
    names: Arc<Names>,
    symbols: Arc<Symbols>,
    sym_ids: SymIds,
    cfg: StoreConfig,
}

impl SqliteBackend {
    /// Runs `f` on the writer's connection, off the async workers.
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection, &mut SymIds) -> T + Send + 'static,
    ) -> T {
        let mut conn = self.conn.take().expect("the writer's connection is back");
        let mut sym_ids = std::mem::take(&mut self.sym_ids);
        let (conn, sym_ids, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut conn, &mut sym_ids);
            (conn, sym_ids, out)
        })
        .await
        .expect("the store's writer does not panic");
        self.conn = Some(conn);
        self.sym_ids = sym_ids;
        out
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn write(
        &mut self,
        batch: &Arc<Vec<Finalised>>,
        range: Range<usize>,
    ) -> Result<(), Failure> {
        let (batch, names, symbols) = (batch.clone(), self.names.clone(), self.symbols.clone());
        self.blocking(move |conn, sym_ids| {
            write::write(conn, &names, sym_ids, &symbols, &batch[range])
        })
        .await
    }

    async fn repair(&mut self) -> Result<(), Failure> {
        let names = self.names.clone();
        self.blocking(move |conn, sym_ids| {
            *sym_ids = SymIds::default();
            names.replace(write::load_names(conn)?);
            Ok(())
        })
        .await
    }

    async fn retention(&mut self) {
        let cfg = self.cfg.clone();
        if let Err(e) = self
            .blocking(move |conn, _| retention::enforce(conn, &cfg))
            .await
        {
            tracing::error!("enforcing the store's retention failed: {e}");
        }
    }
}

/// The SQLite store: cheap to clone; its writer task runs until [`Store::stop`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    write: Arc<WriteSide>,
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let open_err = |cause: rusqlite::Error| StoreError::Open {
        where_: path.display().to_string(),
        cause: cause.to_string(),
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

impl SqliteStore {
    /// Opens (or creates) the store in the locked directory, migrates it, and starts the writer
    /// task. Must be called within a tokio runtime.
    pub fn open(
        cfg: &StoreConfig,
        lock: DirLock,
        symbols: Arc<Symbols>,
    ) -> Result<SqliteStore, StoreError> {
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
            where_: path.display().to_string(),
            cause: cause.to_string(),
        })?;
        schema::migrate(&mut conn).map_err(|cause| StoreError::Migrate {
            where_: path.display().to_string(),
            cause: cause.to_string(),
        })?;
        let names = Arc::new(Names::of(write::load_names(&conn)?));
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_conn(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?);
        }
        let interrupt = conn.get_interrupt_handle();
        let backend = SqliteBackend {
            conn: Some(conn),
            names: names.clone(),
            symbols: symbols.clone(),
            sym_ids: Default::default(),
            cfg: cfg.clone(),
        };
        let write = WriteSide::start(backend, cfg, path.display().to_string(), move || {
            interrupt.interrupt()
        });
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.clone(),
                names,
                symbols,
                pool: Arc::new(Readers {
                    path: path.clone(),
                    idle: Mutex::new(readers),
                }),
                _lock: lock,
            }),
            write: Arc::new(write),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// The readers' side: each query on a pooled read connection, off the async workers.
#[async_trait::async_trait]
impl Db for Inner {
    async fn query(&self, sql: &str, args: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        // The shared queries number their placeholders `$1`; SQLite's are `?1`.
        let sql = sql.replace('$', "?");
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = run(&conn, &sql, args);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }
}

/// Read connections, opened as needed and kept up to [`READERS`].
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn take(&self) -> Result<Connection, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => open_conn(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}

fn run(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<Row>, StoreError> {
    use rusqlite::types::{Value as V, ValueRef};
    let mut stmt = conn.prepare_cached(sql)?;
    let params: Vec<V> = args
        .into_iter()
        .map(|v| match v {
            Value::Null => V::Null,
            Value::Int(i) => V::Integer(i),
            Value::Text(t) => V::Text(t),
            Value::Bytes(b) => V::Blob(b),
        })
        .collect();
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(columns);
        for i in 0..columns {
            row.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Int(v as i64),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            });
        }
        out.push(Row(row));
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn location(&self) -> String {
        self.inner.path.display().to_string()
    }

    async fn submit(&self, batch: Vec<Finalised>) -> Result<(), StoreError> {
        self.write.submit(batch).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.write.flush().await
    }

    async fn stop(&self, deadline: tokio::time::Instant) -> Tally {
        self.write.stop(deadline).await
    }

    fn abandon(&self) {
        self.write.abandon()
    }

    fn health(&self) -> Health {
        self.write.health()
    }

    async fn graph(&self, w: Window) -> Result<ServiceGraph, StoreError> {
        read::graph(
            self.inner.as_ref(),
            &self.inner.names,
            &self.inner.symbols,
            w,
        )
        .await
    }

    async fn trace_counts(&self, w: Window) -> Result<Vec<StageTraces>, StoreError> {
        read::trace_counts(self.inner.as_ref(), &self.inner.names, w).await
    }

    async fn services(&self) -> Result<Vec<ServiceView>, StoreError> {
        read::services(self.inner.as_ref(), &self.inner.names).await
    }

    async fn edge_series(
        &self,
        caller: String,
        callee: String,
        stage: Option<String>,
        w: Window,
    ) -> Result<Option<EdgeSeriesView>, StoreError> {
        let db = self.inner.as_ref();
        read::edge_series(db, &self.inner.names, &caller, &callee, stage.as_deref(), w).await
    }

    async fn findings(&self, q: FindingQuery) -> Result<FindingPage, StoreError> {
        read::findings(self.inner.as_ref(), &self.inner.names, &q).await
    }

    async fn trace(&self, id: TraceId) -> Result<Option<TraceView>, StoreError> {
        read::trace(self.inner.as_ref(), &self.inner.names, id).await
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod writer_tests;
