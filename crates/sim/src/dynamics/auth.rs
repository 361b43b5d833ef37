//! The simulated Microsoft identity platform: the client-credentials token endpoint
//! (`/{tenant}/oauth2/v2.0/token`) with Azure AD's error bodies, its OpenID Connect discovery
//! document (`/{tenant}/v2.0/.well-known/openid-configuration`, which MSAL-based clients read
//! before asking for a token), and the bearer check of the Web API. Tokens expire on the simulated clock, so advancing it makes clients refresh.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{DynamicsSim, Scheme};

/// Issued access tokens and when each expires (simulated time).
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Tokens {
    fn issue(&self, expires: DateTime<Utc>) -> String {
        let token = format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.lock().insert(token.clone(), expires);
        token
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when `headers` carry `Authorization: Bearer <token>` with a live token.
    pub fn is_valid(&self, headers: &HeaderMap, now: DateTime<Utc>) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.lock()
            .get(token.trim())
            .is_some_and(|expires| now < *expires)
    }

    /// Forgets every token.
    pub fn revoke_all(&self) {
        self.lock().clear();
    }
}

/// The Web API's answer to a missing, unknown or expired token.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer error=invalid_token, error_description=\"The access token is missing, invalid or expired\", authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize",
        )],
    )
        .into_response()
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: String) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": uuid::Uuid::new_v4().to_string(),
        "correlation_id": uuid::Uuid::new_v4().to_string(),
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: the OpenID Connect discovery
/// document, its endpoints on this simulator (only the token endpoint answers).
pub async fn openid_configuration(
    Path(tenant): Path<String>,
    Extension(scheme): Extension<Scheme>,
    headers: HeaderMap,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    let tenant_root = format!("{}://{host}/{tenant}", scheme.0);
    axum::Json(json!({
        "issuer": format!("{tenant_root}/v2.0"),
        "authorization_endpoint": format!("{tenant_root}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{tenant_root}/oauth2/v2.0/token"),
        "device_authorization_endpoint": format!("{tenant_root}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{tenant_root}/oauth2/v2.0/logout"),
        "jwks_uri": format!("{tenant_root}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": null,
    }))
    .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token` with a form-encoded client-credentials grant.
pub async fn token_endpoint(
    State(sim): State<DynamicsSim>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!(
                "The app requested an unsupported grant type '{}'.",
                field("grant_type")
            ),
        );
    }
    let scope = field("scope");
    if scope.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "The required field 'scope' is missing from the credential.".to_string(),
        );
    }
    if !scope.ends_with("/.default") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    if field("client_id") != sim.inner.client_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'.",
                field("client_id")
            ),
        );
    }
    if field("client_secret") != sim.inner.client_secret {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".to_string(),
        );
    }
    let lifetime = sim.inner.token_lifetime;
    let expires =
        sim.now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
    let token = sim.inner.tokens.issue(expires);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token,
    }))
    .into_response()
}
