//! Pre-built OTLP requests with seeded faults.
//!
//! Each trace crosses a small mesh: gateway -> users -> orders (a stable and a canary instance) ->
//! payments, and orders -> inventory; 9 spans, shaped like an HTTP service's SDK spans. A faulty trace
//! carries exactly one bug, which must produce exactly one first-break finding on exactly one hop.
//!
//! A template is encoded once with a unique 16-byte marker as each trace id; every send copies it and
//! writes fresh trace ids over the markers, so the collector sees new traces at the cost of a memcpy.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::client::Wire;
use crate::model::SpanKind;

pub const SPANS_PER_TRACE: usize = 9;

/// A string attribute, as OTLP carries it.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// The bugs the generator injects; each is one real propagation bug on one hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// payments did not extract the baggage.
    MissingCrossService,
    /// users made its call to orders without the request's context.
    MissingInProcess,
    /// users rewrote the stage to `stable` on its call to orders.
    Changed,
    /// users applied the `stable` default although it is not an entry service.
    Appeared,
    /// orders sent the key `x-release-stag` to inventory.
    KeyMismatch,
    /// a canary request was routed to the stable orders instance.
    Misrouted,
    /// users' CLIENT span was never exported: orders' span is an orphan.
    Orphan,
    /// orders called inventory from a detached task: a new trace with a root CLIENT span.
    LostContext,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::MissingCrossService,
        Fault::MissingInProcess,
        Fault::Changed,
        Fault::Appeared,
        Fault::KeyMismatch,
        Fault::Misrouted,
        Fault::Orphan,
        Fault::LostContext,
    ];

    /// The first-break finding it must produce: (kind, edge caller, edge callee).
    pub fn expected(self) -> (&'static str, Option<&'static str>, &'static str) {
        match self {
            Fault::MissingCrossService => ("missing", Some("orders"), "payments"),
            Fault::MissingInProcess => ("missing", Some("users"), "orders"),
            Fault::Changed => ("changed", Some("users"), "orders"),
            Fault::Appeared => ("appeared", Some("gateway"), "users"),
            Fault::KeyMismatch => ("key_mismatch", Some("orders"), "inventory"),
            Fault::Misrouted => ("misrouted", Some("users"), "orders"),
            Fault::Orphan => ("broken_trace", None, "orders"),
            Fault::LostContext => ("broken_trace", Some("orders"), "inventory"),
        }
    }
}

/// One finding the collector must report, for `--faults-out`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpectedFinding {
    pub trace_id: String,
    pub kind: &'static str,
    pub caller: Option<String>,
    pub callee: String,
}

/// The first-break finding a faulty trace must produce, before its trace id is known:
/// (kind, edge caller, edge callee).
pub type Expected = (&'static str, Option<String>, String);

/// Service instances of the mesh: (service, instance stage).
const INSTANCES: [(&str, &str); 6] = [
    ("gateway", "stable"),
    ("users", "stable"),
    ("orders", "stable"),
    ("orders", "canary"),
    ("payments", "stable"),
    ("inventory", "stable"),
];

/// A trace id position in a template.
struct Slot {
    marker: u128,
    offsets: Vec<usize>,
    fault: Option<(Fault, Expected)>,
}

pub struct Template {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    pub spans: usize,
    wire: Wire,
}

impl Template {
    /// A request of about `spans` spans (whole traces) through the five-service shop, with
    /// faults of `kinds` (all if empty) drawn from `rng`.
    pub fn build(
        spans: usize,
        faults: (f64, &[Fault]),
        wire: Wire,
        rng: &mut SmallRng,
    ) -> Template {
        Template::build_on(&Mesh::Shop, &mut 0, spans, faults, wire, rng)
    }

    /// A request of about `spans` spans through `mesh`; `next_trace` numbers the traces across
    /// templates, so that a wide mesh's templates together cross every one of its calls.
    pub fn build_on(
        mesh: &Mesh,
        next_trace: &mut usize,
        spans: usize,
        (fault_rate, kinds): (f64, &[Fault]),
        wire: Wire,
        rng: &mut SmallRng,
    ) -> Template {
        let kinds = if kinds.is_empty() {
            &Fault::ALL[..]
        } else {
            kinds
        };
        let mut by_instance: HashMap<usize, Vec<Span>> = HashMap::new();
        let mut slots = Vec::new();
        let mut total = 0;
        // The shop's traces are whole: as many as `spans` asks for, rounded up.
        let shop_traces = spans.div_ceil(SPANS_PER_TRACE).max(1);
        let mut traces = 0;
        while match mesh {
            Mesh::Shop => traces < shop_traces,
            Mesh::Wide(_) => total < spans.max(1),
        } {
            traces += 1;
            let fault =
                (rng.random::<f64>() < fault_rate).then(|| kinds[rng.random_range(0..kinds.len())]);
            let stage = if fault.is_some() || rng.random::<f64>() < 0.3 {
                "canary"
            } else {
                "stable"
            };
            let main = unique_marker(rng, &slots);
            let (spans, expected) = match mesh {
                Mesh::Shop => {
                    let detached = (fault == Some(Fault::LostContext)).then(|| {
                        let m = unique_marker(rng, &slots);
                        slots.push(Slot {
                            marker: m,
                            offsets: Vec::new(),
                            fault: Some((Fault::LostContext, shop_expected(Fault::LostContext))),
                        });
                        m
                    });
                    let expected = fault
                        .filter(|f| *f != Fault::LostContext)
                        .map(|f| (f, shop_expected(f)));
                    (trace_spans(main, detached, stage, fault, rng), expected)
                }
                Mesh::Wide(w) => w.trace((next_trace, traces == 1), main, stage, fault, rng),
            };
            slots.push(Slot {
                marker: main,
                offsets: Vec::new(),
                fault: expected,
            });
            for (instance, span) in spans {
                by_instance.entry(instance).or_default().push(span);
                total += 1;
            }
        }
        let mut req = ExportTraceServiceRequest::default();
        for (i, (service, stage, group)) in mesh.instances().into_iter().enumerate() {
            let Some(mut spans) = by_instance.remove(&i) else {
                continue;
            };
            // Exporters send spans as they end: children first.
            spans.reverse();
            let mut attributes = vec![
                kv("service.name", &service),
                kv("deployment.stage", stage),
                kv("service.instance.id", &format!("{service}-{stage}-1")),
                kv("telemetry.sdk.language", "rust"),
            ];
            if let Some(g) = group {
                attributes.push(kv("service.namespace", g));
            }
            req.resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
        }
        let bytes = match wire {
            Wire::HttpJson => serde_json::to_vec(&req).expect("requests serialise"),
            _ => req.encode_to_vec(),
        };
        let mut t = Template {
            bytes,
            slots,
            spans: total,
            wire,
        };
        t.locate_markers();
        t
    }

    fn locate_markers(&mut self) {
        for slot in &mut self.slots {
            let needle = match self.wire {
                Wire::HttpJson => format!("{:032x}", slot.marker).into_bytes(),
                _ => slot.marker.to_be_bytes().to_vec(),
            };
            slot.offsets = memchr::memmem::find_iter(&self.bytes, &needle).collect();
            assert!(
                !slot.offsets.is_empty(),
                "every trace id marker is in the encoded request"
            );
        }
    }

    /// The request with fresh trace ids for send number `n`, and the findings it must produce.
    pub fn instance(
        &self,
        nonce: u64,
        n: u64,
        expected: Option<&mut Vec<ExpectedFinding>>,
    ) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        let mut ids = SmallRng::seed_from_u64(nonce ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut out = expected;
        for slot in &self.slots {
            let id: u128 = ids.random::<u128>().max(1);
            match self.wire {
                Wire::HttpJson => {
                    let hex = format!("{id:032x}");
                    for &o in &slot.offsets {
                        bytes[o..o + 32].copy_from_slice(hex.as_bytes());
                    }
                }
                _ => {
                    for &o in &slot.offsets {
                        bytes[o..o + 16].copy_from_slice(&id.to_be_bytes());
                    }
                }
            }
            if let (Some((_, (kind, caller, callee))), Some(out)) =
                (&slot.fault, out.as_deref_mut())
            {
                out.push(ExpectedFinding {
                    trace_id: format!("{id:032x}"),
                    kind,
                    caller: caller.clone(),
                    callee: callee.clone(),
                });
            }
        }
        bytes
    }

    pub fn faults(&self) -> impl Iterator<Item = Fault> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.fault.as_ref().map(|f| f.0))
    }
}

/// The calls the traffic crosses.
pub enum Mesh {
    /// gateway -> users -> orders -> payments, inventory: every kind of fault.
    Shop,
    /// Hundreds of services in namespaces (`--services`).
    Wide(super::wide::WideMesh),
}

impl Mesh {
    /// Every instance that exports spans: (service, instance stage, namespace).
    fn instances(&self) -> Vec<(String, &'static str, Option<&str>)> {
        match self {
            Mesh::Shop => INSTANCES
                .iter()
                .map(|&(s, st)| (s.to_string(), st, None))
                .collect(),
            Mesh::Wide(w) => w.instances(),
        }
    }
}

fn shop_expected(f: Fault) -> Expected {
    let (kind, caller, callee) = f.expected();
    (kind, caller.map(str::to_string), callee.to_string())
}

/// A span as an HTTP service's SDK exports it: `name` is "METHOD /path", `peer` the callee a
/// CLIENT span names (`server.address`), `stage` the (key, value) it carries.
pub(super) struct HttpSpan<'a> {
    pub trace: u128,
    pub id: u64,
    pub parent: Option<u64>,
    pub name: &'a str,
    pub kind: SpanKind,
    pub peer: &'a str,
    pub stage: Option<(&'a str, &'a str)>,
    pub start_ns: u64,
    pub duration_ns: u64,
}

impl HttpSpan<'_> {
    pub fn span(&self) -> Span {
        let mut attributes: Vec<KeyValue> = vec![
            kv(
                "http.request.method",
                self.name.split(' ').next().unwrap_or("GET"),
            ),
            kv("url.path", self.name.split(' ').nth(1).unwrap_or("/")),
            kv("network.protocol.version", "1.1"),
        ];
        if !self.peer.is_empty() {
            attributes.push(kv("server.address", self.peer));
        }
        if let Some((key, value)) = self.stage {
            attributes.push(kv(key, value));
        }
        Span {
            trace_id: self.trace.to_be_bytes().to_vec(),
            span_id: self.id.to_be_bytes().to_vec(),
            parent_span_id: self
                .parent
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            name: self.name.to_string(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: self.start_ns + self.duration_ns,
            attributes,
            status: Some(Status::default()),
            flags: 0x100,
            ..Default::default()
        }
    }
}

/// A start time within the last second, as a live service's spans have when they arrive: a span
/// that reaches grayscope long after it ended is judged differently (see `--orphan-wait`).
pub(super) fn recent_ns(rng: &mut SmallRng) -> u64 {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now_ns.saturating_sub(1_000_000_000) + rng.random_range(0..999_000_000u64)
}

fn unique_marker(rng: &mut SmallRng, slots: &[Slot]) -> u128 {
    loop {
        let m: u128 = rng.random();
        if m != 0 && slots.iter().all(|s| s.marker != m) {
            return m;
        }
    }
}

/// The spans of one trace, each with the index of the instance that exports it.
fn trace_spans(
    main: u128,
    detached: Option<u128>,
    stage: &str,
    fault: Option<Fault>,
    rng: &mut SmallRng,
) -> Vec<(usize, Span)> {
    let base = recent_ns(rng);
    let id = |n: u64| rng_free_id(main, n);
    // Which orders instance serves the request: the one of its stage, unless routing is the bug.
    let orders = match fault {
        Some(Fault::Misrouted) | Some(Fault::Appeared) => 2,
        _ if stage == "stable" => 2,
        _ => 3,
    };
    // The stage each span (numbered as in `plan`) carries, given the trace's one bug.
    let stage_of = |n: u64| -> Option<&str> {
        match fault {
            Some(Fault::MissingCrossService) if n == 7 => None,
            Some(Fault::MissingInProcess) if n >= 4 => None,
            Some(Fault::Changed) if n >= 5 => Some("stable"),
            Some(Fault::Appeared) if n <= 2 => None,
            Some(Fault::Appeared) => Some("stable"),
            Some(Fault::LostContext) if n >= 8 => None,
            _ => Some(stage),
        }
    };
    let step = |instance, n, parent, name, kind, peer| Step {
        instance,
        n,
        parent,
        name,
        kind,
        peer,
    };
    let plan = [
        step(0, 1, None, "GET /checkout", SpanKind::Server, ""),
        step(0, 2, Some(1), "GET /users/me", SpanKind::Client, "users"),
        step(1, 3, Some(2), "GET /users/me", SpanKind::Server, ""),
        step(1, 4, Some(3), "POST /orders", SpanKind::Client, "orders"),
        step(orders, 5, Some(4), "POST /orders", SpanKind::Server, ""),
        step(
            orders,
            6,
            Some(5),
            "POST /pay",
            SpanKind::Client,
            "payments",
        ),
        step(4, 7, Some(6), "POST /pay", SpanKind::Server, ""),
        step(
            orders,
            8,
            Some(5),
            "GET /stock",
            SpanKind::Client,
            "inventory",
        ),
        step(5, 9, Some(8), "GET /stock", SpanKind::Server, ""),
    ];
    let mut out = Vec::with_capacity(9);
    for Step {
        instance,
        n,
        parent,
        name,
        kind,
        peer,
    } in plan
    {
        if fault == Some(Fault::Orphan) && n == 4 {
            continue;
        }
        let lost = fault == Some(Fault::LostContext) && n >= 8;
        let trace = if lost {
            detached.expect("lost-context traces have a second id")
        } else {
            main
        };
        let parent = if lost && n == 8 { None } else { parent };
        let stage = stage_of(n).map(|s| {
            let key = if fault == Some(Fault::KeyMismatch) && n == 9 {
                "x-release-stag"
            } else {
                "x-release-stage"
            };
            (key, s)
        });
        out.push((
            instance,
            HttpSpan {
                trace,
                id: id(n),
                parent: parent.map(id),
                name,
                kind,
                peer,
                stage,
                start_ns: base + n * 1_000,
                duration_ns: 500_000 - n * 10_000,
            }
            .span(),
        ));
    }
    out
}

/// One span of the mesh's trace shape.
struct Step {
    /// Index into [`INSTANCES`].
    instance: usize,
    /// Span number, 1-9.
    n: u64,
    parent: Option<u64>,
    name: &'static str,
    kind: SpanKind,
    /// The callee a CLIENT span names (`server.address`).
    peer: &'static str,
}

/// Span ids that differ per trace and per position, without another draw from the fault RNG.
pub(super) fn rng_free_id(trace_marker: u128, n: u64) -> u64 {
    let x = (trace_marker as u64)
        ^ ((trace_marker >> 64) as u64)
        ^ n.wrapping_mul(0xA24B_AED4_963E_E407);
    x.rotate_left(17) | 1
}
