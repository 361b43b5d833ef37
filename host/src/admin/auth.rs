//! Who may call the admin API: a bearer token (compared in constant time) when one is set,
//! and no cross-site state changes: a POST must carry the token or the `X-Conduit-Request`
//! header (which a cross-site form cannot set), and a browser's `Origin` must be our own.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;

/// The header a same-origin client sends with state-changing calls.
pub const REQUEST_HEADER: &str = "x-conduit-request";

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

pub(super) async fn guard(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let authorized = match &state.token {
        Some(token) => bearer(headers)
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => true,
    };
    if !authorized {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required: send Authorization: Bearer <CONDUIT_ADMIN_TOKEN>",
        );
    }
    if request.method() == Method::POST {
        if !same_origin(headers) {
            return refuse(StatusCode::FORBIDDEN, "cross-site requests are refused");
        }
        let has_token = state.token.is_some();
        if !has_token && !headers.contains_key(REQUEST_HEADER) {
            return refuse(
                StatusCode::FORBIDDEN,
                "state-changing calls need the X-Conduit-Request header (the conduit CLI and page send it)",
            );
        }
    }
    next.run(request).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A browser sends `Origin` on cross-site POSTs; it must name the host we were called as.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn a_foreign_origin_is_not_same_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:7878".parse().unwrap());
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "http://127.0.0.1:7878".parse().unwrap());
        assert!(same_origin(&headers));
    }
}
