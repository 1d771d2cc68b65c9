//! The PostgreSQL schema, as numbered migrations, applied at start by whichever instance gets the
//! migration lock first (the others wait for it and find the schema current).
//!
//! Every integer is BIGINT and flags are 0/1, so that the read queries shared with SQLite decode
//! one way. A migration is never edited once released.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::StoreError;

/// Every migration, oldest first. Entry `i` takes a store from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: what the SQLite store has at its version 2, and the members of the cluster.
    r#"
    CREATE TABLE names (
        id   BIGSERIAL PRIMARY KEY,
        kind BIGINT NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (kind, name)
    );
    CREATE TABLE findings (
        id          BIGSERIAL PRIMARY KEY,
        observed_ms BIGINT NOT NULL,
        trace_id    BYTEA NOT NULL,
        kind        BIGINT NOT NULL,
        scope       BIGINT NOT NULL,
        first_break BIGINT NOT NULL,
        stage       BIGINT,
        edge_caller BIGINT,
        edge_callee BIGINT NOT NULL,
        p_service BIGINT, p_span BIGINT, p_name BIGINT, p_kind BIGINT, p_stage BIGINT, p_instance BIGINT,
        c_service BIGINT NOT NULL, c_span BIGINT NOT NULL, c_name BIGINT NOT NULL, c_kind BIGINT NOT NULL,
        c_stage BIGINT, c_instance BIGINT,
        detail TEXT NOT NULL
    );
    CREATE INDEX findings_observed ON findings (observed_ms);
    CREATE INDEX findings_trace ON findings (trace_id);
    CREATE INDEX findings_kind ON findings (kind, id);
    CREATE INDEX findings_caller ON findings (edge_caller, id);
    CREATE INDEX findings_callee ON findings (edge_callee, id);
    CREATE TABLE edge_minutes (
        minute       BIGINT NOT NULL,
        caller       BIGINT NOT NULL,
        callee       BIGINT NOT NULL,
        stage        BIGINT NOT NULL,
        instance     BIGINT NOT NULL,
        verdict      BIGINT NOT NULL,
        count        BIGINT NOT NULL,
        first_breaks BIGINT NOT NULL,
        PRIMARY KEY (minute, caller, callee, stage, instance, verdict)
    );
    CREATE TABLE edges (
        caller       BIGINT NOT NULL,
        callee       BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (caller, callee)
    );
    CREATE TABLE edge_examples (
        caller   BIGINT NOT NULL,
        callee   BIGINT NOT NULL,
        verdict  BIGINT NOT NULL,
        trace_id BYTEA NOT NULL,
        seen_ms  BIGINT NOT NULL,
        PRIMARY KEY (caller, callee, verdict, trace_id)
    );
    CREATE INDEX edge_examples_seen ON edge_examples (seen_ms);
    CREATE TABLE service_instances (
        service      BIGINT NOT NULL,
        stage        BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (service, stage)
    );
    CREATE TABLE traces (
        trace_id     BYTEA PRIMARY KEY,
        finalised_ms BIGINT NOT NULL,
        broken       BIGINT NOT NULL,
        data         BYTEA NOT NULL
    );
    CREATE INDEX traces_finalised ON traces (finalised_ms);
    CREATE TABLE trace_minutes (
        minute BIGINT NOT NULL,
        stage  BIGINT NOT NULL,
        broken BIGINT NOT NULL,
        count  BIGINT NOT NULL,
        PRIMARY KEY (minute, stage, broken)
    );
    -- The grayscope instances sharing this store, each heartbeating while it runs.
    CREATE TABLE members (
        id           TEXT PRIMARY KEY,
        address      TEXT NOT NULL,
        started_ms   BIGINT NOT NULL,
        heartbeat_ms BIGINT NOT NULL,
        last_span_ms BIGINT NOT NULL,
        receiving_since_ms BIGINT NOT NULL
    );
    -- The service instances any member saw (service, instance stage; '' for none), for the
    -- liveness `misrouted` is judged on: the cluster's view, not one member's share of traffic.
    CREATE TABLE sightings (
        service      TEXT NOT NULL,
        stage        TEXT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (service, stage)
    );
    "#,
    // 2: messaging hops: where the message of a finding went, and the destinations seen on each
    // service-graph edge.
    r#"
    ALTER TABLE findings ADD COLUMN m_system BIGINT;
    ALTER TABLE findings ADD COLUMN m_destination BIGINT;
    ALTER TABLE findings ADD COLUMN m_group BIGINT;
    CREATE TABLE edge_destinations (
        caller       BIGINT NOT NULL,
        callee       BIGINT NOT NULL,
        system       BIGINT NOT NULL,
        destination  BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (caller, callee, system, destination)
    );
    -- Producer spans of messaging hops, offered by the instance that finalised them to the one
    -- whose consumer links to them; kept for --link-wait. Strings, not names: short-lived rows.
    CREATE TABLE link_producers (
        trace_id    BYTEA NOT NULL,
        span_id     BIGINT NOT NULL,
        service     TEXT NOT NULL,
        name        TEXT NOT NULL,
        kind        BIGINT NOT NULL,
        stage       TEXT,
        instance    TEXT,
        system      TEXT,
        destination TEXT,
        offered_ms  BIGINT NOT NULL,
        PRIMARY KEY (trace_id, span_id)
    );
    CREATE INDEX link_producers_offered ON link_producers (offered_ms);
    "#,
];

/// Key of the advisory lock that serialises migrations between instances starting together.
const MIGRATION_LOCK: i64 = 0x6772_6179_7363_0001;

/// Brings the store up to the newest schema; returns the version it was at.
pub async fn migrate(client: &mut Client, location: &str) -> Result<usize, StoreError> {
    let err = |e: tokio_postgres::Error| StoreError::Migrate {
        where_: location.to_string(),
        cause: pg_error(&e),
    };
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS grayscope_schema (version BIGINT NOT NULL)")
        .await
        .map_err(err)?;
    let found: i64 = tx
        .query_opt("SELECT version FROM grayscope_schema", &[])
        .await
        .map_err(err)?
        .map_or(0, |r| r.get(0));
    let found = found as usize;
    if found > MIGRATIONS.len() {
        return Err(StoreError::Migrate {
            where_: location.to_string(),
            cause: format!(
                "the store has schema version {found}, newer than this grayscope knows ({}): run a newer grayscope, or point --data elsewhere",
                MIGRATIONS.len()
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        tx.batch_execute(sql).await.map_err(err)?;
        tracing::info!("store migrated to schema version {}", i + 1);
    }
    if found < MIGRATIONS.len() {
        tx.execute("DELETE FROM grayscope_schema", &[])
            .await
            .map_err(err)?;
        tx.execute(
            "INSERT INTO grayscope_schema (version) VALUES ($1)",
            &[&(MIGRATIONS.len() as i64)],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    Ok(found)
}
