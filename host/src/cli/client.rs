//! The CLI's client of the admin API: finds the host, sends the token and the
//! same-origin header, and turns failures into messages that say what to do.

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
    /// A client for `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str) -> anyhow::Result<AdminClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: std::env::var(conduit::admin::TOKEN_ENV)
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
            .header("x-conduit-request", "1");
        self.send(request).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, CallError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| CallError {
            code: exit::UNREACHABLE,
            message: format!(
                "cannot reach the Conduit host at {}: {error}. Is `conduit run` running? Point --admin-url (or CONDUIT_ADMIN_URL) at its admin address.",
                self.base
            ),
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
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                message.push_str(" (set CONDUIT_ADMIN_TOKEN to the host's token)");
                exit::REFUSED
            }
            StatusCode::BAD_REQUEST => exit::USAGE,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            StatusCode::UNPROCESSABLE_ENTITY => exit::INVALID_CONFIG,
            StatusCode::CONFLICT => exit::REFUSED,
            _ => 1,
        };
        Err(CallError { code, message })
    }
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
