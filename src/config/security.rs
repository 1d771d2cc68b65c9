//! Who may send and who may read: TLS per listener (or for all), mutual TLS, bearer-token files,
//! and the refusal to listen off loopback unprotected.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Args, Deserialize, Serialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case")]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// PEM certificate chain for every listener (TLS); per-listener flags override it
    #[arg(long, env = "GRAYSCOPE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "GRAYSCOPE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA for mutual TLS on every TLS listener: clients must present a certificate it issued
    #[arg(long, env = "GRAYSCOPE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// TLS certificate of the OTLP/gRPC listener (and the gRPC query API on it)
    #[arg(long, env = "GRAYSCOPE_OTLP_GRPC_TLS_CERT", value_name = "FILE")]
    pub otlp_grpc_tls_cert: Option<PathBuf>,
    /// Key of --otlp-grpc-tls-cert
    #[arg(long, env = "GRAYSCOPE_OTLP_GRPC_TLS_KEY", value_name = "FILE")]
    pub otlp_grpc_tls_key: Option<PathBuf>,
    /// Client CA (mutual TLS) of the OTLP/gRPC listener
    #[arg(long, env = "GRAYSCOPE_OTLP_GRPC_TLS_CLIENT_CA", value_name = "FILE")]
    pub otlp_grpc_tls_client_ca: Option<PathBuf>,
    /// TLS certificate of the OTLP/HTTP listener
    #[arg(long, env = "GRAYSCOPE_OTLP_HTTP_TLS_CERT", value_name = "FILE")]
    pub otlp_http_tls_cert: Option<PathBuf>,
    /// Key of --otlp-http-tls-cert
    #[arg(long, env = "GRAYSCOPE_OTLP_HTTP_TLS_KEY", value_name = "FILE")]
    pub otlp_http_tls_key: Option<PathBuf>,
    /// Client CA (mutual TLS) of the OTLP/HTTP listener
    #[arg(long, env = "GRAYSCOPE_OTLP_HTTP_TLS_CLIENT_CA", value_name = "FILE")]
    pub otlp_http_tls_client_ca: Option<PathBuf>,
    /// TLS certificate of the API and dashboard listener (--http)
    #[arg(long, env = "GRAYSCOPE_HTTP_TLS_CERT", value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,
    /// Key of --http-tls-cert
    #[arg(long, env = "GRAYSCOPE_HTTP_TLS_KEY", value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,
    /// Client CA (mutual TLS) of the API and dashboard listener
    #[arg(long, env = "GRAYSCOPE_HTTP_TLS_CLIENT_CA", value_name = "FILE")]
    pub http_tls_client_ca: Option<PathBuf>,
    /// File of bearer tokens that may send spans, one per line (re-read when it changes)
    #[arg(long, env = "GRAYSCOPE_INGEST_TOKENS", value_name = "FILE")]
    pub ingest_tokens: Option<PathBuf>,
    /// File of bearer tokens that may read: the JSON and gRPC query APIs, the gate, /metrics and
    /// the dashboard's login (re-read when it changes)
    #[arg(long, env = "GRAYSCOPE_READ_TOKENS", value_name = "FILE")]
    pub read_tokens: Option<PathBuf>,
    /// CA that other instances' API certificates chain to, for asking them for traces
    /// [default: the system's roots]
    #[arg(long, env = "GRAYSCOPE_PEER_CA", value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
    /// The name other instances' API certificates are checked against, when it is not the host of
    /// their advertised address (pods advertise their IP; certificates name the Service)
    /// [default: the advertised host]
    #[arg(long, env = "GRAYSCOPE_PEER_SERVER_NAME", value_name = "NAME")]
    pub peer_server_name: Option<String>,
    /// Listen on non-loopback addresses with neither TLS nor tokens (when a sidecar or mesh
    /// terminates TLS and authenticates in front of grayscope)
    #[arg(long, env = "GRAYSCOPE_ALLOW_INSECURE_LISTEN")]
    #[serde(default)]
    pub allow_insecure_listen: bool,
}

/// A listener's TLS files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate that chains to this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Security settings, resolved: which listener speaks TLS with which files, and the token files.
/// Printed (`--print-config`) as the per-listener flags that give the same settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    pub otlp_grpc_tls: Option<TlsFiles>,
    pub otlp_http_tls: Option<TlsFiles>,
    pub http_tls: Option<TlsFiles>,
    pub ingest_tokens: Option<PathBuf>,
    pub read_tokens: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
    pub peer_server_name: Option<String>,
    pub allow_insecure_listen: bool,
}

impl Serialize for SecurityConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let files = |t: &Option<TlsFiles>| {
            t.as_ref().map_or((None, None, None), |t| {
                (
                    Some(t.cert.clone()),
                    Some(t.key.clone()),
                    t.client_ca.clone(),
                )
            })
        };
        let (grpc_cert, grpc_key, grpc_ca) = files(&self.otlp_grpc_tls);
        let (otlp_http_cert, otlp_http_key, otlp_http_ca) = files(&self.otlp_http_tls);
        let (http_cert, http_key, http_ca) = files(&self.http_tls);
        SecurityArgs {
            otlp_grpc_tls_cert: grpc_cert,
            otlp_grpc_tls_key: grpc_key,
            otlp_grpc_tls_client_ca: grpc_ca,
            otlp_http_tls_cert: otlp_http_cert,
            otlp_http_tls_key: otlp_http_key,
            otlp_http_tls_client_ca: otlp_http_ca,
            http_tls_cert: http_cert,
            http_tls_key: http_key,
            http_tls_client_ca: http_ca,
            ingest_tokens: self.ingest_tokens.clone(),
            read_tokens: self.read_tokens.clone(),
            peer_ca: self.peer_ca.clone(),
            peer_server_name: self.peer_server_name.clone(),
            allow_insecure_listen: self.allow_insecure_listen,
            ..SecurityArgs::default()
        }
        .serialize(s)
    }
}

/// The three listeners' addresses, for the check of what is exposed.
pub struct Addresses {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
}

impl SecurityArgs {
    pub(super) fn or(self, file: SecurityArgs) -> SecurityArgs {
        SecurityArgs {
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            otlp_grpc_tls_cert: self.otlp_grpc_tls_cert.or(file.otlp_grpc_tls_cert),
            otlp_grpc_tls_key: self.otlp_grpc_tls_key.or(file.otlp_grpc_tls_key),
            otlp_grpc_tls_client_ca: self
                .otlp_grpc_tls_client_ca
                .or(file.otlp_grpc_tls_client_ca),
            otlp_http_tls_cert: self.otlp_http_tls_cert.or(file.otlp_http_tls_cert),
            otlp_http_tls_key: self.otlp_http_tls_key.or(file.otlp_http_tls_key),
            otlp_http_tls_client_ca: self
                .otlp_http_tls_client_ca
                .or(file.otlp_http_tls_client_ca),
            http_tls_cert: self.http_tls_cert.or(file.http_tls_cert),
            http_tls_key: self.http_tls_key.or(file.http_tls_key),
            http_tls_client_ca: self.http_tls_client_ca.or(file.http_tls_client_ca),
            ingest_tokens: self.ingest_tokens.or(file.ingest_tokens),
            read_tokens: self.read_tokens.or(file.read_tokens),
            peer_ca: self.peer_ca.or(file.peer_ca),
            peer_server_name: self.peer_server_name.or(file.peer_server_name),
            allow_insecure_listen: self.allow_insecure_listen || file.allow_insecure_listen,
        }
    }

    /// Resolves the files per listener and refuses a listener off loopback that nothing protects.
    pub fn resolve(self, addrs: &Addresses) -> Result<SecurityConfig, ConfigError> {
        let a = self;
        let listener = |prefix: &'static str,
                        cert: Option<PathBuf>,
                        key: Option<PathBuf>,
                        ca: Option<PathBuf>|
         -> Result<Option<TlsFiles>, ConfigError> {
            let (cert, key) = (cert.or(a.tls_cert.clone()), key.or(a.tls_key.clone()));
            let client_ca = ca.or(a.tls_client_ca.clone());
            match (cert, key) {
                (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                    cert,
                    key,
                    client_ca,
                })),
                (None, None) if client_ca.is_none() => Ok(None),
                (None, None) => Err(ConfigError::Invalid {
                    option: prefix,
                    message: "a client CA needs a certificate and key to serve TLS with".into(),
                }),
                (Some(_), None) => Err(ConfigError::Invalid {
                    option: prefix,
                    message:
                        "a TLS certificate needs its key (--tls-key or the listener's -tls-key)"
                            .into(),
                }),
                (None, Some(_)) => Err(ConfigError::Invalid {
                    option: prefix,
                    message:
                        "a TLS key needs its certificate (--tls-cert or the listener's -tls-cert)"
                            .into(),
                }),
            }
        };
        let cfg = SecurityConfig {
            otlp_grpc_tls: listener(
                "otlp-grpc-tls-cert",
                a.otlp_grpc_tls_cert.clone(),
                a.otlp_grpc_tls_key.clone(),
                a.otlp_grpc_tls_client_ca.clone(),
            )?,
            otlp_http_tls: listener(
                "otlp-http-tls-cert",
                a.otlp_http_tls_cert.clone(),
                a.otlp_http_tls_key.clone(),
                a.otlp_http_tls_client_ca.clone(),
            )?,
            http_tls: listener(
                "http-tls-cert",
                a.http_tls_cert.clone(),
                a.http_tls_key.clone(),
                a.http_tls_client_ca.clone(),
            )?,
            ingest_tokens: a.ingest_tokens.clone(),
            read_tokens: a.read_tokens.clone(),
            peer_ca: a.peer_ca.clone(),
            peer_server_name: match &a.peer_server_name {
                Some(n) if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() => {
                    return Err(ConfigError::Invalid {
                        option: "peer-server-name",
                        message: format!("'{n}' is not a DNS name or IP address"),
                    });
                }
                n => n.clone(),
            },
            allow_insecure_listen: a.allow_insecure_listen,
        };
        if !cfg.allow_insecure_listen {
            cfg.refuse_exposed(addrs)?;
        }
        Ok(cfg)
    }
}

impl SecurityConfig {
    /// What is exposed, though allowed, on listeners off loopback: logged at start.
    pub fn warnings(&self, addrs: &Addresses) -> Vec<String> {
        let (ingest, read) = (self.ingest_tokens.is_some(), self.read_tokens.is_some());
        let listeners = [
            (
                "OTLP/gRPC",
                addrs.otlp_grpc,
                &self.otlp_grpc_tls,
                ingest && read,
                "send spans and read traces",
            ),
            (
                "OTLP/HTTP",
                addrs.otlp_http,
                &self.otlp_http_tls,
                ingest,
                "send spans",
            ),
            (
                "the API",
                addrs.http,
                &self.http_tls,
                read,
                "read traces, findings and the gate",
            ),
        ];
        let mut out = Vec::new();
        for (what, addr, tls, tokens, can) in listeners {
            if addr.ip().is_loopback() {
                continue;
            }
            let mutual = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            match (tls.is_some(), tokens || mutual) {
                (false, false) => out.push(format!(
                    "{what} listens on {addr} with neither TLS nor tokens (--allow-insecure-listen): anyone who reaches it can {can}"
                )),
                (false, true) => out.push(format!(
                    "{what} on {addr} takes bearer tokens without TLS: they cross the network in clear text unless a sidecar encrypts it"
                )),
                (true, false) => out.push(format!(
                    "{what} on {addr} speaks TLS but checks no token or client certificate: anyone who reaches it can {can}"
                )),
                (true, true) => {}
            }
        }
        out
    }

    /// Each listener off loopback needs TLS or the tokens of everything it serves.
    fn refuse_exposed(&self, addrs: &Addresses) -> Result<(), ConfigError> {
        let (ingest, read) = (self.ingest_tokens.is_some(), self.read_tokens.is_some());
        let checks = [
            (
                "otlp-grpc",
                addrs.otlp_grpc,
                self.otlp_grpc_tls.is_some() || (ingest && read),
                "anyone who reaches it could send spans and read traces through the gRPC query API: give --tls-cert/--tls-key, or both --ingest-tokens and --read-tokens",
            ),
            (
                "otlp-http",
                addrs.otlp_http,
                self.otlp_http_tls.is_some() || ingest,
                "anyone who reaches it could send spans: give --tls-cert/--tls-key or --ingest-tokens",
            ),
            (
                "http",
                addrs.http,
                self.http_tls.is_some() || read,
                "anyone who reaches it could read traces, findings and the gate: give --tls-cert/--tls-key or --read-tokens",
            ),
        ];
        for (option, addr, protected, why) in checks {
            if !addr.ip().is_loopback() && !protected {
                return Err(ConfigError::Invalid {
                    option,
                    message: format!(
                        "refusing to listen on {addr} with neither TLS nor tokens: {why}; or --allow-insecure-listen if a sidecar terminates TLS and authenticates in front of grayscope"
                    ),
                });
            }
        }
        Ok(())
    }
}
