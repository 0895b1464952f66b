//! TLS for `https://` endpoints, with rustls (ring): the host's trusted root
//! certificates, or the CA certificates `OTEL_EXPORTER_OTLP_CERTIFICATE`
//! names instead, and a client certificate for mutual TLS. Files are read
//! once, at start-up, and a problem with one stops the exporter with a
//! message naming the variable and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::otlp::causes;
use super::target::TlsFiles;

/// A TLS setting the exporter cannot use.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or holds nothing usable.
    #[error("{name}={}: {why}", path.display())]
    File {
        /// The variable that named it.
        name: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The host has no trusted root certificates.
    #[error("no trusted root certificates found on this host{0}: install the ca-certificates package, or name the collector's CA in OTEL_EXPORTER_OTLP_CERTIFICATE")]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("setting up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

fn certificates(name: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File {
        name,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The rustls client configuration for `files` (`None`: a plain `http://`
/// endpoint, for which the configuration is never used and trusts nothing).
pub fn client_config(files: Option<&TlsFiles>) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let mut roots = RootCertStore::empty();
    let Some(files) = files else {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    };
    match &files.ca {
        Some((name, path)) => {
            for cert in certificates(name, path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    name,
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            // Unparsable certificates in the store are skipped, as browsers do.
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let why = native
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(TlsError::NoRoots(why));
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    match (&files.client_certificate, &files.client_key) {
        (Some((cert_name, cert_path)), Some((key_name, key_path))) => {
            let chain = certificates(cert_name, cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::File {
                name: key_name,
                path: key_path.clone(),
                why: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::File {
                    name: key_name,
                    path: key_path.clone(),
                    why: format!("does not go with {cert_name}: {e}"),
                })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Whether an error comes from the TLS handshake (an untrusted or wrong
/// certificate, a peer that does not speak TLS).
pub fn handshake_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|s| s.downcast_ref::<rustls::Error>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn unusable_certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = TlsFiles {
            ca: Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", empty.clone())),
            ..Default::default()
        };
        let err = client_config(Some(&files)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "OTEL_EXPORTER_OTLP_CERTIFICATE={}",
                empty.display()
            )),
            "{err}"
        );
        let missing = TlsFiles {
            ca: Some((
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                PathBuf::from("/nonexistent.pem"),
            )),
            ..Default::default()
        };
        let err = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }

    #[test]
    fn the_hosts_roots_are_trusted_by_default() {
        // The development machine and CI have Debian's ca-certificates.
        assert!(client_config(Some(&TlsFiles::default())).is_ok());
        assert!(client_config(None).is_ok());
    }
}
