//! rustls configurations: a listener's (certificate, key, and for mutual TLS the CA its clients'
//! certificates must chain to), rebuilt when the files change; and a client's, for grayscope's own
//! commands and for asking the other instances of a cluster.
//!
//! Everything uses the ring provider explicitly, so that no process-wide default must be installed
//! first and no second crypto library is linked.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::SecurityError;
use super::watch::Watched;
use crate::config::TlsFiles;

/// A listener's server configuration, current as of the last change of its files.
pub type ServerTls = Watched<Arc<ServerConfig>>;

/// Loads `files` now (an error names the file and what is wrong with it).
pub fn server(files: &TlsFiles) -> Result<Arc<ServerTls>, SecurityError> {
    let load = if files.client_ca.is_some() {
        server_config_mutual
    } else {
        server_config
    };
    let mut paths = vec![files.cert.clone(), files.key.clone()];
    paths.extend(files.client_ca.clone());
    Watched::open("TLS certificate", paths, load)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &[Vec<u8>]) -> Result<Arc<ServerConfig>, SecurityError> {
    build_server(files, None)
}

fn server_config_mutual(files: &[Vec<u8>]) -> Result<Arc<ServerConfig>, SecurityError> {
    build_server(files, Some(&files[2]))
}

fn build_server(
    files: &[Vec<u8>],
    client_ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, SecurityError> {
    let chain = certificates(&files[0], "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&files[1]).map_err(|e| SecurityError::Pem {
        what: "private key",
        message: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(SecurityError::Rustls)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(ca, "client CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| SecurityError::Pem {
                    what: "client CA",
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(SecurityError::Rustls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::Pem {
            what,
            message: "no PEM certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn roots(pem: &[u8], what: &'static str) -> Result<RootCertStore, SecurityError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots.add(cert).map_err(|e| SecurityError::Pem {
            what,
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// How a client of grayscope (or of a service) checks the server and identifies itself.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// Trust only this CA; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for a server that requires mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// A configuration for connectors that only ever speak plain text: it trusts nothing.
    pub fn plain() -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }

    /// The rustls configuration, without ALPN (HTTP clients set their own).
    pub fn config(&self) -> Result<ClientConfig, SecurityError> {
        let roots = match &self.ca {
            Some(path) => roots(&read(path)?, "CA")?,
            None => system_roots(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(SecurityError::Rustls)?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certificates(&read(cert)?, "client certificate")?;
                let key =
                    PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| SecurityError::Pem {
                        what: "client key",
                        message: e.to_string(),
                    })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(SecurityError::Rustls)
            }
        }
    }

    /// The CA's PEM, for clients that take it as bytes (tonic).
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, SecurityError> {
        self.ca.as_deref().map(read).transpose()
    }

    /// The client certificate's and key's PEM, for clients that take them as bytes (tonic).
    pub fn identity_pem(&self) -> Result<Option<IdentityPem>, SecurityError> {
        self.identity
            .as_ref()
            .map(|(c, k)| {
                Ok(IdentityPem {
                    cert: read(c)?,
                    key: read(k)?,
                })
            })
            .transpose()
    }
}

/// A client certificate chain and its key, as PEM.
pub struct IdentityPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The system's trusted roots; certificates it cannot parse are skipped, as browsers do.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system certificates: {e}");
    }
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    tracing::debug!("system certificates: {added} trusted, {skipped} skipped");
    roots
}
