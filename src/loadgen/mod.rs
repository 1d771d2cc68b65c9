//! `grayscope loadgen`: pre-built OTLP traffic with seeded, listed faults, sent to any OTLP
//! collector as fast as it accepts it; reports throughput, latency and (given the collector's pid)
//! its CPU time per million spans and peak memory.
//!
//! A refused request (HTTP 503 / gRPC UNAVAILABLE) is retried after a short pause, as an exporter
//! would, and counted; the run's throughput counts accepted spans only.

pub mod client;
pub mod traffic;
pub mod wide;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use client::{RawClient, Reply, Wire};
pub use traffic::{ExpectedFinding, Fault, Template, kv};

use crate::config::Dur;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Wire protocol
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Wire,
    /// OTLP/gRPC address of the collector
    #[arg(long, default_value = "127.0.0.1:4317", value_name = "ADDR")]
    pub grpc: SocketAddr,
    /// OTLP/HTTP address of the collector
    #[arg(long, default_value = "127.0.0.1:4318", value_name = "ADDR")]
    pub http: SocketAddr,
    /// Spans per request (whole traces of 9 spans)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub spans_per_request: usize,
    /// Requests in flight at once, each on its own connection
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub concurrency: usize,
    /// How long to send [default: 10s, unless --requests is given]
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur>,
    /// Stop after this many accepted requests
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Share of traces that carry one injected fault
    #[arg(long, default_value_t = 0.01, value_name = "RATIO")]
    pub fault_rate: f64,
    /// Inject only these kinds of fault [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub fault_kinds: Vec<traffic::Fault>,
    /// Seed for the traffic (the same seed sends the same faults)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct pre-built requests to cycle through
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub templates: usize,
    /// Compress requests with gzip
    #[arg(long)]
    pub gzip: bool,
    /// Write every injected fault (trace id, verdict, edge) as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub faults_out: Option<PathBuf>,
    /// The collector's process id: report its CPU time and peak RSS
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Threads for the generator itself
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Send at this many spans per second at most, evenly paced [default: as fast as accepted]
    #[arg(long, value_name = "SPANS_PER_SECOND")]
    pub rate: Option<f64>,
    /// Connect with TLS (the collector's certificate must name the address's IP)
    #[arg(long)]
    pub tls: bool,
    /// Send through a wide mesh of this many services in namespaces instead of the five-service
    /// shop: for the dashboard at scale
    #[arg(long, value_name = "N")]
    pub services: Option<usize>,
    /// With --services: about this many distinct calls between them [default: 5 per service]
    #[arg(long, value_name = "N", requires = "services")]
    pub edges: Option<usize>,
    /// With --services: how many services deep the calls go [default: 8]
    #[arg(long, value_name = "N", requires = "services")]
    pub depth: Option<usize>,
    #[command(flatten)]
    pub auth: crate::security::ClientAuthArgs,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub protocol: String,
    pub spans_per_request: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: u64,
    pub spans: u64,
    pub refused: u64,
    pub errors: u64,
    pub spans_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub faults: usize,
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_seconds_per_million_spans: Option<f64>,
    pub server_peak_rss_bytes: Option<u64>,
}

pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let summary = rt.block_on(generate(args))?;
    print!("{}", summary.text());
    Ok(())
}

/// Sends the traffic and returns the summary; the expected findings go to `--faults-out`.
pub async fn generate(args: LoadgenArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fault_rate),
        "--fault-rate must be between 0 and 1"
    );
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mesh = match args.services {
        None => traffic::Mesh::Shop,
        Some(n) => {
            anyhow::ensure!(n >= 2, "--services must be at least 2");
            let kinds = &args.fault_kinds;
            anyhow::ensure!(
                kinds.is_empty() || kinds.iter().any(|k| wide::WIDE_FAULTS.contains(k)),
                "a wide mesh injects faults on one call: {:?}",
                wide::WIDE_FAULTS
            );
            traffic::Mesh::Wide(wide::WideMesh::new(
                n,
                args.edges.unwrap_or(5 * n),
                args.depth.unwrap_or(8),
                args.seed,
            ))
        }
    };
    let mut next_trace = 0;
    let templates: Arc<Vec<Template>> = Arc::new(
        (0..args.templates.max(1))
            .map(|_| {
                Template::build_on(
                    &mesh,
                    &mut next_trace,
                    args.spans_per_request,
                    (args.fault_rate, &args.fault_kinds),
                    args.protocol,
                    &mut rng,
                )
            })
            .collect(),
    );
    let addr = match args.protocol {
        Wire::Grpc => args.grpc,
        Wire::Http | Wire::HttpJson => args.http,
    };
    let deadline = match (args.duration, args.requests) {
        (Some(d), _) => Some(d.0),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let record = args.faults_out.is_some();
    let nonce = args.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ crate::wall_ms();
    let next = Arc::new(AtomicU64::new(0));
    anyhow::ensure!(
        args.rate.is_none_or(|r| r > 0.0),
        "--rate must be more than 0"
    );
    // The n-th request is due `n x interval` after the start: a paced run neither bursts nor
    // drifts, whatever the latency of single requests.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(templates[0].spans as f64 / r));
    let cpu_before = args.server_pid.and_then(proc_cpu_seconds);
    let started = Instant::now();

    let auth = args.auth.resolve()?;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = RawClient::with_auth(args.protocol, addr, &auth, args.tls)?;
        let (templates, next) = (templates.clone(), next.clone());
        let (limit, gzip) = (args.requests, args.gzip);
        tasks.push(tokio::spawn(async move {
            let mut w = WorkerTally::default();
            loop {
                if deadline.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
                if let Some(every) = interval {
                    tokio::time::sleep_until((started + every.mul_f64(n as f64)).into()).await;
                    if deadline.is_some_and(|d| started.elapsed() >= d) {
                        break;
                    }
                }
                let t = &templates[(n % templates.len() as u64) as usize];
                let mut expected = Vec::new();
                let body = Bytes::from(t.instance(nonce, n, record.then_some(&mut expected)));
                loop {
                    let sent = Instant::now();
                    match client.send(body.clone(), gzip).await {
                        Ok(r) if r.is_ok() => {
                            w.latencies.push(sent.elapsed().as_micros() as u32);
                            w.requests += 1;
                            w.spans += t.spans as u64;
                            w.expected.append(&mut expected);
                            break;
                        }
                        Ok(r) if r.is_retryable() => {
                            w.refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(r) => {
                            w.errors += 1;
                            w.last_error = Some(format!(
                                "{} {:?} {:?}",
                                r.http, r.grpc_status, r.grpc_message
                            ));
                            break;
                        }
                        Err(e) => {
                            w.errors += 1;
                            w.last_error = Some(e.to_string());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            break;
                        }
                    }
                }
            }
            w
        }));
    }
    let mut all = WorkerTally::default();
    for t in tasks {
        let w = t.await?;
        all.requests += w.requests;
        all.spans += w.spans;
        all.refused += w.refused;
        all.errors += w.errors;
        all.latencies.extend(w.latencies);
        all.expected.extend(w.expected);
        all.last_error = w.last_error.or(all.last_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = &all.last_error {
        eprintln!("loadgen: {} requests failed; last error: {e}", all.errors);
    }
    if let Some(path) = &args.faults_out {
        all.expected.sort();
        std::fs::write(path, serde_json::to_vec_pretty(&all.expected)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    all.latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies.len() as f64 - 1.0) * p).round() as usize;
        all.latencies[i] as f64 / 1000.0
    };
    let cpu = match (cpu_before, args.server_pid.and_then(proc_cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let faults = if record {
        all.expected.len()
    } else {
        let per_round: usize = templates.iter().map(|t| t.faults().count()).sum();
        (per_round as f64 * all.requests as f64 / templates.len() as f64).round() as usize
    };
    Ok(Summary {
        protocol: format!("{:?}", args.protocol).to_lowercase(),
        spans_per_request: templates[0].spans,
        concurrency: args.concurrency,
        seconds,
        requests: all.requests,
        spans: all.spans,
        refused: all.refused,
        errors: all.errors,
        spans_per_second: all.spans as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        faults,
        server_cpu_seconds: cpu,
        server_cpu_seconds_per_million_spans: cpu.map(|c| c / (all.spans.max(1) as f64 / 1e6)),
        server_peak_rss_bytes: args.server_pid.and_then(proc_peak_rss),
    })
}

#[derive(Default)]
struct WorkerTally {
    requests: u64,
    spans: u64,
    refused: u64,
    errors: u64,
    latencies: Vec<u32>,
    expected: Vec<ExpectedFinding>,
    last_error: Option<String>,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "loadgen: {}, {} spans/request, {} clients, {:.1} s\n  accepted {} requests, {} spans; {} refused (retried), {} errors\n  throughput {:.0} spans/s; latency p50 {:.2} ms, p99 {:.2} ms\n  faults injected: {}\n",
            self.protocol,
            self.spans_per_request,
            self.concurrency,
            self.seconds,
            self.requests,
            self.spans,
            self.refused,
            self.errors,
            self.spans_per_second,
            self.p50_ms,
            self.p99_ms,
            self.faults
        );
        if let (Some(cpu), Some(per)) = (
            self.server_cpu_seconds,
            self.server_cpu_seconds_per_million_spans,
        ) {
            s += &format!("  server: {cpu:.2} CPU s, {per:.2} CPU s per million spans");
            if let Some(rss) = self.server_peak_rss_bytes {
                s += &format!(", peak RSS {:.1} MiB", rss as f64 / (1 << 20) as f64);
            }
            s.push('\n');
        }
        s
    }
}

/// User + system CPU seconds of a process, from `/proc/PID/stat` (Linux; clock ticks of 1/100 s).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Peak resident set size of a process (`VmHWM`), in bytes.
pub fn proc_peak_rss(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
