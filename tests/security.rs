//! TLS, mutual TLS and bearer tokens, end to end: the official OpenTelemetry SDK exporters (gRPC
//! and HTTP/protobuf) deliver over TLS with a token; wrong, missing and certificate-less clients
//! are refused with the exact status, counted, and nothing of theirs is stored; certificates
//! rotated on disk serve new connections while established ones go on; plain HTTP to a TLS port
//! and stalled handshakes end cleanly.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{INGEST_TOKEN, Pki, READ_TOKEN};
use common::*;
use grayscope::api::grpc::pb;
use grayscope::api::grpc::pb::query_client::QueryClient;
use grayscope::app::Collector;
use grayscope::config::SecurityArgs;
use grayscope::loadgen::{RawClient, Wire};
use grayscope::security::ClientAuth;
use opentelemetry::trace::SpanKind;
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// TLS on every listener from one certificate, both token sets; mutual TLS if `mutual`.
fn secured(pki: &Pki, mutual: bool) -> grayscope::config::ServeArgs {
    let mut a = test_args();
    a.security = SecurityArgs {
        tls_cert: Some(pki.cert.clone()),
        tls_key: Some(pki.key.clone()),
        tls_client_ca: mutual.then(|| pki.ca.clone()),
        ingest_tokens: Some(pki.ingest_tokens.clone()),
        read_tokens: Some(pki.read_tokens.clone()),
        ..SecurityArgs::default()
    };
    a
}

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The SDK's gRPC exporter over TLS, trusting the test CA.
fn grpc_exporter(c: &Collector, pki: &Pki, token: Option<&str>, cert: bool) -> SpanExporter {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&pki.ca)));
    if cert {
        tls = tls.identity(Identity::from_pem(
            read(&pki.client_cert),
            read(&pki.client_key),
        ));
    }
    let mut b = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://{}", c.otlp_grpc))
        .with_tls_config(tls)
        .with_timeout(Duration::from_secs(5));
    if let Some(t) = token {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", format!("Bearer {t}").parse().unwrap());
        b = b.with_metadata(md);
    }
    b.build().unwrap()
}

/// The SDK's HTTP/protobuf exporter over TLS (reqwest's blocking client), trusting the test CA.
fn http_exporter(c: &Collector, pki: &Pki, token: Option<&str>, cert: bool) -> SpanExporter {
    let ca = reqwest::Certificate::from_pem(&read(&pki.ca)).unwrap();
    let identity = cert.then(|| {
        let mut pem = read(&pki.client_cert);
        pem.extend(read(&pki.client_key));
        reqwest::Identity::from_pem(&pem).unwrap()
    });
    // reqwest's blocking client cannot be built on an async runtime's thread.
    let client = std::thread::spawn(move || {
        let mut b = reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(5));
        if let Some(id) = identity {
            b = b.identity(id);
        }
        b.build().unwrap()
    })
    .join()
    .unwrap();
    let mut b = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("https://{}/v1/traces", c.otlp_http));
    if let Some(t) = token {
        b = b.with_headers([("authorization".to_string(), format!("Bearer {t}"))].into());
    }
    b.build().unwrap()
}

/// A two-service canary trace whose second hop lost the stage: one `missing` finding on
/// `front -> back`, under service names of the test's choosing. Returns whether both services'
/// exports succeeded.
async fn broken_trace(front: Service, back: Service) -> bool {
    let root = front.span("GET /", SpanKind::Server, &entry(Some("canary")));
    let call = front.span("GET /b", SpanKind::Client, &root);
    // The hop drops the baggage: the callee sees the trace, not the stage.
    let mut headers = inject(&call);
    headers.remove("baggage");
    let served = back.span("GET /b", SpanKind::Server, &extract(&headers));
    for cx in [&served, &call, &root] {
        end(cx);
    }
    tokio::task::spawn_blocking(move || {
        let a = front.provider.force_flush().is_ok();
        let b = back.provider.force_flush().is_ok();
        a && b
    })
    .await
    .unwrap()
}

/// An HTTPS client of the API trusting the test CA.
fn api_client(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&read(&pki.ca)).unwrap()])
        .build()
        .unwrap()
}

async fn api_get(c: &Collector, pki: &Pki, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = api_client(pki).get(format!("https://{}{path}", c.http));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn metrics(c: &Collector, pki: &Pki) -> String {
    let r = api_get(c, pki, "/metrics", Some(READ_TOKEN)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn sample(text: &str, line: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Callee services of the stored findings.
async fn finding_callees(c: &Collector, pki: &Pki) -> Vec<String> {
    c.flush().await;
    let r = api_get(c, pki, "/api/v1/findings?limit=1000", Some(READ_TOKEN)).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let mut out: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["edge"]["callee"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_exporters_deliver_over_tls_with_a_token_and_readers_need_theirs() {
    let pki = Pki::new();
    let c = spawn_collector(secured(&pki, false)).await;

    let grpc = Service::with_exporter(
        grpc_exporter(&c, &pki, Some(INGEST_TOKEN), false),
        "tls-front",
        None,
    );
    let http = Service::with_exporter(
        http_exporter(&c, &pki, Some(INGEST_TOKEN), false),
        "tls-back",
        None,
    );
    assert!(broken_trace(grpc, http).await, "both exports succeed");
    assert_eq!(finding_callees(&c, &pki).await, ["tls-back"]);
    let m = metrics(&c, &pki).await;
    assert_eq!(
        sample(
            &m,
            "grayscope_receiver_accepted_spans_total{protocol=\"grpc\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "grayscope_receiver_accepted_spans_total{protocol=\"http_protobuf\"}"
        ),
        1.0
    );

    // Reading: the read token, not the ingest one; /healthz is open.
    for (path, token, status) in [
        ("/api/v1/findings", None, 401),
        ("/api/v1/findings", Some(INGEST_TOKEN), 401),
        ("/api/v1/findings", Some(READ_TOKEN), 200),
        ("/api/v1/gate?stage=canary", None, 401),
        ("/metrics", None, 401),
        ("/healthz", None, 200),
    ] {
        let r = api_get(&c, &pki, path, token).await;
        assert_eq!(r.status(), status, "{path} with {token:?}");
        if status == 401 {
            assert_eq!(
                r.headers()["www-authenticate"],
                "Bearer realm=\"grayscope\""
            );
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "authentication required");
        }
    }
    // A browser asking for a page without a session is sent to the login page.
    let r = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&read(&pki.ca)).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("https://{}/findings?kind=missing", c.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/login?next=%2Ffindings%3Fkind%3Dmissing"
    );

    // The gRPC query API on the OTLP/gRPC port needs the read token too.
    let channel = Channel::from_shared(format!("https://{}", c.otlp_grpc))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&pki.ca))))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let list = pb::ListFindingsRequest {
        limit: 10,
        ..Default::default()
    };
    let err = QueryClient::new(channel.clone())
        .list_findings(list.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(list);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {READ_TOKEN}").parse().unwrap(),
    );
    let found = QueryClient::new(channel).list_findings(req).await.unwrap();
    assert!(!found.into_inner().findings.is_empty());
    let m = metrics(&c, &pki).await;
    assert_eq!(
        sample(
            &m,
            "grayscope_auth_refused_total{listener=\"otlp_grpc\",reason=\"missing\"}"
        ),
        1.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_and_missing_tokens_are_refused_counted_and_nothing_is_stored() {
    let pki = Pki::new();
    let c = spawn_collector(secured(&pki, false)).await;

    for (token, front, back) in [
        (Some("wrong-token-0123456789"), "wrong-front", "wrong-back"),
        (None, "none-front", "none-back"),
    ] {
        let grpc = Service::with_exporter(grpc_exporter(&c, &pki, token, false), front, None);
        let http = Service::with_exporter(http_exporter(&c, &pki, token, false), back, None);
        assert!(!broken_trace(grpc, http).await, "{token:?}: exports fail");
    }
    // The exact answers, through a raw client.
    let tls = |token: Option<&str>| ClientAuth {
        tls: grayscope::security::ClientTls {
            ca: Some(pki.ca.clone()),
            identity: None,
        },
        authorization: token.map(|t| format!("Bearer {t}")),
    };
    let body = otlp::encode(Wire::Http, &otlp::good(7));
    for token in [None, Some("wrong-token-0123456789"), Some(READ_TOKEN)] {
        let r = RawClient::with_auth(Wire::Http, c.otlp_http, &tls(token), true)
            .unwrap()
            .send(body.clone(), false)
            .await
            .unwrap();
        assert_eq!(r.http, 401, "{token:?}");
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"grayscope\"");
        assert_eq!(
            otlp::http_status(Wire::Http, &r),
            (16, "authentication required".to_string())
        );
        let r = RawClient::with_auth(Wire::Grpc, c.otlp_grpc, &tls(token), true)
            .unwrap()
            .send(body.clone(), false)
            .await
            .unwrap();
        assert_eq!(r.grpc_status, Some(16), "{token:?}: UNAUTHENTICATED");
        assert_eq!(r.grpc_message.as_deref(), Some("authentication required"));
    }
    let accepted = RawClient::with_auth(Wire::Grpc, c.otlp_grpc, &tls(Some(INGEST_TOKEN)), true)
        .unwrap()
        .send(body, false)
        .await
        .unwrap();
    assert!(accepted.is_ok(), "{accepted:?}");

    assert!(
        finding_callees(&c, &pki).await.is_empty(),
        "nothing of theirs"
    );
    let m = metrics(&c, &pki).await;
    let refused = |listener: &str, reason: &str| {
        sample(
            &m,
            &format!("grayscope_auth_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"),
        )
    };
    // The SDK's retries resend a refused batch only on retryable codes: 401 and UNAUTHENTICATED
    // are not, so each exporter was refused once, and the raw client as many times as it asked.
    assert_eq!(refused("otlp_grpc", "invalid"), 3.0);
    assert_eq!(refused("otlp_grpc", "missing"), 2.0);
    assert_eq!(refused("otlp_http", "invalid"), 3.0);
    assert_eq!(refused("otlp_http", "missing"), 2.0);
    assert_eq!(
        sample(
            &m,
            "grayscope_receiver_accepted_spans_total{protocol=\"grpc\"}"
        ),
        3.0,
        "only the raw client's accepted request"
    );
    assert_eq!(
        sample(
            &m,
            "grayscope_receiver_accepted_spans_total{protocol=\"http_protobuf\"}"
        ),
        0.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let pki = Pki::new();
    let c = spawn_collector(secured(&pki, true)).await;

    let without = (
        Service::with_exporter(
            grpc_exporter(&c, &pki, Some(INGEST_TOKEN), false),
            "nocert-front",
            None,
        ),
        Service::with_exporter(
            http_exporter(&c, &pki, Some(INGEST_TOKEN), false),
            "nocert-back",
            None,
        ),
    );
    assert!(!broken_trace(without.0, without.1).await);
    let with = (
        Service::with_exporter(
            grpc_exporter(&c, &pki, Some(INGEST_TOKEN), true),
            "cert-front",
            None,
        ),
        Service::with_exporter(
            http_exporter(&c, &pki, Some(INGEST_TOKEN), true),
            "cert-back",
            None,
        ),
    );
    assert!(broken_trace(with.0, with.1).await);

    // The exact refusal: the handshake ends with the certificate_required alert.
    let tcp = TcpStream::connect(c.otlp_http).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(false)));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let refused = match connector.connect(name, tcp).await {
        // TLS 1.3: the client finishes first and hears the alert on its first read.
        Ok(mut s) => {
            let _ = s
                .write_all(b"GET /v1/traces HTTP/1.1\r\nhost: x\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            s.read(&mut buf).await.unwrap_err()
        }
        Err(e) => e,
    };
    assert!(
        refused.to_string().contains("CertificateRequired"),
        "{refused}"
    );

    // The API answers with mutual TLS and a read token.
    c.flush().await;
    let mut pem = read(&pki.client_cert);
    pem.extend(read(&pki.client_key));
    let r = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&read(&pki.ca)).unwrap()])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap()
        .get(format!("https://{}/api/v1/findings?limit=1000", c.http))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let callees: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["edge"]["callee"].as_str().unwrap())
        .collect();
    assert!(callees.contains(&"cert-back"), "{callees:?}");
    assert!(!callees.contains(&"nocert-back"), "{callees:?}");

    // Without a client certificate even /metrics cannot be asked: read the counter in-process.
    let m = c.telemetry.encode();
    for listener in ["otlp_grpc", "otlp_http"] {
        let n = sample(
            &m,
            &format!(
                "grayscope_tls_handshake_failures_total{{listener=\"{listener}\",reason=\"no_client_certificate\"}}"
            ),
        );
        assert!(n >= 1.0, "{listener}: {n}");
    }
    assert_eq!(
        sample(
            &m,
            "grayscope_receiver_accepted_spans_total{protocol=\"http_protobuf\"}"
        ),
        1.0,
        "only the client with a certificate"
    );
    c.shutdown().await.unwrap();
}

/// Opens a TLS connection to `addr` trusting the test CA; returns it with the DER of the
/// certificate the server presented.
async fn connect(
    pki: &Pki,
    addr: std::net::SocketAddr,
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let mut config = pki.client_config(false);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let der = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (s, der)
}

/// One keep-alive HTTP/1.1 request on `s`; the status line.
async fn healthz(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_and_tokens_serve_new_connections_and_established_ones_go_on() {
    let pki = Pki::new();
    let first = read(&pki.cert);
    let first =
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
            &first,
        )
        .unwrap()
        .to_vec();
    let c = spawn_collector(secured(&pki, false)).await;
    let (mut old, der) = connect(&pki, c.http).await;
    assert_eq!(der, first);
    assert_eq!(healthz(&mut old).await, "HTTP/1.1 200 OK");

    let second = pki.write_server("grayscope two");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, der) = connect(&pki, c.http).await;
        if der == second {
            break;
        }
        assert_eq!(der, first, "either certificate, nothing else");
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        healthz(&mut old).await,
        "HTTP/1.1 200 OK",
        "the connection made before the rotation still serves"
    );
    // Tokens rotate the same way: a new token is added, then the old one removed.
    let new_token = "read-rotated-0123456789abcdef";
    std::fs::write(&pki.read_tokens, format!("{READ_TOKEN}\n{new_token}\n")).unwrap();
    let status = |token: &'static str| {
        let (c, pki) = (&c, &pki);
        async move {
            api_get(c, pki, "/api/v1/findings", Some(token))
                .await
                .status()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(new_token).await != 200 {
        assert!(Instant::now() < deadline, "the new token was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&pki.read_tokens, format!("{new_token}\n")).unwrap();
    while status(READ_TOKEN).await != 401 {
        assert!(Instant::now() < deadline, "the old token was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(new_token).await, 200);

    // A broken pair (a key that does not match) is refused and the current one kept.
    let (other_cert, _) = pki.issue("mismatch", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(&pki.cert, other_cert).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, der) = connect(&pki, c.http).await;
    assert_eq!(der, second);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_a_tls_port_is_told_and_stalled_handshakes_time_out() {
    let pki = Pki::new();
    let mut args = secured(&pki, false);
    args.read_timeout = Some("700ms".parse().unwrap());
    let c = spawn_collector(args).await;

    // Plain HTTP/1.1: a 400 that says why, then a clean close.
    let mut s = TcpStream::connect(c.otlp_http).await.unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("This port speaks TLS"), "{answer}");
    // A plain-text gRPC client fails at once rather than hanging.
    let started = Instant::now();
    let r = RawClient::new(Wire::Grpc, c.otlp_grpc)
        .send(otlp::encode(Wire::Grpc, &otlp::good(1)), false)
        .await;
    assert!(r.is_err(), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A handshake that stops halfway, and a connection that handshakes and then says nothing.
    let mut half = TcpStream::connect(c.otlp_http).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let (mut silent, _) = connect(&pki, c.http).await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), half.read(&mut buf))
        .await
        .expect("closed by the read timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed by the read timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let m = c.telemetry.encode();
    assert!(
        sample(
            &m,
            "grayscope_tls_handshake_failures_total{listener=\"otlp_http\",reason=\"not_tls\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            "grayscope_tls_handshake_failures_total{listener=\"otlp_grpc\",reason=\"not_tls\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "grayscope_connection_timeouts_total{listener=\"otlp_http\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "grayscope_connection_timeouts_total{listener=\"http\"}"),
        1.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_sends_over_tls_with_a_token() {
    let pki = Pki::new();
    let c = spawn_collector(secured(&pki, false)).await;
    let summary = grayscope::loadgen::generate(grayscope::loadgen::LoadgenArgs {
        protocol: Wire::Http,
        grpc: c.otlp_grpc,
        http: c.otlp_http,
        spans_per_request: 90,
        concurrency: 2,
        duration: None,
        requests: Some(6),
        fault_rate: 0.0,
        fault_kinds: Vec::new(),
        seed: 3,
        templates: 2,
        gzip: false,
        faults_out: None,
        server_pid: None,
        threads: 1,
        rate: None,
        tls: true,
        services: None,
        edges: None,
        depth: None,
        auth: grayscope::security::ClientAuthArgs {
            ca_file: Some(pki.ca.clone()),
            token_file: Some(pki.ingest_tokens.clone()),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    assert_eq!((summary.requests, summary.errors), (6, 0));
    let m = metrics(&c, &pki).await;
    assert_eq!(
        sample(
            &m,
            "grayscope_receiver_accepted_spans_total{protocol=\"http_protobuf\"}"
        ),
        540.0
    );
    c.shutdown().await.unwrap();
}

/// Instances of a cluster ask each other's API for traces they are still assembling: over TLS,
/// with a read token, checking the certificate against `--peer-server-name` when the advertised
/// address is an IP the certificate does not have to name. Needs the test PostgreSQL server.
#[tokio::test(flavor = "multi_thread")]
async fn instances_ask_each_other_over_tls_with_a_read_token() {
    let Some(admin) = postgres::server() else {
        return;
    };
    let url = postgres::fresh_database(&admin).await;
    let pki = Pki::new();
    let instance = |trace_idle: &str, server_name: &str| {
        let mut a = test_args();
        a.data = Some(url.clone().into());
        a.trace_idle = Some(trace_idle.parse().unwrap());
        a.heartbeat_interval = Some("200ms".parse().unwrap());
        a.security = SecurityArgs {
            http_tls_cert: Some(pki.cert.clone()),
            http_tls_key: Some(pki.key.clone()),
            read_tokens: Some(pki.read_tokens.clone()),
            peer_ca: Some(pki.ca.clone()),
            peer_server_name: Some(server_name.into()),
            ..SecurityArgs::default()
        };
        a
    };
    // A holds its traces for a minute; B asks A for them.
    let a = spawn_collector(instance("60s", "localhost")).await;
    let b = spawn_collector(instance("300ms", "localhost")).await;
    let wrong = spawn_collector(instance("300ms", "not-the-name.example")).await;
    let sent = RawClient::new(Wire::Grpc, a.otlp_grpc)
        .send(otlp::encode(Wire::Grpc, &otlp::good(0x77)), false)
        .await
        .unwrap();
    assert!(sent.is_ok(), "{sent:?}");

    let path = format!("/api/v1/traces/{:032x}", 0x77);
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = api_get(&b, &pki, &path, Some(READ_TOKEN)).await;
        if r.status() == 200 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "B never found A's trace: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(r.headers().contains_key("x-grayscope-member"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["finalised"], false, "{body}");
    assert_eq!(body["spans"].as_array().unwrap().len(), 3, "{body}");
    // Another instance that checks A's certificate against a name it does not carry finds
    // nothing, though it sees A among the members.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let members = api_get(&wrong, &pki, "/api/v1/members", Some(READ_TOKEN))
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap();
        if members["members"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{members}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = api_get(&wrong, &pki, &path, Some(READ_TOKEN)).await;
    assert_eq!(r.status(), 404);
    for c in [a, b, wrong] {
        c.shutdown().await.unwrap();
    }
}
