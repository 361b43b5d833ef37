//! The simulated Adobe IMS: `POST /ims/token/v3` (OAuth server-to-server client credentials,
//! form-encoded) and the bookkeeping of issued tokens that the gateway checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;

/// `POST /ims/token/v3`: OAuth server-to-server client credentials.
pub async fn ims_token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let refuse = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if field("grant_type") != "client_credentials" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "unsupported grant_type parameter",
        );
    }
    if field("client_id") != shared.client_id {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "invalid client_id parameter",
        );
    }
    if field("client_secret") != shared.client_secret.as_str() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid client_secret parameter",
        );
    }
    if field("scope").is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope parameter is required",
        );
    }
    let token = shared.issue_token();
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": shared.token_ttl.as_secs(),
    }))
    .into_response()
}

/// The tokens IMS issued, with their expiry.
pub struct Tokens {
    issued: HashMap<String, Instant>,
    rng: fastrand::Rng,
    /// How many tokens IMS issued so far.
    pub count: u64,
}

impl Tokens {
    /// No tokens yet; `seed` fixes the token texts.
    pub fn new(seed: u64) -> Tokens {
        Tokens {
            issued: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed ^ 0x70_6b_65_6e),
            count: 0,
        }
    }

    /// Issues a token valid for `ttl`.
    pub fn issue(&mut self, ttl: Duration) -> String {
        let token: String = (0..48).map(|_| self.rng.alphanumeric()).collect();
        let token = format!("eyJ{token}");
        self.issued.insert(token.clone(), Instant::now() + ttl);
        self.count += 1;
        token
    }

    /// True when the token was issued and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        self.issued
            .get(token)
            .is_some_and(|expires| Instant::now() < *expires)
    }

    /// Invalidates every issued token.
    pub fn revoke_all(&mut self) {
        self.issued.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_can_be_revoked() {
        let mut tokens = Tokens::new(1);
        let live = tokens.issue(Duration::from_secs(60));
        let dead = tokens.issue(Duration::ZERO);
        assert!(tokens.is_valid(&live));
        assert!(!tokens.is_valid(&dead));
        tokens.revoke_all();
        assert!(!tokens.is_valid(&live));
    }
}
