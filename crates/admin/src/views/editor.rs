//! The answers of the workflow editor's endpoints (`GET` and `POST /api/workflows/{id}/edit`):
//! a section to edit with the version of the file it came from, a save, and a refused save
//! with its problems at their fields, the file's current text, or the patch to apply by hand;
//! and the services' fields the editor offers (`GET /api/metadata/{system}/{table}`).

use serde::{Deserialize, Serialize};

pub use conduit_config::edit::FieldProblem;
pub use conduit_engine::{MetadataField, MetadataSystem};
use conduit_model::WorkflowId;

/// A workflow's section as the editor loads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditableSection {
    /// The workflow.
    pub workflow: WorkflowId,
    /// The version (SHA-256 of the file text) a save must name.
    pub version: String,
    /// The section with every default filled in; `null` when the file has no section yet.
    pub section: Option<serde_json::Value>,
    /// The config file.
    pub file: String,
    /// True when the section (or its plugin) differs from what the running workflow started with.
    pub pending_changes: bool,
    /// What changed, briefly.
    pub pending_summary: Vec<String>,
    /// The closed sets the section's words come from, for the editor's pickers.
    pub choices: EditorChoices,
}

/// The values the editor offers for the keys whose values come from a closed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditorChoices {
    /// The builtin plugins of the workflow's world (`builtin:...`).
    pub builtin_plugins: Vec<String>,
    /// Filter operators.
    pub filter_ops: Vec<String>,
    /// Filter combinators.
    pub combines: Vec<String>,
    /// Opt-out directions.
    pub directions: Vec<String>,
    /// Campaign opt-out attributes.
    pub opt_out_attributes: Vec<String>,
}

/// The answer of `POST /api/workflows/{id}/edit/check`: what a save would change, or why it
/// would be refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditChecked {
    /// Each problem, at its field; empty when a save would be accepted.
    pub field_problems: Vec<FieldProblem>,
    /// What a save would change, as a unified diff (empty when invalid or unchanged).
    pub diff: String,
}

/// The body of a save: the edited section and the version it was loaded from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionEdit {
    /// The version the editor loaded.
    pub version: String,
    /// The whole section as edited (the shape `GET .../edit` answers).
    pub section: serde_json::Value,
}

/// A save that was written (or changed nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditSaved {
    /// The file's new version.
    pub version: String,
    /// Whether the file changed.
    pub changed: bool,
    /// What changed, as a unified diff of the file.
    pub diff: String,
    /// True when the workflow now waits for a stop and start to use the edit.
    pub pending_changes: bool,
    /// What waits, briefly.
    pub pending_summary: Vec<String>,
}

/// Why a save wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditRefusal {
    /// The edit does not pass validation (422): see `field_problems`.
    Invalid,
    /// The file changed since the editor loaded it (409): see `current_text`.
    Changed,
    /// The file cannot be written (409): apply `patch` to the source of the config.
    ReadOnly,
    /// The request is not a section's shape (400).
    BadEdit,
    /// The file on disk does not parse, so it cannot be edited here (422).
    Unparsable,
    /// Reading or writing failed (500); the file is as it was.
    Failed,
}

/// The body of a refused save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRefused {
    /// What went wrong and what to do.
    pub error: String,
    /// Why, as a word the page acts on.
    pub refusal: EditRefusal,
    /// Each problem of an invalid edit, at its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_problems: Vec<FieldProblem>,
    /// The file's version now (a changed file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// The file's text now (a changed file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_text: Option<String>,
    /// The other change: a unified diff from the text the editor loaded to the text now, when
    /// the host still remembers the text it handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_change: Option<String>,
    /// The edit as a unified diff of the file, to apply where the file comes from (a
    /// read-only file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}
