//! The HTTP client every connector uses: rustls with verification always on, plus the
//! operator's extra CA certificates (`ca_file`), checked when a workflow starts.

use std::time::Duration;

use crate::ConnectorError;

/// Builds the reqwest client every connector uses: rustls with certificate verification always
/// on, the built-in web PKI roots, plus `extra_ca_pem` (one or more PEM certificates) when given.
/// Up to `max_in_flight` connections are kept alive between calls, so a connector running at
/// its concurrency limit never pays a TCP and TLS handshake per request.
pub fn build_client(
    timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
    max_in_flight: usize,
) -> Result<reqwest::Client, ConnectorError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .pool_max_idle_per_host(max_in_flight.max(1))
        .tcp_nodelay(true)
        // The services' APIs answer where they are asked; a redirect is answered as an error
        // instead of followed, so the bearer token only ever goes to the configured URL.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = extra_ca_pem {
        let certificates = pem_certificates(pem).map_err(|reason| ConnectorError::Permanent {
            message: format!("the extra CA certificate {reason}"),
        })?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|error| ConnectorError::Permanent {
        message: format!("cannot build the HTTP client: {error}"),
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
fn pem_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|error| format!("is not valid PEM: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".to_string());
    }
    Ok(certificates)
}
