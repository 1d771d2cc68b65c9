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
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let url = export.url.clone();
    let inner = match export.protocol {
        super::Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .build(),
        super::Protocol::Http => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .build(),
    }
    .map_err(|e| e.to_string())?;
    Ok(Counted {
        inner,
        exports: exports.clone(),
    })
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
