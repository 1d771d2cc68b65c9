//! Asking the other instances of a cluster for a trace they are still assembling: the only thing
//! not in the shared store is what each instance holds in memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::membership::Member;
use crate::model::TraceId;
use crate::security::PeerAuth;

/// How long one peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks every peer at once for its local view of trace `id`; the first that holds it answers. Over
/// TLS and with a read token when `auth` says so: the instances of a cluster share one
/// configuration.
pub async fn find(auth: &PeerAuth, peers: Vec<Member>, id: TraceId) -> Option<(Member, Bytes)> {
    if peers.is_empty() {
        return None;
    }
    let (scheme, connector) = match &auth.tls {
        Some(tls) => {
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.as_ref().clone())
                .https_only();
            let b = match &auth.server_name {
                Some(name) => b.with_server_name_resolver(
                    hyper_rustls::FixedServerNameResolver::new(name.clone()),
                ),
                None => b,
            };
            ("https", b.enable_http1().build())
        }
        None => (
            "http",
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::security::ClientTls::plain())
                .https_or_http()
                .enable_http1()
                .build(),
        ),
    };
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let authorization = auth.authorization();
    let mut asks = tokio::task::JoinSet::new();
    for m in peers {
        let (client, authorization) = (client.clone(), authorization.clone());
        asks.spawn(async move {
            let uri = format!("{scheme}://{}/api/v1/traces/{id}?local=true", m.address);
            let ask = async {
                let mut req = http::Request::get(uri);
                if let Some(a) = authorization {
                    req = req.header(http::header::AUTHORIZATION, a);
                }
                let req = req.body(Empty::new()).ok()?;
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
