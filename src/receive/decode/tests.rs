use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::*;
use crate::intern::SymbolLimits;
use crate::model::StageMode;
use crate::testkit::RequestBuilder;

fn decoder() -> Decoder {
    Decoder::new(
        Arc::new(Symbols::new(&SymbolLimits::default())),
        Arc::new(Instances::new([], 60_000)),
        Clock::new(),
        &[
            "x-release-stage".into(),
            "http.request.header.x-release-stage".into(),
        ],
        "deployment.stage",
    )
}

fn only(d: &Decoded) -> Vec<(TraceId, SpanRecord)> {
    d.batches
        .iter()
        .flat_map(|b| b.spans.iter().copied())
        .collect()
}

fn extras(d: &Decoded) -> Vec<(TraceId, SpanId, SpanExtra)> {
    d.batches
        .iter()
        .flat_map(|b| b.extras.iter().cloned())
        .collect()
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    crate::testkit::otlp::kv(key, value)
}

#[test]
fn messaging_attributes_and_links_are_decoded_both_ways() {
    use opentelemetry_proto::tonic::trace::v1::span::Link as OtlpLink;
    use prost::Message;
    let dec = decoder();
    let link = |trace: u128, id: u64, flags: u32| OtlpLink {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        flags,
        ..Default::default()
    };
    // A batch consumer, current attribute names, one link per message: sampled, unsampled (flags
    // known), unknown (flags 0), and one with a bad id (left out).
    let mut batch = span(9, 1, None, "orders.placed process");
    batch.kind = 5;
    batch.attributes = vec![
        str_kv("messaging.system", "kafka"),
        str_kv("messaging.destination.name", "orders.placed"),
        str_kv("messaging.consumer.group.name", "billing_gray"),
        str_kv("messaging.operation.type", "process"),
        str_kv("x-release-stage", "canary"),
    ];
    batch.links = vec![
        link(1, 2, 0x301),
        link(2, 2, 0x100),
        link(3, 2, 0),
        link(0, 2, 1),
    ];
    // A producer with the names of semantic conventions before v1.26.
    let mut old = span(10, 2, None, "publish");
    old.kind = 4;
    old.attributes = vec![
        str_kv("messaging.system", "rabbitmq"),
        str_kv("messaging.destination", "orders"),
        str_kv("messaging.operation", "publish"),
        str_kv("messaging.kafka.consumer.group", "g"),
    ];
    // Too many links: the rest are counted.
    let mut many = span(11, 3, None, "poll");
    many.kind = 3;
    many.links = (1..=MAX_LINKS as u64 + 5).map(|i| link(5, i, 1)).collect();
    let plain = span(12, 4, None, "GET /");
    let req = RequestBuilder::new()
        .resource("billing", Some("canary"))
        .push(batch)
        .push(old)
        .push(many)
        .push(plain)
        .build();
    let d = both_ways(&dec, &req.encode_to_vec()).unwrap();
    let x = extras(&d);
    assert_eq!(x.len(), 3, "a span with neither has no extra: {x:?}");
    let v = |s: &str| dec.symbols.values.intern(s);
    let find = |id: u64| &x.iter().find(|(_, s, _)| s.get() == id).unwrap().2;
    let b = find(1);
    assert_eq!(
        b.messaging,
        Messaging {
            system: Some(v("kafka")),
            destination: Some(v("orders.placed")),
            group: Some(v("billing_gray")),
            op: MessagingOp::Process,
        }
    );
    assert_eq!(
        b.links
            .iter()
            .map(|l| (l.trace_id.0, l.sampled))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, false), (3, true)]
    );
    let o = find(2);
    assert_eq!(o.messaging.destination, Some(v("orders")));
    assert_eq!(o.messaging.group, Some(v("g")));
    assert_eq!(o.messaging.op, MessagingOp::Send);
    let m = find(3);
    assert_eq!((m.links.len(), m.links_dropped), (MAX_LINKS, 5));
}

#[test]
fn records_carry_stage_instance_kind_and_peer() {
    let dec = decoder();
    let req = RequestBuilder::new()
        .resource("orders", Some("canary"))
        .span(
            7,
            1,
            None,
            "GET /orders",
            SpanKind::Server,
            &[("x-release-stage", "canary")],
        )
        .span(
            7,
            2,
            Some(1),
            "POST /pay",
            SpanKind::Client,
            &[
                ("http.request.header.x-release-stage", "stable"),
                ("x-release-stage", "canary"),
                ("server.address", "payments.local"),
            ],
        )
        .span(
            7,
            3,
            Some(1),
            "load",
            SpanKind::Internal,
            &[("X_Release_Stage", "canary"), ("server.address", "ignored")],
        )
        .build();
    let d = dec.decode(&req, 2);
    assert_eq!((d.accepted, d.rejected), (3, 0));
    let w = TraceId(7).shard(2);
    assert_eq!(
        d.batches[w].spans.len(),
        3,
        "a trace's spans go to its worker"
    );
    assert!(d.batches[1 - w].spans.is_empty());
    let spans = only(&d);
    let sym = &dec.symbols;
    let (t, server) = spans[0];
    assert_eq!(t, TraceId(7));
    assert_eq!(&*sym.services.resolve(server.service), "orders");
    assert_eq!(&*sym.names.resolve(server.name), "GET /orders");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(
        server.stage.map(|s| sym.values.resolve(s)).as_deref(),
        Some("canary")
    );
    assert_eq!(
        server
            .instance_stage
            .map(|s| sym.values.resolve(s))
            .as_deref(),
        Some("canary")
    );
    assert_eq!(server.parent, None);

    let client = spans[1].1;
    assert_eq!(
        client.stage.map(|s| sym.values.resolve(s)).as_deref(),
        Some("canary"),
        "first configured key wins"
    );
    assert_eq!(
        client.peer.map(|s| sym.values.resolve(s)).as_deref(),
        Some("payments.local")
    );

    let internal = spans[2].1;
    assert_eq!(internal.stage, None);
    assert_eq!(
        internal
            .near_miss_key
            .map(|s| sym.values.resolve(s))
            .as_deref(),
        Some("X_Release_Stage")
    );
    assert_eq!(
        internal
            .near_miss_value
            .map(|s| sym.values.resolve(s))
            .as_deref(),
        Some("canary")
    );
    assert_eq!(internal.peer, None, "only outgoing spans name a peer");

    let svc = sym.services.intern("orders");
    assert!(
        dec.instances
            .is_live(svc, sym.values.intern("canary"), dec.clock.now_ms())
    );
}

#[test]
fn array_values_take_their_first_element() {
    let dec = decoder();
    let header = KeyValue {
        key: "http.request.header.x-release-stage".into(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("canary".into())),
                    },
                    AnyValue {
                        value: Some(Value::StringValue("stable".into())),
                    },
                ],
            })),
        }),
        ..Default::default()
    };
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        attributes: vec![header],
        ..Default::default()
    };
    let d = dec.decode(&RequestBuilder::new().push(span).build(), 1);
    let rec = only(&d)[0].1;
    assert_eq!(
        rec.stage.map(|s| dec.symbols.values.resolve(s)).as_deref(),
        Some("canary")
    );
    assert_eq!(
        &*dec.symbols.services.resolve(rec.service),
        "unknown_service"
    );
}

/// Captured gRPC metadata, under the older and the newer semantic conventions, is read with the
/// default keys; a misspelt metadata key is a near miss.
#[test]
fn captured_grpc_metadata_carries_the_stage_by_default() {
    let keys = crate::config::VerifyArgs::default()
        .resolve()
        .unwrap()
        .stage_keys;
    let dec = Decoder::new(
        Arc::new(Symbols::new(&SymbolLimits::default())),
        Arc::new(Instances::new([], 60_000)),
        Clock::new(),
        &keys,
        "deployment.stage",
    );
    let array = |key: &str, first: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: [first, "ignored"]
                    .iter()
                    .map(|v| AnyValue {
                        value: Some(Value::StringValue(v.to_string())),
                    })
                    .collect(),
            })),
        }),
        ..Default::default()
    };
    let span = |id: u8, attr: KeyValue| Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        attributes: vec![attr],
        ..Default::default()
    };
    let req = RequestBuilder::new()
        .push(span(
            1,
            array("rpc.grpc.request.metadata.x-release-stage", "canary"),
        ))
        .push(span(
            2,
            array("rpc.request.metadata.x-release-stage", "beta"),
        ))
        .push(span(
            3,
            array("rpc.grpc.request.metadata.x_release_stag", "canary"),
        ))
        .build();
    let d = dec.decode(&req, 1);
    let spans = only(&d);
    let sym = &dec.symbols;
    let value = |v: Option<crate::model::Sym>| v.map(|s| sym.values.resolve(s).to_string());
    assert_eq!(value(spans[0].1.stage).as_deref(), Some("canary"));
    assert_eq!(value(spans[1].1.stage).as_deref(), Some("beta"));
    assert_eq!(spans[2].1.stage, None);
    assert_eq!(
        value(spans[2].1.near_miss_key).as_deref(),
        Some("rpc.grpc.request.metadata.x_release_stag")
    );
    assert_eq!(value(spans[2].1.near_miss_value).as_deref(), Some("canary"));
}

/// `grayscope.probe` on the resource (a bool, or "true" as `OTEL_RESOURCE_ATTRIBUTES` sets it)
/// marks every span of that resource, and nothing else.
#[test]
fn the_probe_attribute_marks_its_resources_spans() {
    let dec = decoder();
    let mut req = RequestBuilder::new()
        .resource("grayscope-probe", None)
        .span(1, 1, None, "GET /", SpanKind::Client, &[])
        .resource("gateway", None)
        .span(1, 2, Some(1), "GET /", SpanKind::Server, &[])
        .resource("grayscope-probe", None)
        .span(2, 3, None, "GET /", SpanKind::Client, &[])
        .build();
    fn attrs(req: &mut ExportTraceServiceRequest, i: usize) -> &mut Vec<KeyValue> {
        &mut req.resource_spans[i].resource.as_mut().unwrap().attributes
    }
    attrs(&mut req, 0).push(KeyValue {
        key: "grayscope.probe".into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(true)),
        }),
        ..Default::default()
    });
    attrs(&mut req, 2).push(crate::loadgen::kv("grayscope.probe", "true"));
    let d = dec.decode(&req, 1);
    let probe: Vec<bool> = only(&d).iter().map(|(_, s)| s.probe()).collect();
    assert_eq!(probe, [true, false, true]);
}

#[test]
fn invalid_spans_are_rejected_one_by_one_with_reasons() {
    let dec = decoder();
    let good = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    };
    let bad = [
        Span {
            trace_id: vec![],
            ..good.clone()
        },
        Span {
            trace_id: vec![0; 16],
            ..good.clone()
        },
        Span {
            span_id: vec![1; 4],
            ..good.clone()
        },
        Span {
            parent_span_id: vec![1; 3],
            ..good.clone()
        },
        Span {
            parent_span_id: vec![2; 8],
            ..good.clone()
        },
        Span {
            span_id: vec![0; 8],
            ..good.clone()
        },
    ];
    let mut b = RequestBuilder::new()
        .resource("svc", None)
        .push(good.clone());
    for s in bad {
        b = b.push(s);
    }
    let zero_parent = Span {
        parent_span_id: vec![0; 8],
        span_id: vec![3; 8],
        ..good
    };
    let d = dec.decode(&b.push(zero_parent).build(), 4);
    assert_eq!((d.accepted, d.rejected), (2, 6));
    assert_eq!(
        only(&d)[1].1.parent,
        None,
        "an all-zero parent means no parent"
    );
    let m = d.error_message();
    assert!(m.starts_with("rejected 6 of 8 spans: resource_spans[0].scope_spans[0].spans[1]: trace_id must be 16 bytes, got 0"), "{m}");
    assert!(m.contains("spans[2]: trace_id is all zeroes"), "{m}");
    assert!(
        m.contains("spans[3]: span_id must be 8 bytes, got 4"),
        "{m}"
    );
    assert!(m.contains("span is its own parent"), "{m}");
    assert!(m.ends_with("; and 1 more"), "{m}");
    let count = |r| {
        d.reasons
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(Reject::TraceId), 2);
    assert_eq!(count(Reject::SpanId), 2);
    assert_eq!(count(Reject::ParentId), 1);
    assert_eq!(count(Reject::OwnParent), 1);
}

#[test]
fn huge_strings_are_cut_before_interning() {
    let dec = decoder();
    let huge = "é".repeat(1 << 20);
    let req = RequestBuilder::new()
        .resource(&huge, Some(&huge))
        .span(
            7,
            1,
            None,
            &huge,
            SpanKind::Server,
            &[("x-release-stage", &huge)],
        )
        .build();
    let rec = only(&dec.decode(&req, 1))[0].1;
    assert!(dec.symbols.services.resolve(rec.service).len() <= MAX_SERVICE_LEN);
    assert!(dec.symbols.names.resolve(rec.name).len() <= MAX_NAME_LEN);
    assert!(dec.symbols.values.resolve(rec.stage.unwrap()).len() <= MAX_VALUE_LEN);
    assert!(
        dec.symbols
            .values
            .resolve(rec.stage.unwrap())
            .starts_with("éé")
    );
}

/// Decodes `bytes` both ways with one decoder (so symbols agree) and asserts the same outcome;
/// returns the in-place decoder's result.
fn both_ways(dec: &Decoder, bytes: &[u8]) -> Result<Decoded, String> {
    use prost::Message;
    let wire = dec.decode_protobuf(bytes, 3);
    let prost = ExportTraceServiceRequest::decode(bytes).map(|r| dec.decode(&r, 3));
    match (&wire, &prost) {
        (Ok(w), Ok(p)) => {
            assert_eq!(only(w), only(p));
            assert_eq!(extras(w), extras(p));
            assert_eq!((w.accepted, w.rejected), (p.accepted, p.rejected));
            assert_eq!(w.reasons, p.reasons);
            assert_eq!(w.error_message(), p.error_message());
        }
        (Err(w), Err(p)) => eprintln!("in place: {w}\nprost:    {p}"),
        (w, p) => panic!("in place: {w:?}\nprost: {p:?}"),
    }
    wire.map_err(|e| e.to_string())
}

#[test]
fn in_place_decoding_gives_the_records_of_prost_on_generated_traffic() {
    use crate::loadgen::Wire;
    use rand::SeedableRng;
    let dec = decoder();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
    for spans in [9, 100, 1000] {
        let t = crate::loadgen::traffic::Template::build(spans, (0.5, &[]), Wire::Grpc, &mut rng);
        for n in 0..3 {
            let d = both_ways(&dec, &t.instance(1, n, None)).unwrap();
            assert!(d.accepted >= spans, "{}", d.accepted);
        }
    }
}

#[test]
fn in_place_decoding_agrees_on_rejections_arrays_probes_and_merged_fields() {
    use prost::Message;
    let dec = decoder();
    let mut bad_ids = span(9, 0, Some(3), "zero span id");
    bad_ids.trace_id = vec![1; 15];
    let mut own = span(9, 4, Some(4), "own parent");
    own.attributes.push(KeyValue {
        key: "x-release-stage".into(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::StringValue("canary".into())),
                }],
            })),
        }),
        ..Default::default()
    });
    let mut arr = span(9, 5, None, "array stage");
    arr.attributes = vec![KeyValue {
        key: "x-release-stage".into(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("canary".into())),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(3)),
                    },
                ],
            })),
        }),
        ..Default::default()
    }];
    let req = RequestBuilder::new()
        .resource("orders", Some("canary"))
        .probe()
        .push(bad_ids)
        .push(own)
        .push(arr)
        .span(
            9,
            6,
            Some(5),
            "GET /x",
            SpanKind::Client,
            &[("peer.service", "users"), ("x_release_stage", "canary")],
        )
        .build();
    let d = both_ways(&dec, &req.encode_to_vec()).unwrap();
    assert_eq!((d.accepted, d.rejected), (2, 2));

    // Merged occurrences: two statuses, a value given twice, the resource split in two.
    let mut bytes = req.encode_to_vec();
    let mut extra = RequestBuilder::new()
        .resource("ignored-second-resource-name", None)
        .build()
        .encode_to_vec();
    bytes.append(&mut extra);
    both_ways(&dec, &bytes).unwrap();
    // resource_spans { resource {attributes{service.name=a}} scope_spans{spans{...}} resource {attributes{deployment.stage=canary}} }
    let one = RequestBuilder::new()
        .resource("split", None)
        .span(
            11,
            1,
            None,
            "GET /",
            SpanKind::Server,
            &[("x-release-stage", "canary")],
        )
        .build();
    let mut rs = one.resource_spans[0].clone();
    let mut later = rs.clone();
    later.scope_spans.clear();
    later.resource.as_mut().unwrap().attributes =
        vec![crate::loadgen::traffic::kv("deployment.stage", "canary")];
    let mut rs_bytes = rs.encode_to_vec();
    rs_bytes.extend(later.encode_to_vec());
    rs = opentelemetry_proto::tonic::trace::v1::ResourceSpans::decode(&rs_bytes[..]).unwrap();
    assert_eq!(
        rs.resource.as_ref().unwrap().attributes.len(),
        2,
        "merged by prost"
    );
    let mut req_bytes = vec![0x0a];
    prost::encoding::encode_varint(rs_bytes.len() as u64, &mut req_bytes);
    req_bytes.extend(&rs_bytes);
    let d = both_ways(&dec, &req_bytes).unwrap();
    assert_eq!(
        only(&d)[0]
            .1
            .instance_stage
            .map(|s| dec.symbols.values.resolve(s).to_string()),
        Some("canary".into())
    );
}

#[test]
fn in_place_decoding_refuses_what_prost_refuses_but_unused_strings_need_no_utf8() {
    use prost::Message;
    let dec = decoder();
    let req = RequestBuilder::new()
        .resource("svc", None)
        .span(
            5,
            1,
            None,
            "NAMEXX",
            SpanKind::Server,
            &[("unused.key", "VALUEX"), ("x-release-stage", "STAGEX")],
        )
        .build();
    let clean = req.encode_to_vec();
    let poison = |marker: &[u8]| {
        let mut b = clean.clone();
        let at = b.windows(marker.len()).position(|w| w == marker).unwrap();
        b[at] = 0xff;
        b
    };
    // Used strings: the span's name and its stage.
    for marker in [&b"NAMEXX"[..], b"STAGEX"] {
        let e = dec.decode_protobuf(&poison(marker), 1).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        assert!(ExportTraceServiceRequest::decode(&poison(marker)[..]).is_err());
    }
    // An attribute nobody reads: prost refuses the request, grayscope does not need to.
    let b = poison(b"VALUEX");
    assert!(ExportTraceServiceRequest::decode(&b[..]).is_err());
    assert_eq!(dec.decode_protobuf(&b, 1).unwrap().accepted, 1);

    // Structure is checked everywhere, read or not.
    for (bytes, says) in [
        (&[0x0a, 0x05, 0x01][..], "buffer underflow"),
        (
            &[0x08, 0x01],
            "invalid wire type: Varint (expected LengthDelimited)",
        ),
        (&[0x0f], "invalid wire type value: 7"),
        (&[0x00], "invalid tag value: 0"),
        (&[0x14], "unexpected end group tag"),
        (&[0x0a, 0x02, 0x12, 0x80], "invalid varint"),
    ] {
        let e = both_ways(&dec, bytes).unwrap_err();
        assert!(e.contains(says), "{bytes:?}: {e}");
    }
    // Nesting past the recursion limit inside an attribute nobody reads.
    let mut value = AnyValue {
        value: Some(Value::StringValue("x".into())),
    };
    for _ in 0..60 {
        value = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut deep = span(5, 1, None, "deep");
    deep.attributes.push(KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    });
    let req = RequestBuilder::new()
        .resource("svc", None)
        .push(deep)
        .build();
    let e = both_ways(&dec, &req.encode_to_vec()).unwrap_err();
    assert!(e.contains("recursion limit reached"), "{e}");
}

/// A span of trace `trace` with id `id` (0: all zeroes) and no attributes.
fn span(trace: u128, id: u64, parent: Option<u64>, name: &str) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        ..Default::default()
    }
}

/// A client application's resource (a browser's, a phone's) marks its spans, both ways of
/// decoding; a server's `os.type` does not. SERVER and CONSUMER spans make their service a
/// receiver of calls.
#[test]
fn client_applications_and_receivers_are_told_from_their_resources_and_spans() {
    let dec = decoder();
    let resources: [&[(&str, &str)]; 6] = [
        &[("telemetry.sdk.language", "webjs")],
        &[("browser.platform", "Linux")],
        &[
            ("device.model.identifier", "iPhone15,2"),
            ("os.name", "iOS"),
        ],
        &[("os.name", "Android")],
        &[("os.type", "linux"), ("telemetry.sdk.language", "go")],
        &[],
    ];
    let mut b = RequestBuilder::new();
    for (i, _) in resources.iter().enumerate() {
        b = b.resource(&format!("app-{i}"), None).span(
            1,
            i as u64 + 1,
            None,
            "GET /",
            SpanKind::Client,
            &[],
        );
    }
    let mut req = b
        .resource("gateway", None)
        .span(1, 9, Some(1), "GET /", SpanKind::Server, &[])
        .build();
    for (i, attrs) in resources.iter().enumerate() {
        let res = req.resource_spans[i].resource.as_mut().unwrap();
        for (k, v) in attrs.iter() {
            res.attributes.push(crate::loadgen::kv(k, v));
        }
    }
    let want = [true, true, true, true, false, false, false];
    let d = dec.decode(&req, 1);
    let apps: Vec<bool> = only(&d).iter().map(|(_, s)| s.client_app()).collect();
    assert_eq!(apps, want);
    let d = dec
        .decode_protobuf(&prost::Message::encode_to_vec(&req), 1)
        .unwrap();
    let apps: Vec<bool> = only(&d).iter().map(|(_, s)| s.client_app()).collect();
    assert_eq!(apps, want);
    let svc = |s: &str| dec.symbols.services.intern(s);
    assert!(dec.instances.is_receiver(svc("gateway"), 0));
    assert!(!dec.instances.is_receiver(svc("app-0"), 0));
}

/// Where each span's stage came from, which calls go to a database, and what that teaches about
/// each service's stage mode: a header captured on SERVER spans only is `captured`, the stage as
/// an attribute of a CLIENT span is `every span`.
#[test]
fn stage_sources_backends_and_stage_modes_are_read_from_the_spans() {
    let keys: Vec<String> = crate::config::VerifyArgs::default()
        .resolve()
        .unwrap()
        .stage_keys;
    for protobuf in [false, true] {
        let dec = Decoder::new(
            Arc::new(Symbols::new(&SymbolLimits::default())),
            Arc::new(Instances::new([], 60_000)),
            Clock::new(),
            &keys,
            "deployment.stage",
        );
        let mut req = RequestBuilder::new()
            .resource("orders", None)
            .span(1, 1, None, "POST /orders", SpanKind::Server, &[])
            .span(
                1,
                2,
                Some(1),
                "SELECT",
                SpanKind::Client,
                &[("db.system", "postgresql"), ("server.address", "localhost")],
            )
            .span(1, 3, Some(1), "render", SpanKind::Internal, &[])
            .span(
                1,
                4,
                Some(1),
                "GET",
                SpanKind::Client,
                &[("server.address", "payments.internal")],
            )
            .resource("payments", None)
            .span(1, 5, Some(4), "Pay/Charge", SpanKind::Server, &[])
            .resource("users", None)
            .span(
                2,
                6,
                None,
                "GET /users",
                SpanKind::Server,
                &[("x-release-stage", "canary")],
            )
            .span(
                2,
                7,
                Some(6),
                "call",
                SpanKind::Client,
                &[("x-release-stage", "canary")],
            )
            .span(
                2,
                8,
                Some(6),
                "GET",
                SpanKind::Client,
                &[("db.system.name", "redis")],
            )
            .build();
        // Captured headers and metadata arrive as string arrays.
        let header = |key: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("canary".into())),
                    }],
                })),
            }),
            ..Default::default()
        };
        req.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(header("http.request.header.x-release-stage"));
        req.resource_spans[1].scope_spans[0].spans[0]
            .attributes
            .push(header("rpc.grpc.request.metadata.x-release-stage"));
        let d = if protobuf {
            dec.decode_protobuf(&prost::Message::encode_to_vec(&req), 1)
                .unwrap()
        } else {
            dec.decode(&req, 1)
        };
        let spans = only(&d);
        let by_id = |id: u64| spans.iter().find(|(_, s)| s.span_id.get() == id).unwrap().1;
        let canary = Some(dec.symbols.values.intern("canary"));
        assert_eq!(
            (by_id(1).stage, by_id(1).stage_from),
            (canary, Some(StageSource::HttpHeader))
        );
        assert_eq!(by_id(5).stage_from, Some(StageSource::GrpcMetadata));
        assert_eq!(by_id(7).stage_from, Some(StageSource::Attribute));
        assert_eq!(by_id(3).stage_from, None);
        // A database is named by its system, not by its address.
        let value = |s: &str| Some(dec.symbols.values.intern(s));
        assert_eq!(
            (by_id(2).backend(), by_id(2).peer),
            (true, value("postgresql"))
        );
        assert_eq!((by_id(8).backend(), by_id(8).peer), (true, value("redis")));
        assert_eq!(
            (by_id(4).backend(), by_id(4).peer),
            (false, value("payments.internal"))
        );
        let mode = |s: &str| dec.instances.stage_mode(dec.symbols.services.intern(s), 0);
        assert_eq!(mode("orders"), StageMode::Captured);
        assert_eq!(mode("payments"), StageMode::Captured);
        assert_eq!(mode("users"), StageMode::EverySpan);
        assert_eq!(mode("nobody"), StageMode::EverySpan);
    }
}

#[test]
fn a_resource_names_its_services_group_both_ways() {
    use prost::Message;
    for key in ["service.namespace", "team"] {
        let dec = decoder().with_group_key(key);
        let mut req = RequestBuilder::new()
            .resource("orders", None)
            .span(1, 1, None, "GET /", SpanKind::Server, &[])
            .resource("users", None)
            .span(1, 2, None, "GET /", SpanKind::Server, &[])
            .build();
        req.resource_spans[0]
            .resource
            .as_mut()
            .unwrap()
            .attributes
            .push(str_kv(key, "shop"));
        both_ways(&dec, &req.encode_to_vec()).unwrap();
        let group = |service: &str| {
            let s = dec.symbols.services.get(service)?;
            let g = dec.instances.group(s)?;
            Some(dec.symbols.values.resolve(g).to_string())
        };
        assert_eq!(group("orders").as_deref(), Some("shop"), "{key}");
        assert_eq!(group("users"), None, "no group named: none");
    }
}
