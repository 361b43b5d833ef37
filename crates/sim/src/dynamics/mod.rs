//! The Dynamics 365 (Dataverse Web API) simulator: the Microsoft identity platform token
//! endpoint, the `/api/data/v9.2/` Web API with change tracking and `$batch`, fault injection,
//! and a `/_sim/...` control API, over an in-memory store.
//!
//! In-process use (demo, tests, benches):
//! ```no_run
//! # async fn example() -> Result<(), conduit_sim::SimError> {
//! use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions};
//! let sim = DynamicsSim::new(DynamicsSimOptions { seed_contacts: 100, ..Default::default() });
//! let server = sim.serve("127.0.0.1:0".parse().expect("an address")).await?;
//! let token_url = server.token_url("any-tenant"); // POST client credentials here
//! let base = server.base_url();                   // e.g. http://127.0.0.1:PORT/
//! sim.faults().update(|faults| faults.throttle_burst = 3).map_err(conduit_sim::SimError::Rejected)?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//! The same operations are offered over HTTP under `/_sim/` (see `control.rs`).

mod api;
mod auth;
mod batch;
mod control;
mod multipart;
pub mod odata;
pub mod query;
pub mod schema;
mod seed;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

pub use schema::{AttributeChange, AttributeType};
pub use seed::seeded_id;

use self::api::{API_PREFIX, ApiRequest, ApiResponse};
use self::odata::ApiError;
use self::store::{Clock, Store, WriteMode};
use super::faults::{FaultConfig, Faults, Rejection, fault_middleware};
use super::tls::{self, TlsIdentity};
use super::{ServerHandle, SimError, serve_router, serve_router_tls};

/// The largest request body the simulator reads (a full 1000-part `$batch` fits easily).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How the simulator starts.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicsSimOptions {
    /// The client id the token endpoint accepts.
    pub client_id: String,
    /// The client secret the token endpoint accepts.
    pub client_secret: String,
    /// Deterministic contacts to seed.
    pub seed_contacts: usize,
    /// Vehicles to seed (linked to the seeded contacts).
    pub seed_vehicles: usize,
    /// The simulated time at start; `None` = now.
    pub clock_start: Option<DateTime<Utc>>,
    /// The `expires_in` of issued tokens.
    pub token_lifetime: Duration,
    /// Faults in force from the start.
    pub faults: FaultConfig,
}

impl Default for DynamicsSimOptions {
    fn default() -> DynamicsSimOptions {
        DynamicsSimOptions {
            client_id: "conduit-sim-client".to_string(),
            client_secret: "conduit-sim-secret".to_string(),
            seed_contacts: 0,
            seed_vehicles: 0,
            clock_start: None,
            token_lifetime: Duration::from_secs(3599),
            faults: FaultConfig::default(),
        }
    }
}

struct Inner {
    store: Mutex<Store>,
    faults: Faults,
    tokens: auth::Tokens,
    client_id: String,
    client_secret: String,
    token_lifetime: Duration,
}

/// A simulated Dataverse organization; clones share the same state.
#[derive(Clone)]
pub struct DynamicsSim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DynamicsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicsSim")
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// A running simulator server.
#[derive(Debug)]
pub struct SimServer {
    handle: ServerHandle,
    /// `http` or `https`.
    scheme: &'static str,
}

impl SimServer {
    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The organization URL, e.g. `http://127.0.0.1:5555/` (`https://` when served with
    /// [`DynamicsSim::serve_tls`]; the API is under `api/data/v9.2/`).
    pub fn base_url(&self) -> String {
        format!("{}://{}/", self.scheme, self.local_addr())
    }

    /// The root of the `/_sim` control API, e.g. `http://127.0.0.1:5555/_sim/`.
    pub fn control_url(&self) -> String {
        format!("{}_sim/", self.base_url())
    }

    /// The token endpoint for `tenant` (any tenant is accepted).
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

impl DynamicsSim {
    /// A simulator with the seeded schema and `options.seed_*` rows.
    pub fn new(options: DynamicsSimOptions) -> DynamicsSim {
        let clock = Clock::new(options.clock_start.unwrap_or_else(Utc::now));
        let mut store = Store::new(schema::seeded_tables(), clock);
        if let Err(error) = seed::seed(&mut store, options.seed_contacts, options.seed_vehicles) {
            // The seed data is ours and matches the schema; this would be a simulator bug.
            tracing::error!(%error, "the simulator could not seed its data");
        }
        DynamicsSim {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                faults: Faults::new(options.faults),
                tokens: auth::Tokens::default(),
                client_id: options.client_id,
                client_secret: options.client_secret,
                token_lifetime: options.token_lifetime,
            }),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves the token endpoint, the Web API and the control API on `addr`.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SimServer, SimError> {
        let handle = serve_router(self.router(), addr).await?;
        Ok(SimServer {
            handle,
            scheme: "http",
        })
    }

    /// Serves the same over HTTPS on `addr` with `identity`, as Dataverse itself only answers
    /// over HTTPS (clients that refuse plain HTTP need it).
    pub async fn serve_tls(
        &self,
        addr: SocketAddr,
        identity: &TlsIdentity,
    ) -> Result<SimServer, SimError> {
        let config = tls::server_config(identity)?;
        let handle = serve_router_tls(self.router_for(Scheme("https")), addr, config).await?;
        Ok(SimServer {
            handle,
            scheme: "https",
        })
    }

    /// The axum router of the whole simulator (to embed it elsewhere), served over plain HTTP.
    pub fn router(&self) -> Router {
        self.router_for(Scheme("http"))
    }

    /// The router, with the scheme the absolute URLs it writes (next and delta links,
    /// `OData-EntityId`, `@odata.context`) start with.
    fn router_for(&self, scheme: Scheme) -> Router {
        let api = Router::new()
            .route("/api/data/v9.2/{*rest}", any(serve_api))
            // The service document sits at the root, with or without the trailing slash.
            .route("/api/data/v9.2/", any(serve_api))
            .route("/api/data/v9.2", any(serve_api))
            .route_layer(axum::middleware::from_fn_with_state(
                (
                    self.inner.faults.clone(),
                    render_rejection as fn(&Rejection) -> Response,
                ),
                fault_middleware,
            ))
            .with_state(self.clone());
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(auth::token_endpoint))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(auth::openid_configuration),
            )
            .merge(control::routes())
            .with_state(self.clone())
            .merge(api)
            .layer(axum::Extension(scheme))
    }

    /// Creates or updates row `id` of `table` (logical name) with client-style fields
    /// (attribute names; lookups as `nav@odata.bind`), as a PATCH upsert would.
    pub fn upsert(&self, table: &str, id: &str, fields: Map<String, Json>) -> Result<(), SimError> {
        let id = parse_id(id)?;
        self.store()
            .write(table, &id, &fields, WriteMode::Upsert, None)
            .map(|_| ())
            .map_err(rejected)
    }

    /// Deletes row `id` of `table`.
    pub fn delete(&self, table: &str, id: &str) -> Result<(), SimError> {
        let id = parse_id(id)?;
        self.store().delete(table, &id).map_err(rejected)
    }

    /// Every row of `table` as the Web API renders it (no annotations), or none for an unknown table.
    pub fn rows(&self, table: &str) -> Vec<Json> {
        api::all_rows(&self.store(), table)
    }

    /// The ids of the rows of `table`, in the order [`DynamicsSim::rows`] lists them, without
    /// rendering any (the simulator's start-up takes the contacts' ids this way).
    pub fn ids(&self, table: &str) -> Vec<String> {
        api::all_ids(&self.store(), table)
    }

    /// The number of rows of `table` (0 for an unknown table).
    pub fn count(&self, table: &str) -> usize {
        self.store()
            .table(table)
            .map_or(0, |state| state.rows.len())
    }

    /// The fault injector of the Web API routes.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Moves the simulated clock forward (ages delta tokens and access tokens).
    pub fn advance_clock(&self, by: Duration) {
        self.store().clock.advance(by);
    }

    /// The simulated time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.store().clock.now()
    }

    /// Changes the schema (schema drift): retype or remove `attribute` of `table`.
    pub fn change_attribute(
        &self,
        table: &str,
        attribute: &str,
        change: AttributeChange,
    ) -> Result<(), SimError> {
        self.store()
            .change_attribute(table, attribute, &change)
            .map_err(rejected)
    }

    /// Invalidates every issued access token, so the next API call gets a 401.
    pub fn revoke_tokens(&self) {
        self.inner.tokens.revoke_all();
    }
}

fn parse_id(id: &str) -> Result<String, SimError> {
    uuid::Uuid::parse_str(id)
        .map(|id| id.to_string())
        .map_err(|_| SimError::Rejected(format!("'{id}' is not a GUID")))
}

fn rejected(error: ApiError) -> SimError {
    SimError::Rejected(error.message)
}

/// Renders a fault in Dataverse's words (the documented service-protection errors).
fn render_rejection(rejection: &Rejection) -> Response {
    let (status, retry_after, error) = match rejection {
        Rejection::Throttled { retry_after } => (
            429,
            Some(*retry_after),
            ApiError::new(
                429,
                "0x80072322",
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
            ),
        ),
        Rejection::RequestLimit {
            max_requests,
            window,
            retry_after,
        } => (
            429,
            Some(*retry_after),
            ApiError::new(
                429,
                "0x80072322",
                format!(
                    "Number of requests exceeded the limit of {max_requests} over time window of {} seconds.",
                    window.as_secs()
                ),
            ),
        ),
        Rejection::ConcurrencyLimit { max_concurrent } => (
            429,
            Some(Duration::from_secs(1)),
            ApiError::new(
                429,
                "0x80072326",
                format!("Number of concurrent requests exceeded the limit of {max_concurrent}."),
            ),
        ),
        Rejection::ServerError { status } => (
            *status,
            None,
            ApiError::new(*status, "0x80040216", "An unexpected error occurred."),
        ),
    };
    let mut response = to_axum(&ApiResponse::error(&error));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if let Some(wait) = retry_after {
        // Retry-After is whole seconds; round up so a client never comes back too early.
        let seconds = wait.as_millis().div_ceil(1000).max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert("Retry-After", value);
        }
    }
    response
}

fn to_axum(response: &ApiResponse) -> Response {
    let mut out = Response::new(Body::from(response.body.clone()));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out
}

/// The scheme the simulator is served with (`http` or `https`), for the absolute URLs it writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheme(pub(crate) &'static str);

async fn serve_api(State(sim): State<DynamicsSim>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !sim.inner.tokens.is_valid(&parts.headers, sim.now()) {
        return auth::unauthorized();
    }
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => String::from_utf8_lossy(&body).into_owned(),
        Err(error) => {
            return to_axum(&ApiResponse::error(&ApiError::bad_request(format!(
                "The request body could not be read: {error}"
            ))));
        }
    };
    let host = parts
        .headers
        .get("host")
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let scheme = parts
        .extensions
        .get::<Scheme>()
        .map_or("http", |scheme| scheme.0);
    let path = parts.uri.path();
    let request = ApiRequest {
        method: parts.method.as_str().to_string(),
        path: path
            .strip_prefix(API_PREFIX)
            .or_else(|| path.strip_prefix(API_PREFIX.trim_end_matches('/')))
            .unwrap_or(path)
            .to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect(),
        body,
        api_root: format!("{scheme}://{host}{API_PREFIX}"),
    };
    let mut store = sim.store();
    let response = if request.path == "$batch" && request.method == "POST" {
        batch::handle_batch(&mut store, &request)
    } else {
        api::handle(&mut store, &request)
    };
    drop(store);
    to_axum(&response).into_response()
}
