//! Turning what the services answer into [`ConnectorError`]s: status classification, the
//! service's own error text, `Retry-After`, transport failures and unreadable JSON.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;

use crate::ConnectorError;

/// How much of a response body an error message quotes at most.
const MAX_QUOTED_BODY: usize = 300;

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
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
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
pub fn transport_error(error: &(dyn std::error::Error + 'static), what: &str) -> ConnectorError {
    // reqwest's and hyper's errors never print headers, so no token can leak through them.
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
pub(super) fn untrusted_certificate(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
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
    serde_json::from_slice(body).map_err(|error| unreadable_body(body, url, expected, &error))
}

/// The error for a body that is not the JSON expected from `url`: transient, naming what was
/// expected, serde's reason and the body's start.
pub fn unreadable_body(
    body: &[u8],
    url: &str,
    expected: &str,
    error: &serde_json::Error,
) -> ConnectorError {
    // Transient: a body of the wrong shape comes from a gateway or proxy glitch far more often
    // than from the record asked about, and dead-lettering good records for it loses them.
    ConnectorError::Transient {
        message: format!(
            "expected {expected} from {url}, but the body is not that: {error} (body starts: {})",
            quote_body(body)
        ),
        retry_after: None,
    }
}
