//! The OAuth2 client-credentials grant: [`ClientCredentials`] and the [`TokenCache`] that
//! fetches, shares and refreshes tokens.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

use crate::ConnectorError;

use super::direct::{MAX_RESPONSE_BYTES, read_limited};
use super::{Secret, classify_status, parse_json, transport_error};

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
    bearer: Arc<Bearer>,
    refresh_at: Instant,
}

/// An access token and its `Authorization: Bearer` header value (marked sensitive), made once
/// per token: every request sends the same header, so none formats or checks it again.
pub struct Bearer {
    token: Secret,
    header: HeaderValue,
}

impl Bearer {
    /// The token.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// The `Authorization` header value (`Bearer <token>`).
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer ***")
    }
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
        Ok(self.bearer().await?.token.clone())
    }

    /// A new token to replace `rejected` (which the API refused); when another task has
    /// already replaced it, that newer token is returned without another fetch.
    pub async fn refresh(&self, rejected: &Secret) -> Result<Secret, ConnectorError> {
        Ok(self.refresh_bearer(rejected).await?.token.clone())
    }

    /// [`TokenCache::token`] with its header, shared rather than copied.
    pub async fn bearer(&self) -> Result<Arc<Bearer>, ConnectorError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.refresh_at
        {
            return Ok(Arc::clone(&current.bearer));
        }
        let fresh = self.fetch().await?;
        let bearer = Arc::clone(&fresh.bearer);
        *cached = Some(fresh);
        Ok(bearer)
    }

    /// [`TokenCache::refresh`] with its header, shared rather than copied.
    pub async fn refresh_bearer(&self, rejected: &Secret) -> Result<Arc<Bearer>, ConnectorError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && current.bearer.token != *rejected
            && Instant::now() < current.refresh_at
        {
            return Ok(Arc::clone(&current.bearer));
        }
        let fresh = self.fetch().await?;
        let bearer = Arc::clone(&fresh.bearer);
        *cached = Some(fresh);
        Ok(bearer)
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
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|failure| failure.into_connector_error(&what))?;
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
        let mut header = HeaderValue::try_from(format!("Bearer {}", parsed.access_token))
            .map_err(|_| ConnectorError::Auth {
                message: format!(
                    "{what} returned an access_token that cannot be sent in an HTTP header (it holds control characters)"
                ),
            })?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3599));
        // A margin longer than a short-lived token would refetch on every call: cap it at half.
        let margin = self.margin.min(lifetime / 2);
        Ok(CachedToken {
            bearer: Arc::new(Bearer {
                token: Secret::new(parsed.access_token),
                header,
            }),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        })
    }
}
