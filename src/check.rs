//! `grayscope check FILE...`: the collector's verification, offline, for CI.
//!
//! Files are OTLP/JSON: one `ExportTraceServiceRequest` per file, or one per line (as the
//! OpenTelemetry Collector's file exporter writes them). They go through the same decoder, assembler
//! and verifier as live traffic; every trace is finalised once all files are read.
//! Exit status: 0 clean, 1 findings, 2 unreadable input.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::assemble::{Assembler, AssemblerConfig};
use crate::config::VerifyArgs;
use crate::instances::Clock;
use crate::intern::{SymbolLimits, Symbols};
use crate::join::{JoinConfig, Joins};
use crate::receive::Decoder;
use crate::verify::messaging::Unresolved;
use crate::verify::{Finding, Policy};
use crate::view::FindingView;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no OTLP data (the file is empty)")]
    Empty { path: PathBuf },
    #[error("{path}{line}: invalid OTLP/JSON ExportTraceServiceRequest: {message}")]
    Json {
        path: PathBuf,
        line: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Spans { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// OTLP/JSON files: one ExportTraceServiceRequest each, or one per line
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Report format
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    #[command(flatten)]
    pub verify: VerifyArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
}

/// What a check found.
pub struct Report {
    pub traces: usize,
    pub spans: usize,
    pub findings: Vec<Finding>,
    pub symbols: Arc<Symbols>,
}

/// Runs `check` and prints the report; returns the exit status.
pub fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let report = match check(&args.files, args.verify.resolve()?) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grayscope check: {e}");
            return Ok(2);
        }
    };
    match args.format {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", report.json()),
    }
    Ok(if report.findings.is_empty() { 0 } else { 1 })
}

/// Verifies the files together (a trace may span several files).
pub fn check(files: &[PathBuf], verify: crate::config::VerifyConfig) -> Result<Report, CheckError> {
    let symbols = Arc::new(Symbols::new(&SymbolLimits::default()));
    let clock = Clock::new();
    // Every instance seen in the files is live for the whole check.
    let instances = Arc::new(verify.instances(&symbols, u64::MAX / 2));
    let decoder = Decoder::new(
        symbols.clone(),
        instances.clone(),
        clock,
        &verify.stage_keys,
        &verify.instance_stage_key,
    );
    let policy = Arc::new(Policy::new(
        &verify.allowed_stages,
        &verify.exempt_roots,
        &verify.destination_policies,
        &symbols,
    ));
    let joins = Joins::new(JoinConfig::offline(), policy.clone(), instances.clone());
    let mut asm = Assembler::new(AssemblerConfig::offline(), policy, instances);
    let mut out = Vec::new();
    let mut spans = 0;
    for path in files {
        for req in read_requests(path)? {
            let decoded = decoder.decode(&req, 1);
            if decoded.rejected > 0 {
                return Err(CheckError::Spans {
                    path: path.clone(),
                    message: decoded.error_message(),
                });
            }
            spans += decoded.accepted;
            for batch in decoded.batches {
                asm.insert(batch, clock.now_ms(), crate::wall_ms(), &mut out);
            }
        }
    }
    asm.drain(clock.now_ms(), crate::wall_ms(), &mut out);
    let traces = out.iter().filter(|f| !f.outcome.joined).count();
    // Every producer span is in: a link to one that is not will not be followed.
    joins.absorb(&mut out, clock.now_ms(), crate::wall_ms());
    joins.drain(
        Unresolved::Expired,
        clock.now_ms(),
        crate::wall_ms(),
        &mut out,
    );
    let mut findings: Vec<Finding> = out.into_iter().flat_map(|f| f.outcome.findings).collect();
    findings.sort_by_key(|f| (f.trace_id, !f.first_break, f.callee.start_ns));
    Ok(Report {
        traces,
        spans,
        findings,
        symbols,
    })
}

fn read_requests(path: &Path) -> Result<Vec<ExportTraceServiceRequest>, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Err(CheckError::Empty {
            path: path.to_path_buf(),
        });
    }
    let whole = serde_json::from_str::<ExportTraceServiceRequest>(&text);
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    match whole {
        Ok(req) => Ok(vec![req]),
        // One request per line (JSON Lines).
        Err(_) if lines.len() > 1 => lines
            .into_iter()
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| CheckError::Json {
                    path: path.to_path_buf(),
                    line: format!(":{}", i + 1),
                    message: e.to_string(),
                })
            })
            .collect(),
        Err(e) => Err(CheckError::Json {
            path: path.to_path_buf(),
            line: String::new(),
            message: e.to_string(),
        }),
    }
}

impl Report {
    pub fn text(&self) -> String {
        let sym = &self.symbols;
        let mut out = String::new();
        let mut current = None;
        for f in &self.findings {
            if current != Some(f.trace_id) {
                current = Some(f.trace_id);
                let _ = writeln!(out, "trace {}", f.trace_id);
            }
            let hop = format!(
                "{} -> {}",
                f.hop
                    .caller
                    .map_or_else(|| "(unknown caller)".into(), |c| c.name(sym).to_string()),
                f.hop.callee.name(sym)
            );
            let _ = writeln!(
                out,
                "  {:<11} {:<13} {}  ({})",
                if f.first_break {
                    "FIRST BREAK"
                } else {
                    "consequence"
                },
                f.kind.as_str(),
                hop,
                f.scope.as_str()
            );
            let _ = writeln!(out, "      {}", f.detail(sym));
        }
        let breaks = self.findings.iter().filter(|f| f.first_break).count();
        let mut broken: Vec<_> = self.findings.iter().map(|f| f.trace_id).collect();
        broken.dedup();
        if !self.findings.is_empty() {
            out.push('\n');
        }
        let verdict = if self.findings.is_empty() {
            "stage propagation is consistent on every edge".to_string()
        } else {
            format!(
                "{} ({} {}) in {}",
                plural(self.findings.len(), "finding"),
                breaks,
                if breaks == 1 {
                    "first break"
                } else {
                    "first breaks"
                },
                plural(broken.len(), "trace")
            )
        };
        let _ = writeln!(
            out,
            "{}, {}: {verdict}",
            plural(self.traces, "trace"),
            plural(self.spans, "span")
        );
        out
    }

    pub fn json(&self) -> String {
        #[derive(serde::Serialize)]
        struct JsonReport {
            traces: usize,
            spans: usize,
            findings: Vec<FindingView>,
        }
        let report = JsonReport {
            traces: self.traces,
            spans: self.spans,
            findings: self
                .findings
                .iter()
                .map(|f| FindingView::of(f, &self.symbols))
                .collect(),
        };
        serde_json::to_string(&report).expect("reports serialise")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
