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

impl Status {
    /// The upper-case name shown to operators.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Stopped => "STOPPED",
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Error(_) => "ERROR",
        }
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
