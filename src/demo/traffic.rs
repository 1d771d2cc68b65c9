//! The demo's clients: checkout requests to the gateway at a steady rate, a fixed share of them
//! tagged `canary`. The client is deliberately not instrumented: the gateway's SERVER span is each
//! trace's root, as for traffic from browsers and partners.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::DemoOptions;
use super::export::Exports;
use grayscope_propagation::STAGE_HEADER;

/// Requests in flight at most; past it the rate drops instead of memory growing.
const MAX_IN_FLIGHT: usize = 64;
/// A checkout that takes longer has failed; stopping never waits longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the demo has done so far: requests sent and answered, spans exported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub canary: u64,
    pub ok: u64,
    pub failed: u64,
    /// Spans the endpoint accepted.
    pub spans_exported: u64,
    /// Spans whose export failed.
    pub spans_failed: u64,
    /// The first export error.
    pub export_error: Option<String>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} requests ({} canary, {} stable): {} ok, {} failed; {} spans exported, {} failed",
            self.sent,
            self.canary,
            self.sent - self.canary,
            self.ok,
            self.failed,
            self.spans_exported,
            self.spans_failed
        )
    }
}

struct Counters {
    sent: AtomicU64,
    canary: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    exports: Arc<Exports>,
}

impl Counters {
    fn snapshot(&self) -> Progress {
        Progress {
            sent: self.sent.load(Ordering::Relaxed),
            canary: self.canary.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            spans_exported: self.exports.spans.load(Ordering::Relaxed),
            spans_failed: self.exports.failed.load(Ordering::Relaxed),
            export_error: self.exports.first_error(),
        }
    }
}

/// How request `i` is tagged: exactly `share` of any run of requests is canary, spread evenly,
/// and the stable rest alternates between an explicit tag and none (the gateway's default).
fn tag(i: u64, share: f64) -> Option<&'static str> {
    let canary = ((i + 1) as f64 * share).floor() > (i as f64 * share).floor();
    if canary {
        Some("canary")
    } else if i.is_multiple_of(2) {
        Some("stable")
    } else {
        None
    }
}

pub(super) struct Traffic {
    counters: Arc<Counters>,
    stop: CancellationToken,
    done: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Traffic {
    pub(super) fn start(gateway: String, options: &DemoOptions, exports: Arc<Exports>) -> Traffic {
        let counters = Arc::new(Counters {
            sent: AtomicU64::new(0),
            canary: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            exports,
        });
        let stop = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        let task = tokio::spawn(drive(
            gateway,
            options.rate,
            options.canary_share,
            options.requests,
            counters.clone(),
            stop.clone(),
            done_tx,
        ));
        Traffic {
            counters,
            stop,
            done,
            task,
        }
    }

    pub(super) fn progress(&self) -> Progress {
        self.counters.snapshot()
    }

    pub(super) async fn finished(&mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }

    /// Stops sending and waits for every request in flight to be answered; the returned
    /// counters go on counting exports.
    pub(super) async fn stop(self) -> impl Fn() -> Progress {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!("demo traffic stopped abnormally: {e}");
        }
        let counters = self.counters;
        move || counters.snapshot()
    }
}

async fn drive(
    gateway: String,
    rate: f64,
    share: f64,
    limit: Option<u64>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    done: watch::Sender<bool>,
) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    let mut i = 0u64;
    while limit.is_none_or(|n| i < n) {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = report.tick() => {
                tracing::info!("demo: {}", counters.snapshot());
                continue;
            }
            _ = tick.tick() => {}
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = in_flight.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stage = tag(i, share);
        let mut req = http::Request::get(format!(
            "{gateway}/checkout?user=u{}&item=sku-{}",
            i % 50,
            i % 7
        ));
        if let Some(s) = stage {
            req = req.header(STAGE_HEADER, s);
        }
        let req = req
            .body(Empty::new())
            .expect("a request built from valid parts");
        counters.sent.fetch_add(1, Ordering::Relaxed);
        if stage == Some("canary") {
            counters.canary.fetch_add(1, Ordering::Relaxed);
        }
        let (client, counters) = (client.clone(), counters.clone());
        tokio::spawn(async move {
            let ok = match tokio::time::timeout(REQUEST_TIMEOUT, checkout(&client, req)).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!("demo: checkout failed: {e}");
                    false
                }
                Err(_) => {
                    tracing::warn!("demo: checkout got no answer within {REQUEST_TIMEOUT:?}");
                    false
                }
            };
            let counter = if ok { &counters.ok } else { &counters.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        i += 1;
    }
    // Every request sent is answered before the services stop.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    let _ = done.send(true);
}

/// One checkout, read to the end: `Err` says why it failed.
async fn checkout(
    client: &Client<HttpConnector, Empty<Bytes>>,
    req: http::Request<Empty<Bytes>>,
) -> Result<(), String> {
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_share_is_exact_and_stable_requests_alternate() {
        let tags: Vec<_> = (0..100).map(|i| tag(i, 0.3)).collect();
        assert_eq!(tags.iter().filter(|t| **t == Some("canary")).count(), 30);
        assert!(tags.contains(&None));
        assert!(tags.contains(&Some("stable")));
        assert!((0..100).all(|i| tag(i, 0.0) != Some("canary")));
        assert!((0..100).all(|i| tag(i, 1.0) == Some("canary")));
    }
}
