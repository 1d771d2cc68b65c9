//! How a stored trace is encoded: protobuf (prost), so that the format can gain fields without
//! breaking what older versions wrote, with the trace's own string table so a blob is readable
//! without the process that wrote it, and times relative to the trace's first span.

use prost::Message;

use crate::assemble::TraceSnapshot;
use crate::intern::Symbols;
use crate::model::{SpanId, SpanKind, StageSource, StatusCode, TraceId};
use crate::verify::{Scope, Verdict};
use crate::view::{TraceEdgeView, TraceSpanView, TraceView};

#[derive(Clone, PartialEq, Message)]
pub struct StoredTrace {
    #[prost(string, repeated, tag = "1")]
    pub strings: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<StoredSpan>,
    /// (parent index, child index, verdict) triples into `spans`.
    #[prost(uint32, repeated, tag = "3")]
    pub edges: Vec<u32>,
    /// Start of the earliest span, Unix ns; span times are relative to it.
    #[prost(uint64, tag = "4")]
    pub base_ns: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StoredSpan {
    #[prost(fixed64, tag = "1")]
    pub span_id: u64,
    #[prost(fixed64, optional, tag = "2")]
    pub parent: Option<u64>,
    /// Indexes into `strings`.
    #[prost(uint32, tag = "3")]
    pub service: u32,
    #[prost(uint32, tag = "4")]
    pub name: u32,
    #[prost(uint32, optional, tag = "5")]
    pub stage: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub instance: Option<u32>,
    #[prost(uint32, tag = "7")]
    pub kind: u32,
    #[prost(uint32, tag = "8")]
    pub status: u32,
    #[prost(uint64, tag = "9")]
    pub start_ns: u64,
    #[prost(uint64, tag = "10")]
    pub duration_ns: u64,
    /// `StageSource as u32`; absent in traces written before it was kept.
    #[prost(uint32, optional, tag = "11")]
    pub stage_from: Option<u32>,
}

/// Encodes a finalised trace with its strings resolved.
pub fn encode(t: &TraceSnapshot, sym: &Symbols) -> Vec<u8> {
    // A hash index, not a scan: a trace of 100,000 spans may have as many distinct names.
    let mut strings: Vec<String> = Vec::new();
    let mut seen: std::collections::HashMap<std::sync::Arc<str>, u32, foldhash::fast::RandomState> =
        Default::default();
    let mut index = |s: std::sync::Arc<str>| -> u32 {
        *seen.entry(s).or_insert_with_key(|s| {
            strings.push(s.to_string());
            (strings.len() - 1) as u32
        })
    };
    let base_ns = t.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let spans = t
        .spans
        .iter()
        .map(|s| StoredSpan {
            span_id: s.span_id.get(),
            parent: s.parent.map(SpanId::get),
            service: index(sym.services.resolve(s.service)),
            name: index(sym.names.resolve(s.name)),
            stage: s.stage.map(|v| index(sym.values.resolve(v))),
            instance: s.instance_stage.map(|v| index(sym.values.resolve(v))),
            kind: s.kind as u32,
            status: s.status as u32,
            start_ns: s.start_ns - base_ns,
            duration_ns: s.end_ns.saturating_sub(s.start_ns),
            stage_from: s.stage.and(s.stage_from).map(|f| f as u32),
        })
        .collect();
    let edges = t
        .edges
        .iter()
        .flat_map(|&(p, c, v)| [p, c, v as u32])
        .collect();
    StoredTrace {
        strings,
        spans,
        edges,
        base_ns,
    }
    .encode_to_vec()
}

#[derive(Debug, thiserror::Error)]
#[error("stored trace {trace_id} is unreadable: {reason}")]
pub struct DecodeError {
    trace_id: TraceId,
    reason: String,
}

/// The API's view of a stored trace; its findings are attached by the caller.
pub fn decode(trace_id: TraceId, data: &[u8]) -> Result<TraceView, DecodeError> {
    let err = |reason: String| DecodeError { trace_id, reason };
    let t = StoredTrace::decode(data).map_err(|e| err(e.to_string()))?;
    let s = |i: u32| -> Result<std::sync::Arc<str>, DecodeError> {
        t.strings
            .get(i as usize)
            .map(|x| std::sync::Arc::from(x.as_str()))
            .ok_or_else(|| err(format!("string {i} out of range")))
    };
    let id = |v: u64| SpanId::new(v).ok_or_else(|| err("a zero span id".into()));
    let mut order: Vec<&StoredSpan> = t.spans.iter().collect();
    order.sort_by_key(|sp| (sp.start_ns, sp.span_id));
    let mut spans = Vec::with_capacity(t.spans.len());
    for sp in order {
        let start = t.base_ns + sp.start_ns;
        spans.push(TraceSpanView {
            span_id: id(sp.span_id)?,
            parent_span_id: sp.parent.map(id).transpose()?,
            service: s(sp.service)?,
            name: s(sp.name)?,
            kind: SpanKind::from_otlp(sp.kind as i32),
            stage: sp.stage.map(s).transpose()?,
            stage_source: sp
                .stage_from
                .and_then(|f| StageSource::ALL.get(f as usize).copied()),
            instance_stage: sp.instance.map(s).transpose()?,
            start_unix_nano: start.to_string(),
            end_unix_nano: (start + sp.duration_ns).to_string(),
            status: StatusCode::from_otlp(sp.status as i32),
        });
    }
    let mut edges = Vec::with_capacity(t.edges.len() / 3);
    for e in t.edges.chunks_exact(3) {
        let (p, c) = match (t.spans.get(e[0] as usize), t.spans.get(e[1] as usize)) {
            (Some(p), Some(c)) => (p, c),
            _ => return Err(err("an edge out of range".into())),
        };
        let verdict = Verdict::ALL
            .get(e[2] as usize)
            .copied()
            .ok_or_else(|| err(format!("unknown verdict {}", e[2])))?;
        edges.push(TraceEdgeView {
            parent_span_id: id(p.span_id)?,
            span_id: id(c.span_id)?,
            verdict,
            scope: if p.service == c.service {
                Scope::InProcess
            } else {
                Scope::CrossService
            },
        });
    }
    Ok(TraceView {
        trace_id,
        finalised: true,
        waiting_spans: 0,
        spans,
        edges,
        findings: Vec::new(),
    })
}
