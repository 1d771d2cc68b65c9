//! Counts what the demo's services (and the probe) export, so that they can say how many spans reached the
//! endpoint instead of claiming they did.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// An OTLP span exporter to `export` (gRPC, or HTTP with protobuf bodies), counting what it
/// passes on into `exports`.
pub fn exporter(
    export: &super::Export,
    exports: &std::sync::Arc<Exports>,
) -> Result<Counted<opentelemetry_otlp::SpanExporter>, String> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
    let url = export.url.clone();
    let auth = &export.auth;
    let inner = match export.protocol {
        super::Protocol::Grpc => {
            let mut b = SpanExporter::builder().with_tonic().with_endpoint(url);
            if export.is_https() {
                b = b.with_tls_config(tonic_tls(auth).map_err(|e| e.to_string())?);
            }
            if let Some(a) = &auth.authorization {
                let mut md = tonic::metadata::MetadataMap::new();
                md.insert(
                    "authorization",
                    a.parse()
                        .map_err(|_| "the token is not a valid header value")?,
                );
                b = b.with_metadata(md);
            }
            b.build()
        }
        super::Protocol::Http => {
            let mut b = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url);
            if export.is_https() {
                b = b.with_http_client(blocking_client(auth)?);
            }
            if let Some(a) = &auth.authorization {
                b = b.with_headers([("authorization".to_string(), a.clone())].into());
            }
            b.build()
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(Counted {
        inner,
        exports: exports.clone(),
    })
}

/// The gRPC exporter's TLS: the given CA (or the system's roots) and the client certificate.
fn tonic_tls(
    auth: &crate::security::ClientAuth,
) -> Result<tonic::transport::ClientTlsConfig, crate::security::SecurityError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = match auth.tls.ca_pem()? {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let Some(id) = auth.tls.identity_pem()? {
        tls = tls.identity(Identity::from_pem(id.cert, id.key));
    }
    Ok(tls)
}

/// The HTTP exporter's client over TLS: reqwest's blocking client, as the exporter's own default,
/// built on a thread of its own because it cannot be built inside an async runtime.
fn blocking_client(
    auth: &crate::security::ClientAuth,
) -> Result<reqwest::blocking::Client, String> {
    let tls = auth.tls.config().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))
    })
    .join()
    .map_err(|_| "building the HTTPS client panicked".to_string())?
}

/// Spans exported and refused, over every service of the mesh.
#[derive(Debug, Default)]
pub struct Exports {
    pub spans: AtomicU64,
    pub failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Exports {
    /// The first export error, which usually names the cause (connection refused, wrong path).
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn failed(&self, spans: u64, error: String) {
        self.failed.fetch_add(spans, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            tracing::warn!("demo: exporting spans failed: {error}");
            *first = Some(error);
        }
    }
}

/// An exporter that counts the outcome of every batch it passes on.
#[derive(Debug)]
pub struct Counted<E> {
    pub inner: E,
    pub exports: std::sync::Arc<Exports>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.exports.spans.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => self.exports.failed(n, e.to_string()),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
