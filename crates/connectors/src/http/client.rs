//! [`ApiClient`]: an authenticated, paced, retrying client for one API, and the
//! [`HttpResponse`] it hands back.

use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::ConnectorError;
use conduit_base::retry::RetryPolicy;

use super::{
    Bearer, HttpClient, Pacer, TokenCache, classify_status, parse_json, service_error_message,
    transport_error,
};

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
    /// The response itself when its status is 2xx, else its classified error naming `what`
    /// (formatted only then: pass `format_args!` to spare a 2xx the formatting).
    pub fn into_success(
        self,
        what: impl std::fmt::Display,
    ) -> Result<HttpResponse, ConnectorError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(classify_status(
                self.status,
                &self.headers,
                &self.body,
                &what.to_string(),
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
    client: HttpClient,
    tokens: TokenCache,
    pacer: Pacer,
    retry: RetryPolicy,
    service: &'static str,
    hand_back_long_waits: bool,
}

impl ApiClient {
    /// Combines a client, its token cache, a pacer and a retry policy.
    pub fn new(
        client: HttpClient,
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
        let parsed = url::Url::parse(url).map_err(|error| ConnectorError::Permanent {
            message: format!("{method} {url}: not a URL: {error}"),
        })?;
        self.execute_url(method, &parsed, resend, build).await
    }

    /// [`ApiClient::execute_with`] for an already parsed URL: the request reuses it as it is,
    /// where a text URL would be parsed again for every attempt (a parse costs as much as a
    /// tenth of a request's host CPU).
    pub async fn execute_url<B>(
        &self,
        method: Method,
        url: &url::Url,
        resend: Resend,
        build: B,
    ) -> Result<HttpResponse, ConnectorError>
    where
        B: Fn(RequestBuilder) -> RequestBuilder,
    {
        // Named in errors only, so made only for them.
        let what = || format!("{method} {url}");
        let mut refreshed = false;
        let mut bearer = self.tokens.bearer().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self.send_once(&method, url, &build, &bearer, &what).await;
            let failure = match outcome {
                Ok(response) if response.status == StatusCode::UNAUTHORIZED => {
                    if refreshed {
                        return Err(ConnectorError::Auth {
                            message: format!(
                                "{} was refused with a fresh token: {}",
                                what(),
                                service_error_message(&response.body)
                            ),
                        });
                    }
                    refreshed = true;
                    bearer = self.tokens.refresh_bearer(bearer.token()).await?;
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
                    classify_status(response.status, &response.headers, &response.body, &what())
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
        url: &url::Url,
        build: &B,
        bearer: &Bearer,
        what: &impl Fn() -> String,
    ) -> Result<HttpResponse, ConnectorError>
    where
        B: Fn(RequestBuilder) -> RequestBuilder,
    {
        let _permit = self.pacer.acquire().await;
        let request = build(self.client.reqwest().request(method.clone(), url.clone()))
            .header(AUTHORIZATION, bearer.header().clone())
            .build()
            .map_err(|error| transport_error(&error, &what()))?;
        let received = self
            .client
            .send(request)
            .await
            .map_err(|failure| failure.into_connector_error(&what()))?;
        let status = received.status;
        if status.is_client_error() || status.is_server_error() {
            conduit_base::telemetry::record_http_error(self.service, status.as_u16());
        }
        Ok(HttpResponse {
            status,
            headers: received.headers,
            body: Vec::from(received.body),
        })
    }
}
