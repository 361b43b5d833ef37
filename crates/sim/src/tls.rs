//! HTTPS for the simulators: the rustls server configuration from a PEM certificate chain and
//! key (the listener is `conduit_base::https::TlsListener`).
//!
//! The real services only answer over HTTPS, and some clients refuse anything else (Microsoft's
//! Dataverse SDK for Python rejects an `http://` organization URL before sending a byte), so a
//! simulator can be served over TLS with a certificate the client is told to trust.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::SimError;

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first (`-----BEGIN CERTIFICATE-----` blocks).
    pub cert_chain_pem: Vec<u8>,
    /// The private key in PKCS#8, PKCS#1 or SEC1 PEM.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// The rustls server configuration for `identity`.
pub fn server_config(identity: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, SimError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(
        &identity.cert_chain_pem,
    )
    .collect::<Result<_, _>>()
    .map_err(|error| {
        SimError::Tls(format!(
            "the certificate is not valid PEM ({error}); give a PEM certificate chain, leaf first"
        ))
    })?;
    if chain.is_empty() {
        return Err(SimError::Tls(
            "the certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----); give a PEM certificate chain, leaf first".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|error| {
        SimError::Tls(format!(
            "the key holds no usable PEM private key ({error}); give the certificate's key in PKCS#8, PKCS#1 or SEC1 PEM"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|error| {
            SimError::Tls(format!(
                "the certificate and key cannot be used together ({error}); check that the key belongs to the certificate"
            ))
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> TlsIdentity {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        TlsIdentity {
            cert_chain_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    fn problem(identity: &TlsIdentity) -> String {
        match server_config(identity) {
            Err(SimError::Tls(problem)) => problem,
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }

    #[test]
    fn a_matching_pair_is_accepted_and_bad_ones_say_what_is_wrong() {
        let good = identity();
        assert!(server_config(&good).is_ok());
        let no_cert = TlsIdentity {
            cert_chain_pem: b"not a certificate".to_vec(),
            ..good.clone()
        };
        assert!(problem(&no_cert).contains("holds no PEM certificate"));
        let no_key = TlsIdentity {
            key_pem: b"not a key".to_vec(),
            ..good.clone()
        };
        assert!(problem(&no_key).contains("no usable PEM private key"));
        let other_key = TlsIdentity {
            key_pem: identity().key_pem,
            ..good
        };
        assert!(problem(&other_key).contains("cannot be used together"));
        assert!(!format!("{other_key:?}").contains("PRIVATE KEY"));
    }
}
