//! The CLI's client of the admin API: finds the host, sends the token and the
//! same-origin header, trusts an extra CA for an HTTPS admin API, and turns failures into
//! messages that say what to do.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;

/// Exit codes of the operator commands.
pub mod exit {
    /// The request itself is wrong (like clap's own usage errors).
    pub const USAGE: u8 = 2;
    /// The host refused the request (e.g. replay over the guard, already pending).
    pub const REFUSED: u8 = 3;
    /// The config is invalid.
    pub const INVALID_CONFIG: u8 = 4;
    /// The host could not be reached.
    pub const UNREACHABLE: u8 = 5;
    /// The thing named does not exist.
    pub const NOT_FOUND: u8 = 6;
}

/// A failed admin call with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The exit code.
    pub code: u8,
    /// What went wrong and what to do.
    pub message: String,
}

/// A client of one host's admin API.
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `base` (e.g. `https://127.0.0.1:7878`) that also trusts the PEM
    /// certificates of `ca_file` (the admin API's own CA or self-signed certificate).
    pub fn new(base: &str, ca_file: Option<&Path>) -> anyhow::Result<AdminClient> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(path) = ca_file {
            let pem = conduit_connectors::http::read_ca_file(path).with_context(|| {
                format!("--admin-ca-file (CONDUIT_ADMIN_CA_FILE) {}", path.display())
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "--admin-ca-file {} holds no usable PEM certificate",
                    path.display()
                )
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: std::env::var(conduit_admin::TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    /// GETs a JSON document.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, CallError> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// POSTs a state-changing call.
    pub async fn post(&self, path: &str) -> Result<serde_json::Value, CallError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-conduit-request", "cli");
        self.send(request).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, CallError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| {
            let untrusted = error_chain(&error).contains("certificate");
            CallError {
                code: exit::UNREACHABLE,
                message: if untrusted {
                    format!(
                        "cannot reach the Conduit host at {}: its TLS certificate is not trusted ({}); pass the admin API's CA (or its self-signed certificate) with --admin-ca-file or CONDUIT_ADMIN_CA_FILE",
                        self.base,
                        error_chain(&error)
                    )
                } else {
                    format!(
                        "cannot reach the Conduit host at {}: {}. Is `conduit run` running? Point --admin-url (or CONDUIT_ADMIN_URL) at its admin address.",
                        self.base,
                        error_chain(&error)
                    )
                },
            }
        })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let mut message = body
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("the host answered {status}"));
        if let Some(problems) = body.get("problems").and_then(|p| p.as_array()) {
            for problem in problems {
                message.push_str(&format!("\n  {}", describe_problem(problem)));
            }
        }
        let code = match status {
            StatusCode::UNAUTHORIZED => {
                message.push_str(" (set CONDUIT_ADMIN_TOKEN to the host's token)");
                exit::REFUSED
            }
            StatusCode::FORBIDDEN => exit::REFUSED,
            StatusCode::BAD_REQUEST => exit::USAGE,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            StatusCode::UNPROCESSABLE_ENTITY => exit::INVALID_CONFIG,
            StatusCode::CONFLICT => exit::REFUSED,
            _ => 1,
        };
        Err(CallError { code, message })
    }
}

/// An error and its sources in one line: reqwest's own text ("error sending request") hides
/// the reason (e.g. the certificate problem) in its sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Renders a config problem returned by the API like the local checker prints it.
pub fn describe_problem(problem: &serde_json::Value) -> String {
    let text = |key: &str| {
        problem
            .get(key)
            .map(|v| v.to_string().trim_matches('"').to_string())
    };
    let mut line = format!(
        "{}:{}:{}: {}",
        text("file").unwrap_or_default(),
        text("line").unwrap_or_default(),
        text("column").unwrap_or_default(),
        text("message").unwrap_or_default()
    );
    if let Some(hint) = problem.get("hint").and_then(|h| h.as_str()) {
        line.push_str(&format!(" (hint: {hint})"));
    }
    line
}
