//! Certificates made for one test (rcgen): a CA, a server certificate for
//! `127.0.0.1` and `localhost` signed by it, and a client certificate signed
//! by it, written as PEM files for the exporter's `OTEL_EXPORTER_OTLP_*`
//! variables; and the rustls server configuration of a receiver that uses
//! them. The files go with the value.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the certificates it signed.
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM): `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub ca_file: PathBuf,
    /// The client's certificate (PEM): `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.
    pub client_cert_file: PathBuf,
    /// The client's key (PEM): `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
    pub client_key_file: PathBuf,
    ca: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    /// The server's certificate and key (PEM), for tonic.
    pub server_pem: (String, String),
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// Makes the CA and the certificates.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lucid test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");

        let server_key = KeyPair::generate().expect("a server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server parameters")
            .signed_by(&server_key, &ca)
            .expect("a server certificate");

        let client_key = KeyPair::generate().expect("a client key");
        let mut client_params =
            CertificateParams::new(vec!["lucid-exporter".to_owned()]).expect("client parameters");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "lucid-exporter");
        let client = client_params
            .signed_by(&client_key, &ca)
            .expect("a client certificate");

        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("writing a certificate file");
            path
        };
        TestPki {
            ca_file: write("ca.pem", &ca.pem()),
            client_cert_file: write("client.pem", &client.pem()),
            client_key_file: write("client-key.pem", &client_key.serialize_pem()),
            ca: ca.der().clone(),
            server_cert: server.der().clone(),
            server_key: server_key.serialize_der(),
            server_pem: (server.pem(), server_key.serialize_pem()),
            _dir: dir,
        }
    }

    /// A receiver's TLS configuration; with `client_auth`, clients must
    /// present a certificate signed by the CA.
    pub fn server_config(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.clone()).expect("the CA as a root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        Arc::new(
            builder
                .with_single_cert(vec![self.server_cert.clone()], key)
                .expect("the server certificate"),
        )
    }
}
