//! Wire-faithful simulators of the Dataverse Web API and the Campaign Standard API, for the demo, tests and benchmarks.
//!
//! Each simulator keeps its data in memory behind a cheap-to-clone handle with a Rust API (for
//! in-process use) and serves the real wire format over loopback HTTP with [`serve_router`].
//! [`faults`] is shared: it injects throttling, errors, latency, resets, lost responses, non-JSON
//! bodies and service limits, at rates, in bursts or scripted for the next requests.
//!
//! They know nothing of the engine, the store or plugins. They still borrow a few codecs from
//! `conduit-connectors` (multipart, dates, keys), so a codec bug can hide on both sides; giving
//! them codecs of their own is issue 17.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod campaign;
pub mod dynamics;
pub mod faults;
pub mod tls;

/// An Ingress table mapping of the simulated Dynamics 365 contacts to Campaign profiles, as
/// TOML: the one `conduit demo` runs and the ingress benchmark measures.
pub const SEEDED_CONTACTS_MAPPING: &str = r#"[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [
  { source = "firstname", destination = "firstName" },
  { source = "lastname", destination = "lastName" },
  { source = "emailaddress1", destination = "email" },
  { source = "gendercode", destination = "gender" },
  { source = "birthdate", destination = "birthDate", apply_updates = false },
]
replacements = [
  { field = "gendercode", from = "Male", to = "male" },
  { field = "gendercode", from = "Female", to = "female" },
]
"#;

/// Why a simulator could not start or refused a control call.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be opened.
    #[error("the simulator cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A control call named something that does not exist or asked for something invalid.
    #[error("{0}")]
    Rejected(String),
    /// The TLS certificate or key given to serve HTTPS cannot be used.
    #[error("the simulator cannot serve HTTPS: {0}")]
    Tls(String),
}

/// A running simulator HTTP server; stops when shut down or dropped.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `router` on `addr` in a background task.
pub async fn serve_router(
    router: axum::Router,
    addr: SocketAddr,
) -> Result<ServerHandle, SimError> {
    let listener = bind(addr).await?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr, source })?;
    Ok(spawn_server(listener, router, local_addr))
}

/// Serves `router` over HTTPS on `addr` in a background task, with the TLS identity `config`
/// (see [`tls::server_config`]).
pub async fn serve_router_tls(
    router: axum::Router,
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Result<ServerHandle, SimError> {
    let listener = bind(addr).await?;
    let listener = conduit_base::https::TlsListener::new(listener, config, "simulator")
        .map_err(|source| SimError::Bind { addr, source })?;
    let local_addr = axum::serve::Listener::local_addr(&listener)
        .map_err(|source| SimError::Bind { addr, source })?;
    Ok(spawn_server(listener, router, local_addr))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, SimError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })
}

fn spawn_server<L>(listener: L, router: axum::Router, local_addr: SocketAddr) -> ServerHandle
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "simulator server stopped with an error");
        }
    });
    ServerHandle {
        local_addr,
        stop: Some(stop),
        task: Some(task),
    }
}
