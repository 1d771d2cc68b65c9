//! `grayscope probe`: the check before go-live. Sends requests tagged with each stage through the
//! real call chain, each under a fresh trace whose root span the probe exports itself, waits for
//! the collector to finalise exactly those traces, and judges them: every hop `ok`, every expected
//! service reached, every expected instance stage serving. Exit 0 all good, 1 a break or an unmet
//! expectation, 2 when no verdict could be reached (usage, collector unreachable, traces
//! incomplete at the deadline).
//!
//! Passive checking judges whatever traffic there is, and `misrouted` only when the collector knows
//! a live instance of the stage. The probe also catches a canary that no request ever reaches
//! (`--expect-instance-stage`), and a call that left the request's trace (a span of another trace
//! that started inside one of the probe's spans).

mod collector;
mod entry;
mod judge;
mod report;

use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};

use crate::config::Dur;
use crate::demo::{Export, Protocol};
use crate::security::ClientAuth;

pub use judge::{Outcome, Report};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Usage(String),
    #[error("the collector at {url} cannot be reached: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("the collector at {url} answered {status} to {path}: {body}")]
    Collector {
        url: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("the probe's own spans could not be exported to {endpoint}: {cause}")]
    Export { endpoint: String, cause: String },
    #[error(
        "{} of {total} traces were not finalised within --timeout {timeout}: {}",
        waiting.len(),
        waiting.join(", ")
    )]
    Incomplete {
        total: usize,
        timeout: String,
        /// Each as `ID (state)`.
        waiting: Vec<String>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table per stage, for a person
    Text,
    /// The whole report as one JSON document
    Json,
    /// JUnit XML: a test suite per stage, a test case per hop and per expectation
    Junit,
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("target").required(true).args(["url", "grpc"])))]
pub struct ProbeArgs {
    /// The entry point to send requests to, e.g. http://gateway:8080/checkout?user=probe
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// A gRPC entry point instead: HOST:PORT, with --method pkg.Service/Method and the request
    /// message's protobuf bytes in --data @FILE (empty: the message with every field unset)
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc: Option<String>,
    /// The HTTP method [default: GET], or with --grpc the full method name, pkg.Service/Method
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
    /// A request header (HTTP) or metadata entry (gRPC), NAME:VALUE; repeatable
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The request body: the text itself, or @FILE for a file's bytes
    #[arg(long, value_name = "BODY|@FILE")]
    pub data: Option<String>,
    /// A stage to probe; repeatable
    #[arg(long = "stage", value_name = "STAGE", default_value = "canary")]
    pub stages: Vec<String>,
    /// Requests per stage
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub requests: u32,
    /// The header carrying the stage; the baggage entry and the probe span's attribute are its
    /// lower-cased name
    #[arg(long, value_name = "NAME", default_value = "X-Release-Stage")]
    pub stage_header: String,
    /// Services every request of every stage must reach
    #[arg(long, value_name = "SERVICE,...", value_delimiter = ',')]
    pub expect_services: Vec<String>,
    /// SERVICE=STAGE: requests of STAGE must be served at SERVICE by an instance of STAGE;
    /// repeatable
    #[arg(long = "expect-instance-stage", value_name = "SERVICE=STAGE", value_parser = parse_pair)]
    pub expect_instance_stages: Vec<(String, String)>,
    /// The collector's API and dashboard
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub collector: String,
    /// Where the probe exports its own spans [default: the collector's host, port 4317 for
    /// gRPC, 4318 for HTTP]; behind a load balancer, the load balancer
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol of the probe's exporter
    #[arg(long, value_enum, default_value = "grpc")]
    pub otlp_protocol: Protocol,
    /// How long to wait, from the first request, for every verdict. A span whose parent has not
    /// arrived waits for it on the collector (its --orphan-wait) before it is judged: a trace
    /// still waiting when this runs out is reported incomplete, not broken
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: Dur,
    /// How long one entry request may take
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub request_timeout: Dur,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// File whose first token is sent to the collector's API (a read token)
    #[arg(long, env = "GRAYSCOPE_READ_TOKEN_FILE", value_name = "FILE")]
    pub read_token_file: Option<std::path::PathBuf>,
    /// --ca-file, --client-cert and --client-key apply to the collector's API and OTLP endpoint
    /// (and --ca-file to an https entry point besides the system's roots); --token-file is the
    /// ingest token sent with the probe's spans
    #[command(flatten)]
    pub auth: crate::security::ClientAuthArgs,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not NAME:VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("'{s}' has no header name"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("'{s}' is not SERVICE=STAGE")),
    }
}

/// What the probe was asked to check: every requirement, resolved and validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: entry::Target,
    pub stages: Vec<String>,
    pub requests: u32,
    pub stage_header: String,
    pub expect_services: Vec<String>,
    pub expect_instance_stages: Vec<(String, String)>,
    pub collector: String,
    /// TLS and the read token, for the collector's API.
    pub api_auth: ClientAuth,
    pub export: Export,
    pub timeout: Duration,
    pub format: Format,
}

impl ProbeArgs {
    pub fn plan(self) -> Result<Plan, ProbeError> {
        let usage = |m: String| ProbeError::Usage(m);
        if self.requests == 0 {
            return Err(usage("--requests must be at least 1".into()));
        }
        let mut stages = self.stages.clone();
        stages.dedup();
        if let Some(s) = stages.iter().find(|s| s.is_empty()) {
            return Err(usage(format!("--stage '{s}' is empty")));
        }
        let body = match self.data.as_deref() {
            None => Vec::new(),
            Some(d) => match d.strip_prefix('@') {
                Some(path) => std::fs::read(path)
                    .map_err(|e| usage(format!("--data @{path}: cannot read it: {e}")))?,
                None => d.as_bytes().to_vec(),
            },
        };
        let auth = self.auth.resolve().map_err(|e| usage(e.to_string()))?;
        let target = entry::Target::new(
            self.url.as_deref(),
            self.grpc.as_deref(),
            self.method.as_deref(),
            self.headers.clone(),
            body,
            self.request_timeout.0,
            self.auth.ca_file.clone(),
        )
        .map_err(usage)?;
        http::HeaderName::from_bytes(self.stage_header.as_bytes()).map_err(|_| {
            usage(format!(
                "--stage-header '{}' is not a header name",
                self.stage_header
            ))
        })?;
        let collector = self.collector.trim_end_matches('/').to_string();
        let uri: http::Uri = collector
            .parse()
            .map_err(|e| usage(format!("--collector '{collector}': {e}")))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) if uri.host().is_some() => s,
            _ => {
                return Err(usage(format!(
                    "--collector '{collector}': expected a URL like http://127.0.0.1:8080"
                )));
            }
        };
        let otlp = match &self.otlp_endpoint {
            Some(e) => e.clone(),
            None => format!(
                "{scheme}://{}:{}",
                uri.host().unwrap_or("127.0.0.1"),
                match self.otlp_protocol {
                    Protocol::Grpc => 4317,
                    Protocol::Http => 4318,
                }
            ),
        };
        let export = Export::new(self.otlp_protocol, Some(&otlp))
            .map_err(|e| usage(format!("--otlp-endpoint: {e}")))?
            .with_auth(auth.clone());
        let api_auth = ClientAuth {
            tls: auth.tls,
            authorization: self
                .read_token_file
                .as_ref()
                .map(crate::security::client::read_token)
                .transpose()
                .map_err(|e| usage(format!("--read-token-file: {e}")))?,
        };
        Ok(Plan {
            target,
            stages,
            requests: self.requests,
            stage_header: self.stage_header,
            expect_services: self.expect_services,
            expect_instance_stages: self.expect_instance_stages,
            collector,
            api_auth,
            export,
            timeout: self.timeout.0,
            format: self.format,
        })
    }
}

/// Runs the probe to its report. Must be called within a multi-threaded tokio runtime (the
/// exporter's batch thread blocks on it).
pub async fn run(plan: &Plan) -> Result<Report, ProbeError> {
    let started = Instant::now();
    let since_ms = crate::wall_ms();
    let api = collector::Api::new(&plan.collector, &plan.api_auth)?;
    api.health().await?;
    let sent = entry::send_all(plan).await?;
    let deadline = started + plan.timeout;
    let ids: Vec<&str> = sent.iter().map(|s| s.trace_id.as_str()).collect();
    let (traces, timing) = api.wait_finalised(&ids, deadline, plan.timeout).await?;
    let detached = api
        .detached(&traces, since_ms, timing.flush_interval)
        .await?;
    Ok(judge::judge(
        plan,
        &sent,
        &traces,
        &detached,
        judge::Timing {
            total: started.elapsed(),
            trace_idle: timing.trace_idle,
        },
    ))
}

/// `grayscope probe` from the command line: prints the report, returns the exit code.
pub async fn main(args: ProbeArgs) -> u8 {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("grayscope probe: {e}");
            return 2;
        }
    };
    match run(&plan).await {
        Ok(report) => {
            print!("{}", report::render(&report, plan.format));
            match report.outcome {
                Outcome::Pass => 0,
                Outcome::Fail => 1,
            }
        }
        Err(e) => {
            eprintln!("grayscope probe: {e}");
            2
        }
    }
}
