//! grayscope: an OTLP trace collector that verifies gray-release (canary) stage propagation across
//! every hop of a call chain.
//!
//! # Layout
//!
//! Data flows one way, and the modules are named for the stage they own:
//!
//! ```text
//! receive ──> shard ──> assemble ──> verify ──> aggregate ──> store ──> read ──> api, web
//! (OTLP gRPC/  (by trace  (per-trace   (verdicts,   (totals,     (findings,   (the read    (JSON, gRPC,
//!  HTTP, decode) id, bounded) petgraph)  first break) metrics)     counters,    model's      dashboard)
//!                                                                 traces)      facade)
//! ```
//!
//! # The rule
//!
//! The modules are declared below from the top of the stack to its bottom, and **a module imports
//! only modules declared after it**: a front end may use the read side, the read side the pipeline,
//! anything the shared modules, and never the other way round. `tests/architecture.rs` fails when
//! an import breaks the rule (and when `verify` does I/O, uses tokio or reads the configuration,
//! when `telemetry` imports anything of grayscope, or when `loadgen` uses `testkit`). Test code is
//! exempt: tests may build on anything.
//!
//! The service side of gray release (read, keep, forward and record the stage in a Rust service)
//! is its own crate, `grayscope-propagation` (`propagation/`), which depends on nothing here; the
//! collector uses its stage-key rules.

// Tools: the command line, the wiring of `serve`, and the commands beside it.

// The command line: `serve`, `check`, `loadgen`, `demo`.
pub mod cli;
// Wiring for `serve`: build the pipeline, bind, run, stop within a deadline.
pub mod app;
// `check`: the pipeline offline, on OTLP/JSON files, for CI.
pub mod check;
// `probe`: tagged requests through the real chain before go-live, judged end to end.
pub mod probe;
// `demo`: an instrumented service mesh with chosen propagation faults.
pub mod demo;
// Builders for tests and benchmarks.
pub mod testkit;
// `loadgen`: pre-built OTLP traffic with seeded faults.
pub mod loadgen;
// The memory budget that follows from the flags.
pub mod memory;
// Heartbeats, membership changes and shared sightings, for instances that share a store.
pub mod cluster;

// Read side: the front ends, and the facade they ask.

// The JSON API (OpenAPI at `/api/v1/openapi.json`), the gRPC query API, the rollout gate,
// `/healthz`, `/metrics`.
pub mod api;
// The web dashboard, rendered on the server.
pub mod web;
// The read model's facade: traces wherever they are, findings, graphs; one parameter parser.
pub mod read;

// Pipeline: OTLP in, verdicts out, kept.

// Accepting connections, with time limits, for every listener.
pub mod listen;
// OTLP/gRPC and OTLP/HTTP (protobuf, JSON, gzip) into compact span records; OTLP types stop here.
pub mod receive;
// One worker per trace id; all-or-nothing admission into bounded queues.
pub mod shard;
// Findings, per-minute edge counters and traces, behind a trait (SQLite).
pub mod store;
// The read model's types: what the store returns and the front ends show.
pub mod view;
// Totals, recently finalised traces, the feed of new findings, the service graph, verdict metrics.
pub mod aggregate;
// Messaging hops across traces: consumer spans joined to the producer spans they link to.
pub mod join;
// A worker's traces, each a petgraph call graph; idle and memory-bound finalisation.
pub mod assemble;
// Pure verdict logic (no I/O): the verdict table of the README.
pub mod verify;

// Shared: below everything.

// TLS, mutual TLS and bearer tokens for every listener; login sessions; certificates reloaded.
pub mod security;
// Flags, environment and TOML, resolved into the `serve` configuration.
pub mod config;
// Which stages each service runs, for `misrouted`.
pub mod instances;
// The grayscope instances sharing the store, as this one sees them.
pub mod membership;
// Bounded string tables.
pub mod intern;
// The metrics registry every subsystem registers in.
pub mod telemetry;
// grayscope's own span types.
pub mod model;

/// Unix time in milliseconds, for timestamps shown to users.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
