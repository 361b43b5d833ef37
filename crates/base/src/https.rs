//! A TLS listener for axum, shared by the admin API and the simulators: it accepts TCP
//! connections and completes each TLS handshake in its own task, with a deadline, so that one
//! slow or silent client cannot hold up the others; axum only sees finished handshakes.
//!
//! The rustls configuration (which certificate, which key, what errors say) stays with each
//! server, since each reads its identity from its own place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// A listener handing axum connections whose TLS handshake has completed.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts TCP connections on `listener` and runs their handshakes with `config`;
    /// `server` names the server in log lines (e.g. "admin API").
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        server: &'static str,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(%error, server, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            // The receiver is gone only when the listener is dropped.
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, server, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, server, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            connections,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The acceptor only ends when this listener is dropped; never hand out a connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
