//! Who may call the admin API. Every route first checks the `Host` header against the
//! allow-list (DNS rebinding, see `hosts.rs`); the API then needs a bearer token (compared in
//! constant time) when one is set, and refuses cross-site state changes: a POST must carry the
//! token or the `X-Conduit-Request` header (which a cross-site form cannot set), and a
//! browser's `Origin` must be our own. Each refusal is counted by reason for `/metrics`, and an
//! admitted caller is described (never by its token) for the audit trail.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;

use super::AdminState;
use conduit_base::https::TlsListener;
use conduit_store::Caller;

/// The header a same-origin client sends with state-changing calls; its value names the
/// client (`cli`, `page`) for the audit trail.
pub const REQUEST_HEADER: &str = "x-conduit-request";

/// Why a request was refused: the `reason` label of `conduit_admin_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The `Host` header names a host not on the allow-list.
    ForeignHost,
    /// No usable `Host` header.
    MissingHost,
    /// A token is configured and none was sent.
    NoToken,
    /// A token was sent and it is not the configured one.
    WrongToken,
    /// A state change from another origin.
    CrossOrigin,
    /// A state change without a token or the `X-Conduit-Request` header.
    MissingRequestHeader,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub(crate) const ALL: [Refusal; 6] = [
        Refusal::ForeignHost,
        Refusal::MissingHost,
        Refusal::NoToken,
        Refusal::WrongToken,
        Refusal::CrossOrigin,
        Refusal::MissingRequestHeader,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::ForeignHost => "foreign_host",
            Refusal::MissingHost => "missing_host",
            Refusal::NoToken => "no_token",
            Refusal::WrongToken => "wrong_token",
            Refusal::CrossOrigin => "cross_origin",
            Refusal::MissingRequestHeader => "missing_request_header",
        }
    }
}

/// The peer of a connection, over plain TCP or TLS, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Compares two secrets in time that does not depend on where they differ (`subtle`).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Every route: only the names on the allow-list are answered.
pub(super) async fn host_guard(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(host) = request_host(&request) else {
        return refuse(
            Refusal::MissingHost,
            StatusCode::BAD_REQUEST,
            "the request has no Host header; send the name or address you reach Conduit by".into(),
        );
    };
    if !state.hosts.allows(&host) {
        tracing::warn!(host = %host, "admin request for a foreign Host refused");
        return refuse(
            Refusal::ForeignHost,
            StatusCode::FORBIDDEN,
            format!(
                "the admin API does not answer to the host name '{host}' (a page on another site may be trying to reach it through DNS rebinding); if you reach Conduit by this name, add it to host.admin_hosts in the config. Loopback names and the listen address are always allowed"
            ),
        );
    }
    next.run(request).await
}

/// The API: token, same-origin POSTs, and the caller for the audit trail.
pub(super) async fn guard(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(token) = &state.token {
        match bearer(headers) {
            None => {
                return refuse(
                    Refusal::NoToken,
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required: send Authorization: Bearer <CONDUIT_ADMIN_TOKEN>"
                        .into(),
                );
            }
            Some(given) if !constant_time_eq(given.as_bytes(), token.as_bytes()) => {
                return refuse(
                    Refusal::WrongToken,
                    StatusCode::UNAUTHORIZED,
                    "the bearer token is not this host's: send Authorization: Bearer <CONDUIT_ADMIN_TOKEN>"
                        .into(),
                );
            }
            Some(_) => {}
        }
    }
    if request.method() == Method::POST {
        if !same_origin(headers) {
            return refuse(
                Refusal::CrossOrigin,
                StatusCode::FORBIDDEN,
                "cross-site requests are refused".into(),
            );
        }
        let has_token = state.token.is_some();
        if !has_token && !headers.contains_key(REQUEST_HEADER) {
            return refuse(
                Refusal::MissingRequestHeader,
                StatusCode::FORBIDDEN,
                "state-changing calls need the X-Conduit-Request header (the conduit CLI and page send it)".into(),
            );
        }
    }
    let caller = caller(&state, &request);
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Who an admitted request comes from: how it got in, its peer, the client it names.
fn caller(state: &AdminState, request: &Request) -> Caller {
    let via = request
        .headers()
        .get(REQUEST_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| matches!(*value, "cli" | "page"))
        .unwrap_or("api");
    Caller {
        auth: if state.token.is_some() {
            "token".into()
        } else {
            "loopback, no token".into()
        },
        peer: request
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(Peer(address))| address.to_string()),
        via: via.into(),
    }
}

/// The `Host` header, or the authority of an absolute-form request line.
fn request_host(request: &Request) -> Option<String> {
    match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok().map(str::to_string),
        None => request.uri().authority().map(|a| a.as_str().to_string()),
    }
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

fn refuse(reason: Refusal, status: StatusCode, message: String) -> Response {
    conduit_base::telemetry::record_admin_refusal(reason.label());
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
