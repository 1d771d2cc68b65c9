//! The client side, for grayscope's own commands (`demo`, `probe`, `loadgen`) talking to a
//! protected collector: which CA to trust, which client certificate to present, which token to
//! send. The flags take the OpenTelemetry exporter's environment variables as defaults, so a shell
//! set up for an instrumented service works unchanged.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ClientTls, SecurityError, Tokens};

#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "TLS and tokens")]
pub struct ClientAuthArgs {
    /// PEM CA the collector's certificate chains to; https endpoints only [default: the system's
    /// roots]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for a collector that requires mutual TLS
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// File whose first token is sent as `Authorization: Bearer` with the spans (an ingest token)
    #[arg(long, env = "GRAYSCOPE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// What a client presents: TLS settings and the token to send, if any.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth {
    pub tls: ClientTls,
    /// `Bearer ...`, the whole header value.
    pub authorization: Option<String>,
}

impl ClientAuthArgs {
    pub fn resolve(&self) -> Result<ClientAuth, SecurityError> {
        Ok(ClientAuth {
            tls: ClientTls {
                ca: self.ca_file.clone(),
                identity: self.client_cert.clone().zip(self.client_key.clone()),
            },
            authorization: self.token_file.as_ref().map(read_token).transpose()?,
        })
    }
}

/// `Bearer <the file's first token>`.
pub fn read_token(path: &PathBuf) -> Result<String, SecurityError> {
    let text = std::fs::read(path).map_err(|source| SecurityError::Read {
        path: path.clone(),
        source,
    })?;
    let tokens = Tokens::parse(&text).map_err(|e| SecurityError::In {
        what: "token file",
        files: path.display().to_string(),
        source: Box::new(e),
    })?;
    Ok(format!("Bearer {}", tokens.first()))
}

impl ClientAuth {
    /// A rustls configuration for hyper or reqwest clients.
    pub fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, SecurityError> {
        self.tls.config().map(Arc::new)
    }

    /// A reqwest client that trusts what `self` says and presents its certificate.
    pub fn reqwest(&self) -> Result<reqwest::ClientBuilder, SecurityError> {
        Ok(reqwest::Client::builder().tls_backend_preconfigured(self.tls.config()?))
    }
}
