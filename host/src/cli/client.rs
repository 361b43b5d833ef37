//! The CLI's client of the admin API: finds the host, sends the token and the
//! same-origin header, trusts an extra CA for an HTTPS admin API, reads each answer into the
//! API's own types (`conduit_admin::views`), and turns failures into messages that say what
//! to do. An answer this build cannot read (a host of another version) is an error naming the
//! endpoint and the field that did not match, never a panic.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use conduit_admin::views::ErrorBody;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

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
    /// `conduit verify` found records out of sync.
    pub const OUT_OF_SYNC: u8 = 7;
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

    /// GETs a JSON document and reads it as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let request = self.http.get(format!("{}{path}", self.base));
        let body = self.send(request).await?;
        decode(&format!("GET {path}"), &body)
    }

    /// POSTs a state-changing call and reads its answer as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-conduit-request", "cli");
        let body = self.send(request).await?;
        decode(&format!("POST {path}"), &body)
    }

    /// POSTs a state-changing call whose answer is a file, and writes the answer into `into`
    /// as it arrives; returns the answer's headers. The whole answer may take long (a large
    /// store), so only the wait for its start is bounded by the client's timeout.
    pub async fn download(
        &self,
        path: &str,
        into: &mut std::fs::File,
    ) -> Result<reqwest::header::HeaderMap, CallError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-conduit-request", "cli")
            .timeout(Duration::from_secs(24 * 3600));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |error: reqwest::Error| CallError {
            code: exit::UNREACHABLE,
            message: format!(
                "cannot reach the Conduit host at {}: {}. Is `conduit run` running? Point --admin-url (or CONDUIT_ADMIN_URL) at its admin address.",
                self.base,
                error_chain(&error)
            ),
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(refusal(status, &body));
        }
        let headers = response.headers().clone();
        let cut_short = |error: &dyn std::error::Error| CallError {
            code: 1,
            message: format!(
                "the answer to POST {path} from {} was cut short: {}",
                self.base,
                error_chain(error)
            ),
        };
        while let Some(chunk) = response.chunk().await.map_err(|error| cut_short(&error))? {
            std::io::Write::write_all(into, &chunk).map_err(|error| CallError {
                code: 1,
                message: format!("cannot write the answer to POST {path}: {error}"),
            })?;
        }
        Ok(headers)
    }

    /// POSTs a call whose answer is JSON lines (a long-running one, e.g. verify) and hands
    /// each line to `line` as it arrives. As for downloads, only the wait for the answer's
    /// start is bounded by the client's timeout.
    pub async fn post_lines(
        &self,
        path: &str,
        mut line: impl FnMut(&[u8]) -> Result<(), CallError>,
    ) -> Result<(), CallError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-conduit-request", "cli")
            .timeout(Duration::from_secs(24 * 3600));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|error| CallError {
            code: exit::UNREACHABLE,
            message: format!(
                "cannot reach the Conduit host at {}: {}. Is `conduit run` running? Point --admin-url (or CONDUIT_ADMIN_URL) at its admin address.",
                self.base,
                error_chain(&error)
            ),
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(refusal(status, &body));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| CallError {
            code: 1,
            message: format!(
                "the answer to POST {path} from {} was cut short: {}",
                self.base,
                error_chain(&error)
            ),
        })? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                let rest = pending.split_off(end + 1);
                line(pending.trim_ascii())?;
                pending = rest;
            }
        }
        if !pending.trim_ascii().is_empty() {
            line(pending.trim_ascii())?;
        }
        Ok(())
    }

    /// Sends a call and returns the body of a successful answer.
    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
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
        let body = response.bytes().await.map_err(|error| CallError {
            code: exit::UNREACHABLE,
            message: format!(
                "the Conduit host at {} answered {status} but its answer was cut short: {}",
                self.base,
                error_chain(&error)
            ),
        })?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(refusal(status, &body))
    }
}

/// Reads the body of a successful answer to `endpoint` as `T`; an answer of another shape (a
/// host of a different version) is an error that names the endpoint and the field.
pub fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, CallError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|error| {
        let at = error.path().to_string();
        let place = if at == "." {
            String::new()
        } else {
            format!(" at `{at}`")
        };
        CallError {
            code: 1,
            message: format!(
                "the host's answer to {endpoint} does not read as this conduit ({}) expects it{place}: {}; is the host running another version of Conduit?",
                env!("CARGO_PKG_VERSION"),
                error.into_inner()
            ),
        }
    })
}

/// The error of a refused or failed call: the host's own message (and config problems) when
/// its body says so, with the exit code the status maps to.
fn refusal(status: StatusCode, body: &[u8]) -> CallError {
    let answer: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let mut message = answer.as_ref().map_or_else(
        || format!("the host answered {status}"),
        |a| a.error.clone(),
    );
    for problem in answer.iter().flat_map(|a| &a.problems) {
        message.push_str(&format!("\n  {problem}"));
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
    CallError { code, message }
}

/// A value as the API's JSON with its keys in order, the way `--json` prints every answer.
pub fn pretty_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_admin::views::{HostView, StatusAnswer};

    #[test]
    fn an_answer_of_another_shape_names_the_endpoint_and_the_field() {
        let body = br#"{"workflows": [{"id": "ingress", "name": "Ingress", "status": "PAUSED"}], "config_problems": []}"#;
        let error = decode::<HostView>("GET /api/workflows", body).unwrap_err();
        assert_eq!(error.code, 1);
        assert!(
            error.message.contains("GET /api/workflows")
                && error.message.contains("`workflows[0].status`")
                && error.message.contains("PAUSED")
                && error.message.contains("another version"),
            "{}",
            error.message
        );
        let error = decode::<StatusAnswer>("POST /api/workflows/ingress/start", b"{}").unwrap_err();
        assert!(
            error.message.contains("POST /api/workflows/ingress/start")
                && error.message.contains("missing field `status`"),
            "{}",
            error.message
        );
        let error = decode::<StatusAnswer>("POST /x", b"<html>").unwrap_err();
        assert!(error.message.contains("POST /x"), "{}", error.message);
    }

    #[test]
    fn a_refusal_carries_the_hosts_message_and_problems_or_the_status() {
        let body = br#"{"error": "the config is invalid (1 problem(s)); fix it and try again",
            "problems": [{"file": "c.toml", "line": 3, "column": 1, "message": "unknown key 'x'", "hint": "remove it"}]}"#;
        let error = refusal(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(error.code, exit::INVALID_CONFIG);
        assert_eq!(
            error.message,
            "the config is invalid (1 problem(s)); fix it and try again\n  c.toml:3:1: unknown key 'x' (hint: remove it)"
        );
        let error = refusal(StatusCode::BAD_GATEWAY, b"bad gateway");
        assert_eq!(
            (error.code, error.message.as_str()),
            (1, "the host answered 502 Bad Gateway")
        );
        let error = refusal(
            StatusCode::UNAUTHORIZED,
            br#"{"error": "a token is needed"}"#,
        );
        assert_eq!(error.code, exit::REFUSED);
        assert!(
            error
                .message
                .ends_with("(set CONDUIT_ADMIN_TOKEN to the host's token)")
        );
    }
}
