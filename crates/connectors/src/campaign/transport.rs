//! What is Campaign-specific about sending a request: the IMS credentials (comma-separated
//! scopes), the headers every call carries (`X-Api-Key`, no-cache, JSON), that a POST is never
//! resent blindly, and that a `Retry-After` longer than we wait goes back to the engine.
//!
//! Tokens, retries, classification and pacing come from [`crate::http`].

use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::ConnectorError;
use crate::http::{
    ApiClient, ClientCredentials, HttpClient, HttpResponse, Pacer, Resend, RetryPolicy, TokenCache,
};

use super::CampaignSettings;

/// How long before expiry an IMS token is replaced (at most half its lifetime).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The header naming the calling application (its client id) on every Campaign call.
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The authenticated, retrying HTTP client of one Campaign instance.
#[derive(Debug)]
pub(super) struct Transport {
    api: ApiClient,
    /// The `X-Api-Key` value, checked once here rather than on every call.
    api_key: HeaderValue,
}

impl Transport {
    /// A transport for `settings` over an already configured client; `None` when the client
    /// id cannot be sent as a header value.
    pub(super) fn new(client: HttpClient, settings: &CampaignSettings) -> Option<Transport> {
        let api_key = HeaderValue::from_str(&settings.client_id).ok()?;
        let tokens = TokenCache::new(
            client.reqwest().clone(),
            ClientCredentials {
                token_url: settings.ims_token_url.to_string(),
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                // IMS takes its scopes comma-separated in one `scope` field.
                scope: settings.scopes.join(","),
            },
            TOKEN_REFRESH_MARGIN,
        );
        let api = ApiClient::new(
            client,
            tokens,
            Pacer::new(settings.max_concurrency),
            settings.retry.clone(),
        )
        .handing_back_long_waits()
        .named("campaign");
        Some(Transport { api, api_key })
    }

    /// The retry policy, also used to pace a repeated lookup-then-write.
    pub(super) fn retry_policy(&self) -> &RetryPolicy {
        self.api.retry_policy()
    }

    /// Makes sure a token can be had (fetching one if none is cached).
    pub(super) async fn authenticate(&self) -> Result<(), ConnectorError> {
        self.api.tokens().token().await.map(|_| ())
    }

    /// Sends one API call (with its body already encoded); 2xx comes back as the response,
    /// everything else as an error.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<bytes::Bytes>,
    ) -> Result<HttpResponse, ConnectorError> {
        self.send_tolerating(method, url, body, &[]).await
    }

    /// Like [`Transport::send`], but statuses in `tolerated` (e.g. 404 on a delete) also come
    /// back as a response for the caller to interpret.
    pub(super) async fn send_tolerating(
        &self,
        method: Method,
        url: &Url,
        body: Option<bytes::Bytes>,
        tolerated: &[StatusCode],
    ) -> Result<HttpResponse, ConnectorError> {
        // A POST that failed after reaching the service may have created the record: only a
        // refusal is resent, otherwise the caller looks the key up again.
        let resend = if method == Method::POST {
            Resend::OnlyRefused
        } else {
            Resend::AnyTransient
        };
        let response = self
            .api
            .execute_url(method.clone(), url, resend, |request| {
                let request = request
                    .header(API_KEY, self.api_key.clone())
                    .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/json;charset=utf-8"),
                    );
                match &body {
                    Some(body) => request.body(body.clone()),
                    None => request,
                }
            })
            .await?;
        if response.status.is_success() || tolerated.contains(&response.status) {
            return Ok(response);
        }
        response.into_success(format_args!("Campaign {method} {url}"))
    }
}
