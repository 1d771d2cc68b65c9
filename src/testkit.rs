//! Builders shared by unit tests, integration tests and benchmarks: span records, and OTLP requests
//! as an OpenTelemetry SDK would send them.

use std::num::NonZeroU64;
use std::sync::Arc;

use crate::intern::{SymbolLimits, Symbols};
use crate::model::{SpanId, SpanKind, SpanRecord, StatusCode, Sym};

/// Span records over a private symbol table.
pub struct Kit {
    pub sym: Arc<Symbols>,
}

impl Default for Kit {
    fn default() -> Self {
        Kit {
            sym: Arc::new(Symbols::new(&SymbolLimits::default())),
        }
    }
}

impl Kit {
    pub fn new() -> Self {
        Self::default()
    }

    /// A span named `{service}-{id}` that starts at `id` ns.
    pub fn span(&self, id: u64, parent: Option<u64>, service: &str, kind: SpanKind) -> SpanRecord {
        SpanRecord {
            span_id: SpanId(NonZeroU64::new(id).expect("span ids start at 1")),
            parent: parent.map(|p| SpanId(NonZeroU64::new(p).expect("span ids start at 1"))),
            start_ns: id,
            end_ns: id + 10,
            service: self.sym.services.intern(service),
            name: self.sym.names.intern(&format!("{service}-{id}")),
            stage: None,
            instance_stage: None,
            near_miss_key: None,
            near_miss_value: None,
            peer: None,
            kind,
            status: StatusCode::Unset,
            stage_from: None,
            flags: crate::model::SpanFlags::default(),
        }
    }

    pub fn stage(&self, mut s: SpanRecord, stage: &str) -> SpanRecord {
        s.stage = Some(self.v(stage));
        s.stage_from = Some(crate::model::StageSource::Attribute);
        s
    }

    pub fn instance(&self, mut s: SpanRecord, stage: &str) -> SpanRecord {
        s.instance_stage = Some(self.v(stage));
        s
    }

    /// A symbol from the values table (stages, keys, peers).
    pub fn v(&self, s: &str) -> Sym {
        self.sym.values.intern(s)
    }

    pub fn svc(&self, s: &str) -> Sym {
        self.sym.services.intern(s)
    }
}

pub use otlp::RequestBuilder;

/// OTLP requests built by hand, shaped like the SDK's.
pub mod otlp {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use crate::model::SpanKind;

    pub use crate::loadgen::kv;

    #[derive(Default)]
    pub struct RequestBuilder {
        req: ExportTraceServiceRequest,
    }

    impl RequestBuilder {
        pub fn new() -> Self {
            Self::default()
        }

        /// Starts a resource (a service instance); following spans belong to it.
        pub fn resource(mut self, service: &str, instance_stage: Option<&str>) -> Self {
            let mut attributes = vec![kv("service.name", service)];
            if let Some(s) = instance_stage {
                attributes.push(kv("deployment.stage", s));
            }
            self.req.resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans::default()],
                schema_url: String::new(),
            });
            self
        }

        /// Marks the current resource as `grayscope probe`'s (`grayscope.probe = true`).
        pub fn probe(mut self) -> Self {
            let rs = self
                .req
                .resource_spans
                .last_mut()
                .expect("a resource to mark");
            rs.resource
                .get_or_insert_with(Resource::default)
                .attributes
                .push(KeyValue {
                    key: crate::model::PROBE_ATTRIBUTE.into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    }),
                    ..Default::default()
                });
            self
        }

        /// Adds a span to the current resource; `attrs` are string attributes.
        pub fn span(
            self,
            trace: u128,
            id: u64,
            parent: Option<u64>,
            name: &str,
            kind: SpanKind,
            attrs: &[(&str, &str)],
        ) -> Self {
            let span = Span {
                trace_id: trace.to_be_bytes().to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
                name: name.to_string(),
                kind: kind as i32,
                start_time_unix_nano: 1_700_000_000_000_000_000 + id * 1000,
                end_time_unix_nano: 1_700_000_000_000_000_000 + id * 1000 + 500,
                attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            };
            self.push(span)
        }

        /// Adds a span as given (for malformed ids and unusual attributes).
        pub fn push(self, span: Span) -> Self {
            let mut this = self;
            if this.req.resource_spans.is_empty() {
                this = this.resource("unknown_service", None);
            }
            let rs = this
                .req
                .resource_spans
                .last_mut()
                .expect("a resource exists");
            rs.scope_spans[0].spans.push(span);
            this
        }

        pub fn build(self) -> ExportTraceServiceRequest {
            self.req
        }
    }
}
