//! HTTPS for the admin API: the rustls server configuration from the configured PEM
//! certificate and key files (the listener is `conduit_base::https::TlsListener`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate and key files of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The PEM certificate chain, leaf first (`host.admin_tls_cert`).
    pub cert: PathBuf,
    /// The PEM private key (`host.admin_tls_key`).
    pub key: PathBuf,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{setting}: cannot read {path}: {source}")]
    Read {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{setting}: {path} {problem}")]
    Pem {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error(
        "host.admin_tls_cert and host.admin_tls_key cannot be used together: {0}; check that the key belongs to the certificate"
    )]
    Config(#[source] rustls::Error),
}

/// The server configuration of the admin API's HTTPS listener.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read(&files.cert, "host.admin_tls_cert")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::Pem {
            setting: "host.admin_tls_cert",
            path: files.cert.clone(),
            problem: format!(
                "is not valid PEM ({error}); give a PEM certificate chain, leaf first"
            ),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            setting: "host.admin_tls_cert",
            path: files.cert.clone(),
            problem: "holds no PEM certificate (-----BEGIN CERTIFICATE-----); give a PEM certificate chain, leaf first".into(),
        });
    }
    let key_pem = read(&files.key, "host.admin_tls_key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Pem {
        setting: "host.admin_tls_key",
        path: files.key.clone(),
        problem: format!(
            "holds no usable PEM private key ({error}); give the certificate's key in PKCS#8, PKCS#1 or SEC1 PEM"
        ),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}
