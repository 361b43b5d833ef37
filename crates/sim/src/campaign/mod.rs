//! A wire-faithful Adobe Campaign Standard simulator (axum, state in memory) for the demo, tests
//! and benchmarks: IMS tokens, the API gateway's checks, `profile` and `cusVehicle` under
//! `/<ORG>/campaign/profileAndServices[Ext]`, the email event journal, the opt-out export drop
//! folder, schema drift and fault injection.
//!
//! In-process use:
//! ```no_run
//! # async fn demo() -> Result<(), conduit_sim::campaign::SimError> {
//! use conduit_sim::campaign::{CampaignSim, CampaignSimOptions};
//! let sim = CampaignSim::new(CampaignSimOptions::default());
//! let server = sim.serve("127.0.0.1:0".parse().unwrap()).await?;
//! println!("{} {} {}", server.api_base(), server.ims_url(), server.journal_url());
//! sim.set_opt_out("crm-1", "blackListEmail", true).ok();
//! let export = sim.drop_opt_out_export()?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//! Out of process, the same levers sit under `/_sim/...` (see [`control`]).

mod api;
pub mod control;
mod ims;
mod journal;
mod optout;
pub mod schema;
mod store;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use journal::event_json;
pub use schema::FieldType;

use crate::faults::{FaultConfig, Faults, Rejection, fault_middleware};
use conduit_model::EmailEvent;
use ims::Tokens;
use journal::Journal;
use store::Store;

/// The path of the journal under the simulator's origin (Adobe I/O Events style).
const JOURNAL_ROUTE: &str =
    "/events/organizations/{org}/integrations/conduit/campaign-email-events";

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct CampaignSimOptions {
    /// The organization (tenant) in `/<ORG>/campaign`.
    pub org: String,
    /// The client id IMS accepts (also the expected `X-Api-Key`).
    pub client_id: String,
    /// The client secret IMS accepts.
    pub client_secret: String,
    /// The lifetime of issued tokens (`expires_in`).
    pub token_ttl: Duration,
    /// The drop folder root; when `None`, a fresh temporary directory removed with the simulator.
    pub drop_root: Option<PathBuf>,
    /// The seed of PKeys, tokens and of the random faults until a fault config brings its own.
    pub seed: u64,
    /// Events already in the journal at start.
    pub seed_events: Vec<EmailEvent>,
}

impl Default for CampaignSimOptions {
    fn default() -> CampaignSimOptions {
        CampaignSimOptions {
            org: "CONDUIT".into(),
            client_id: "conduit-campaign-client".into(),
            client_secret: "conduit-campaign-secret".into(),
            token_ttl: Duration::from_secs(86_399),
            drop_root: None,
            seed: 42,
            seed_events: Vec::new(),
        }
    }
}

/// A schema-drift change of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldChange {
    /// The field now has this type.
    Retype(FieldType),
    /// The field is gone.
    Remove,
}

/// Why a simulator call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The drop folder could not be written.
    #[error("cannot write the opt-out export under {path}: {source}")]
    Export {
        /// The drop folder root.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The simulated service refused the change.
    #[error("{detail}")]
    Refused {
        /// The HTTP status Campaign would answer.
        status: u16,
        /// Why.
        detail: String,
    },
    /// The server stopped with an error.
    #[error("the Campaign simulator stopped: {0}")]
    Serve(std::io::Error),
}

impl From<store::RstError> for SimError {
    fn from(error: store::RstError) -> SimError {
        SimError::Refused {
            status: error.status,
            detail: error.detail,
        }
    }
}

/// State shared by the handlers.
pub(crate) struct Shared {
    org: String,
    client_id: String,
    client_secret: String,
    token_ttl: Duration,
    drop_root: PathBuf,
    // A drop folder we created ourselves is removed with the simulator.
    owns_drop_root: bool,
    origin: RwLock<String>,
    store: Mutex<Store>,
    journal: Mutex<Journal>,
    tokens: Mutex<Tokens>,
    faults: Faults,
    requests: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here: every change is one call.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        lock(&self.journal)
    }

    fn origin(&self) -> String {
        self.origin
            .read()
            .map(|origin| origin.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn api_root(&self) -> String {
        self.api_url(&[])
    }

    /// `<api root>/<namespace>/<resource>`: every POST's answer holds it.
    fn collection_url(&self, namespace: &str, resource: &str) -> String {
        self.api_url(&[namespace, resource])
    }

    /// `<origin>/<org>/campaign`, then `/<segment>` for each of `segments`, written in one
    /// buffer under one read of the origin (it is made once per record written).
    fn api_url(&self, segments: &[&str]) -> String {
        let origin = self
            .origin
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let length = origin.len()
            + self.org.len()
            + "//campaign".len()
            + segments
                .iter()
                .map(|segment| segment.len() + 1)
                .sum::<usize>();
        let mut url = String::with_capacity(length);
        for part in [origin.as_str(), "/", &self.org, "/campaign"] {
            url.push_str(part);
        }
        for segment in segments {
            url.push('/');
            url.push_str(segment);
        }
        url
    }

    fn journal_url(&self) -> String {
        format!(
            "{}{}",
            self.origin(),
            JOURNAL_ROUTE.replace("{org}", &self.org)
        )
    }

    fn issue_token(&self) -> String {
        lock(&self.tokens).issue(self.token_ttl)
    }

    fn token_is_valid(&self, token: &str) -> bool {
        lock(&self.tokens).is_valid(token)
    }

    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.owns_drop_root {
            let _ = std::fs::remove_dir_all(&self.drop_root);
        }
    }
}

/// The simulator: cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct CampaignSim {
    shared: Arc<Shared>,
}

static DROP_FOLDERS: AtomicU64 = AtomicU64::new(0);

/// Renders a fault as the Campaign gateway does: 429 with `error_code` 429050 and a whole-second
/// `Retry-After`, server errors with the generic "Oops" message.
fn render_rejection(rejection: &Rejection) -> Response {
    let retry_after = match rejection {
        Rejection::Throttled { retry_after } | Rejection::RequestLimit { retry_after, .. } => {
            *retry_after
        }
        Rejection::ConcurrencyLimit { .. } => Duration::from_secs(1),
        Rejection::ServerError { status } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (
                status,
                axum::Json(serde_json::json!({
                    "code": status.as_u16(),
                    "message": "Oops. Something went wrong. Check your URI and try again."
                })),
            )
                .into_response();
        }
    };
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(serde_json::json!({
            "error_code": "429050",
            "message": "Too many requests"
        })),
    )
        .into_response();
    // Whole seconds, rounded up so a client never comes back too early.
    let seconds = u64::try_from(retry_after.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

impl CampaignSim {
    /// A simulator with empty resources and the options' seed events.
    pub fn new(options: CampaignSimOptions) -> CampaignSim {
        let drop_root = options.drop_root.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "conduit-campaign-sim-{}-{}",
                std::process::id(),
                DROP_FOLDERS.fetch_add(1, Ordering::Relaxed)
            ))
        });
        let mut journal = Journal::default();
        for event in &options.seed_events {
            journal.append(event_json(event));
        }
        CampaignSim {
            shared: Arc::new(Shared {
                org: options.org,
                client_id: options.client_id,
                client_secret: options.client_secret,
                token_ttl: options.token_ttl,
                owns_drop_root: options.drop_root.is_none(),
                drop_root,
                origin: RwLock::new("http://127.0.0.1:0".into()),
                store: Mutex::new(Store::new(options.seed)),
                journal: Mutex::new(journal),
                tokens: Mutex::new(Tokens::new(options.seed)),
                faults: Faults::new(FaultConfig {
                    seed: options.seed,
                    ..FaultConfig::default()
                }),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// The whole HTTP surface: IMS, Campaign API, journal (these two with faults) and `/_sim`.
    pub fn router(&self) -> Router {
        let service = Router::new()
            .route("/{org}/campaign/{*rest}", any(api::campaign))
            .route(JOURNAL_ROUTE, get(api::journal))
            .route_layer(axum::middleware::from_fn_with_state(
                (
                    self.shared.faults.clone(),
                    render_rejection as fn(&Rejection) -> Response,
                ),
                fault_middleware,
            ))
            .route("/ims/token/v3", post(ims::ims_token))
            .with_state(Arc::clone(&self.shared));
        service.merge(control::routes().with_state(self.clone()))
    }

    /// Starts serving on `addr` (port 0 picks a free port); creates the drop folder root.
    pub async fn serve(&self, addr: SocketAddr) -> Result<CampaignSimServer, SimError> {
        let drop_root = &self.shared.drop_root;
        conduit_base::private::create_dir(drop_root).map_err(|source| SimError::Export {
            path: drop_root.clone(),
            source,
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        if let Ok(mut origin) = self.shared.origin.write() {
            *origin = format!("http://{local}");
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .map_err(SimError::Serve)
        });
        Ok(CampaignSimServer {
            addr: local,
            org: self.shared.org.clone(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Every record of a resource as the API renders it (empty for an unknown resource).
    pub fn records(&self, resource: &str) -> Vec<Value> {
        let collection = format!(
            "{}/profileAndServicesExt/{resource}",
            self.shared.api_root()
        );
        let store = self.shared.store();
        match store.page(resource, None, 0, usize::MAX, &collection) {
            Ok(page) => page.content,
            Err(_) => Vec::new(),
        }
    }

    /// The record whose identification key (`externalId`, `cusCrmId`) equals `key`.
    pub fn find(&self, resource: &str, key: &str) -> Option<Value> {
        let collection = format!(
            "{}/profileAndServicesExt/{resource}",
            self.shared.api_root()
        );
        self.shared.store().find_by_key(resource, key, &collection)
    }

    /// Creates a record directly (seeding), with the same validation as a POST; returns its PKey.
    pub fn insert(&self, resource: &str, fields: &Value) -> Result<String, SimError> {
        Ok(self.shared.store().create(resource, fields.clone())?)
    }

    /// Appends an email event to the journal.
    pub fn emit_event(&self, event: &EmailEvent) {
        self.shared.journal().append(event_json(event));
    }

    /// Appends any JSON as a journal event (to test how readers handle bad events).
    pub fn emit_raw_event(&self, event: Value) {
        self.shared.journal().append(event);
    }

    /// How many events the journal holds.
    pub fn journal_len(&self) -> usize {
        self.shared.journal().event_count()
    }

    /// Changes an opt-out attribute of the profile with this CRM ID in Campaign, records its
    /// attribute-level change time and queues it for the next export.
    pub fn set_opt_out(&self, crm_id: &str, attribute: &str, value: bool) -> Result<(), SimError> {
        if !schema::is_opt_out_field(attribute) {
            return Err(SimError::Refused {
                status: 400,
                detail: format!(
                    "{attribute:?} is not an opt-out attribute (blackList* or ccpaOptOut)"
                ),
            });
        }
        let mut store = self.shared.store();
        let pkey = store.pkey_of("profile", crm_id)?;
        store.patch("profile", &pkey, serde_json::json!({ attribute: value }))?;
        Ok(())
    }

    /// When Campaign last changed this opt-out attribute of this profile (RFC 3339).
    pub fn opt_out_changed_at(&self, crm_id: &str, attribute: &str) -> Option<String> {
        self.shared
            .store()
            .opt_outs
            .changed_at(crm_id, attribute)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    /// How many opt-out changes wait for the next export.
    pub fn pending_opt_outs(&self) -> usize {
        self.shared.store().opt_outs.pending().len()
    }

    /// Writes the queued opt-out changes as the next export file; returns its path.
    pub fn drop_opt_out_export(&self) -> Result<PathBuf, SimError> {
        let (at, changes) = self.shared.store().opt_outs.take_export(chrono::Utc::now());
        optout::write_export(&self.shared.drop_root, at, &changes).map_err(|source| {
            SimError::Export {
                path: self.shared.drop_root.clone(),
                source,
            }
        })
    }

    /// The drop folder root (exports go to `d365_loads/exports` under it).
    pub fn drop_root(&self) -> PathBuf {
        self.shared.drop_root.clone()
    }

    /// Retypes or removes a field of a resource (schema drift).
    pub fn change_field(
        &self,
        resource: &str,
        field: &str,
        change: FieldChange,
    ) -> Result<(), SimError> {
        let mut store = self.shared.store();
        let schema = store.schema_mut(resource)?;
        let position = schema
            .fields
            .iter()
            .position(|candidate| candidate.name == field)
            .ok_or_else(|| SimError::Refused {
                status: 404,
                detail: format!("resource {resource} has no field {field}"),
            })?;
        match change {
            FieldChange::Remove => {
                schema.fields.remove(position);
            }
            FieldChange::Retype(field_type) => {
                let definition = &mut schema.fields[position];
                definition.field_type = field_type;
                definition.length = (field_type == FieldType::String).then_some(255);
            }
        }
        Ok(())
    }

    /// The fault switchboard.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Invalidates every issued token (the next call gets 401 and must fetch a new one).
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).revoke_all();
    }

    /// How many tokens IMS has issued.
    pub fn tokens_issued(&self) -> u64 {
        lock(&self.shared.tokens).count
    }

    /// How many authenticated API and journal calls were served (faulted ones excluded).
    pub fn requests_served(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The client id IMS accepts.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The client secret IMS accepts.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// The organization name.
    pub fn org(&self) -> &str {
        &self.shared.org
    }
}

/// A running simulator; dropping it stops the server too.
pub struct CampaignSimServer {
    addr: SocketAddr,
    org: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SimError>>>,
}

impl CampaignSimServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The root of the `/_sim` control API (see [`control`]), e.g. `http://<addr>/_sim/`.
    pub fn control_url(&self) -> String {
        format!("http://{}/_sim/", self.addr)
    }

    /// The API base, `http://<addr>/<ORG>/campaign` (stands for `https://mc.adobe.io/<ORG>/campaign`).
    pub fn api_base(&self) -> String {
        format!("{}/{}/campaign", self.origin(), self.org)
    }

    /// The IMS token URL, `http://<addr>/ims/token/v3`.
    pub fn ims_url(&self) -> String {
        format!("{}/ims/token/v3", self.origin())
    }

    /// The event journal URL.
    pub fn journal_url(&self) -> String {
        format!(
            "{}{}",
            self.origin(),
            JOURNAL_ROUTE.replace("{org}", &self.org)
        )
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CampaignSimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
