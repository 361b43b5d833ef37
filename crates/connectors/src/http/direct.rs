//! The direct path for API calls: a request that reqwest built is sent through hyper's pooled
//! client (the one reqwest itself wraps) instead of through reqwest's client.
//!
//! Why: reqwest's client runs every request through a redirect layer even when redirects are
//! off, and that layer turns the request's URI into text and parses it as a URL twice per
//! request (once going out, once coming back). On the Campaign write path, one call per
//! record, that was ~16% of the host's instructions (BENCHMARKS.md, "Campaign connector").
//! Going under it keeps everything else: the same TLS configuration, connection pool sizing,
//! `TCP_NODELAY`, connect timeout and whole-request timeout, and no redirect is ever followed
//! (hyper's client does not follow them at all).
//!
//! reqwest also honours the proxy environment variables (`HTTPS_PROXY` and kin), which hyper's
//! client does not; when any is set, [`proxy_configured`] says so and calls go through reqwest
//! as before, proxy and all.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::StatusCode;

use super::transport_error;
use crate::ConnectorError;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderMap, HeaderValue};

/// The environment variables through which reqwest (and curl) take a proxy.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `variable` (the process environment, or a test's stand-in) names a proxy for any
/// request: then calls go through reqwest, which applies it (and `NO_PROXY`).
pub(super) fn proxy_configured(variable: impl Fn(&str) -> Option<String>) -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|name| variable(name).is_some_and(|value| !value.trim().is_empty()))
}

/// The most the host reads of one response body. A page of 5,000 wide Dataverse rows with
/// their annotations is tens of megabytes; a service (or something posing as one) that sends
/// more is refused rather than held in memory.
pub(super) const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// What came back for one request: status, headers and the whole body.
pub(super) struct Received {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Why a request got no complete response.
#[derive(Debug)]
pub(super) enum SendFailure {
    /// No complete response within the client's whole-request timeout.
    TimedOut(Duration),
    /// The response body is longer than the client reads (the limit, in bytes).
    TooLarge(usize),
    /// The request could not be made, sent or answered (its causes are chained).
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl SendFailure {
    /// A failure caused by `error`.
    pub(super) fn failed(error: impl std::error::Error + Send + Sync + 'static) -> SendFailure {
        SendFailure::Failed(Box::new(error))
    }

    /// The connector error of the call `what` (method and URL) failing this way.
    pub(super) fn into_connector_error(self, what: &str) -> ConnectorError {
        match self {
            SendFailure::TimedOut(timeout) => ConnectorError::Transient {
                message: format!("{what} failed: no complete response within {timeout:?}"),
                retry_after: None,
            },
            SendFailure::TooLarge(limit) => ConnectorError::Permanent {
                message: format!(
                    "{what} failed: the response is longer than {}, the most the host reads of one response (for a page of records, a smaller page size makes it shorter)",
                    size_text(limit)
                ),
            },
            SendFailure::Failed(error) => transport_error(&*error, what),
        }
    }
}

/// A byte count as people read it: whole MiB when it is some, bytes otherwise.
fn size_text(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// hyper's pooled HTTP/1 client over rustls (see the module doc).
#[derive(Debug, Clone)]
pub(super) struct DirectClient {
    client: Client<HttpsConnector<HttpConnector>, reqwest::Body>,
    timeout: Duration,
}

impl DirectClient {
    /// A client with `tls`, at most `idle_per_host` kept-alive connections per host, and
    /// `timeout` for each whole request (connecting, sending, the whole body back).
    pub(super) fn new(
        tls: rustls::ClientConfig,
        timeout: Duration,
        connect_timeout: Duration,
        idle_per_host: usize,
    ) -> DirectClient {
        let mut tcp = HttpConnector::new();
        // The scheme is checked by the TLS layer above, which also carries plain http.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        DirectClient { client, timeout }
    }

    /// Sends `request` and reads its whole response, refusing a body longer than `body_limit`
    /// bytes as soon as it is announced or read.
    pub(super) async fn send(
        &self,
        request: reqwest::Request,
        body_limit: usize,
    ) -> Result<Received, SendFailure> {
        let mut request =
            http::Request::<reqwest::Body>::try_from(request).map_err(SendFailure::failed)?;
        // reqwest's client adds this default; the services see the same request either way.
        request
            .headers_mut()
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(SendFailure::failed)?;
            let (parts, body) = response.into_parts();
            if declared_length(&parts.headers).is_some_and(|length| length > body_limit) {
                return Err(SendFailure::TooLarge(body_limit));
            }
            let body = Limited::new(body, body_limit)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<LengthLimitError>() {
                        SendFailure::TooLarge(body_limit)
                    } else {
                        SendFailure::Failed(error)
                    }
                })?;
            Ok(Received {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendFailure::TimedOut(self.timeout))?
    }
}

/// The body length a response announces (`Content-Length`), when it announces one.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads the whole body of a response reqwest received, refusing one longer than `limit`
/// bytes as soon as it is announced or read.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, SendFailure> {
    // reqwest takes the announced length from `Content-Length` (the headers may be gone).
    let announced = response
        .content_length()
        .and_then(|length| usize::try_from(length).ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(SendFailure::TooLarge(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(SendFailure::failed)? {
        if body.len() + chunk.len() > limit {
            return Err(SendFailure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::proxy_configured;

    #[test]
    fn any_proxy_variable_with_a_value_sends_calls_through_reqwest() {
        let only = |set: &'static str, value: &'static str| {
            move |name: &str| (name == set).then(|| value.to_string())
        };
        assert!(!proxy_configured(|_| None));
        for name in super::PROXY_VARIABLES {
            assert!(proxy_configured(only(name, "http://proxy:3128")), "{name}");
            assert!(!proxy_configured(only(name, "  ")), "{name} empty");
        }
        // NO_PROXY alone configures no proxy.
        assert!(!proxy_configured(only("NO_PROXY", "*")));
    }
}
