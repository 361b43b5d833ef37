//! The lifecycle of a workflow (STOPPED -> STARTING -> RUNNING -> STOPPED, or ERROR with a
//! reason) and the live state its stages report into.

use std::sync::Mutex;

use serde::Serialize;

/// Where a workflow is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "UPPERCASE")]
pub enum Status {
    /// Not running.
    Stopped,
    /// Start requested: validating config, loading plugins, checking credentials and schemas.
    Starting,
    /// Reading and writing.
    Running,
    /// Stopped by a failure it could not recover from.
    Error(String),
}

/// Where a workflow is, without the reason: what views, metrics and the CLI compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StatusKind {
    /// Not running.
    Stopped,
    /// Starting.
    Starting,
    /// Reading and writing.
    Running,
    /// Stopped by a failure.
    Error,
}

impl StatusKind {
    /// The upper-case name shown to operators.
    pub fn name(self) -> &'static str {
        match self {
            StatusKind::Stopped => "STOPPED",
            StatusKind::Starting => "STARTING",
            StatusKind::Running => "RUNNING",
            StatusKind::Error => "ERROR",
        }
    }
}

impl std::fmt::Display for StatusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Status {
    /// Where the workflow is, without the reason.
    pub fn kind(&self) -> StatusKind {
        match self {
            Status::Stopped => StatusKind::Stopped,
            Status::Starting => StatusKind::Starting,
            Status::Running => StatusKind::Running,
            Status::Error(_) => StatusKind::Error,
        }
    }

    /// The upper-case name shown to operators.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The error reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Error(reason) => Some(reason),
            _ => None,
        }
    }
}

/// The live, in-memory state of one workflow, shared by its stages and the supervisor.
#[derive(Debug)]
pub struct LiveState {
    status: Mutex<Status>,
    warning: Mutex<Option<String>>,
    waiting: Mutex<Option<String>>,
}

impl Default for LiveState {
    fn default() -> Self {
        LiveState {
            status: Mutex::new(Status::Stopped),
            warning: Mutex::new(None),
            waiting: Mutex::new(None),
        }
    }
}

impl LiveState {
    /// The current status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Moves to a new status.
    pub fn set_status(&self, status: Status) {
        *lock(&self.status) = status;
    }

    /// Moves to ERROR unless the workflow was stopped meanwhile.
    pub fn fail(&self, reason: String) {
        let mut status = lock(&self.status);
        if *status != Status::Stopped {
            *status = Status::Error(reason);
        }
    }

    /// The last transient problem a running stage is retrying through, if any.
    pub fn warning(&self) -> Option<String> {
        lock(&self.warning).clone()
    }

    /// Reports (or clears) a transient problem.
    pub fn set_warning(&self, warning: Option<String>) {
        *lock(&self.warning) = warning;
    }

    /// What queued writes wait for (a record another workflow has not created yet), if any.
    pub fn waiting(&self) -> Option<String> {
        lock(&self.waiting).clone()
    }

    /// Reports (or clears) what queued writes wait for.
    pub fn set_waiting(&self, waiting: Option<String>) {
        *lock(&self.waiting) = waiting;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the plain values inside half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
