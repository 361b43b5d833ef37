//! What the reader and writer stages share: the stop signal, the wake-up between them, the
//! live state they report into, the errors that end a stage run, and the error of STARTING
//! (which the drift guard also returns).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::lifecycle::LiveState;
use conduit_connectors::ConnectorError;
use conduit_store::StoreError;

/// Why a stage run ended; the supervisor restarts the stage with backoff, or puts the
/// workflow in ERROR when the failure is fatal or repeats past the threshold. A failure of
/// another crate's part (the store, a connector, the task runtime) keeps it as the source;
/// the message, shown as the workflow's reason, says it too.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    /// The store failed (disk full, I/O). Nothing of the step was kept.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source failed in a way retrying does not fix.
    #[error("reading the source failed: {origin}: {error}")]
    Source {
        /// The source (mapping name, `events`, ...).
        origin: String,
        /// The connector's error.
        #[source]
        error: ConnectorError,
    },
    /// Credentials were refused (the service's message).
    #[error("credentials refused: {0}")]
    Auth(String),
    /// A mapped destination field is missing or retyped.
    #[error("schema drift: {0}")]
    Drift(String),
    /// The plugin failed on every record of a batch (the first record's reason).
    #[error("the plugin fails on every record: {0}")]
    Plugin(String),
    /// A blocking task of the stage panicked or was cancelled.
    #[error("internal error: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A plugin call panicked on its thread (outside the plugin, which traps instead).
    #[error("internal error: a {0} call panicked: {1}")]
    PluginPanicked(&'static str, String),
    /// The plugin instance was lost: an earlier call panicked while holding it.
    #[error("internal error: {0} lost after a panic")]
    PluginLost(&'static str),
}

impl StageError {
    /// Fatal errors go to ERROR at once: retrying cannot fix them without the operator.
    pub(super) fn is_fatal(&self) -> bool {
        matches!(self, StageError::Drift(_))
    }
}

/// The handles a stage runs with.
#[derive(Clone)]
pub(super) struct StageContext {
    pub(super) stop: watch::Receiver<bool>,
    pub(super) queue_changed: Arc<Notify>,
    pub(super) live: Arc<LiveState>,
}

impl StageContext {
    /// True once Stop was asked for.
    pub(super) fn stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, waking early on Stop.
    pub(super) async fn sleep(&self, duration: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }

    /// Waits for new queue entries, at most `duration`, waking early on Stop.
    pub(super) async fn idle(&self, duration: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.queue_changed.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }

    /// Tells the other stage that the queue changed.
    pub(super) fn notify_progress(&self) {
        self.queue_changed.notify_one();
    }
}

/// A stage the supervisor can run and restart.
pub(super) trait StageRun: Send {
    /// Runs until stopped (Ok) or failed (Err).
    fn run(
        &mut self,
        ctx: &StageContext,
    ) -> impl std::future::Future<Output = Result<(), StageError>> + Send;
}

/// Why STARTING failed; a transient failure (a service unreachable or busy) is retried.
#[derive(Debug)]
pub(super) struct PrepareError {
    pub(super) message: String,
    pub(super) transient: bool,
}

impl PrepareError {
    /// A failure of a service call, transient when the service said so.
    pub(super) fn service(context: &str, error: &ConnectorError) -> PrepareError {
        PrepareError {
            message: format!("{context}: {error}"),
            transient: error.is_transient(),
        }
    }
}

impl From<String> for PrepareError {
    fn from(message: String) -> Self {
        PrepareError {
            message,
            transient: false,
        }
    }
}

impl From<&str> for PrepareError {
    fn from(message: &str) -> Self {
        PrepareError::from(message.to_string())
    }
}
