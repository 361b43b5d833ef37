//! The admin surface over HTTP: the JSON API the CLI and the Workflows page use, the page
//! itself, Prometheus metrics and a health check. It listens on loopback by default; any other
//! address requires a bearer token from `CONDUIT_ADMIN_TOKEN`.

mod api;
mod auth;
mod metrics;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::workflow::Supervisor;

pub use auth::constant_time_eq;

/// The environment variable holding the admin bearer token.
pub const TOKEN_ENV: &str = "CONDUIT_ADMIN_TOKEN";

/// Why the admin surface could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A non-loopback address without a token.
    #[error(
        "the admin API would listen on {0}, which is not loopback; set {TOKEN_ENV} to a bearer token (or listen on 127.0.0.1)"
    )]
    TokenRequired(SocketAddr),
    /// The address is not valid.
    #[error("host.admin_listen = '{0}' is not an address like 127.0.0.1:7878")]
    BadAddress(String),
    /// Binding failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Shared by the handlers.
pub(crate) struct AdminState {
    pub(crate) supervisor: Supervisor,
    pub(crate) token: Option<String>,
}

/// The admin router for a supervisor; `token` is required on every call but `/healthz` when set.
pub fn router(supervisor: Supervisor, token: Option<String>) -> Router {
    let state = Arc::new(AdminState { supervisor, token });
    Router::new()
        .route("/api/workflows", get(api::list_workflows))
        .route("/api/workflows/{id}", get(api::get_workflow))
        .route("/api/workflows/{id}/start", post(api::start))
        .route("/api/workflows/{id}/stop", post(api::stop))
        .route("/api/workflows/{id}/replay/{mapping}", post(api::replay))
        .route("/api/workflows/{id}/config", get(api::workflow_config))
        .route(
            "/api/workflows/{id}/dead-letters",
            get(api::list_dead_letters),
        )
        .route(
            "/api/workflows/{id}/dead-letters/{letter}",
            get(api::show_dead_letter),
        )
        .route(
            "/api/workflows/{id}/dead-letters/{letter}/retry",
            post(api::retry_dead_letter),
        )
        .route(
            "/api/workflows/{id}/dead-letters/{letter}/drop",
            post(api::drop_dead_letter),
        )
        .route("/api/config/problems", get(api::config_problems))
        .route(
            "/api/workflows/ingress/mappings",
            get(api::ingress_mappings),
        )
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .route("/healthz", get(api::healthz))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/style.css", get(page::style))
        .with_state(state)
}

/// A running admin server.
pub struct AdminServer {
    /// Where it listens.
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stops listening.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Binds the admin API on `listen`, refusing a non-loopback address without a token.
pub async fn serve(
    supervisor: Supervisor,
    listen: &str,
    token: Option<String>,
) -> Result<AdminServer, AdminError> {
    let address: SocketAddr = listen
        .parse()
        .map_err(|_| AdminError::BadAddress(listen.to_string()))?;
    let token = token.filter(|t| !t.is_empty());
    if !address.ip().is_loopback() && token.is_none() {
        return Err(AdminError::TokenRequired(address));
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { address, source })?;
    let app = router(supervisor, token);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the admin API stopped");
        }
    });
    Ok(AdminServer { address, task })
}
