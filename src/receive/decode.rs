//! OTLP request -> compact span records, sorted into one batch per worker.
//!
//! This is where untrusted input is checked: ids of the wrong length or all zeroes and spans that are
//! their own parent are rejected one by one (the sender learns which and why through OTLP partial
//! success), and strings are cut to bounded lengths before they are interned.

use std::fmt::Write;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};

use crate::instances::StageSighting;
use crate::instances::{Clock, Instances};
use crate::intern::{RequestCache, Symbols};
use crate::model::{
    Link, MAX_LINKS, Messaging, MessagingOp, PROBE_ATTRIBUTE, SpanBatch, SpanExtra, SpanFlags,
    SpanId, SpanKind, SpanRecord, StageSource, StatusCode, Sym, TraceId,
};

mod protobuf;
pub mod wire;
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

    fn explain(self, span: &SpanFields<'_>) -> String {
        let id = |name: &str, got: &[u8], want: usize| {
            if got.len() == want {
                format!("{name} is all zeroes")
            } else {
                format!("{name} must be {want} bytes, got {}", got.len())
            }
        };
        match self {
            Reject::TraceId => id("trace_id", span.trace_id, 16),
            Reject::SpanId => id("span_id", span.span_id, 8),
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
    /// Where each configured key's value comes from, by the key's index.
    sources: Vec<StageSource>,
    instance_key: String,
    /// The resource attribute that groups services on the dashboard (`--group-key`).
    group_key: String,
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
            sources: stage_keys.iter().map(|k| StageSource::of_key(k)).collect(),
            instance_key: instance_key.to_string(),
            group_key: crate::instances::DEFAULT_GROUP_KEY.to_string(),
        }
    }

    /// Groups services by the resource attribute `key` instead of `service.namespace`.
    #[must_use]
    pub fn with_group_key(mut self, key: &str) -> Self {
        self.group_key = key.to_string();
        self
    }

    /// Decodes a request already parsed into `opentelemetry-proto`'s structs (OTLP/JSON, `check`).
    pub fn decode(&self, req: &ExportTraceServiceRequest, shards: usize) -> Decoded {
        let mut s = Session::new(self, shards);
        for (ri, rs) in req.resource_spans.iter().enumerate() {
            let attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let res = s
                .resource(attrs.iter().map(|kv| Ok((kv.key.as_bytes(), value_of(kv)))))
                .expect("decoded strings are UTF-8");
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for (pi, span) in ss.spans.iter().enumerate() {
                    let fields = SpanFields {
                        trace_id: &span.trace_id,
                        span_id: &span.span_id,
                        parent_span_id: &span.parent_span_id,
                        name: span.name.as_bytes(),
                        kind: span.kind,
                        start_ns: span.start_time_unix_nano,
                        end_ns: span.end_time_unix_nano,
                        status: span.status.as_ref().map_or(0, |s| s.code),
                    };
                    let attrs = span
                        .attributes
                        .iter()
                        .map(|kv| Ok((kv.key.as_bytes(), value_of(kv))));
                    let links: Vec<LinkFields<'_>> = span
                        .links
                        .iter()
                        .map(|l| LinkFields {
                            trace_id: &l.trace_id,
                            span_id: &l.span_id,
                            flags: l.flags,
                        })
                        .collect();
                    s.span(&res, &fields, attrs, &links, (ri, si, pi))
                        .expect("decoded strings are UTF-8");
                }
            }
        }
        s.finish()
    }

    /// Decodes OTLP/protobuf bytes in place ([`wire`]): the same records as parsing them into
    /// `opentelemetry-proto`'s structs and calling [`Decoder::decode`], without the allocations.
    pub fn decode_protobuf(&self, bytes: &[u8], shards: usize) -> wire::Result<Decoded> {
        let mut s = Session::new(self, shards);
        protobuf::request(&mut s, bytes)?;
        Ok(s.finish())
    }
}

/// An attribute's value as decoding needs it; strings are bytes not yet checked for UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrValue<'a> {
    /// A string, or the first element of an array when that is a string (captured headers are
    /// arrays).
    Str(&'a [u8]),
    Bool(bool),
    Other,
}

/// An attribute: its key (bytes, not yet checked) and value.
pub type Attr<'a> = (&'a [u8], AttrValue<'a>);

fn value_of(kv: &KeyValue) -> AttrValue<'_> {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => AttrValue::Str(s.as_bytes()),
        Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(Value::ArrayValue(a)) => match a.values.first().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => AttrValue::Str(s.as_bytes()),
            _ => AttrValue::Other,
        },
        _ => AttrValue::Other,
    }
}

/// The fields of a span that verification reads; `name` is not yet checked for UTF-8.
pub struct SpanFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a [u8],
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status: i32,
}

/// A span link as it arrives: ids not yet checked.
#[derive(Clone, Copy, Default)]
pub struct LinkFields<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub flags: u32,
}

impl LinkFields<'_> {
    /// A link whose ids are not valid W3C ids points nowhere: it is left out.
    fn link(&self) -> Option<Link> {
        Some(Link {
            trace_id: TraceId::from_bytes(self.trace_id)?,
            span_id: SpanId::from_bytes(self.span_id)?,
            sampled: Link::sampled_from_flags(self.flags),
        })
    }
}

/// What a resource says about its spans.
pub struct ResourceInfo {
    service: Sym,
    instance_stage: Option<Sym>,
    probe: bool,
    client_app: bool,
}

/// One request's decoding: its string caches and what it has produced so far. Instance sightings
/// are applied only when the whole request has decoded, so a request refused as malformed leaves
/// nothing behind.
pub struct Session<'a> {
    decoder: &'a Decoder,
    services: RequestCache<'a>,
    names: RequestCache<'a>,
    values: RequestCache<'a>,
    keys: KeyCache<'a>,
    now_ms: u64,
    shards: usize,
    sightings: Vec<(Sym, Sym)>,
    /// (service, group) of each resource that named a group.
    groups: Vec<(Sym, Sym)>,
    /// Services seen receiving calls (SERVER and CONSUMER spans), once per resource.
    receivers: Vec<Sym>,
    /// What services' spans say about where they carry the stage, once per resource and kind.
    stage_sightings: Vec<(Sym, StageSighting)>,
    /// The attributes and links of the span being read, reused from span to span.
    attr_buf: Vec<&'a [u8]>,
    link_buf: Vec<LinkFields<'a>>,
    out: Decoded,
}

impl<'a> Session<'a> {
    fn new(decoder: &'a Decoder, shards: usize) -> Self {
        Session {
            decoder,
            services: RequestCache::new(&decoder.symbols.services, MAX_SERVICE_LEN),
            names: RequestCache::new(&decoder.symbols.names, MAX_NAME_LEN),
            values: RequestCache::new(&decoder.symbols.values, MAX_VALUE_LEN),
            keys: KeyCache::new(&decoder.keys),
            now_ms: decoder.clock.now_ms(),
            shards,
            sightings: Vec::new(),
            groups: Vec::new(),
            receivers: Vec::new(),
            stage_sightings: Vec::new(),
            attr_buf: Vec::new(),
            link_buf: Vec::new(),
            out: Decoded {
                batches: (0..shards).map(|_| SpanBatch::default()).collect(),
                ..Decoded::default()
            },
        }
    }

    fn finish(self) -> Decoded {
        for (service, stage) in self.sightings {
            self.decoder.instances.touch(service, stage, self.now_ms);
        }
        for (service, group) in self.groups {
            self.decoder.instances.grouped(service, group);
        }
        for service in self.receivers {
            self.decoder.instances.receives(service, self.now_ms);
        }
        for (service, sighting) in self.stage_sightings {
            self.decoder
                .instances
                .stage_seen(service, sighting, self.now_ms);
        }
        self.out
    }

    /// The service, instance stage and probe marker of a resource's attributes. The first
    /// attribute of a key counts, as a lookup by key finds it.
    pub fn resource(
        &mut self,
        attrs: impl Iterator<Item = wire::Result<Attr<'a>>>,
    ) -> wire::Result<ResourceInfo> {
        let instance_key = self.decoder.instance_key.as_bytes();
        let group_key = self.decoder.group_key.as_bytes();
        let (mut service, mut instance, mut probe) = (None, None, false);
        let mut group = None;
        let mut client_app = false;
        for attr in attrs {
            let (key, value) = attr?;
            client_app |= crate::model::is_client_app_attribute(
                key,
                match value {
                    AttrValue::Str(s) => Some(s),
                    _ => None,
                },
            );
            if key == b"service.name" && service.is_none() {
                service = Some(value);
            } else if key == instance_key && instance.is_none() {
                instance = Some(value);
            } else if key == group_key && group.is_none() {
                group = Some(value);
            }
            if key == PROBE_ATTRIBUTE.as_bytes() {
                probe |= match value {
                    AttrValue::Bool(b) => b,
                    // As `OTEL_RESOURCE_ATTRIBUTES` sets it.
                    AttrValue::Str(s) => s == b"true",
                    AttrValue::Other => false,
                };
            }
        }
        let service = match service {
            Some(AttrValue::Str(s)) => s,
            _ => b"unknown_service",
        };
        let service = self.services.intern(service).map_err(bad_value)?;
        let instance_stage = match instance {
            Some(AttrValue::Str(s)) if !s.is_empty() => {
                Some(self.values.intern(s).map_err(bad_value)?)
            }
            _ => None,
        };
        if let Some(stage) = instance_stage {
            self.sightings.push((service, stage));
        }
        if let Some(AttrValue::Str(g)) = group
            && !g.is_empty()
        {
            self.groups
                .push((service, self.values.intern(g).map_err(bad_value)?));
        }
        Ok(ResourceInfo {
            service,
            instance_stage,
            probe,
            client_app,
        })
    }

    /// One span: rejected with its reason, or a record in its trace's batch.
    pub fn span(
        &mut self,
        res: &ResourceInfo,
        span: &SpanFields<'a>,
        attrs: impl Iterator<Item = wire::Result<Attr<'a>>>,
        links: &[LinkFields<'_>],
        at: (usize, usize, usize),
    ) -> wire::Result<()> {
        let (trace_id, ids) = match validate(span) {
            Ok(ids) => ids,
            Err(reason) => {
                // Its name and attributes must still be well formed, as in a request decoded
                // whole.
                wire::utf8(span.name).map_err(bad_name)?;
                for a in attrs {
                    a?;
                }
                self.out.reject(reason, span, at);
                return Ok(());
            }
        };
        let mut rec = SpanRecord {
            span_id: ids.0,
            parent: ids.1,
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            service: res.service,
            name: self.names.intern(span.name).map_err(bad_name)?,
            stage: None,
            instance_stage: res.instance_stage,
            near_miss_key: None,
            near_miss_value: None,
            peer: None,
            kind: SpanKind::from_otlp(span.kind),
            status: StatusCode::from_otlp(span.status),
            stage_from: None,
            flags: SpanFlags::default()
                .with(SpanFlags::PROBE, res.probe)
                .with(SpanFlags::CLIENT_APP, res.client_app),
        };
        if matches!(rec.kind, SpanKind::Server | SpanKind::Consumer)
            && self.receivers.last() != Some(&res.service)
        {
            self.receivers.push(res.service);
        }
        let messaging = self.read_attributes(attrs, &mut rec)?;
        // A request holds a handful of services: at most two sightings each.
        if let Some(sighting) = StageSighting::of(&rec)
            && !self.stage_sightings.contains(&(res.service, sighting))
        {
            self.stage_sightings.push((res.service, sighting));
        }
        let batch = &mut self.out.batches[trace_id.shard(self.shards)];
        batch.spans.push((trace_id, rec));
        if !messaging.is_empty() || !links.is_empty() {
            let mut extra = SpanExtra {
                messaging,
                ..SpanExtra::default()
            };
            for l in links.iter().filter_map(LinkFields::link) {
                if extra.links.len() < MAX_LINKS {
                    extra.links.push(l);
                } else {
                    extra.links_dropped += 1;
                }
            }
            batch.extras.push((trace_id, rec.span_id, extra));
        }
        self.out.accepted += 1;
        Ok(())
    }

    /// Request stage (first configured key wins), near-miss key, the peer of an outgoing call,
    /// and where a message went.
    fn read_attributes(
        &mut self,
        attrs: impl Iterator<Item = wire::Result<Attr<'a>>>,
        rec: &mut SpanRecord,
    ) -> wire::Result<Messaging> {
        let mut best_stage: Option<(usize, &'a [u8])> = None;
        let mut near_miss: Option<(&'a [u8], &'a [u8])> = None;
        let mut peer_service = None;
        let mut server_address = None;
        let mut db_system = None;
        let mut msg = MessagingAttrs::default();
        for attr in attrs {
            let (key, value) = attr?;
            let value = match value {
                AttrValue::Str(v) => Some(v),
                _ => None,
            };
            match key {
                b"peer.service" => peer_service = value,
                b"server.address" => server_address = value,
                // `db.system.name` since semantic conventions v1.33.
                b"db.system" | b"db.system.name" => db_system = db_system.or(value),
                key if key.starts_with(b"messaging.") => msg.read(key, value),
                key => match self.keys.classify(key) {
                    KeyClass::Stage(i) if best_stage.is_none_or(|(b, _)| i < b) => {
                        if let Some(v) = value.filter(|v| !v.is_empty()) {
                            best_stage = Some((i, v));
                        }
                    }
                    KeyClass::NearMiss if near_miss.is_none() => {
                        if let Some(v) = value.filter(|v| !v.is_empty()) {
                            near_miss = Some((key, v));
                        }
                    }
                    _ => {}
                },
            }
        }
        rec.stage = match best_stage {
            Some((_, v)) => Some(self.values.intern(v).map_err(bad_value)?),
            None => None,
        };
        rec.stage_from = best_stage.map(|(i, _)| self.decoder.sources[i]);
        let db_system = db_system.filter(|v| !v.is_empty());
        rec.flags = rec.flags.with(SpanFlags::BACKEND, db_system.is_some());
        if rec.stage.is_none()
            && let Some((k, v)) = near_miss
        {
            rec.near_miss_key = Some(self.values.intern(k).map_err(bad_value)?);
            rec.near_miss_value = Some(self.values.intern(v).map_err(bad_value)?);
        }
        // A database is named by its system (`postgresql`, `redis`): its address is often
        // `localhost` or an IP, which says little on a service graph.
        let peer = peer_service
            .filter(|p| !p.is_empty())
            .or(db_system)
            .or(server_address);
        if rec.kind.is_outgoing()
            && let Some(p) = peer.filter(|p| !p.is_empty())
        {
            rec.peer = Some(self.values.intern(p).map_err(bad_value)?);
        }
        let mut value = |v: Option<&'a [u8]>| match v.filter(|v| !v.is_empty()) {
            Some(v) => self.values.intern(v).map(Some).map_err(bad_value),
            None => Ok(None),
        };
        Ok(Messaging {
            system: value(msg.system)?,
            destination: value(msg.destination.or(msg.old_destination))?,
            group: value(msg.group.or(msg.old_group))?,
            op: msg
                .op
                .or(msg.old_op)
                .map_or(MessagingOp::Unknown, MessagingOp::parse),
        })
    }
}

/// The messaging attributes of a span, under their current names (semantic conventions v1.26
/// and later) and the older ones that instrumentations still send.
#[derive(Default)]
struct MessagingAttrs<'a> {
    system: Option<&'a [u8]>,
    destination: Option<&'a [u8]>,
    old_destination: Option<&'a [u8]>,
    group: Option<&'a [u8]>,
    old_group: Option<&'a [u8]>,
    op: Option<&'a [u8]>,
    old_op: Option<&'a [u8]>,
}

impl<'a> MessagingAttrs<'a> {
    fn read(&mut self, key: &[u8], value: Option<&'a [u8]>) {
        let slot = match key {
            b"messaging.system" => &mut self.system,
            b"messaging.destination.name" => &mut self.destination,
            b"messaging.destination" => &mut self.old_destination,
            b"messaging.consumer.group.name" => &mut self.group,
            b"messaging.kafka.consumer.group" => &mut self.old_group,
            b"messaging.operation.type" => &mut self.op,
            b"messaging.operation" => &mut self.old_op,
            _ => return,
        };
        // The first attribute of a key counts, as a lookup by key finds it.
        if slot.is_none() {
            *slot = value;
        }
    }
}

/// A used attribute value that is not UTF-8, as prost words it.
fn bad_value(_: std::str::Utf8Error) -> wire::WireError {
    wire::WireError::from(wire::Problem::Utf8).within("AnyValue", "value")
}

/// A span name that is not UTF-8, as prost words it.
fn bad_name<E>(_: E) -> wire::WireError {
    wire::WireError::from(wire::Problem::Utf8).within("Span", "name")
}

impl Decoded {
    fn reject(&mut self, reason: Reject, span: &SpanFields<'_>, at: (usize, usize, usize)) {
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

fn validate(span: &SpanFields<'_>) -> Result<(TraceId, (SpanId, Option<SpanId>)), Reject> {
    let trace_id = TraceId::from_bytes(span.trace_id).ok_or(Reject::TraceId)?;
    let span_id = SpanId::from_bytes(span.span_id).ok_or(Reject::SpanId)?;
    let parent = match span.parent_span_id.len() {
        0 => None,
        // An all-zero parent is how some exporters write "no parent".
        8 => SpanId::from_bytes(span.parent_span_id),
        _ => return Err(Reject::ParentId),
    };
    if parent == Some(span_id) {
        return Err(Reject::OwnParent);
    }
    Ok((trace_id, (span_id, parent)))
}

#[cfg(test)]
mod tests;
