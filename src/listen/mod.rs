//! Accepting connections, with the time limits that `axum::serve` and tonic's own listener leave
//! out.
//!
//! A peer that connects and then sends nothing, or sends its request head a byte a minute, holds a
//! socket, a task and buffers for as long as it likes unless something times it out; enough such
//! peers exhaust the process's file descriptors and nobody can export. The receivers bound request
//! bodies ([`crate::receive::InFlight`]); this module bounds what comes before a body, with the same
//! `--read-timeout`:
//!
//! - every connection must show how it speaks within the timeout: the whole HTTP/2 preface, or a
//!   byte that rules the preface out (HTTP/1.1);
//! - every HTTP/1.1 request head must arrive within the timeout (hyper's header read timeout). Its
//!   timer also runs while a keep-alive connection waits for its next request, so idle HTTP/1.1
//!   connections are closed after the same time, as most HTTP servers close them.
//!
//! Connections closed for either reason count in `grayscope_connection_timeouts_total{listener}`.
//!
//! On a TLS listener the handshake, and after it the same check of how the client speaks, must
//! complete within that timeout too (a handshake that stalls holds a socket like any silent peer);
//! failed handshakes count in `grayscope_tls_handshake_failures_total{listener,reason}` ([`tls`]).

mod tls;

pub use tls::Conn;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;

use crate::security::ServerTls;
use crate::telemetry::Registry;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often a connection that has sent part of the HTTP/2 preface is looked at again: peeking
/// does not consume, so a socket with unread bytes stays readable and cannot be waited on.
const PREFACE_POLL: Duration = Duration::from_millis(10);

/// How long accepting pauses after an error that is not one connection's (out of file
/// descriptors, say): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    listener: &'static str,
    reason: &'static str,
}

/// Connections closed for sending no request (head) within the read timeout, and TLS handshakes
/// that failed, by listener.
#[derive(Clone, Default)]
pub struct ListenMetrics {
    connection_timeouts: Family<ListenerLabels, Counter>,
    tls_failures: Family<FailureLabels, Counter>,
}

impl ListenMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = ListenMetrics::default();
        r.register(
            "connection_timeouts",
            "Connections closed because no request, or no complete HTTP/1.1 request head, arrived within --read-timeout (idle HTTP/1.1 keep-alive connections included)",
            m.connection_timeouts.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS connections not served because the handshake failed, by listener and reason: no_client_certificate or bad_client_certificate (mutual TLS), not_tls (plain HTTP to a TLS port, answered 400), client_alert (the client refused the certificate), other",
            m.tls_failures.clone(),
        );
        // At zero from the start, so that a rate is 0 rather than absent.
        for listener in ["otlp_grpc", "otlp_http", "http"] {
            m.connection_timeouts
                .get_or_create(&ListenerLabels { listener })
                .inc_by(0);
        }
        m
    }
}

/// One listener's rules for a new connection: its time limit, its TLS, and the counters of the
/// connections it closed.
#[derive(Clone)]
pub struct Accept {
    listener: &'static str,
    read_timeout: Duration,
    closed: Counter,
    tls: Option<Arc<ServerTls>>,
    tls_failures: Family<FailureLabels, Counter>,
}

impl Accept {
    /// `listener` names it in logs and in the counters' label: `otlp_grpc`, `otlp_http` or `http`.
    pub fn new(metrics: &ListenMetrics, listener: &'static str, read_timeout: Duration) -> Self {
        let closed = metrics
            .connection_timeouts
            .get_or_create(&ListenerLabels { listener })
            .clone();
        Accept {
            listener,
            read_timeout,
            closed,
            tls: None,
            tls_failures: metrics.tls_failures.clone(),
        }
    }

    /// Serve TLS with `tls`'s current configuration.
    pub fn with_tls(mut self, tls: Option<Arc<ServerTls>>) -> Self {
        if tls.is_some() {
            for reason in ["no_client_certificate", "not_tls"] {
                self.tls_failure(reason, 0);
            }
        }
        self.tls = tls;
        self
    }

    fn tls_failure(&self, reason: &'static str, n: u64) {
        self.tls_failures
            .get_or_create(&FailureLabels {
                listener: self.listener,
                reason,
            })
            .inc_by(n);
    }

    /// The connection, once it has shown how it speaks (and, on a TLS listener, completed its
    /// handshake) within the read timeout.
    async fn admit(&self, s: TcpStream, stop: &CancellationToken) -> Option<Conn> {
        let Some(tls) = &self.tls else {
            return self.opened(&s, stop).await.then(|| Conn::plain(s));
        };
        let handshake = async {
            match tls::starts_tls(&s).await {
                Ok(Some(true)) => {
                    tls::accept(s, tls.get().as_ref().clone(), |r| self.tls_failure(r, 1)).await
                }
                Ok(Some(false)) => {
                    self.tls_failure("not_tls", 1);
                    tls::refuse_plain(s).await;
                    None
                }
                Ok(None) | Err(_) => None,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => None,
            done = tokio::time::timeout(self.read_timeout, handshake) => match done {
                Ok(conn) => conn,
                Err(_) => {
                    self.closed.inc();
                    tracing::debug!(listener = self.listener, "closing a TLS connection that did not complete its handshake and first request within {:?}", self.read_timeout);
                    None
                }
            },
        }
    }

    /// Whether `s` showed how it speaks in time; a peer that closes first, or a stop, is simply
    /// not served.
    async fn opened(&self, s: &TcpStream, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            opened = tokio::time::timeout(self.read_timeout, opening(s)) => match opened {
                Ok(Ok(open)) => open,
                Ok(Err(e)) => {
                    tracing::debug!(listener = self.listener, "connection failed before its first request: {e}");
                    false
                }
                Err(_) => {
                    self.closed.inc();
                    tracing::debug!(listener = self.listener, "closing a connection that sent no request within {:?}", self.read_timeout);
                    false
                }
            },
        }
    }
}

/// Resolves to true once the peer has sent the whole HTTP/2 preface or a byte that rules it out,
/// to false if it closed first. Nothing is consumed: the server reads it all again.
async fn opening(s: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = s.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// Accepts on `listener` until `stop`; each connection that opens in time is handed to `serve` on
/// a task of `tracker`.
async fn accept_each<F, Fut>(
    listener: TcpListener,
    timeouts: Accept,
    stop: CancellationToken,
    tracker: TaskTracker,
    serve: F,
) where
    F: Fn(Conn) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    loop {
        let s = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) if one_connections(&e) => continue,
                Err(e) => {
                    tracing::warn!(listener = timeouts.listener, "cannot accept connections: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        no_delay(&s);
        let (timeouts, stop, serve) = (timeouts.clone(), stop.clone(), serve.clone());
        tracker.spawn(async move {
            if let Some(conn) = timeouts.admit(s, &stop).await {
                serve(conn).await;
            }
        });
    }
}

/// Errors that end one connection (before it was accepted) but not the listener.
fn one_connections(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Responses are small and latency matters more than packet count: without TCP_NODELAY, a response
/// can wait ~40 ms for the sender's delayed ACK.
fn no_delay(s: &TcpStream) {
    if let Err(e) = s.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
}

/// Serves `router` over HTTP/1.1 and HTTP/2 (prior knowledge) until `stop`, then lets every
/// connection finish its in-flight requests before returning.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    timeouts: Accept,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.read_timeout);
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    let closed = timeouts.closed.clone();
    let conn_stop = stop.clone();
    let serve = move |s: Conn| {
        let (builder, router, stop, closed) = (
            builder.clone(),
            router.clone(),
            conn_stop.clone(),
            closed.clone(),
        );
        async move {
            let conn = builder.serve_connection(TokioIo::new(s), TowerToHyperService::new(router));
            tokio::pin!(conn);
            let done = tokio::select! {
                done = conn.as_mut() => done,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
                {
                    closed.inc();
                }
                tracing::debug!("connection ended: {e}");
            }
        }
    };
    accept_each(listener, timeouts, stop, tracker.clone(), serve).await;
    tracker.close();
    tracker.wait().await;
}

/// The connections for a tonic server: each is yielded once it has sent the HTTP/2 preface, so a
/// peer that never does holds nothing past the timeout. Ends at `stop`.
pub fn grpc_incoming(
    listener: TcpListener,
    timeouts: Accept,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let serve = move |s: Conn| {
        let tx = tx.clone();
        async move {
            // The server has stopped if nobody receives: the connection is dropped, unserved.
            let _ = tx.send(Ok(s)).await;
        }
    };
    tokio::spawn(accept_each(
        listener,
        timeouts,
        stop,
        TaskTracker::new(),
        serve,
    ));
    ReceiverStream::new(rx)
}
