//! The store's schema, as numbered migrations applied in order at open.
//!
//! `PRAGMA user_version` holds how many have been applied. A migration is never edited once
//! released: a change to the schema is a new entry at the end, so every older store upgrades
//! through the same steps.

use rusqlite::Connection;

/// Every migration, oldest first. Entry `i` takes a store from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: findings, per-minute edge counters, stored traces.
    r#"
    -- Every string the other tables refer to, once: service and node names, stage values, span names.
    -- kind: 0 service, 1 virtual node (uninstrumented callee), 2 stage value, 3 span name.
    CREATE TABLE names (
        id   INTEGER PRIMARY KEY,
        kind INTEGER NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (kind, name)
    );

    -- One row per finding; `id` orders them and is the API's cursor.
    CREATE TABLE findings (
        id          INTEGER PRIMARY KEY,
        observed_ms INTEGER NOT NULL,
        trace_id    BLOB NOT NULL,
        kind        INTEGER NOT NULL,
        scope       INTEGER NOT NULL,
        first_break INTEGER NOT NULL,
        stage       INTEGER,            -- the stage the finding concerns (names.id)
        edge_caller INTEGER,            -- the service-graph edge it is counted on (names.id)
        edge_callee INTEGER NOT NULL,
        -- the parent span (all NULL when it never arrived) and the judged span
        p_service INTEGER, p_span INTEGER, p_name INTEGER, p_kind INTEGER, p_stage INTEGER, p_instance INTEGER,
        c_service INTEGER NOT NULL, c_span INTEGER NOT NULL, c_name INTEGER NOT NULL, c_kind INTEGER NOT NULL,
        c_stage INTEGER, c_instance INTEGER,
        detail TEXT NOT NULL
    );
    CREATE INDEX findings_observed ON findings (observed_ms);
    CREATE INDEX findings_trace ON findings (trace_id);
    CREATE INDEX findings_kind ON findings (kind, id);
    CREATE INDEX findings_caller ON findings (edge_caller, id);
    CREATE INDEX findings_callee ON findings (edge_callee, id);

    -- Counters per minute and service-graph edge. caller 0: counted on the callee itself (no
    -- caller); stage/instance 0: none. verdict 0-8 counts judged span edges (and first breaks),
    -- verdict 9 counts calls, by the callee's instance stage.
    CREATE TABLE edge_minutes (
        minute       INTEGER NOT NULL,
        caller       INTEGER NOT NULL,
        callee       INTEGER NOT NULL,
        stage        INTEGER NOT NULL,
        instance     INTEGER NOT NULL,
        verdict      INTEGER NOT NULL,
        count        INTEGER NOT NULL,
        first_breaks INTEGER NOT NULL,
        PRIMARY KEY (minute, caller, callee, stage, instance, verdict)
    ) WITHOUT ROWID;

    -- When each edge was last seen, to the millisecond.
    CREATE TABLE edges (
        caller       INTEGER NOT NULL,
        callee       INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (caller, callee)
    ) WITHOUT ROWID;

    -- A few recent trace ids per edge and verdict.
    CREATE TABLE edge_examples (
        caller   INTEGER NOT NULL,
        callee   INTEGER NOT NULL,
        verdict  INTEGER NOT NULL,
        trace_id BLOB NOT NULL,
        seen_ms  INTEGER NOT NULL,
        PRIMARY KEY (caller, callee, verdict, trace_id)
    ) WITHOUT ROWID;
    CREATE INDEX edge_examples_seen ON edge_examples (seen_ms);

    -- Which instance stages each service ran, and when it was last seen.
    CREATE TABLE service_instances (
        service      INTEGER NOT NULL,
        stage        INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (service, stage)
    ) WITHOUT ROWID;

    -- Traces with findings, and a sample of clean ones: spans and verdicts, encoded (see codec.rs).
    CREATE TABLE traces (
        trace_id     BLOB PRIMARY KEY,
        finalised_ms INTEGER NOT NULL,
        broken       INTEGER NOT NULL,
        data         BLOB NOT NULL
    );
    CREATE INDEX traces_finalised ON traces (finalised_ms);
    "#,
    // 2: finalised traces per minute, root stage and result, for trace-level consistency.
    r#"
    CREATE TABLE trace_minutes (
        minute INTEGER NOT NULL,
        stage  INTEGER NOT NULL,   -- root request stage (names.id), 0 for none
        broken INTEGER NOT NULL,
        count  INTEGER NOT NULL,
        PRIMARY KEY (minute, stage, broken)
    ) WITHOUT ROWID;
    "#,
    // 3: calls move from verdict code 9 to 100: code 9 is the verdict `unverifiable`.
    r#"
    UPDATE edge_minutes SET verdict = 100 WHERE verdict = 9;
    "#,
    // 4: messaging hops: where the message of a finding went (names.id of stage-kind names), and
    // the destinations seen on each service-graph edge.
    r#"
    ALTER TABLE findings ADD COLUMN m_system INTEGER;
    ALTER TABLE findings ADD COLUMN m_destination INTEGER;
    ALTER TABLE findings ADD COLUMN m_group INTEGER;
    CREATE TABLE edge_destinations (
        caller       INTEGER NOT NULL,
        callee       INTEGER NOT NULL,
        system       INTEGER NOT NULL,   -- 0: unknown
        destination  INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (caller, callee, system, destination)
    ) WITHOUT ROWID;
    "#,
];

/// Brings the store at `conn` up to the newest schema; returns the version it was at.
pub fn migrate(conn: &mut Connection) -> Result<usize, MigrateError> {
    let found: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if found > MIGRATIONS.len() {
        return Err(MigrateError::TooNew {
            found,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!("store migrated to schema version {}", i + 1);
    }
    Ok(found)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the store has schema version {found}, newer than this grayscope knows ({known}): run a newer grayscope, or point --data elsewhere"
    )]
    TooNew { found: usize, known: usize },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}
