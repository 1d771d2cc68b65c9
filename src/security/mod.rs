//! Who may send spans and who may read what grayscope knows.
//!
//! The threat: grayscope listens on the network in a cluster. Without protection anyone who can
//! reach it reads trace data (services, span names, trace ids, stages) from the dashboard and the
//! APIs, and sends forged spans that fail (or, with forged clean traces, dilute) a rollout through
//! the gate. So every listener can speak TLS (with mutual TLS), and two sets of bearer tokens
//! guard ingest and reading; a listener off loopback that has neither is refused at start
//! ([`crate::config::SecurityConfig`]).
//!
//! Certificates and token files are re-read when they change ([`watch`]); a connection takes the
//! configuration current when it is accepted and keeps it, so rotation never drops one.

pub mod client;
pub mod guard;
pub mod session;
pub mod tls;
pub mod tokens;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::SecurityConfig;
pub use client::{ClientAuth, ClientAuthArgs};
pub use guard::{AuthMetrics, Guard, OPEN_PATHS, Refused};
pub use tls::{ClientTls, ServerTls};
pub use tokens::Tokens;
pub use watch::Watched;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("{0}")]
    Rustls(rustls::Error),
    #[error("{message}")]
    Tokens { message: String },
    #[error("{what} ({files}): {source}")]
    In {
        what: &'static str,
        files: String,
        source: Box<SecurityError>,
    },
}

/// What `serve` loaded from the security settings: each listener's TLS, the token sets, and how
/// to ask the other instances of a cluster.
pub struct Security {
    pub otlp_grpc_tls: Option<Arc<ServerTls>>,
    pub otlp_http_tls: Option<Arc<ServerTls>>,
    pub http_tls: Option<Arc<ServerTls>>,
    pub ingest: Option<Arc<Watched<Tokens>>>,
    pub read: Option<Arc<Watched<Tokens>>>,
    pub peers: PeerAuth,
}

/// How this instance asks the other instances' APIs: over TLS when its own API speaks TLS (they
/// share the configuration), with a read token when reading needs one.
#[derive(Clone, Default)]
pub struct PeerAuth {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Checked in the peers' certificates instead of the host of their advertised address.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    pub read: Option<Arc<Watched<Tokens>>>,
}

impl PeerAuth {
    /// The `Authorization` header value, if reading needs a token.
    pub fn authorization(&self) -> Option<String> {
        self.read
            .as_ref()
            .map(|t| format!("Bearer {}", t.get().first()))
    }
}

impl Security {
    /// Loads every file now; an error names the file and what is wrong with it.
    pub fn load(cfg: &SecurityConfig) -> Result<Security, SecurityError> {
        let server = |t: &Option<crate::config::TlsFiles>| t.as_ref().map(tls::server).transpose();
        let tokens = |what: &'static str, p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| Watched::open(what, vec![p.clone()], |f| Tokens::parse(&f[0])))
                .transpose()
        };
        let read = tokens("read tokens", &cfg.read_tokens)?;
        let peer_tls = match &cfg.http_tls {
            None => None,
            Some(files) => Some(Arc::new(
                ClientTls {
                    ca: cfg.peer_ca.clone(),
                    // The API's own certificate identifies this instance where the API requires
                    // client certificates.
                    identity: files
                        .client_ca
                        .as_ref()
                        .map(|_| (files.cert.clone(), files.key.clone())),
                }
                .config()?,
            )),
        };
        Ok(Security {
            otlp_grpc_tls: server(&cfg.otlp_grpc_tls)?,
            otlp_http_tls: server(&cfg.otlp_http_tls)?,
            http_tls: server(&cfg.http_tls)?,
            ingest: tokens("ingest tokens", &cfg.ingest_tokens)?,
            peers: PeerAuth {
                tls: peer_tls,
                server_name: cfg
                    .peer_server_name
                    .as_ref()
                    .and_then(|n| rustls::pki_types::ServerName::try_from(n.clone()).ok()),
                read: read.clone(),
            },
            read,
        })
    }

    /// Re-reads every file when it changes, until `stop`.
    pub fn watch(&self, stop: &CancellationToken) {
        for t in [&self.otlp_grpc_tls, &self.otlp_http_tls, &self.http_tls]
            .into_iter()
            .flatten()
        {
            t.spawn(stop.clone());
        }
        for t in [&self.ingest, &self.read].into_iter().flatten() {
            t.spawn(stop.clone());
        }
    }
}
