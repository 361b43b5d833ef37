//! The HTTP client every connector uses ([`HttpClient`]): rustls with verification always on,
//! plus the operator's extra CA certificates (`ca_file`), checked when a workflow starts.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::direct::{
    DirectClient, MAX_RESPONSE_BYTES, Received, SendFailure, proxy_configured, read_limited,
};
use crate::ConnectorError;

/// The HTTP client of one connector: reqwest builds its requests (and fetches its tokens);
/// API calls go out through [`DirectClient`] unless the environment names a proxy (see
/// `direct.rs` for why).
#[derive(Debug, Clone)]
pub struct HttpClient {
    reqwest: reqwest::Client,
    direct: Option<DirectClient>,
    /// The longest response body read (see [`MAX_RESPONSE_BYTES`]).
    body_limit: usize,
}

impl HttpClient {
    /// The reqwest client: requests are built with it, tokens fetched through it.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.reqwest
    }

    /// Whether API calls take the direct path (no proxy configured).
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The same client sending through reqwest, as it does when a proxy is configured.
    #[cfg(test)]
    pub(super) fn through_reqwest(mut self) -> HttpClient {
        self.direct = None;
        self
    }

    /// The same client reading response bodies of at most `limit` bytes on both paths.
    #[cfg(test)]
    pub(super) fn with_body_limit(mut self, limit: usize) -> HttpClient {
        self.body_limit = limit;
        self
    }

    /// Sends `request` and reads its whole response (at most [`MAX_RESPONSE_BYTES`]).
    pub(super) async fn send(&self, request: reqwest::Request) -> Result<Received, SendFailure> {
        if let Some(direct) = &self.direct {
            return direct.send(request, self.body_limit).await;
        }
        let mut response = self
            .reqwest
            .execute(request)
            .await
            .map_err(SendFailure::failed)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let body = read_limited(response, self.body_limit).await?;
        Ok(Received {
            status,
            headers,
            body,
        })
    }
}

/// Builds the client every connector uses: rustls with certificate verification always on,
/// the built-in web PKI roots, plus `extra_ca_pem` (one or more PEM certificates) when given,
/// one TLS configuration for both paths. Up to `max_in_flight` connections are kept alive
/// between calls, so a connector running at its concurrency limit never pays a TCP and TLS
/// handshake per request.
pub fn build_client(
    timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
    max_in_flight: usize,
) -> Result<HttpClient, ConnectorError> {
    let refuse = |message: String| ConnectorError::Permanent { message };
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let certificates = pem_certificates(pem)
            .map_err(|reason| refuse(format!("the extra CA certificate {reason}")))?;
        for certificate in certificates {
            roots.add(certificate).map_err(|error| {
                refuse(format!(
                    "the extra CA certificate is not a usable CA certificate: {error}"
                ))
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| refuse(format!("cannot set up TLS: {error}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connect_timeout = timeout.min(Duration::from_secs(30));
    let idle_per_host = max_in_flight.max(1);
    let reqwest = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(idle_per_host)
        .tcp_nodelay(true)
        // The services' APIs answer where they are asked; a redirect is answered as an error
        // instead of followed, so the bearer token only ever goes to the configured URL.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| refuse(format!("cannot build the HTTP client: {error}")))?;
    let direct = (!proxy_configured(|name| std::env::var(name).ok()))
        .then(|| DirectClient::new(tls, timeout, connect_timeout, idle_per_host));
    Ok(HttpClient {
        reqwest,
        direct,
        body_limit: MAX_RESPONSE_BYTES,
    })
}

/// Reads a `ca_file` and checks that it holds at least one PEM certificate, naming the file
/// in the error, so a bad file fails when a workflow starts rather than on the first request.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, ConnectorError> {
    let refuse = |message: String| ConnectorError::Permanent { message };
    let pem = std::fs::read(path).map_err(|error| {
        refuse(format!(
            "cannot read the CA file {}: {error}",
            path.display()
        ))
    })?;
    pem_certificates(&pem)
        .map_err(|reason| refuse(format!("the CA file {} {reason}", path.display())))?;
    Ok(pem)
}

/// The certificates of a PEM bundle; what is wrong (to follow the file's name) when it is not
/// PEM or holds no certificate.
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("is not valid PEM: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".to_string());
    }
    Ok(certificates)
}
