//! Wiring for `grayscope serve`: build the pipeline, bind the listeners, run until told to stop.
//!
//! The data directory is locked and the listeners are bound before anything starts, so a second
//! process on the same directory, or a port conflict, fails at once. Shutdown runs in stages within
//! one deadline (`--shutdown-grace`): receivers stop accepting and finish in-flight requests, workers
//! finalise every buffered trace into the aggregate, the store writes what is queued, and only then
//! does the API stop. What the store could not write by the deadline is counted and reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregate, AggregateConfig};
use crate::api::{self, ApiState};
use crate::assemble::AssemblerConfig;
use crate::cluster::{self, Cluster, ClusterConfig, ClusterMetrics};
use crate::config::{Data, ServeConfig};
use crate::demo;
use crate::instances::Clock;
use crate::intern::{SymbolLimits, Symbols};
use crate::join::{JoinConfig, JoinMetrics, Joins};
use crate::listen::{self, Accept, ListenMetrics};
use crate::membership::Membership;
use crate::read::Reader;
use crate::receive::{self, Decoder, Ingest, IngestMetrics, RequestLimits};
use crate::security::guard::{GrpcGuardLayer, require_reader};
use crate::security::{AuthMetrics, Guard, Security, ServerTls};
use crate::shard::WorkerMetrics;
use crate::shard::{Shards, WorkerSetup};
use crate::store::{DirLock, PostgresStore, SharedStore, SqliteStore, StoreConfig, Tally};
use crate::telemetry::{self, Telemetry};
use crate::verify::Policy;
use crate::web;

/// What the process holds exclusively, taken up front: the data directory and three listening
/// sockets.
pub struct Listeners {
    /// The data directory, when the store is SQLite (a shared database has no such lock).
    pub data: Option<DirLock>,
    pub otlp_grpc: TcpListener,
    pub otlp_http: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    /// Locks the data directory first: a second process started on it by mistake usually has the
    /// same ports too, and the directory is what the operator must hear about.
    pub async fn bind(cfg: &ServeConfig) -> anyhow::Result<Self> {
        let data = match &cfg.data {
            Data::Dir(dir) => Some(DirLock::acquire(dir)?),
            Data::Postgres(_) => None,
        };
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for {what}"))
        };
        Ok(Listeners {
            data,
            otlp_grpc: bind(cfg.otlp_grpc, "OTLP/gRPC (--otlp-grpc)").await?,
            otlp_http: bind(cfg.otlp_http, "OTLP/HTTP (--otlp-http)").await?,
            http: bind(cfg.http, "the API (--http)").await?,
        })
    }
}

/// A running collector.
pub struct Collector {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    pub aggregate: Arc<Aggregate>,
    pub telemetry: Arc<Telemetry>,
    pub store: SharedStore,
    shards: Shards,
    shutdown_grace: Duration,
    receivers_stop: CancellationToken,
    api_stop: CancellationToken,
    receivers: Vec<JoinHandle<anyhow::Result<()>>>,
    workers: Vec<JoinHandle<()>>,
    /// Heartbeats while the API serves; leaves the cluster when it stops.
    cluster: JoinHandle<()>,
    api: JoinHandle<()>,
}

/// Builds the pipeline and starts serving on already-bound listeners.
pub async fn start(cfg: &ServeConfig, listeners: Listeners) -> anyhow::Result<Collector> {
    let security = Security::load(&cfg.security)?;
    let exposed = cfg.security.warnings(&crate::config::Addresses {
        otlp_grpc: cfg.otlp_grpc,
        otlp_http: cfg.otlp_http,
        http: cfg.http,
    });
    for w in exposed {
        tracing::warn!("{w}");
    }
    let symbols = Arc::new(Symbols::new(&SymbolLimits::default()));
    let clock = Clock::new();
    let policy = Arc::new(Policy::new(
        &cfg.verify.allowed_stages,
        &cfg.verify.exempt_roots,
        &cfg.verify.destination_policies,
        &symbols,
    ));
    let instances = Arc::new(
        cfg.verify
            .instances(&symbols, cfg.instance_ttl.0.as_millis() as u64),
    );
    let reader_instances = instances.clone();
    let aggregate = Arc::new(Aggregate::new(
        symbols.clone(),
        AggregateConfig {
            max_label_values: cfg.max_label_values,
            ..AggregateConfig::default()
        },
    ));
    let store_cfg = StoreConfig {
        queue_spans: cfg.store_queue_spans,
        flush_interval: cfg.flush_interval.0,
        retention: cfg.retention.0,
        max_bytes: cfg.max_store_bytes,
    };
    let store: SharedStore = match (&cfg.data, listeners.data) {
        (Data::Postgres(url), _) => {
            Arc::new(PostgresStore::connect(url, &store_cfg, symbols.clone()).await?)
        }
        (Data::Dir(_), Some(lock)) => {
            Arc::new(SqliteStore::open(&store_cfg, lock, symbols.clone())?)
        }
        (Data::Dir(dir), None) => {
            anyhow::bail!("the data directory {} was not locked", dir.display())
        }
    };
    tracing::info!("store: {}", store.location());
    let joins = Arc::new(Joins::new(
        JoinConfig::new(cfg.link_wait.0, cfg.max_link_producers, cfg.max_link_waits)
            .shared(store.shared()),
        policy.clone(),
        instances.clone(),
    ));
    let budget = crate::memory::Budget::of(cfg);
    tracing::info!(
        "memory budget: {} MiB at most ({})",
        budget.total() >> 20,
        budget
            .parts
            .iter()
            .map(|p| format!("{} {} MiB", p.name, p.bytes >> 20))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Each subsystem registers what it counts; after this, the registry is only read.
    let mut registry = telemetry::registry();
    let ingest_metrics = Arc::new(IngestMetrics::register(&mut registry));
    let worker_metrics = Arc::new(WorkerMetrics::register(&mut registry));
    let listen_metrics = ListenMetrics::register(&mut registry);
    let auth_metrics = AuthMetrics::register(&mut registry);
    let cluster_metrics = ClusterMetrics::register(&mut registry);
    crate::intern::register_metrics(&symbols, &mut registry);
    crate::aggregate::register_metrics(&aggregate, &mut registry);
    crate::store::register_metrics(&store, &mut registry);
    JoinMetrics::register(&joins, &mut registry);
    budget.register_metrics(&mut registry);
    let telemetry = Arc::new(Telemetry::new(registry));
    let (shards, workers) = Shards::spawn(WorkerSetup {
        workers: cfg.workers,
        queue_spans: cfg.queue_spans,
        assembler: AssemblerConfig::online(
            cfg.trace_idle.0,
            cfg.max_buffered_spans,
            cfg.workers,
            cfg.sample_clean,
            cfg.orphan_wait.0,
            cfg.max_kept_spans,
        ),
        joins: joins.clone(),
        policy,
        instances: instances.clone(),
        aggregate: aggregate.clone(),
        store: store.clone(),
        metrics: worker_metrics,
        clock,
    });
    let http_addr = listeners.http.local_addr()?;
    // The default advertised address is the --http one; with an OS-chosen port, the port it got.
    let advertise = if cfg.advertise == cfg.http.to_string() {
        http_addr.to_string()
    } else {
        cfg.advertise.clone()
    };
    let cluster_cfg = ClusterConfig {
        heartbeat: cfg.heartbeat_interval.0,
        rebalance_window: cfg.rebalance_window.0,
        instance_ttl: cfg.instance_ttl.0,
        link_wait: cfg.link_wait.0,
    };
    let membership = Arc::new(Membership::new(
        Membership::new_id(),
        advertise,
        cluster_cfg.expiry().as_millis() as u64,
    ));
    let ingest = Arc::new(Ingest {
        decoder: Decoder::new(
            symbols.clone(),
            instances.clone(),
            clock,
            &cfg.verify.stage_keys,
            &cfg.verify.instance_stage_key,
        )
        .with_group_key(&cfg.group_key),
        shards: shards.clone(),
        metrics: ingest_metrics,
        membership: membership.clone(),
    });

    let addrs = (
        listeners.otlp_grpc.local_addr()?,
        listeners.otlp_http.local_addr()?,
        listeners.http.local_addr()?,
    );
    let receivers_stop = CancellationToken::new();
    let api_stop = CancellationToken::new();

    let cluster = cluster::spawn(
        Cluster {
            cfg: cluster_cfg,
            metrics: cluster_metrics,
            store: store.clone(),
            membership: membership.clone(),
            instances,
            symbols: symbols.clone(),
            clock,
            joins,
            aggregate: aggregate.clone(),
        },
        api_stop.clone(),
    );
    let reader = Reader::new(
        aggregate.clone(),
        shards.clone(),
        store.clone(),
        membership.clone(),
        security.peers.clone(),
        (reader_instances, clock),
    );
    security.watch(&api_stop);
    let guards = ReceiverGuards {
        grpc_ingest: Guard::new(&auth_metrics, "otlp_grpc", security.ingest.clone()),
        grpc_read: Guard::new(&auth_metrics, "otlp_grpc", security.read.clone()),
        http_ingest: Guard::new(&auth_metrics, "otlp_http", security.ingest.clone()),
        http_cors_origins: cfg.otlp_http_cors_origins.clone(),
    };
    let accept = |listener, tls: &Option<Arc<ServerTls>>| {
        Accept::new(&listen_metrics, listener, cfg.read_timeout.0).with_tls(tls.clone())
    };
    let receivers = serve_receivers(
        ingest,
        (
            listeners.otlp_grpc,
            accept("otlp_grpc", &security.otlp_grpc_tls),
        ),
        (
            listeners.otlp_http,
            accept("otlp_http", &security.otlp_http_tls),
        ),
        RequestLimits {
            max_bytes: cfg.max_request_bytes,
            read_timeout: cfg.read_timeout.0,
            max_concurrent: cfg.max_concurrent_requests,
        },
        Some(api::grpc::service(reader.clone(), receivers_stop.clone())),
        &guards,
        receivers_stop.clone(),
    );
    let api = listen::serve_http(
        listeners.http,
        http_router(
            reader,
            telemetry.clone(),
            (cfg.trace_idle.0, cfg.flush_interval.0),
            Guard::new(&auth_metrics, "http", security.read.clone()),
        ),
        Accept::new(&listen_metrics, "http", cfg.read_timeout.0)
            .with_tls(security.http_tls.clone()),
        api_stop.clone(),
    );

    tracing::info!(otlp_grpc = %addrs.0, otlp_http = %addrs.1, http = %addrs.2, "grayscope is listening");
    Ok(Collector {
        otlp_grpc: addrs.0,
        otlp_http: addrs.1,
        http: addrs.2,
        aggregate,
        telemetry,
        store,
        shards,
        shutdown_grace: cfg.shutdown_grace.0,
        receivers_stop,
        api_stop,
        receivers,
        workers,
        cluster,
        api: tokio::spawn(api),
    })
}

/// The `--http` address: the JSON API, the dashboard, and for any other path the API's 404; all
/// of it behind the read token check, but `/healthz` and the login page.
fn http_router(
    reader: Reader,
    telemetry: Arc<Telemetry>,
    (trace_idle, flush_interval): (std::time::Duration, std::time::Duration),
    read: Guard,
) -> axum::Router {
    let api = api::router(
        ApiState {
            reader: reader.clone(),
            telemetry,
            trace_idle,
            flush_interval,
        },
        !read.is_open(),
    );
    api.merge(web::router(reader))
        .merge(web::login_router(read.clone()))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(read, require_reader))
}

/// The receivers' token checks; the default lets everything through.
#[derive(Clone, Default)]
pub struct ReceiverGuards {
    /// OTLP export over gRPC.
    pub grpc_ingest: Guard,
    /// The gRPC query API, which shares the OTLP/gRPC port.
    pub grpc_read: Guard,
    pub http_ingest: Guard,
    /// Web origins whose pages may export to OTLP/HTTP (`--otlp-http-cors-origins`): browsers
    /// instrumented with the OpenTelemetry web SDK. Empty: none.
    pub http_cors_origins: Vec<String>,
}

/// Serves OTLP/gRPC and OTLP/HTTP into `ingest` until `stop` is cancelled; each handle ends once
/// its server has finished its in-flight requests.
/// `grpc` and `http`: each listener with how it accepts connections (time limit, TLS).
pub fn serve_receivers(
    ingest: Arc<Ingest>,
    (grpc, grpc_accept): (TcpListener, Accept),
    (http, http_accept): (TcpListener, Accept),
    limits: RequestLimits,
    query: Option<api::grpc::QueryServer<api::grpc::QueryService>>,
    guards: &ReceiverGuards,
    stop: CancellationToken,
) -> Vec<JoinHandle<anyhow::Result<()>>> {
    let metrics = ingest.metrics.clone();
    let in_flight = receive::InFlight::new(&limits);
    // Layers added later sit inside: a request without its token is refused before it waits for
    // a slot; the status mapping sees the read timeout's answer.
    let grpc = tonic::transport::Server::builder()
        .layer(GrpcGuardLayer {
            ingest_prefix: receive::grpc::SERVICE_PREFIX,
            ingest: guards.grpc_ingest.clone(),
            read: guards.grpc_read.clone(),
        })
        .layer(tower::util::MapResponseLayer::new(move |r| {
            receive::grpc::otlp_status::<tonic::body::Body>(&metrics, r)
        }))
        .layer(receive::grpc::InFlightLayer(in_flight.clone()))
        .add_service(receive::grpc::service(ingest.clone(), limits.max_bytes))
        .add_optional_service(query)
        .serve_with_incoming_shutdown(
            listen::grpc_incoming(grpc, grpc_accept, stop.clone()),
            stop.clone().cancelled_owned(),
        );
    let http = listen::serve_http(
        http,
        receive::http::router(
            ingest,
            limits.max_bytes,
            in_flight,
            guards.http_ingest.clone(),
            &guards.http_cors_origins,
        ),
        http_accept,
        stop,
    );
    vec![
        tokio::spawn(async move { grpc.await.context("OTLP/gRPC server failed") }),
        tokio::spawn(async move {
            http.await;
            Ok(())
        }),
    ]
}

impl Collector {
    /// Finalises every buffered trace now and waits until the store has written them.
    pub async fn flush(&self) {
        self.shards.flush().await;
        if let Err(e) = self.store.flush().await {
            tracing::error!("{e}");
        }
    }

    /// Stops in stages within `--shutdown-grace`; returns once every acknowledged span has been
    /// judged, with what the store could not write by then (nothing, unless the store is failing).
    ///
    /// Receivers may finish their in-flight requests for at most half the grace: a client that
    /// never finishes its body must not hold the process, and what is acknowledged already matters
    /// more than what is not (a cut request is answered with an error, and its sender retries), so
    /// acknowledged data always keeps at least the other half to be written. Workers hand their
    /// traces to the store until the deadline; past it the store is abandoned, so a store that
    /// cannot write never holds the process either.
    pub async fn shutdown(self) -> anyhow::Result<Tally> {
        self.receivers_stop.cancel();
        let started = tokio::time::Instant::now();
        let deadline = started + self.shutdown_grace;
        let receivers_grace = self.shutdown_grace / 2;
        for mut r in self.receivers {
            match tokio::time::timeout_at(started + receivers_grace, &mut r).await {
                Ok(done) => done??,
                Err(_) => {
                    tracing::warn!(
                        "a receiver still had requests in flight after {receivers_grace:?} (half \
                         of --shutdown-grace); closing it"
                    );
                    r.abort();
                }
            }
        }
        self.shards.stop();
        for mut w in self.workers {
            if tokio::time::timeout_at(deadline, &mut w).await.is_err() {
                // Waiting for room in the store's queue: from here on its traces count as lost.
                self.store.abandon();
                w.await?;
            }
        }
        let unwritten = self.store.stop(deadline).await;
        self.api_stop.cancel();
        self.api.await?;
        self.cluster.await?;
        Ok(unwritten)
    }
}

/// `grayscope serve`: run until SIGINT or SIGTERM.
/// The demo mesh `serve --demo` runs against the collector itself.
#[derive(Clone, Debug)]
pub struct ServeDemo {
    pub faults: Vec<demo::Fault>,
    pub rate: f64,
    pub gateway: std::net::SocketAddr,
    pub propagation: demo::Propagation,
}

pub async fn serve(cfg: ServeConfig, demo: Option<ServeDemo>) -> anyhow::Result<Stopped> {
    let listeners = Listeners::bind(&cfg).await?;
    let collector = start(&cfg, listeners).await?;
    println!(
        "grayscope: OTLP/gRPC on {}, OTLP/HTTP on {}, API and metrics on {}://{}",
        collector.otlp_grpc,
        collector.otlp_http,
        if cfg.security.http_tls.is_some() {
            "https"
        } else {
            "http"
        },
        collector.http
    );
    let demo = match demo {
        Some(d) => {
            let export = demo::Export::new(
                demo::Protocol::Grpc,
                Some(&format!("http://{}", collector.otlp_grpc)),
            )?;
            let mut options = demo::DemoOptions::new(export, d.faults);
            options.rate = d.rate;
            options.gateway = Some(d.gateway);
            options.propagation = d.propagation;
            let demo = demo::Demo::start(options).await?;
            print!("{}", demo.describe());
            println!(
                "grayscope: dashboard at http://{0}/ (findings as JSON: http://{0}/api/v1/findings?first_break=true)",
                collector.http
            );
            Some(demo)
        }
        None => None,
    };
    shutdown_signal().await;
    if let Some(demo) = demo {
        let progress = demo.stop().await;
        tracing::info!("demo stopped: {progress}");
    }
    tracing::info!("shutting down: finalising buffered traces");
    let before = collector.aggregate.lock().totals.clone();
    let aggregate = collector.aggregate.clone();
    let grace = collector.shutdown_grace;
    let unwritten = collector.shutdown().await?;
    let after = aggregate.lock().totals.clone();
    tracing::info!(
        "finalised at shutdown: {} traces, {} findings",
        after.trace_count() - before.trace_count(),
        after.findings - before.findings
    );
    if !unwritten.is_empty() {
        tracing::error!(
            "{} traces with {} findings could not be written to the store within --shutdown-grace \
             ({grace:?}) and are lost; the log above says why the store failed",
            unwritten.traces,
            unwritten.findings
        );
        return Ok(Stopped::Lost(unwritten));
    }
    tracing::info!("stopped");
    Ok(Stopped::Clean)
}

/// How `grayscope serve` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Everything acknowledged was judged and written.
    Clean,
    /// Judged, but the store could not write this much before the deadline.
    Lost(Tally),
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
