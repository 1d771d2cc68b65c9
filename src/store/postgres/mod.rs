//! The store in PostgreSQL (`--data postgres://user@host:port/db`), shared by every grayscope
//! instance of a cluster: each writes what it judged, and every read, from any instance, sees
//! everything.
//!
//! Writes are one transaction per flush interval with one multi-row statement per table
//! (`INSERT ... SELECT * FROM UNNEST(...)`), rows sorted by key so that concurrent writers take row
//! locks in one order; counters are upserted (`count = count + excluded.count`), so N writers add
//! up exactly. Reads are the queries shared with SQLite. A database outage is a failure of the
//! store: the writer keeps what is queued, retries with backoff, and reconnects through the pool
//! by itself, while senders are told to retry.

mod retention;
mod schema;
mod write;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

pub use schema::MIGRATIONS;

use super::sql::names::Names;
use super::sql::{Db, Row, Value, read};
use super::stats::Tally;
use super::writer::WriteSide;
use super::{
    Failure, FindingPage, FindingQuery, Health, Reason, Sighting, StageTraces, Store, StoreConfig,
    StoreError, Window,
};
use crate::aggregate::ServiceGraph;
use crate::assemble::Finalised;
use crate::intern::Symbols;
use crate::membership::Member;
use crate::model::{
    Messaging, MessagingOp, SpanId, SpanKind, SpanRecord, StatusCode, Sym, TraceId,
};
use crate::verify::ProducerHalf;
use crate::view::{EdgeSeriesView, ServiceView, TraceView};

/// Connections in the pool: the writer's, the retention's and the readers'.
const POOL_SIZE: usize = 8;
/// How long opening a connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::config::redact;

/// What the database said, in its own words where it said anything.
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure {
            reason: reason(&e),
            message: pg_error(&e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Failure {
                reason: Reason::Io,
                message: format!("no connection to the database: {other}"),
            },
        }
    }
}

/// Why PostgreSQL failed, as the writer decides on it: a connection lost or refused, a deadlock
/// or a server shutting down is the store's (retry); a constraint or an oversized value is the
/// batch's.
pub fn reason(e: &tokio_postgres::Error) -> Reason {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed.
        return Reason::Io;
    };
    if *code == SqlState::QUERY_CANCELED {
        return Reason::Interrupted;
    }
    if *code == SqlState::DISK_FULL {
        return Reason::Full;
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Reason::ReadOnly;
    }
    match &code.code()[..2] {
        // Connection exceptions, an operator's intervention (a server shutting down), system errors.
        "08" | "57" | "58" => Reason::Io,
        "53" => Reason::Memory,
        // Serialization failures and deadlocks; a lock not available.
        "40" | "55" => Reason::Busy,
        // A damaged database, or tables missing from it: nothing a batch did.
        "XX" | "42" => Reason::Corrupt,
        "28" => Reason::ReadOnly,
        "23" => Reason::Constraint,
        "22" | "54" => Reason::TooBig,
        _ => Reason::Other,
    }
}

/// The pool as the shared read queries see it.
struct PgDb {
    pool: Pool,
}

fn to_sql(v: &Value) -> Box<dyn ToSql + Sync + Send> {
    match v {
        Value::Null => Box::new(Option::<i64>::None),
        Value::Int(i) => Box::new(*i),
        Value::Text(t) => Box::new(t.clone()),
        Value::Bytes(b) => Box::new(b.clone()),
    }
}

fn row_of(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let bad = |e: tokio_postgres::Error| StoreError::Query(pg_error(&e));
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let t = c.type_();
        out.push(if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)
                .map_err(bad)?
                .map_or(Value::Null, Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map_or(Value::Null, |v| Value::Int(v.into()))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map_or(Value::Null, |v| Value::Int(v.into()))
        } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME {
            r.try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map_or(Value::Null, Value::Text)
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)
                .map_err(bad)?
                .map_or(Value::Null, Value::Bytes)
        } else {
            return Err(StoreError::Query(format!(
                "column {} has type {t}, which the shared queries do not use",
                c.name()
            )));
        });
    }
    Ok(Row(out))
}

#[async_trait::async_trait]
impl Db for PgDb {
    async fn query(&self, sql: &str, args: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Query(Failure::from(e).message))?;
        let params: Vec<Box<dyn ToSql + Sync + Send>> = args.iter().map(to_sql).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client
            .query(sql, &refs)
            .await
            .map_err(|e| StoreError::Query(pg_error(&e)))?;
        rows.iter().map(row_of).collect()
    }
}

struct Inner {
    db: PgDb,
    location: String,
    names: Arc<Names>,
    symbols: Arc<Symbols>,
}

/// The PostgreSQL store: cheap to clone; its writer task runs until [`Store::stop`].
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    write: Arc<WriteSide>,
}

impl PostgresStore {
    /// Connects, migrates the schema (refusing one from a newer grayscope) and starts the writer.
    /// A bad URL, refused credentials or an unreachable server fail here, at start.
    pub async fn connect(
        url: &str,
        cfg: &StoreConfig,
        symbols: Arc<Symbols>,
    ) -> Result<PostgresStore, StoreError> {
        let location = redact(url);
        let open = |cause: String| StoreError::Open {
            where_: location.clone(),
            cause,
        };
        let mut pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| open(format!("not a PostgreSQL URL: {}", pg_error(&e))))?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.application_name("grayscope");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| open(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| open(Failure::from(e).message))?;
        schema::migrate(&mut client, &location).await?;
        drop(client);
        let db = PgDb { pool: pool.clone() };
        let names = Arc::new(Names::load(&db).await?);
        let backend = write::PgBackend::new(pool, names.clone(), symbols.clone(), cfg.clone());
        let cancel = backend.cancel_handle();
        let write = WriteSide::start(backend, cfg, location.clone(), move || {
            write::cancel(&cancel)
        });
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                db,
                location,
                names,
                symbols,
            }),
            write: Arc::new(write),
        })
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn location(&self) -> String {
        self.inner.location.clone()
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
        read::graph(&self.inner.db, &self.inner.names, &self.inner.symbols, w).await
    }

    async fn trace_counts(&self, w: Window) -> Result<Vec<StageTraces>, StoreError> {
        read::trace_counts(&self.inner.db, &self.inner.names, w).await
    }

    async fn services(&self) -> Result<Vec<ServiceView>, StoreError> {
        read::services(&self.inner.db, &self.inner.names).await
    }

    async fn edge_series(
        &self,
        caller: String,
        callee: String,
        stage: Option<String>,
        w: Window,
    ) -> Result<Option<EdgeSeriesView>, StoreError> {
        let db = &self.inner.db;
        read::edge_series(db, &self.inner.names, &caller, &callee, stage.as_deref(), w).await
    }

    async fn findings(&self, q: FindingQuery) -> Result<FindingPage, StoreError> {
        read::findings(&self.inner.db, &self.inner.names, &q).await
    }

    async fn trace(&self, id: TraceId) -> Result<Option<TraceView>, StoreError> {
        read::trace(&self.inner.db, &self.inner.names, id).await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn heartbeat(&self, me: &Member, expiry_ms: u64) -> Result<Vec<Member>, StoreError> {
        let client = self.inner.client().await?;
        let q = |e: tokio_postgres::Error| StoreError::Query(pg_error(&e));
        client
            .execute(
                "INSERT INTO members (id, address, started_ms, heartbeat_ms, last_span_ms, receiving_since_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                    heartbeat_ms = excluded.heartbeat_ms, last_span_ms = excluded.last_span_ms,
                    receiving_since_ms = excluded.receiving_since_ms",
                &[
                    &me.id,
                    &me.address,
                    &(me.started_ms as i64),
                    &(me.heartbeat_ms as i64),
                    &(me.last_span_ms as i64),
                    &(me.receiving_since_ms as i64),
                ],
            )
            .await
            .map_err(q)?;
        let since = me.heartbeat_ms.saturating_sub(expiry_ms) as i64;
        // Members long gone (killed, never left) are forgotten after an hour.
        client
            .execute(
                "DELETE FROM members WHERE heartbeat_ms < $1",
                &[&(me.heartbeat_ms.saturating_sub(3_600_000) as i64)],
            )
            .await
            .map_err(q)?;
        let rows = client
            .query(
                "SELECT id, address, started_ms, heartbeat_ms, last_span_ms, receiving_since_ms
                 FROM members WHERE heartbeat_ms >= $1",
                &[&since],
            )
            .await
            .map_err(q)?;
        Ok(rows
            .iter()
            .map(|r| Member {
                id: r.get(0),
                address: r.get(1),
                started_ms: r.get::<_, i64>(2) as u64,
                heartbeat_ms: r.get::<_, i64>(3) as u64,
                last_span_ms: r.get::<_, i64>(4) as u64,
                receiving_since_ms: r.get::<_, i64>(5) as u64,
            })
            .collect())
    }

    async fn leave(&self, id: &str) -> Result<(), StoreError> {
        let client = self.inner.client().await?;
        client
            .execute("DELETE FROM members WHERE id = $1", &[&id])
            .await
            .map_err(|e| StoreError::Query(pg_error(&e)))?;
        Ok(())
    }

    async fn share_sightings(
        &self,
        mut seen: Vec<Sighting>,
        since_ms: u64,
    ) -> Result<Vec<Sighting>, StoreError> {
        let client = self.inner.client().await?;
        let q = |e: tokio_postgres::Error| StoreError::Query(pg_error(&e));
        if !seen.is_empty() {
            // In key order, so that members upserting together do not deadlock.
            seen.sort();
            seen.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
            let services: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
            let stages: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
            let at: Vec<i64> = seen.iter().map(|s| s.2 as i64).collect();
            client
                .execute(
                    "INSERT INTO sightings (service, stage, last_seen_ms)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
                     ON CONFLICT (service, stage) DO UPDATE SET
                        last_seen_ms = GREATEST(sightings.last_seen_ms, excluded.last_seen_ms)",
                    &[&services, &stages, &at],
                )
                .await
                .map_err(q)?;
        }
        let rows = client
            .query(
                "SELECT service, stage, last_seen_ms FROM sightings WHERE last_seen_ms >= $1",
                &[&(since_ms as i64)],
            )
            .await
            .map_err(q)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
            .collect())
    }

    async fn share_producers(
        &self,
        producers: &[ProducerHalf],
        now_ms: u64,
        forget_before_ms: u64,
    ) -> Result<(), StoreError> {
        let client = self.inner.client().await?;
        let q = |e: tokio_postgres::Error| StoreError::Query(pg_error(&e));
        if !producers.is_empty() {
            let sym = &self.inner.symbols;
            let mut rows: Vec<&ProducerHalf> = producers.iter().collect();
            // In key order, so that instances inserting together do not deadlock.
            rows.sort_by_key(|p| (p.trace_id, p.span.span_id));
            rows.dedup_by_key(|p| (p.trace_id, p.span.span_id));
            let value = |s: Option<Sym>| s.map(|s| sym.values.resolve(s).to_string());
            let traces: Vec<[u8; 16]> = rows.iter().map(|p| p.trace_id.0.to_be_bytes()).collect();
            let traces: Vec<&[u8]> = traces.iter().map(|t| &t[..]).collect();
            let spans: Vec<i64> = rows.iter().map(|p| p.span.span_id.get() as i64).collect();
            let services: Vec<String> = rows
                .iter()
                .map(|p| sym.services.resolve(p.span.service).to_string())
                .collect();
            let names: Vec<String> = rows
                .iter()
                .map(|p| sym.names.resolve(p.span.name).to_string())
                .collect();
            let kinds: Vec<i64> = rows.iter().map(|p| p.span.kind as i64).collect();
            let stages: Vec<Option<String>> = rows.iter().map(|p| value(p.span.stage)).collect();
            let instances: Vec<Option<String>> =
                rows.iter().map(|p| value(p.span.instance_stage)).collect();
            let systems: Vec<Option<String>> =
                rows.iter().map(|p| value(p.messaging.system)).collect();
            let destinations: Vec<Option<String>> = rows
                .iter()
                .map(|p| value(p.messaging.destination))
                .collect();
            let at = vec![now_ms as i64; rows.len()];
            client
                .execute(
                    "INSERT INTO link_producers (trace_id, span_id, service, name, kind, stage,
                        instance, system, destination, offered_ms)
                     SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::text[], $4::text[],
                        $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[])
                     ON CONFLICT (trace_id, span_id) DO NOTHING",
                    &[
                        &traces,
                        &spans,
                        &services,
                        &names,
                        &kinds,
                        &stages,
                        &instances,
                        &systems,
                        &destinations,
                        &at,
                    ],
                )
                .await
                .map_err(q)?;
        }
        client
            .execute(
                "DELETE FROM link_producers WHERE offered_ms < $1",
                &[&(forget_before_ms as i64)],
            )
            .await
            .map_err(q)?;
        Ok(())
    }

    async fn find_producers(
        &self,
        keys: &[(TraceId, SpanId)],
    ) -> Result<Vec<ProducerHalf>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.inner.client().await?;
        let q = |e: tokio_postgres::Error| StoreError::Query(pg_error(&e));
        let traces: Vec<[u8; 16]> = keys.iter().map(|k| k.0.0.to_be_bytes()).collect();
        let traces: Vec<&[u8]> = traces.iter().map(|t| &t[..]).collect();
        let spans: Vec<i64> = keys.iter().map(|k| k.1.get() as i64).collect();
        let rows = client
            .query(
                "SELECT p.trace_id, p.span_id, p.service, p.name, p.kind, p.stage, p.instance,
                    p.system, p.destination
                 FROM link_producers p
                 JOIN UNNEST($1::bytea[], $2::bigint[]) AS k (trace_id, span_id)
                    ON p.trace_id = k.trace_id AND p.span_id = k.span_id",
                &[&traces, &spans],
            )
            .await
            .map_err(q)?;
        let sym = &self.inner.symbols;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (Some(trace_id), Some(span_id)) = (
                TraceId::from_bytes(r.get::<_, &[u8]>(0)),
                SpanId::new(r.get::<_, i64>(1) as u64),
            ) else {
                continue;
            };
            let value = |i: usize| r.get::<_, Option<&str>>(i).map(|v| sym.values.intern(v));
            out.push(ProducerHalf {
                trace_id,
                span: SpanRecord {
                    span_id,
                    parent: None,
                    start_ns: 0,
                    end_ns: 0,
                    service: sym.services.intern(r.get::<_, &str>(2)),
                    name: sym.names.intern(r.get::<_, &str>(3)),
                    stage: value(5),
                    instance_stage: value(6),
                    near_miss_key: None,
                    near_miss_value: None,
                    peer: None,
                    kind: SpanKind::from_otlp(r.get::<_, i64>(4) as i32),
                    status: StatusCode::Unset,
                    stage_from: None,
                    flags: crate::model::SpanFlags::default(),
                },
                messaging: Messaging {
                    system: value(7),
                    destination: value(8),
                    group: None,
                    op: MessagingOp::Unknown,
                },
            });
        }
        Ok(out)
    }
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.db
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Query(Failure::from(e).message))
    }
}

/// The cancel token of the writer's connection in use, if a write is in progress.
type CancelSlot = Arc<Mutex<Option<tokio_postgres::CancelToken>>>;

#[cfg(test)]
pub(crate) mod tests;
