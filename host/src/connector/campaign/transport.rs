//! HTTP plumbing of the Campaign connector: the IMS token cache, the headers every call carries,
//! error classification, bounded retries with backoff that honour `Retry-After`, and pacing after
//! a 429. It knows nothing of profiles, events or exports.
//!
//! Shaped like the shared `connector::http` module so the two can be folded together: the
//! classification rules are network/408/429/5xx -> `Transient`, 401 -> one token refresh then
//! `Auth`, other 4xx -> `Permanent` with the service's message, unreadable bodies -> `Permanent`.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::connector::ConnectorError;

/// A credential that never shows itself in logs, errors or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret text, for the one place that must send it.
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

/// How often and how patiently a call is retried before a transient failure is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff delay; it doubles per attempt, with jitter.
    pub base_delay: Duration,
    /// The longest single wait, also the cap on an honoured `Retry-After`; a service asking for
    /// longer gets a `Transient` error carrying its wish, so the engine waits instead of us.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// The IMS OAuth server-to-server client credentials.
#[derive(Debug, Clone)]
pub struct ImsCredentials {
    /// The token endpoint, e.g. `https://ims-na1.adobelogin.com/ims/token/v3`.
    pub token_url: Url,
    /// The client id, also sent as `X-Api-Key`.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The scopes, sent comma-separated.
    pub scopes: Vec<String>,
}

/// A successful (or deliberately tolerated) response.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Parses the body as JSON of type `T`, naming the URL and what was expected when it is not.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &Method,
        url: &Url,
        expected: &str,
    ) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|error| ConnectorError::Permanent {
            message: format!(
                "Campaign {method} {url}: expected {expected}, but the body could not be read ({error}); it starts with {:?}",
                body_excerpt(&self.body)
            ),
        })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

/// The authenticated, retrying HTTP client of one Campaign instance.
pub struct Transport {
    http: reqwest::Client,
    credentials: ImsCredentials,
    retry: RetryPolicy,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    // After a 429 every call waits until the service said it is ready again: paced, not hammered.
    paused_until: std::sync::Mutex<Option<Instant>>,
}

impl Transport {
    /// Builds a transport over an already configured `reqwest` client.
    pub fn new(
        http: reqwest::Client,
        credentials: ImsCredentials,
        retry: RetryPolicy,
    ) -> Transport {
        Transport {
            http,
            credentials,
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            },
            token: tokio::sync::Mutex::new(None),
            paused_until: std::sync::Mutex::new(None),
        }
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The backoff before retry number `attempt` (1-based), with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let base = self.retry.base_delay.saturating_mul(1 << exponent);
        // Jitter in [base/2, base]: spreads retries of concurrent writers apart.
        let jitter = base.mul_f64(fastrand::f64() / 2.0);
        (base - jitter).min(self.retry.max_delay)
    }

    /// Returns a valid access token, fetching a new one when none is cached or it is near expiry.
    pub async fn access_token(&self) -> Result<Secret, ConnectorError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn forget_token(&self, rejected: &Secret) {
        let mut cached = self.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|token| &token.value == rejected)
        {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, ConnectorError> {
        let url = &self.credentials.token_url;
        let scope = self.credentials.scopes.join(",");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.expose()),
            ("scope", scope.as_str()),
        ];
        let response = self
            .http
            .post(url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|error| network_error(&Method::POST, url, &error))?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|error| network_error(&Method::POST, url, &error))?;
        if status.is_success() {
            let token: TokenResponse =
                serde_json::from_slice(&body).map_err(|error| ConnectorError::Permanent {
                    message: format!(
                        "IMS POST {url}: expected a token JSON with access_token, token_type and expires_in ({error})"
                    ),
                })?;
            if !token.token_type.eq_ignore_ascii_case("bearer") {
                return Err(ConnectorError::Permanent {
                    message: format!(
                        "IMS POST {url}: expected token_type \"bearer\", got {:?}",
                        token.token_type
                    ),
                });
            }
            let lifetime = Duration::from_secs(token.expires_in);
            // Refresh a little before expiry so an in-flight call never carries a dead token.
            let margin = (lifetime / 10).min(Duration::from_secs(300));
            return Ok(CachedToken {
                value: Secret::new(token.access_token),
                refresh_at: Instant::now() + lifetime - margin,
            });
        }
        let message = format!(
            "IMS POST {url} answered {status}: {}",
            service_message(&body)
        );
        if is_transient_status(status) {
            Err(ConnectorError::Transient {
                message,
                retry_after,
            })
        } else {
            Err(ConnectorError::Auth {
                message: format!("{message}; check the Campaign client id, secret and scopes"),
            })
        }
    }

    /// Sends one API call with retries; 2xx comes back as a `Reply`, everything else as an error.
    /// POSTs are resent only after a 429, since another failure may hide a created record.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, ConnectorError> {
        self.send_tolerating(method, url, body, &[]).await
    }

    /// Like [`Transport::send`], but statuses in `tolerated` (e.g. 404 on a delete) also come back
    /// as a `Reply` for the caller to interpret.
    pub async fn send_tolerating(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        tolerated: &[StatusCode],
    ) -> Result<Reply, ConnectorError> {
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            self.wait_for_pacing().await;
            let token = self.access_token().await?;
            let outcome = self.send_once(&method, url, body, &token).await;
            let error = match outcome {
                Ok(reply) if reply.status.is_success() || tolerated.contains(&reply.status) => {
                    return Ok(reply);
                }
                Ok(reply) if reply.status == StatusCode::UNAUTHORIZED => {
                    let message = format!(
                        "Campaign {method} {url} answered 401: {}",
                        service_message(&reply.body)
                    );
                    if refreshed {
                        return Err(ConnectorError::Auth { message });
                    }
                    // One fresh token per call: a second 401 means the credentials are wrong.
                    refreshed = true;
                    self.forget_token(&token).await;
                    attempt -= 1;
                    continue;
                }
                Ok(reply) => classify(&method, url, &reply),
                Err(error) => error,
            };
            let ConnectorError::Transient { retry_after, .. } = &error else {
                return Err(error);
            };
            if let Some(wait) = retry_after {
                self.pause_for(*wait);
            }
            // A POST that failed after reaching the service may have created the record: only a
            // refusal carrying Retry-After (429, 503: not processed) is safe to resend; otherwise
            // the caller looks the key up again.
            let refused_before_processing = retry_after.is_some();
            if (method == Method::POST && !refused_before_processing)
                || attempt >= self.retry.max_attempts
                || retry_after.is_some_and(|wait| wait > self.retry.max_delay)
            {
                return Err(error);
            }
            let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
            tokio::time::sleep(delay.min(self.retry.max_delay)).await;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        token: &Secret,
    ) -> Result<Reply, ConnectorError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.expose())
            .header("X-Api-Key", &self.credentials.client_id)
            .header("Cache-Control", "no-cache")
            .header(
                "Content-Type",
                HeaderValue::from_static("application/json;charset=utf-8"),
            );
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|error| network_error(method, url, &error))?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            crate::telemetry::record_http_error("campaign", status.as_u16());
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| network_error(method, url, &error))?;
        Ok(Reply {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait.min(self.retry.max_delay);
        if let Ok(mut paused) = self.paused_until.lock() {
            *paused = Some(paused.map_or(until, |current| current.max(until)));
        }
    }

    async fn wait_for_pacing(&self) {
        let until = self.paused_until.lock().ok().and_then(|paused| *paused);
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
    }
}

/// True for the statuses worth retrying: 408, 429 and 5xx.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Turns a non-2xx, non-401 reply into the matching error.
fn classify(method: &Method, url: &Url, reply: &Reply) -> ConnectorError {
    let message = format!(
        "Campaign {method} {url} answered {}: {}",
        reply.status,
        service_message(&reply.body)
    );
    if is_transient_status(reply.status) {
        ConnectorError::Transient {
            message,
            retry_after: parse_retry_after(&reply.headers),
        }
    } else {
        ConnectorError::Permanent { message }
    }
}

fn network_error(method: &Method, url: &Url, error: &reqwest::Error) -> ConnectorError {
    ConnectorError::Transient {
        message: format!("Campaign {method} {url}: network error: {error}"),
        retry_after: None,
    }
}

/// Reads `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The service's own error text: Campaign's `message`, IMS's `error_description`, or the raw body.
pub fn service_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) {
        let text = |name: &str| fields.get(name).and_then(|value| value.as_str());
        if let Some(message) = text("message") {
            return match text("error_code") {
                Some(code) => format!("{message} (error_code {code})"),
                None => message.to_owned(),
            };
        }
        if let Some(description) = text("error_description") {
            return format!("{} ({description})", text("error").unwrap_or("error"));
        }
    }
    format!("{:?}", body_excerpt(body))
}

fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("s3cr3t");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "s3cr3t");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn service_message_prefers_campaign_and_ims_texts() {
        assert_eq!(
            service_message(br#"{"code":400,"message":"RST-360011 bad"}"#),
            "RST-360011 bad"
        );
        assert_eq!(
            service_message(br#"{"error_code":"401013","message":"Oauth token is not valid"}"#),
            "Oauth token is not valid (error_code 401013)"
        );
        assert_eq!(
            service_message(br#"{"error":"invalid_client","error_description":"bad secret"}"#),
            "invalid_client (bad secret)"
        );
        assert_eq!(service_message(b"<html>"), "\"<html>\"");
    }

    #[test]
    fn transient_statuses_are_408_429_and_5xx() {
        for code in [408, 429, 500, 502, 503] {
            assert!(is_transient_status(StatusCode::from_u16(code).unwrap()));
        }
        for code in [400, 403, 404, 409] {
            assert!(!is_transient_status(StatusCode::from_u16(code).unwrap()));
        }
    }
}
