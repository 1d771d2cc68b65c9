//! OTLP requests built by hand and sent over real sockets, for tests of the receivers' contract.

use bytes::Bytes;
use grayscope::app::Collector;
use grayscope::loadgen::{RawClient, Reply, Wire};
use grayscope::model::SpanKind;
use grayscope::testkit::RequestBuilder;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::STAGE;

/// A clean trace: gateway SERVER -> gateway CLIENT -> users SERVER, all canary.
pub fn good(trace: u128) -> ExportTraceServiceRequest {
    RequestBuilder::new()
        .resource("gateway", Some("stable"))
        .span(
            trace,
            1,
            None,
            "GET /",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .span(
            trace,
            2,
            Some(1),
            "GET /u",
            SpanKind::Client,
            &[(STAGE, "canary")],
        )
        .resource("users", Some("stable"))
        .span(
            trace,
            3,
            Some(2),
            "GET /u",
            SpanKind::Server,
            &[(STAGE, "canary")],
        )
        .build()
}

pub fn encode(wire: Wire, req: &ExportTraceServiceRequest) -> Bytes {
    match wire {
        Wire::HttpJson => serde_json::to_vec(req).unwrap().into(),
        _ => req.encode_to_vec().into(),
    }
}

pub fn client(c: &Collector, wire: Wire) -> RawClient {
    RawClient::new(
        wire,
        if wire == Wire::Grpc {
            c.otlp_grpc
        } else {
            c.otlp_http
        },
    )
}

/// A good request is accepted in full: the receiver still works.
pub async fn still_serves(c: &Collector, wire: Wire, trace: u128) {
    let r = client(c, wire)
        .send(encode(wire, &good(trace)), false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(response(wire, &r).partial_success, None);
}

pub fn response(wire: Wire, r: &Reply) -> ExportTraceServiceResponse {
    match wire {
        Wire::HttpJson => {
            assert_eq!(r.headers["content-type"], "application/json");
            serde_json::from_slice(&r.body).unwrap()
        }
        Wire::Http => {
            assert_eq!(r.headers["content-type"], "application/x-protobuf");
            ExportTraceServiceResponse::decode(r.body.clone()).unwrap()
        }
        Wire::Grpc => ExportTraceServiceResponse::decode(r.body.clone()).unwrap(),
    }
}

/// An HTTP error body: a google.rpc.Status in the request's encoding.
pub fn http_status(wire: Wire, r: &Reply) -> (i64, String) {
    if wire == Wire::HttpJson || r.headers["content-type"] == "application/json" {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (
            v["code"].as_i64().unwrap(),
            v["message"].as_str().unwrap().to_string(),
        )
    } else {
        let s = tonic_types::Status::decode(r.body.clone()).unwrap();
        (s.code as i64, s.message)
    }
}

pub fn post(
    c: &Collector,
    content_type: &str,
    encoding: Option<&str>,
    body: Bytes,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post(format!("http://{}/v1/traces", c.otlp_http));
    if !content_type.is_empty() {
        b = b.header("content-type", content_type);
    }
    if let Some(e) = encoding {
        b = b.header("content-encoding", e);
    }
    b.body(Full::new(body)).unwrap()
}
