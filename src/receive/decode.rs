//! OTLP request -> compact span records, sorted into one batch per worker.
//!
//! This is where untrusted input is checked: ids of the wrong length or all zeroes and spans that are
//! their own parent are rejected one by one (the sender learns which and why through OTLP partial
//! success), and strings are cut to bounded lengths before they are interned.

use std::fmt::Write;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::instances::{Clock, Instances};
use crate::intern::{RequestCache, Symbols};
use crate::model::{PROBE_ATTRIBUTE, SpanBatch, SpanId, SpanKind, SpanRecord, StatusCode, TraceId};
use grayscope_propagation::keys::{KeyCache, KeyClass, StageKeys};

/// Longest service name, span name and attribute value kept; longer ones are cut (at a character
/// boundary). Interned strings live for the process, so their size must be bounded.
pub const MAX_SERVICE_LEN: usize = 256;
pub const MAX_NAME_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 128;
/// Rejection reasons spelled out in a partial-success message; the rest are counted.
const MAX_REASONS: usize = 5;

/// Why a span was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    TraceId,
    SpanId,
    ParentId,
    OwnParent,
}

impl Reject {
    pub const ALL: [Reject; 4] = [
        Reject::TraceId,
        Reject::SpanId,
        Reject::ParentId,
        Reject::OwnParent,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TraceId => "invalid_trace_id",
            Reject::SpanId => "invalid_span_id",
            Reject::ParentId => "invalid_parent_span_id",
            Reject::OwnParent => "own_parent",
        }
    }

    fn explain(self, span: &Span) -> String {
        let id = |name: &str, got: &[u8], want: usize| {
            if got.len() == want {
                format!("{name} is all zeroes")
            } else {
                format!("{name} must be {want} bytes, got {}", got.len())
            }
        };
        match self {
            Reject::TraceId => id("trace_id", &span.trace_id, 16),
            Reject::SpanId => id("span_id", &span.span_id, 8),
            Reject::ParentId => format!(
                "parent_span_id must be empty or 8 bytes, got {} bytes",
                span.parent_span_id.len()
            ),
            Reject::OwnParent => "span is its own parent".to_string(),
        }
    }
}

/// What decoding one request produced.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Index = worker.
    pub batches: Vec<SpanBatch>,
    pub accepted: usize,
    pub rejected: usize,
    /// Rejections by reason, for counters.
    pub reasons: Vec<(Reject, usize)>,
    /// A partial-success message naming the first few rejected spans and why.
    pub message: String,
}

/// Turns OTLP requests into span records. Shared by every receiver and by `check`.
pub struct Decoder {
    pub symbols: Arc<Symbols>,
    pub instances: Arc<Instances>,
    pub clock: Clock,
    keys: StageKeys,
    instance_key: String,
}

impl Decoder {
    pub fn new(
        symbols: Arc<Symbols>,
        instances: Arc<Instances>,
        clock: Clock,
        stage_keys: &[String],
        instance_key: &str,
    ) -> Self {
        Decoder {
            symbols,
            instances,
            clock,
            keys: StageKeys::new(stage_keys),
            instance_key: instance_key.to_string(),
        }
    }

    pub fn decode(&self, req: &ExportTraceServiceRequest, shards: usize) -> Decoded {
        let mut out = Decoded {
            batches: (0..shards).map(|_| SpanBatch::default()).collect(),
            ..Decoded::default()
        };
        let mut services = RequestCache::new(&self.symbols.services);
        let mut names = RequestCache::new(&self.symbols.names);
        let mut values = RequestCache::new(&self.symbols.values);
        let mut keys = KeyCache::new(&self.keys);
        let now_ms = self.clock.now_ms();

        for (ri, rs) in req.resource_spans.iter().enumerate() {
            let attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service = services.intern(cut(
                find_str(attrs, "service.name").unwrap_or("unknown_service"),
                MAX_SERVICE_LEN,
            ));
            let instance_stage = find_str(attrs, &self.instance_key)
                .filter(|s| !s.is_empty())
                .map(|s| values.intern(cut(s, MAX_VALUE_LEN)));
            if let Some(stage) = instance_stage {
                self.instances.touch(service, stage, now_ms);
            }
            let probe = attrs.iter().any(|kv| {
                kv.key == PROBE_ATTRIBUTE
                    && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::BoolValue(b)) => *b,
                        // As `OTEL_RESOURCE_ATTRIBUTES` sets it.
                        Some(Value::StringValue(s)) => s == "true",
                        _ => false,
                    }
            });
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for (pi, span) in ss.spans.iter().enumerate() {
                    let (trace_id, record) = match validate(span) {
                        Ok(ids) => ids,
                        Err(reason) => {
                            out.reject(reason, span, (ri, si, pi));
                            continue;
                        }
                    };
                    let mut rec = SpanRecord {
                        span_id: record.0,
                        parent: record.1,
                        start_ns: span.start_time_unix_nano,
                        end_ns: span.end_time_unix_nano,
                        service,
                        name: names.intern(cut(&span.name, MAX_NAME_LEN)),
                        stage: None,
                        instance_stage,
                        near_miss_key: None,
                        near_miss_value: None,
                        peer: None,
                        kind: SpanKind::from_otlp(span.kind),
                        status: StatusCode::from_otlp(span.status.as_ref().map_or(0, |s| s.code)),
                        probe,
                    };
                    read_attributes(&span.attributes, &mut rec, &mut keys, &mut values);
                    out.batches[trace_id.shard(shards)]
                        .spans
                        .push((trace_id, rec));
                    out.accepted += 1;
                }
            }
        }
        out
    }
}

impl Decoded {
    fn reject(&mut self, reason: Reject, span: &Span, at: (usize, usize, usize)) {
        self.rejected += 1;
        match self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.reasons.push((reason, 1)),
        }
        if self.rejected <= MAX_REASONS {
            if !self.message.is_empty() {
                self.message.push_str("; ");
            }
            let _ = write!(
                self.message,
                "resource_spans[{}].scope_spans[{}].spans[{}]: {}",
                at.0,
                at.1,
                at.2,
                reason.explain(span)
            );
        }
    }

    /// The partial-success message: how many spans were rejected, and why for the first few.
    pub fn error_message(&self) -> String {
        if self.rejected == 0 {
            return String::new();
        }
        let more = self.rejected.saturating_sub(MAX_REASONS);
        let mut m = format!(
            "rejected {} of {} spans: {}",
            self.rejected,
            self.rejected + self.accepted,
            self.message
        );
        if more > 0 {
            let _ = write!(m, "; and {more} more");
        }
        m
    }
}

fn validate(span: &Span) -> Result<(TraceId, (SpanId, Option<SpanId>)), Reject> {
    let trace_id = TraceId::from_bytes(&span.trace_id).ok_or(Reject::TraceId)?;
    let span_id = SpanId::from_bytes(&span.span_id).ok_or(Reject::SpanId)?;
    let parent = match span.parent_span_id.len() {
        0 => None,
        // An all-zero parent is how some exporters write "no parent".
        8 => SpanId::from_bytes(&span.parent_span_id),
        _ => return Err(Reject::ParentId),
    };
    if parent == Some(span_id) {
        return Err(Reject::OwnParent);
    }
    Ok((trace_id, (span_id, parent)))
}

/// Request stage (first configured key wins), near-miss key, and the peer of an outgoing call.
fn read_attributes<'a>(
    attrs: &'a [KeyValue],
    rec: &mut SpanRecord,
    keys: &mut KeyCache<'a>,
    values: &mut RequestCache<'a>,
) {
    let mut best_stage: Option<(usize, &str)> = None;
    let mut near_miss: Option<(&str, &str)> = None;
    let mut peer_service = None;
    let mut server_address = None;
    for kv in attrs {
        match kv.key.as_str() {
            "peer.service" => peer_service = string_value(kv.value.as_ref()),
            "server.address" => server_address = string_value(kv.value.as_ref()),
            key => match keys.classify(key) {
                KeyClass::Stage(i) if best_stage.is_none_or(|(b, _)| i < b) => {
                    if let Some(v) = string_value(kv.value.as_ref()).filter(|v| !v.is_empty()) {
                        best_stage = Some((i, v));
                    }
                }
                KeyClass::NearMiss if near_miss.is_none() => {
                    if let Some(v) = string_value(kv.value.as_ref()).filter(|v| !v.is_empty()) {
                        near_miss = Some((key, v));
                    }
                }
                _ => {}
            },
        }
    }
    rec.stage = best_stage.map(|(_, v)| values.intern(cut(v, MAX_VALUE_LEN)));
    if rec.stage.is_none()
        && let Some((k, v)) = near_miss
    {
        rec.near_miss_key = Some(values.intern(cut(k, MAX_VALUE_LEN)));
        rec.near_miss_value = Some(values.intern(cut(v, MAX_VALUE_LEN)));
    }
    if rec.kind.is_outgoing() {
        rec.peer = peer_service
            .or(server_address)
            .filter(|p| !p.is_empty())
            .map(|p| values.intern(cut(p, MAX_VALUE_LEN)));
    }
}

/// A string attribute, or the first element of a string array (captured headers are arrays).
fn string_value(v: Option<&AnyValue>) -> Option<&str> {
    match v?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        Value::ArrayValue(a) => match a.values.first()?.value.as_ref()? {
            Value::StringValue(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn find_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_value(kv.value.as_ref()))
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
