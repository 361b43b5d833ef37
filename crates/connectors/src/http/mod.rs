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

mod client;
mod direct;
mod errors;
mod oauth;
mod pacing;
mod secret;
mod tls;

pub use client::{ApiClient, HttpResponse, Resend};
pub use conduit_base::retry::RetryPolicy;
pub use errors::{
    classify_status, parse_json, parse_retry_after, service_error_message, transport_error,
    unreadable_body,
};
pub use oauth::{Bearer, ClientCredentials, TokenCache};
pub use pacing::{Pacer, with_retry};
pub use secret::Secret;
pub use tls::{HttpClient, build_client, read_ca_file};

#[cfg(test)]
mod tests;
