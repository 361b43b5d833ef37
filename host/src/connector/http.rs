//! Shared HTTP plumbing for the connectors: the TLS client, secrets, the OAuth2
//! client-credentials token cache, response classification into [`ConnectorError`], retries with
//! backoff and jitter, and pacing (a concurrency limit plus a shared "pause until" gate).
//!
//! Connector modules build their requests and read their wire formats; everything that is the
//! same for every HTTP API lives here. The usual entry point is [`ApiClient::execute`]: it takes
//! a permit from the [`Pacer`], attaches a bearer token from the [`TokenCache`], refreshes the
//! token once on a 401, retries transient failures per the [`RetryPolicy`] and hands back the
//! response of any other status for the caller to interpret (see [`HttpResponse::into_success`]).
//!
//! This module never logs or formats a secret: [`Secret`] prints `***`.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::ConnectorError;

/// How much of a response body an error message quotes at most.
const MAX_QUOTED_BODY: usize = 300;

/// A credential (client secret, access token) that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Builds the reqwest client every connector uses: rustls with certificate verification always
/// on, the built-in web PKI roots, plus `extra_ca_pem` (one or more PEM certificates) when given.
pub fn build_client(
    timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, ConnectorError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .pool_max_idle_per_host(64);
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

/// Parses `Retry-After`, given either as seconds or as an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some(Duration::from_secs_f64(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Finds the service's own error text in a JSON error body (Dataverse `error.message`, Azure AD
/// `error_description`, Campaign `message` with its `error_code`, `title`/`detail`), else quotes
/// the start of the body.
pub fn service_error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        // Campaign and IMS put a machine code beside `message`; it helps when asking support.
        if let Some(text) = json
            .get("message")
            .and_then(|m| m.as_str())
            .filter(|t| !t.is_empty())
            && let Some(code) = json.get("error_code").and_then(|c| c.as_str())
        {
            return format!("{text} (error_code {code})");
        }
        let candidates = [
            json.pointer("/error/message"),
            json.get("error_description"),
            json.get("message"),
            json.get("title"),
            json.get("detail"),
            json.get("error").filter(|error| error.is_string()),
        ];
        for candidate in candidates.into_iter().flatten() {
            if let Some(text) = candidate.as_str().filter(|text| !text.is_empty()) {
                return text.to_string();
            }
        }
    }
    quote_body(body)
}

/// The first few hundred characters of a body, for error messages.
fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_string();
    }
    match trimmed.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}...", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

/// Classifies a non-success response: 408, 429 and 5xx are transient (with `Retry-After`),
/// 401 is `Auth`, any other status is permanent, all carrying the service's message.
pub fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> ConnectorError {
    let message = format!(
        "{what} failed with {status}: {}",
        service_error_message(body)
    );
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        ConnectorError::Transient {
            message,
            retry_after: parse_retry_after(headers),
        }
    } else if status == StatusCode::UNAUTHORIZED {
        ConnectorError::Auth { message }
    } else {
        ConnectorError::Permanent { message }
    }
}

/// Classifies a failure to get any response: a server certificate we do not trust is `Auth`
/// (retrying cannot help, and the fix is `ca_file`); anything else (connect, reset, timeout)
/// is transient.
pub fn transport_error(error: &reqwest::Error, what: &str) -> ConnectorError {
    // reqwest's Display never includes headers, so no token can leak through it.
    let mut message = format!("{what} failed: {error}");
    let mut certificate_problem = None;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        certificate_problem = certificate_problem.or_else(|| untrusted_certificate(cause));
        source = cause.source();
    }
    if let Some(problem) = certificate_problem {
        return ConnectorError::Auth {
            message: format!(
                "{what} failed: the server's TLS certificate is not trusted ({problem}); if the service uses a private or self-signed CA, set ca_file in its config section ([dynamics] or [campaign]) to that CA's PEM file"
            ),
        };
    }
    ConnectorError::Transient {
        message,
        retry_after: None,
    }
}

/// The rustls certificate error inside one link of an error chain, if that is what it is.
fn untrusted_certificate(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    // The TLS stream reports rustls errors inside io::Errors (nested: the connector wraps the
    // stream's error again), and an io::Error's `source` skips the error it wraps, so the
    // wrappers are opened by hand.
    let mut current = cause;
    let rustls_error = loop {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            break found;
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    };
    match rustls_error {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Some(rustls_error.to_string())
        }
        _ => None,
    }
}

/// Parses a JSON body, or names the URL and what was expected when it cannot.
pub fn parse_json<T: DeserializeOwned>(
    body: &[u8],
    url: &str,
    expected: &str,
) -> Result<T, ConnectorError> {
    // Transient: a body of the wrong shape comes from a gateway or proxy glitch far more often
    // than from the record asked about, and dead-lettering good records for it loses them.
    serde_json::from_slice(body).map_err(|error| ConnectorError::Transient {
        message: format!(
            "expected {expected} from {url}, but the body is not that: {error} (body starts: {})",
            quote_body(body)
        ),
        retry_after: None,
    })
}

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1).
    pub max_attempts: u32,
    /// The backoff cap of the first retry; it doubles with each further retry.
    pub base_delay: Duration,
    /// No single wait is longer than this, whatever the service asks.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): full jitter over an exponential cap,
    /// or the service's `Retry-After` when it gave one (never more than `max_delay`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exponent = retry.saturating_sub(1).min(20);
        let cap = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let cap_millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=cap_millis))
    }
}

/// Bounds concurrent requests and lets one throttled request pause every other one, so that a
/// 429 slows the whole connector down instead of starting a retry storm.
#[derive(Debug)]
pub struct Pacer {
    permits: Semaphore,
    pause_until: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer allowing `max_concurrency` requests in flight (at least one).
    pub fn new(max_concurrency: usize) -> Pacer {
        Pacer {
            permits: Semaphore::new(max_concurrency.max(1)),
            pause_until: Mutex::new(None),
        }
    }

    /// Waits until no pause is in force and a request slot is free.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            self.wait_out_pause().await;
            // The semaphore is never closed, so acquiring only fails if it were.
            let Ok(permit) = self.permits.acquire().await else {
                continue;
            };
            // A pause may have started while we queued for the slot: honour it too.
            if self.remaining_pause().is_none() {
                return permit;
            }
            drop(permit);
        }
    }

    /// Makes every request wait `wait` from now (a longer pause already in force is kept).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut pause = self
            .pause_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pause.is_none_or(|current| current < until) {
            *pause = Some(until);
        }
    }

    /// How long the current pause still lasts, if one is in force.
    pub fn remaining_pause(&self) -> Option<Duration> {
        let pause = self
            .pause_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pause
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    async fn wait_out_pause(&self) {
        while let Some(left) = self.remaining_pause() {
            tokio::time::sleep(left).await;
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently or runs out of attempts, sleeping per
/// `policy` between tries. A transient failure with `Retry-After` also pauses `pacer`.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    pacer: &Pacer,
    mut attempt: F,
) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(ConnectorError::Transient {
                message,
                retry_after,
            }) if tries < policy.max_attempts.max(1) => {
                let wait = policy.delay(tries, retry_after);
                if retry_after.is_some() {
                    pacer.pause_for(wait);
                }
                tracing::debug!(attempt = tries, ?wait, %message, "retrying after a transient failure");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// The OAuth2 client-credentials grant of one application.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCredentials {
    /// The full token endpoint URL.
    pub token_url: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The scope to ask for, e.g. `https://org.crm.dynamics.com/.default`.
    pub scope: String,
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// Fetches client-credentials tokens with a form POST, caches them and refreshes them
/// `margin` before they expire; concurrent callers share one fetch.
pub struct TokenCache {
    client: reqwest::Client,
    credentials: ClientCredentials,
    margin: Duration,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("token_url", &self.credentials.token_url)
            .field("client_id", &self.credentials.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

impl TokenCache {
    /// A cache for `credentials`, refreshing `margin` before expiry.
    pub fn new(
        client: reqwest::Client,
        credentials: ClientCredentials,
        margin: Duration,
    ) -> TokenCache {
        TokenCache {
            client,
            credentials,
            margin,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token, fetched when none is cached or the cached one is about to expire.
    pub async fn token(&self) -> Result<Secret, ConnectorError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.refresh_at
        {
            return Ok(current.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// A new token to replace `rejected` (which the API refused); when another task has
    /// already replaced it, that newer token is returned without another fetch.
    pub async fn refresh(&self, rejected: &Secret) -> Result<Secret, ConnectorError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && current.token != *rejected
            && Instant::now() < current.refresh_at
        {
            return Ok(current.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn fetch(&self) -> Result<CachedToken, ConnectorError> {
        let url = &self.credentials.token_url;
        let what = format!("the token request to {url}");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.expose()),
            ("scope", self.credentials.scope.as_str()),
        ];
        let response = self
            .client
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|error| transport_error(&error, &what))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(&error, &what))?;
        if !status.is_success() {
            return Err(match classify_status(status, &headers, &body, &what) {
                // Azure AD answers bad credentials with 400/401 (invalid_client): not retryable.
                ConnectorError::Permanent { message } | ConnectorError::Auth { message } => {
                    ConnectorError::Auth {
                        message: format!("{message}; check the client id, secret and scope"),
                    }
                }
                transient => transient,
            });
        }
        let parsed: TokenResponse = parse_json(&body, url, "an OAuth2 token response")?;
        if parsed.access_token.is_empty() {
            return Err(ConnectorError::Auth {
                message: format!("{what} returned an empty access_token"),
            });
        }
        // Only a bearer token can be sent the way `ApiClient` sends it.
        if let Some(kind) = parsed
            .token_type
            .as_deref()
            .filter(|kind| !kind.eq_ignore_ascii_case("bearer"))
        {
            return Err(ConnectorError::Auth {
                message: format!("{what} returned token_type {kind:?}, expected \"bearer\""),
            });
        }
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3599));
        // A margin longer than a short-lived token would refetch on every call: cap it at half.
        let margin = self.margin.min(lifetime / 2);
        Ok(CachedToken {
            token: Secret::new(parsed.access_token),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        })
    }
}

/// A fully read response: status, headers and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The response itself when its status is 2xx, else its classified error.
    pub fn into_success(self, what: &str) -> Result<HttpResponse, ConnectorError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(classify_status(
                self.status,
                &self.headers,
                &self.body,
                what,
            ))
        }
    }

    /// Parses the body as JSON, naming `url` and `expected` when it is not.
    pub fn json<T: DeserializeOwned>(
        &self,
        url: &str,
        expected: &str,
    ) -> Result<T, ConnectorError> {
        parse_json(&self.body, url, expected)
    }
}

/// Which transient failures of one request [`ApiClient::execute_with`] answers by resending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resend {
    /// Any transient failure: the request is safe to repeat (reads, idempotent writes).
    #[default]
    AnyTransient,
    /// Only a refusal carrying `Retry-After` (429, 503: the service did not process it). Any
    /// other failure is handed back, since a lost response may hide a record the request made.
    OnlyRefused,
}

/// An authenticated, paced, retrying HTTP client for one API.
#[derive(Debug)]
pub struct ApiClient {
    client: reqwest::Client,
    tokens: TokenCache,
    pacer: Pacer,
    retry: RetryPolicy,
    service: &'static str,
    hand_back_long_waits: bool,
}

impl ApiClient {
    /// Combines a client, its token cache, a pacer and a retry policy.
    pub fn new(
        client: reqwest::Client,
        tokens: TokenCache,
        pacer: Pacer,
        retry: RetryPolicy,
    ) -> ApiClient {
        ApiClient {
            client,
            tokens,
            pacer,
            retry,
            service: "http",
            hand_back_long_waits: false,
        }
    }

    /// Names the service in the error-status metrics (`conduit_http_errors_total`).
    pub fn named(mut self, service: &'static str) -> ApiClient {
        self.service = service;
        self
    }

    /// Makes a `Retry-After` longer than the policy's `max_delay` end the call with that
    /// `Transient` error (its `retry_after` intact) instead of a shorter wait and a resend that
    /// would come too early, so the caller can wait as long as the service asked.
    pub fn handing_back_long_waits(mut self) -> ApiClient {
        self.hand_back_long_waits = true;
        self
    }

    /// The retry policy of this client.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The underlying reqwest client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The pacer shared by every request of this client.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Sends the request that `build` makes (called again for each attempt, without the
    /// bearer token, which is added here). Transient failures are retried; a 401 triggers one
    /// token refresh and resend, then an `Auth` error. Any other response is returned as is.
    pub async fn execute<B>(
        &self,
        method: Method,
        url: &str,
        build: B,
    ) -> Result<HttpResponse, ConnectorError>
    where
        B: Fn(RequestBuilder) -> RequestBuilder,
    {
        self.execute_with(method, url, Resend::AnyTransient, build)
            .await
    }

    /// Like [`ApiClient::execute`], resending after transient failures only as `resend` allows.
    pub async fn execute_with<B>(
        &self,
        method: Method,
        url: &str,
        resend: Resend,
        build: B,
    ) -> Result<HttpResponse, ConnectorError>
    where
        B: Fn(RequestBuilder) -> RequestBuilder,
    {
        let what = format!("{method} {url}");
        let mut refreshed = false;
        let mut token = self.tokens.token().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self.send_once(&method, url, &build, &token, &what).await;
            let failure = match outcome {
                Ok(response) if response.status == StatusCode::UNAUTHORIZED => {
                    if refreshed {
                        return Err(ConnectorError::Auth {
                            message: format!(
                                "{what} was refused with a fresh token: {}",
                                service_error_message(&response.body)
                            ),
                        });
                    }
                    refreshed = true;
                    token = self.tokens.refresh(&token).await?;
                    tries -= 1;
                    continue;
                }
                Ok(response) => {
                    let transient = response.status == StatusCode::REQUEST_TIMEOUT
                        || response.status == StatusCode::TOO_MANY_REQUESTS
                        || response.status.is_server_error();
                    if !transient {
                        return Ok(response);
                    }
                    classify_status(response.status, &response.headers, &response.body, &what)
                }
                Err(error) => error,
            };
            let ConnectorError::Transient { retry_after, .. } = &failure else {
                return Err(failure);
            };
            let wait = self.retry.delay(tries, *retry_after);
            if retry_after.is_some() {
                self.pacer.pause_for(wait);
            }
            let too_long = self.hand_back_long_waits
                && retry_after.is_some_and(|asked| asked > self.retry.max_delay);
            let refused = retry_after.is_some();
            if tries >= self.retry.max_attempts.max(1)
                || too_long
                || (resend == Resend::OnlyRefused && !refused)
            {
                return Err(failure);
            }
            tracing::debug!(attempt = tries, ?wait, error = %failure, "retrying after a transient failure");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once<B>(
        &self,
        method: &Method,
        url: &str,
        build: &B,
        token: &Secret,
        what: &str,
    ) -> Result<HttpResponse, ConnectorError>
    where
        B: Fn(RequestBuilder) -> RequestBuilder,
    {
        let _permit = self.pacer.acquire().await;
        let request = build(self.client.request(method.clone(), url)).bearer_auth(token.expose());
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(&error, what))?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            crate::telemetry::record_http_error(self.service, status.as_u16());
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(&error, what))?;
        Ok(HttpResponse {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_certificate_error_is_found_inside_nested_io_errors_and_nothing_else_is() {
        use std::io::{Error, ErrorKind};
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // The shape reqwest hands over: the connector's io::Error around the stream's.
        let nested = Error::other(Error::new(ErrorKind::InvalidData, untrusted));
        assert_eq!(
            untrusted_certificate(&nested).as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
        let other_tls = Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(untrusted_certificate(&other_tls), None);
        let refused = Error::new(ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(untrusted_certificate(&refused), None);
    }

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn retry_after_seconds_and_http_date_are_parsed() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn statuses_are_classified_with_the_service_message() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let body = br#"{"error":{"code":"0x80072322","message":"Number of requests exceeded"}}"#;
        let throttled = classify_status(StatusCode::TOO_MANY_REQUESTS, &headers, body, "GET x");
        assert_eq!(
            throttled,
            ConnectorError::Transient {
                message: "GET x failed with 429 Too Many Requests: Number of requests exceeded"
                    .to_string(),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        let missing = classify_status(StatusCode::NOT_FOUND, &HeaderMap::new(), b"nope", "GET y");
        assert_eq!(
            missing,
            ConnectorError::Permanent {
                message: "GET y failed with 404 Not Found: nope".to_string()
            }
        );
        assert!(
            classify_status(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"", "GET z")
                .is_transient()
        );
        assert!(
            classify_status(StatusCode::REQUEST_TIMEOUT, &HeaderMap::new(), b"", "GET z")
                .is_transient()
        );
    }

    #[test]
    fn unparsable_body_is_retryable_and_names_the_url_and_the_expectation() {
        let error = parse_json::<serde_json::Value>(b"<html>", "https://x/y", "a JSON page")
            .expect_err("html is not json");
        let ConnectorError::Transient { message, .. } = error else {
            panic!("expected a transient error, got {error:?}");
        };
        assert!(message.contains("https://x/y"), "{message}");
        assert!(message.contains("a JSON page"), "{message}");
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for retry in 1..30 {
            assert!(policy.delay(retry, None) <= Duration::from_secs(1));
        }
        assert!(policy.delay(1, None) <= Duration::from_millis(100));
        assert_eq!(
            policy.delay(1, Some(Duration::from_millis(450))),
            Duration::from_millis(450)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn pause_holds_back_new_requests_until_it_ends() {
        let pacer = Pacer::new(2);
        pacer.pause_for(Duration::from_millis(150));
        let started = Instant::now();
        let _permit = pacer.acquire().await;
        assert!(started.elapsed() >= Duration::from_millis(140));
        assert!(pacer.remaining_pause().is_none());
    }

    #[tokio::test]
    async fn with_retry_stops_after_the_attempt_budget() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        let pacer = Pacer::new(1);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), ConnectorError> = with_retry(&policy, &pacer, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Err(ConnectorError::Transient {
                    message: "down".to_string(),
                    retry_after: None,
                })
            }
        })
        .await;
        assert!(result.is_err_and(|error| error.is_transient()));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A fake identity provider and API counting their calls; the API answers `api_status`.
    async fn fake_service(
        expires_in: u64,
        api_status: u16,
    ) -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicU32>,
        std::sync::Arc<std::sync::atomic::AtomicU32>,
    ) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let token_calls = Arc::new(AtomicU32::new(0));
        let api_calls = Arc::new(AtomicU32::new(0));
        let (tokens, apis) = (Arc::clone(&token_calls), Arc::clone(&api_calls));
        let router = axum::Router::new()
            .route(
                "/token",
                axum::routing::post(move || {
                    let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        axum::Json(serde_json::json!({
                            "token_type": "Bearer", "expires_in": expires_in, "access_token": format!("token-{n}")
                        }))
                    }
                }),
            )
            .route(
                "/api",
                axum::routing::get(move || {
                    apis.fetch_add(1, Ordering::SeqCst);
                    async move {
                        // A throttled answer asks for a long pause, as a busy service does.
                        let retry_after = if api_status == 429 { "120" } else { "" };
                        (
                            axum::http::StatusCode::from_u16(api_status).unwrap_or_default(),
                            [(RETRY_AFTER, retry_after)],
                            "{}",
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (format!("http://{addr}"), token_calls, api_calls)
    }

    fn cache(base: &str, margin: Duration) -> TokenCache {
        TokenCache::new(
            reqwest::Client::new(),
            ClientCredentials {
                token_url: format!("{base}/token"),
                client_id: "id".to_string(),
                client_secret: Secret::new("s"),
                scope: "x/.default".to_string(),
            },
            margin,
        )
    }

    #[tokio::test]
    async fn token_is_cached_and_a_stale_refresh_reuses_the_newer_token() {
        use std::sync::atomic::Ordering;
        let (base, token_calls, _) = fake_service(3599, 200).await;
        let tokens = cache(&base, Duration::from_secs(300));
        let first = tokens.token().await.expect("token");
        assert_eq!(tokens.token().await.expect("cached"), first);
        assert_eq!(token_calls.load(Ordering::SeqCst), 1);
        let second = tokens.refresh(&first).await.expect("refreshed");
        assert_ne!(second, first);
        // Another task reporting the same old token gets the new one without a fetch.
        assert_eq!(tokens.refresh(&first).await.expect("reused"), second);
        assert_eq!(token_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn token_close_to_expiry_is_refetched() {
        use std::sync::atomic::Ordering;
        let (base, token_calls, _) = fake_service(0, 200).await;
        let tokens = cache(&base, Duration::from_secs(300));
        tokens.token().await.expect("token");
        tokens.token().await.expect("token");
        assert_eq!(token_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn persistent_401_refreshes_exactly_once_then_fails_with_auth() {
        use std::sync::atomic::Ordering;
        let (base, token_calls, api_calls) = fake_service(3599, 401).await;
        let client = ApiClient::new(
            reqwest::Client::new(),
            cache(&base, Duration::from_secs(300)),
            Pacer::new(2),
            RetryPolicy::default(),
        );
        let error = client
            .execute(Method::GET, &format!("{base}/api"), |request| request)
            .await
            .expect_err("always 401");
        assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
        assert_eq!(token_calls.load(Ordering::SeqCst), 2);
        assert_eq!(api_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn transient_statuses_are_retried_within_the_attempt_budget() {
        use std::sync::atomic::Ordering;
        let (base, _, api_calls) = fake_service(3599, 503).await;
        let client = ApiClient::new(
            reqwest::Client::new(),
            cache(&base, Duration::from_secs(300)),
            Pacer::new(2),
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
        );
        let error = client
            .execute(Method::GET, &format!("{base}/api"), |request| request)
            .await
            .expect_err("always 503");
        assert!(error.is_transient(), "{error:?}");
        assert_eq!(api_calls.load(Ordering::SeqCst), 3);
    }

    fn quick_client(base: &str) -> ApiClient {
        ApiClient::new(
            reqwest::Client::new(),
            cache(base, Duration::from_secs(300)),
            Pacer::new(2),
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_secs(5),
            },
        )
    }

    #[tokio::test]
    async fn only_refused_requests_are_not_resent_after_an_unexplained_failure() {
        use std::sync::atomic::Ordering;
        let (base, _, api_calls) = fake_service(3599, 503).await;
        let error = quick_client(&base)
            .execute_with(
                Method::GET,
                &format!("{base}/api"),
                Resend::OnlyRefused,
                |r| r,
            )
            .await
            .expect_err("503 without Retry-After");
        assert!(error.is_transient(), "{error:?}");
        assert_eq!(api_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_max_delay_is_handed_back_when_asked() {
        use std::sync::atomic::Ordering;
        let (base, _, api_calls) = fake_service(3599, 429).await;
        let error = quick_client(&base)
            .handing_back_long_waits()
            .execute(Method::GET, &format!("{base}/api"), |request| request)
            .await
            .expect_err("always 429");
        let ConnectorError::Transient { retry_after, .. } = error else {
            panic!("expected a transient error, got {error:?}");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(120)));
        assert_eq!(api_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_token_that_is_not_a_bearer_token_is_an_auth_error() {
        let router = axum::Router::new().route(
            "/token",
            axum::routing::post(|| async {
                axum::Json(serde_json::json!({
                    "token_type": "mac", "expires_in": 3599, "access_token": "t"
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let error = cache(&base, Duration::from_secs(300))
            .token()
            .await
            .expect_err("a mac token cannot be sent as bearer");
        assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
        assert!(error.to_string().contains("\"mac\""), "{error}");
    }

    #[test]
    fn campaign_error_code_is_kept_beside_its_message() {
        assert_eq!(
            service_error_message(
                br#"{"error_code":"401013","message":"Oauth token is not valid"}"#
            ),
            "Oauth token is not valid (error_code 401013)"
        );
        assert_eq!(
            service_error_message(br#"{"code":400,"message":"RST-360011 bad"}"#),
            "RST-360011 bad"
        );
    }

    #[test]
    fn invalid_extra_ca_is_a_clear_error() {
        let error = build_client(Duration::from_secs(5), Some(b"not a certificate"))
            .expect_err("garbage is not a CA");
        assert!(
            error.to_string().contains("extra CA certificate"),
            "{error}"
        );
    }
}
