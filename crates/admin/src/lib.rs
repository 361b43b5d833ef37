//! The admin surface over HTTP(S): the JSON API the CLI and the Workflows page use, the page
//! itself, Prometheus metrics, health and readiness checks, backups and the audit trail of operator changes. It
//! listens on loopback by default and answers only to allowed `Host` names; any other listen
//! address requires a bearer token from `CONDUIT_ADMIN_TOKEN` and either TLS (a configured
//! certificate and key) or an explicit `host.admin_allow_plain_http`.
//!
//! It drives the engine's supervisor and reads the store's counters and audit trail; it knows
//! nothing of connectors or plugins (the editor's plugin check is a hook the runtime passes
//! in, [`PluginCheck`]).

mod api;
mod auth;
mod backup;
mod editor;
mod hosts;
mod metrics;
mod page;
mod tls;
mod verify;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use conduit_config::{Config, Problem};
use conduit_engine::Supervisor;
use conduit_model::WorkflowId;

pub use auth::constant_time_eq;
pub use backup::{ENTRIES_HEADER, FORMAT_HEADER};
pub use conduit_base::https::TlsListener;
pub use tls::{TlsError, TlsFiles};

use auth::Peer;
use hosts::HostAllowList;

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
    /// A non-loopback address over plain HTTP without the explicit opt-out.
    #[error(
        "the admin API would listen on {0}, which is not loopback, over plain HTTP: the token and the personal data in dead letters would cross the network in clear; set host.admin_tls_cert and host.admin_tls_key to serve HTTPS, or set host.admin_allow_plain_http = true if the network already provides TLS (e.g. a cluster-internal Service behind a TLS-terminating proxy), or listen on 127.0.0.1"
    )]
    PlainHttpOffLoopback(SocketAddr),
    /// The address is not valid.
    #[error("host.admin_listen = '{0}' is not an address like 127.0.0.1:7878")]
    BadAddress(String),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How the admin API listens and whom it answers.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The listen address (`host.admin_listen`).
    pub listen: String,
    /// The bearer token every call but `/healthz` and `/readyz` needs, when set.
    pub token: Option<String>,
    /// Names it answers to besides loopback and the listen address (`host.admin_hosts`).
    pub hosts: Vec<String>,
    /// Serve HTTPS with these files (`host.admin_tls_cert`, `host.admin_tls_key`).
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP off loopback (`host.admin_allow_plain_http`).
    pub allow_plain_http: bool,
    /// The workflow editor's check of a workflow's plugin; without it the editor validates the
    /// config only.
    pub plugin_check: Option<PluginCheck>,
}

/// Checks one workflow's plugin in a config as `conduit config check` does (the component
/// loads, implements the workflow's world and its `configure` accepts its settings), one
/// problem per failure. The editor runs it on each check and save of that workflow's section,
/// on a blocking thread: it runs plugin code, up to the workflow's plugin deadline per call.
#[derive(Clone)]
pub struct PluginCheck(Arc<CheckFn>);

/// The function behind a [`PluginCheck`].
type CheckFn = dyn Fn(&Config, WorkflowId) -> Vec<Problem> + Send + Sync;

impl PluginCheck {
    /// A check from a function of the edited config and the edited workflow.
    pub fn new(
        check: impl Fn(&Config, WorkflowId) -> Vec<Problem> + Send + Sync + 'static,
    ) -> PluginCheck {
        PluginCheck(Arc::new(check))
    }

    /// The problems of `workflow`'s plugin in `config`; runs plugin code (call it off the
    /// async workers).
    pub fn check(&self, config: &Config, workflow: WorkflowId) -> Vec<Problem> {
        (self.0)(config, workflow)
    }
}

impl std::fmt::Debug for PluginCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginCheck")
    }
}

impl AdminOptions {
    /// Plain HTTP on `listen` with no token and no extra names.
    pub fn plain(listen: &str) -> AdminOptions {
        AdminOptions {
            listen: listen.to_string(),
            token: None,
            hosts: Vec::new(),
            tls: None,
            allow_plain_http: false,
            plugin_check: None,
        }
    }
}

/// Shared by the handlers.
pub(crate) struct AdminState {
    pub(crate) supervisor: Supervisor,
    pub(crate) token: Option<String>,
    pub(crate) hosts: HostAllowList,
    /// The workflow editor's saves and remembered texts.
    pub(crate) editor: editor::EditorState,
    /// The editor's check of the edited workflow's plugin, when the runtime gives one.
    pub(crate) plugin_check: Option<PluginCheck>,
}

/// The admin router for a supervisor listening on `listen` (whose address is allowed as a
/// `Host`, with loopback and `hosts`); `token` is required on every call but `/healthz` and
/// `/readyz`; the editor checks plugins with `plugin_check` when given.
pub fn router(
    supervisor: Supervisor,
    listen: SocketAddr,
    token: Option<String>,
    hosts: &[String],
    plugin_check: Option<PluginCheck>,
) -> Router {
    // Every refusal reason shows at 0 from the first scrape, so a dashboard can tell "none yet"
    // from "not measured"; once per router, not per scrape.
    conduit_base::telemetry::declare_admin_refusals(
        auth::Refusal::ALL.iter().map(|reason| reason.label()),
    );
    let state = Arc::new(AdminState {
        supervisor,
        token,
        hosts: HostAllowList::new(listen.ip(), hosts),
        editor: editor::EditorState::default(),
        plugin_check,
    });
    Router::new()
        .route("/api/workflows", get(api::list_workflows))
        .route("/api/workflows/{id}", get(api::get_workflow))
        .route("/api/workflows/{id}/start", post(api::start))
        .route("/api/workflows/{id}/stop", post(api::stop))
        .route("/api/workflows/{id}/replay/{mapping}", post(api::replay))
        .route("/api/workflows/{id}/config", get(api::workflow_config))
        .route("/api/workflows/{id}/verify", post(verify::verify))
        .route("/api/workflows/{id}/preview", post(verify::preview))
        .route(
            "/api/workflows/{id}/edit",
            get(editor::load).post(editor::save),
        )
        .route("/api/workflows/{id}/edit/check", post(editor::check))
        .route("/api/metadata/{system}/{table}", get(editor::metadata))
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
        .route("/api/audit", get(api::audit))
        .route("/api/backup", post(backup::backup))
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .route("/healthz", get(api::healthz))
        // Like /healthz, unauthenticated for the kubelet's probes: it tells only whether each
        // workflow is where it should be, never data.
        .route("/readyz", get(api::readyz))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/style.css", get(page::style))
        // Outermost, so that no route (not even /healthz or the page) answers a foreign Host.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::host_guard,
        ))
        .with_state(state)
}

/// A running admin server.
pub struct AdminServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// Whether it serves HTTPS.
    pub tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Its base URL as reached on `address` (e.g. `https://127.0.0.1:7878`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// Stops listening.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Binds the admin API, refusing a non-loopback address without a token, or without TLS
/// unless plain HTTP is explicitly allowed.
pub async fn serve(
    supervisor: Supervisor,
    options: AdminOptions,
) -> Result<AdminServer, AdminError> {
    let address: SocketAddr = options
        .listen
        .parse()
        .map_err(|_| AdminError::BadAddress(options.listen.clone()))?;
    let token = options.token.filter(|t| !t.is_empty());
    let loopback = address.ip().is_loopback();
    if !loopback && token.is_none() {
        return Err(AdminError::TokenRequired(address));
    }
    if !loopback && options.tls.is_none() && !options.allow_plain_http {
        return Err(AdminError::PlainHttpOffLoopback(address));
    }
    let tls = options.tls.as_ref().map(tls::server_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { address, source })?;
    let app = router(
        supervisor,
        address,
        token,
        &options.hosts,
        options.plugin_check,
    );
    let served = tls.is_some();
    let task = match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config, "admin API")
                .map_err(|source| AdminError::Bind { address, source })?;
            tokio::spawn(async move {
                let app = app.into_make_service_with_connect_info::<Peer>();
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!(%error, "the admin API stopped");
                }
            })
        }
        None => tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<Peer>();
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the admin API stopped");
            }
        }),
    };
    Ok(AdminServer {
        address,
        tls: served,
        task,
    })
}
