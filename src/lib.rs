//! grayscope: an OTLP trace collector that verifies gray-release (canary) stage propagation across
//! every hop of a call chain.
//!
//! # Layout
//!
//! Data flows one way, and the modules are named for the stage they own:
//!
//! ```text
//! receive ──> shard ──> assemble ──> verify ──> aggregate ──> store ──> api (JSON + OpenAPI,
//! (OTLP gRPC/  (by trace  (per-trace   (verdicts,   (totals,     (SQLite:      gRPC query,
//!  HTTP, decode) id, bounded) petgraph)  first break) watch feed)  findings,     /metrics)
//!                                                                 counters, traces)
//! ```
//!
//! - [`receive`]: OTLP/gRPC and OTLP/HTTP (protobuf, JSON, gzip) into compact [`model::SpanRecord`]s;
//!   OTLP types stop here.
//! - [`shard`]: one worker per trace id; all-or-nothing admission into bounded queues.
//! - [`assemble`]: a worker's traces, each a petgraph call graph; idle and memory-bound finalisation.
//! - [`verify`]: pure verdict logic (no I/O), the verdict table of the README.
//! - [`aggregate`]: totals, recently finalised traces, the feed of new findings, and the service
//!   graph model.
//! - [`store`]: findings, per-minute edge counters and traces in SQLite, written in batches by one
//!   writer; every query the APIs answer.
//! - [`api`]: the JSON API (OpenAPI at `/api/v1/openapi.json`), the gRPC query API, `/healthz`,
//!   `/metrics`; [`check`]: the same pipeline, offline.
//! - [`app`] wires `serve`; [`listen`] accepts its connections, with time limits; [`config`] reads
//!   flags, environment and TOML.
//! - [`propagation`]: the Rust side of gray release (read, keep, forward and record the stage), and
//!   [`demo`], a mesh of services built with it that sends real traffic with chosen faults.
//!
//! Shared below them: [`model`] (grayscope's own span types), [`intern`] (bounded string tables),
//! [`stage`] (which attribute carries the stage), [`instances`] (which stages each service runs),
//! [`telemetry`] (grayscope's own metrics).

pub mod aggregate;
pub mod api;
pub mod app;
pub mod assemble;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod instances;
pub mod intern;
pub mod listen;
pub mod loadgen;
pub mod memory;
pub mod model;
pub mod read;
pub mod receive;
pub mod shard;
pub mod store;
pub mod telemetry;
pub mod testkit;
pub mod verify;
pub mod view;
pub mod web;

/// Unix time in milliseconds, for timestamps shown to users.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
