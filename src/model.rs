//! grayscope's own span model. OTLP types stop at `receive/`; everything downstream speaks these.
//!
//! A [`SpanRecord`] is deliberately small (64 bytes): strings are interned [`Sym`]s, ids are integers,
//! and nothing is heap-allocated per span. Memory per buffered span is a product promise
//! (`--max-buffered-spans` is the knob operators size against), so every field here has to earn its bytes.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

use serde::{Deserialize, Serialize};

/// A 16-byte W3C trace id. Never all zeroes (rejected at decode).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub u128);

impl TraceId {
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = b.try_into().ok()?;
        let v = u128::from_be_bytes(arr);
        (v != 0).then_some(TraceId(v))
    }

    /// Parses the lower- or upper-case hex form used by OTLP/JSON and the API.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16)
            .ok()
            .filter(|v| *v != 0)
            .map(TraceId)
    }

    /// Whether this trace falls in a sample of `ratio` of all traces: the same answer for the same
    /// id, everywhere, so that every instance samples the same traces.
    pub fn sampled(self, ratio: f64) -> bool {
        let x = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        let h = x.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 11;
        (h as f64) < ratio * (1u64 << 53) as f64
    }

    /// Which worker owns this trace. All 128 bits are mixed: W3C ids are random, but not every
    /// generator is (some put a timestamp first, some fix bits), and a skew would idle workers.
    pub fn shard(self, shards: usize) -> usize {
        let x = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        ((x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An 8-byte span id. Non-zero, so `Option<SpanId>` costs no extra bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub NonZeroU64);

impl SpanId {
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let arr: [u8; 8] = b.try_into().ok()?;
        NonZeroU64::new(u64::from_be_bytes(arr)).map(SpanId)
    }

    pub fn new(v: u64) -> Option<Self> {
        NonZeroU64::new(v).map(SpanId)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for SpanId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An interned string (see [`crate::intern`]). Non-zero so `Option<Sym>` stays 4 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Sym(pub NonZeroU32);

/// OTLP span kind, as the integer enum of the spec; shown as the spec names it (`SERVER`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn from_otlp(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// CLIENT and PRODUCER spans start an outgoing call: the context must travel with them.
    pub fn is_outgoing(self) -> bool {
        matches!(self, SpanKind::Client | SpanKind::Producer)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "UNSPECIFIED",
            SpanKind::Internal => "INTERNAL",
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
            SpanKind::Producer => "PRODUCER",
            SpanKind::Consumer => "CONSUMER",
        }
    }
}

/// OTLP status code; shown as the spec names it (`ERROR`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn from_otlp(v: i32) -> Self {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

/// The resource attribute `grayscope probe` sets on its own spans (`true`): probe traffic, which
/// users can tell from real requests anywhere their traces go.
pub const PROBE_ATTRIBUTE: &str = "grayscope.probe";

/// One span, as grayscope keeps it while its trace is assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanRecord {
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub service: Sym,
    pub name: Sym,
    /// The request's release stage, from the first configured attribute key found.
    pub stage: Option<Sym>,
    /// Which deployment served the span, from the resource.
    pub instance_stage: Option<Sym>,
    /// A near-miss key (e.g. `x-release-stag`) found when no configured key was; its value is in
    /// `near_miss_value`.
    pub near_miss_key: Option<Sym>,
    pub near_miss_value: Option<Sym>,
    /// `peer.service` or `server.address` of an outgoing call: names an uninstrumented callee.
    pub peer: Option<Sym>,
    pub kind: SpanKind,
    pub status: StatusCode,
    /// Which attribute `stage` came from; `None` when it has none.
    pub stage_from: Option<StageSource>,
    pub flags: SpanFlags,
}

impl SpanRecord {
    /// Sent by `grayscope probe` ([`PROBE_ATTRIBUTE`]): its root CLIENT span is expected, and
    /// its trace is always kept so that the probe can read its verdicts once finalised.
    pub fn probe(&self) -> bool {
        self.flags.contains(SpanFlags::PROBE)
    }

    /// Exported by a client application, by its resource ([`is_client_app_attribute`]): a
    /// browser, a mobile app. Its root CLIENT spans start traces; they lost nothing.
    pub fn client_app(&self) -> bool {
        self.flags.contains(SpanFlags::CLIENT_APP)
    }

    /// A call to a database or cache (`db.system`): a back end that exports no spans and does
    /// not route on the stage, so the stage need not reach it.
    pub fn backend(&self) -> bool {
        self.flags.contains(SpanFlags::BACKEND)
    }

    /// A span that records a request this service received (SERVER, CONSUMER): the spans that
    /// a captured request header can be on.
    pub fn is_inbound(&self) -> bool {
        matches!(self.kind, SpanKind::Server | SpanKind::Consumer)
    }
}

/// What a span is besides its kind, one bit each so that [`SpanRecord`] stays 64 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpanFlags(u8);

impl SpanFlags {
    pub const PROBE: SpanFlags = SpanFlags(1);
    pub const CLIENT_APP: SpanFlags = SpanFlags(2);
    pub const BACKEND: SpanFlags = SpanFlags(4);

    pub fn contains(self, f: SpanFlags) -> bool {
        self.0 & f.0 == f.0
    }

    /// These flags with `f` set when `on`.
    #[must_use]
    pub fn with(self, f: SpanFlags, on: bool) -> SpanFlags {
        if on { SpanFlags(self.0 | f.0) } else { self }
    }
}

/// Where a span's request stage came from. A captured request header exists only on the spans
/// whose request carried it (SERVER spans, and CLIENT spans where client-side capture is on);
/// an attribute copied from baggage by a span processor is on every span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum StageSource {
    /// An attribute of the span's own: copied from baggage by a span processor, or set by the
    /// service.
    Attribute,
    /// A captured HTTP request header (`http.request.header.*`).
    HttpHeader,
    /// Captured gRPC request metadata (`rpc.grpc.request.metadata.*`, `rpc.request.metadata.*`).
    GrpcMetadata,
    /// None of the span's own: the stage its service received with the request (from the SERVER
    /// span above it), filled in at finalisation for a service whose spans cannot carry the stage
    /// ([`StageMode::Captured`]).
    Inbound,
}

impl StageSource {
    /// Every source, in the order of their codes (`StageSource as usize`).
    pub const ALL: [StageSource; 4] = [
        StageSource::Attribute,
        StageSource::HttpHeader,
        StageSource::GrpcMetadata,
        StageSource::Inbound,
    ];

    /// What a stage key's name says about where its value comes from, by the semantic
    /// conventions' names for captured headers and metadata.
    pub fn of_key(key: &str) -> StageSource {
        if key.starts_with("http.request.header.") {
            StageSource::HttpHeader
        } else if key.starts_with("rpc.") && key.contains(".request.metadata.") {
            StageSource::GrpcMetadata
        } else {
            StageSource::Attribute
        }
    }

    /// Captured from the request: only on spans whose request carried it.
    pub fn is_captured(self) -> bool {
        matches!(self, StageSource::HttpHeader | StageSource::GrpcMetadata)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageSource::Attribute => "attribute",
            StageSource::HttpHeader => "http_header",
            StageSource::GrpcMetadata => "grpc_metadata",
            StageSource::Inbound => "inbound",
        }
    }

    pub fn parse(s: &str) -> Option<StageSource> {
        StageSource::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Which spans of a service can carry the request's stage, and so which of its edges can be
/// judged.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StageMode {
    /// Every span carries it (a span processor copies it from baggage): every edge is judged,
    /// and a stage lost inside the service is found where it was lost.
    #[default]
    EverySpan,
    /// Only the spans whose request carried it, as a captured header or metadata: SERVER spans
    /// (and CLIENT spans where client-side capture is on). Edges to spans that cannot carry it
    /// are not applicable; the hop to another service is judged from the stage the service
    /// received.
    Captured,
}

impl StageMode {
    pub fn parse(s: &str) -> Option<StageMode> {
        match s {
            "every-span" | "every_span" => Some(StageMode::EverySpan),
            "captured" => Some(StageMode::Captured),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageMode::EverySpan => "every_span",
            StageMode::Captured => "captured",
        }
    }
}

/// Whether a resource attribute says its spans come from a client application rather than a
/// service: what the OpenTelemetry SDKs for browsers (`telemetry.sdk.language` `webjs`, the
/// browser detector's `browser.*`), iOS (`swift`, `device.*`, `os.name` `iOS`) and Android
/// (`device.*`, `android.os.api_level`, `os.name` `Android`) put on their resource. Server SDKs
/// send none of these (`os.type` they do send, so it is no evidence).
pub fn is_client_app_attribute(key: &[u8], value: Option<&[u8]>) -> bool {
    match key {
        b"telemetry.sdk.language" => matches!(value, Some(b"webjs" | b"swift")),
        b"os.name" => matches!(
            value,
            Some(b"Android" | b"iOS" | b"iPadOS" | b"watchOS" | b"tvOS" | b"visionOS")
        ),
        _ => {
            key.starts_with(b"browser.")
                || key.starts_with(b"device.")
                || key.starts_with(b"android.")
        }
    }
}

/// The kind of messaging operation a span records (`messaging.operation.type`, or the older
/// `messaging.operation`), as the OpenTelemetry messaging conventions name them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum MessagingOp {
    #[default]
    Unknown,
    Create,
    /// `send`, and `publish` before semantic conventions v1.26.
    Send,
    Receive,
    /// `process`, and `deliver` before semantic conventions v1.26.
    Process,
    Settle,
}

impl MessagingOp {
    pub fn parse(v: &[u8]) -> Self {
        match v {
            b"create" => MessagingOp::Create,
            b"send" | b"publish" => MessagingOp::Send,
            b"receive" => MessagingOp::Receive,
            b"process" | b"deliver" => MessagingOp::Process,
            b"settle" => MessagingOp::Settle,
            _ => MessagingOp::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessagingOp::Unknown => "unknown",
            MessagingOp::Create => "create",
            MessagingOp::Send => "send",
            MessagingOp::Receive => "receive",
            MessagingOp::Process => "process",
            MessagingOp::Settle => "settle",
        }
    }
}

/// Where a message went, from the messaging attributes of the span that sent or handled it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Messaging {
    /// `messaging.system` (`kafka`, `rabbitmq`, ...).
    pub system: Option<Sym>,
    /// `messaging.destination.name` (the queue, topic or exchange).
    pub destination: Option<Sym>,
    /// `messaging.consumer.group.name` (a consumer's group or subscription).
    pub group: Option<Sym>,
    pub op: MessagingOp,
}

impl Messaging {
    pub fn is_empty(&self) -> bool {
        *self == Messaging::default()
    }

    /// (system, destination), when the destination is known: what names a messaging hop.
    pub fn place(&self) -> Option<(Option<Sym>, Sym)> {
        self.destination.map(|d| (self.system, d))
    }
}

/// A span link: the context of another span, for a consumer the creation context of a message.
/// A link carries no baggage, so the stage never travels along one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// False only when the link's W3C trace flags are known and say the linked span was not
    /// sampled: then it will never arrive, and nobody should wait for it.
    pub sampled: bool,
}

impl Link {
    /// From OTLP `Span.Link.flags`: bits 0-7 are the W3C trace flags, bit 8 says that the sender
    /// filled them in. An SDK that predates the field sends 0, which says nothing about sampling.
    pub fn sampled_from_flags(flags: u32) -> bool {
        flags == 0 || flags & 1 == 1
    }
}

/// Links kept per span; the rest are counted (a batch consumer links once per message, and a
/// span is untrusted input).
pub const MAX_LINKS: usize = 128;

/// What the few spans that send or handle messages carry beyond their [`SpanRecord`]; kept apart
/// so that every other span stays 64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanExtra {
    pub messaging: Messaging,
    /// At most [`MAX_LINKS`].
    pub links: Vec<Link>,
    /// Links past [`MAX_LINKS`], not kept.
    pub links_dropped: u32,
}

/// When a message of one stage may be processed by a consumer instance of another, per
/// destination (`--destination-policies`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationPolicy {
    /// Only by a consumer of the message's stage: messages wait for their consumer.
    Exclusive,
    /// By another stage's consumer only while the consuming service runs no consumer of the
    /// message's stage (the gray consumer group is down or not deployed yet).
    #[default]
    Fallback,
    /// Every consumer group gets every message: any stage may process any message.
    Broadcast,
}

impl DestinationPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exclusive" => Some(DestinationPolicy::Exclusive),
            "fallback" => Some(DestinationPolicy::Fallback),
            "broadcast" => Some(DestinationPolicy::Broadcast),
            _ => None,
        }
    }
}

impl SpanExtra {
    /// What it costs to hold, in buffered spans (a span costs about 112 bytes): a span with many
    /// links must count against `--max-buffered-spans` and the queues for what it holds, or spans
    /// of 128 links each could hold forty times the memory those bounds promise.
    pub fn weight(&self) -> usize {
        (std::mem::size_of::<SpanExtra>() + self.links.len() * std::mem::size_of::<Link>())
            .div_ceil(112)
    }
}

/// Spans headed for one worker, from one request.
#[derive(Debug, Default)]
pub struct SpanBatch {
    pub spans: Vec<(TraceId, SpanRecord)>,
    /// The messaging attributes and links of those of `spans` that have any, by span.
    pub extras: Vec<(TraceId, SpanId, SpanExtra)>,
}

impl SpanBatch {
    /// Room the batch takes in a queue, in spans: its spans, and what their extras weigh.
    pub fn weight(&self) -> usize {
        self.spans.len()
            + self
                .extras
                .iter()
                .map(|(_, _, e)| e.weight())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_compact() {
        assert_eq!(std::mem::size_of::<SpanRecord>(), 64);
        assert_eq!(std::mem::size_of::<Option<SpanId>>(), 8);
        assert_eq!(std::mem::size_of::<Option<Sym>>(), 4);
    }

    #[test]
    fn shards_spread_structured_ids() {
        let mut counts = [0usize; 4];
        for i in 0..4000u128 {
            // Odd ids with a constant high half: the shape that once sent all traffic to one worker.
            counts[TraceId((7u128 << 64) | (i * 2 + 1)).shard(4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn ids_round_trip_and_reject_zero_or_wrong_length() {
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceId::from_bytes(&t.0.to_be_bytes()), Some(t));
        assert_eq!(TraceId::from_bytes(&[0; 16]), None);
        assert_eq!(TraceId::from_bytes(&[1; 15]), None);
        assert_eq!(TraceId::from_hex("00000000000000000000000000000000"), None);
        assert_eq!(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e473"), None);
        assert_eq!(SpanId::from_bytes(&[0; 8]), None);
        assert_eq!(SpanId::from_bytes(&[1; 9]), None);
        assert_eq!(
            SpanId::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 7])
                .unwrap()
                .to_string(),
            "0000000000000007"
        );
    }
}
