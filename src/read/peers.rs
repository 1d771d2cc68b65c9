//! Asking the other instances of a cluster for a trace they are still assembling: the only thing
//! not in the shared store is what each instance holds in memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::membership::Member;
use crate::model::TraceId;

/// How long one peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks every peer at once for its local view of trace `id`; the first that holds it answers.
pub async fn find(peers: Vec<Member>, id: TraceId) -> Option<(Member, Bytes)> {
    if peers.is_empty() {
        return None;
    }
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut asks = tokio::task::JoinSet::new();
    for m in peers {
        let client = client.clone();
        asks.spawn(async move {
            let uri = format!("http://{}/api/v1/traces/{id}?local=true", m.address);
            let ask = async {
                let req = http::Request::get(uri).body(Empty::new()).ok()?;
                let resp = client.request(req).await.ok()?;
                if resp.status() != http::StatusCode::OK {
                    return None;
                }
                resp.into_body().collect().await.ok().map(|b| b.to_bytes())
            };
            tokio::time::timeout(PEER_TIMEOUT, ask)
                .await
                .ok()
                .flatten()
                .map(|body| (m, body))
        });
    }
    while let Some(done) = asks.join_next().await {
        if let Ok(Some(found)) = done {
            asks.abort_all();
            return Some(found);
        }
    }
    None
}
