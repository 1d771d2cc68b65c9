//! OTLP receivers: gRPC (tonic) and HTTP (axum), protobuf and JSON, gzip.
//!
//! Both protocols end in [`Ingest::export`]: decode into records, queue them on the workers, and
//! answer per the OTLP specification: partial success for rejected spans, a retryable error when
//! the workers' queues are full. OTLP types stop here; nothing downstream sees them.

pub mod decode;
pub mod grpc;
pub mod http;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};

pub use decode::{Decoded, Decoder, Reject};
pub use metrics::IngestMetrics;

use crate::membership::Membership;
use crate::shard::{Shards, SubmitError};

/// How long a refused sender is asked to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What one request may cost the receivers.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Largest body or message, before and after decompression.
    pub max_bytes: usize,
    /// How long a body (HTTP) or message (gRPC) may take to arrive: a sender that trickles bytes
    /// (or stops) must not hold a connection, a task and a buffer forever.
    pub read_timeout: Duration,
    /// Requests read and decoded at once, over both protocols.
    pub max_concurrent: usize,
}

/// How long a request may wait for its turn among the [`InFlight`] requests limit before it is refused, retryably.
/// Bursts wait; a sustained overload is told to back off at once instead of piling up latency
/// (and connections) until senders time out.
pub const ADMISSION_WAIT: Duration = Duration::from_millis(200);

/// What became of a request among the [`InFlight`] requests.
pub enum Admission<T> {
    Done(T),
    /// No turn within [`ADMISSION_WAIT`]: refuse, retryably.
    Busy,
    /// The body or message did not arrive within the read timeout.
    TimedOut,
}

/// The message of a refusal for [`Admission::Busy`].
pub const BUSY_MESSAGE: &str = "too many requests in flight; retry later";

/// Admission of export requests, shared by both receivers: at most `max_concurrent` are read and
/// decoded at once, so the memory requests in flight take is bounded (a decoded request takes up
/// to 23 times its size, see `memory::Budget`). The others wait, bodies unread, for up to
/// [`ADMISSION_WAIT`].
#[derive(Clone, Debug)]
pub struct InFlight {
    permits: Arc<tokio::sync::Semaphore>,
    read_timeout: Duration,
}

impl InFlight {
    pub fn new(limits: &RequestLimits) -> Self {
        InFlight {
            permits: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
            read_timeout: limits.read_timeout,
        }
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Runs `work` in its turn, within the read timeout.
    pub async fn run<F: Future>(&self, work: F) -> Admission<F::Output> {
        let Ok(permit) = tokio::time::timeout(ADMISSION_WAIT, self.permits.acquire()).await else {
            return Admission::Busy;
        };
        let _permit = permit.expect("the in-flight limit is never closed");
        match tokio::time::timeout(self.read_timeout, work).await {
            Ok(v) => Admission::Done(v),
            Err(_) => Admission::TimedOut,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
    /// OTLP/HTTP with a content type grayscope does not accept.
    HttpOther,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http_protobuf",
            Protocol::HttpJson => "http_json",
            Protocol::HttpOther => "http_other",
        }
    }
}

/// Request outcomes, as counted in `grayscope_receiver_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Partial,
    Invalid,
    TooLarge,
    Unsupported,
    Refused,
    /// The body did not arrive within `--read-timeout`.
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::Unsupported => "unsupported",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Invalid(decode::wire::WireError),
    #[error(transparent)]
    Submit(SubmitError),
}

/// The receiving half of the pipeline, shared by every receiver.
pub struct Ingest {
    pub decoder: Decoder,
    pub shards: Shards,
    pub metrics: Arc<IngestMetrics>,
    /// Told when spans arrive: receiving spans is what makes an instance an active member.
    pub membership: Arc<Membership>,
}

impl Ingest {
    /// Decodes and queues a request. `Ok` carries the partial success to report, if any span was
    /// rejected; `Err` means nothing was queued and the sender should retry.
    pub fn export(
        &self,
        req: &ExportTraceServiceRequest,
        protocol: Protocol,
    ) -> Result<Option<ExportTracePartialSuccess>, SubmitError> {
        self.submit(self.decoder.decode(req, self.shards.len()), protocol)
    }

    /// Like [`Ingest::export`], for OTLP/protobuf bytes decoded in place. A malformed request is
    /// `Invalid` and nothing of it is queued; it is not counted here (the receiver answers it).
    pub fn export_protobuf(
        &self,
        bytes: &[u8],
        protocol: Protocol,
    ) -> Result<Option<ExportTracePartialSuccess>, ExportError> {
        let decoded = self
            .decoder
            .decode_protobuf(bytes, self.shards.len())
            .map_err(ExportError::Invalid)?;
        self.submit(decoded, protocol).map_err(ExportError::Submit)
    }

    fn submit(
        &self,
        decoded: decode::Decoded,
        protocol: Protocol,
    ) -> Result<Option<ExportTracePartialSuccess>, SubmitError> {
        for &(reason, n) in &decoded.reasons {
            self.metrics.rejected(protocol, reason.as_str(), n as u64);
        }
        let partial = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: decoded.rejected as i64,
            error_message: decoded.error_message(),
        });
        let accepted = decoded.accepted as u64;
        if let Err(e) = self.shards.submit(decoded.batches) {
            self.metrics.refused(protocol, accepted);
            self.count(protocol, Outcome::Refused);
            return Err(e);
        }
        self.metrics.accepted(protocol, accepted);
        if accepted > 0 {
            self.membership.spans_arrived();
        }
        self.count(
            protocol,
            if partial.is_some() {
                Outcome::Partial
            } else {
                Outcome::Ok
            },
        );
        Ok(partial)
    }

    pub fn count(&self, protocol: Protocol, outcome: Outcome) {
        self.metrics.request(protocol, outcome);
    }
}
