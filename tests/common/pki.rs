//! Certificates made at test time with rcgen: a CA, server certificates for 127.0.0.1 and
//! localhost, and a client certificate for mutual TLS; token files beside them.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub const INGEST_TOKEN: &str = "ingest-0123456789abcdef";
pub const READ_TOKEN: &str = "read-0123456789abcdef01";

pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ingest_tokens: PathBuf,
    pub read_tokens: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "grayscope test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let issuer = Issuer::new(params, key);
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("ingest.tokens"), format!("# ingest\n{INGEST_TOKEN}\n")).unwrap();
        std::fs::write(path("read.tokens"), format!("{READ_TOKEN}\n")).unwrap();
        let pki = Pki {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            ingest_tokens: path("ingest.tokens"),
            read_tokens: path("read.tokens"),
            issuer,
            dir,
        };
        pki.write_server("grayscope one");
        let (cert, key) = pki.issue("probe client", ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(&pki.client_cert, cert).unwrap();
        std::fs::write(&pki.client_key, key).unwrap();
        pki
    }

    /// (certificate PEM, key PEM) for 127.0.0.1 and localhost, named `cn`.
    pub fn issue(&self, cn: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a new server certificate and key over the current ones; returns the certificate's
    /// DER, to recognise it on a connection.
    pub fn write_server(&self, cn: &str) -> Vec<u8> {
        let (cert, key) = self.issue(cn, ExtendedKeyUsagePurpose::ServerAuth);
        // The key first: a reload between the two writes sees a pair that does not match and
        // keeps the old one, as with a real rotation.
        std::fs::write(&self.key, &key).unwrap();
        std::fs::write(&self.cert, &cert).unwrap();
        rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap()
    }

    /// A client configuration trusting the CA, optionally presenting the client certificate.
    pub fn client_config(&self, with_cert: bool) -> rustls::ClientConfig {
        grayscope::security::ClientTls {
            ca: Some(self.ca.clone()),
            identity: with_cert.then(|| (self.client_cert.clone(), self.client_key.clone())),
        }
        .config()
        .unwrap()
    }
}
