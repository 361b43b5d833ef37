//! The configuration: parsing `conduit.toml`, validating it with file/line/column diagnostics
//! and hints, and fingerprinting each workflow's effective settings so that an edit made while
//! the host runs can be reported as "changes pending restart".
//!
//! It knows the data model (workflow ids, picklist modes), never plugins, redb or HTTP: the
//! engine and the binary read the validated [`Config`].

mod schema;
mod validate;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use conduit_model::WorkflowId;

pub use schema::*;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{} problem(s) in the config:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// A parsed and validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Its content.
    pub file: ConfigFile,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text).map_err(ConfigError::Invalid)
    }

    /// Parses and validates config text; `path` names the file in diagnostics and anchors
    /// relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Problem>> {
        let locate = Locator::new(path, text);
        let file: ConfigFile = toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            let message = match key_path(&error) {
                Some(key) => format!("{key}: {}", error.message()),
                None => error.message().to_string(),
            };
            vec![locate.problem(span, message, Some(parse_hint(error.message())))]
        })?;
        let config = Config {
            path: path.to_path_buf(),
            file,
        };
        let problems = validate::validate(&config, &locate);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// A problem at a span of this config's file, located by reading the file again (line 1,
    /// column 1 when it cannot be read): for checks made after loading, such as loading and
    /// configuring the plugins.
    pub fn problem_at(
        &self,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) -> Problem {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        Locator::new(&self.path, &text).problem(span, message, hint)
    }

    /// The folder relative paths in the config are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Resolves a path written in the config.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        let path = Path::new(written);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir().join(path)
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve_path(&self.file.host.data_dir)
    }

    /// Whether a workflow has a section.
    pub fn has_workflow(&self, workflow: WorkflowId) -> bool {
        match workflow {
            WorkflowId::Ingress => self.file.ingress.is_some(),
            WorkflowId::Egress => self.file.egress.is_some(),
            WorkflowId::OptInOut => self.file.optinout.is_some(),
        }
    }

    /// The plugin a workflow uses, as written (`builtin:...` or a path).
    pub fn plugin(&self, workflow: WorkflowId) -> Option<&str> {
        match workflow {
            WorkflowId::Ingress => self
                .file
                .ingress
                .as_ref()
                .map(|s| s.plugin.get_ref().as_str()),
            WorkflowId::Egress => self
                .file
                .egress
                .as_ref()
                .map(|s| s.plugin.get_ref().as_str()),
            WorkflowId::OptInOut => self
                .file
                .optinout
                .as_ref()
                .map(|s| s.plugin.get_ref().as_str()),
        }
    }

    /// The effective limits of a workflow: its overrides over the defaults.
    pub fn limits(&self, workflow: WorkflowId) -> EffectiveLimits {
        let specific = match workflow {
            WorkflowId::Ingress => self.file.ingress.as_ref().map(|s| s.limits),
            WorkflowId::Egress => self.file.egress.as_ref().map(|s| s.limits),
            WorkflowId::OptInOut => self.file.optinout.as_ref().map(|s| s.limits),
        }
        .unwrap_or_default();
        let general = self.file.limits;
        EffectiveLimits {
            plugin_deadline_ms: specific
                .plugin_deadline_ms
                .or(general.plugin_deadline_ms)
                .unwrap_or(2_000),
            plugin_memory_mb: specific
                .plugin_memory_mb
                .or(general.plugin_memory_mb)
                .unwrap_or(64),
            failure_threshold: specific
                .failure_threshold
                .or(general.failure_threshold)
                .unwrap_or(5),
            replay_max_rows: specific
                .replay_max_rows
                .or(general.replay_max_rows)
                .unwrap_or(2_000_000),
            missing_record_wait_secs: specific
                .missing_record_wait_secs
                .or(general.missing_record_wait_secs)
                .unwrap_or(3_600),
        }
    }

    /// The pacing of a workflow.
    pub fn pacing(&self, workflow: WorkflowId) -> Pacing {
        match workflow {
            WorkflowId::Ingress => self.file.ingress.as_ref().map(|s| s.pacing.clone()),
            WorkflowId::Egress => self.file.egress.as_ref().map(|s| s.pacing.clone()),
            WorkflowId::OptInOut => self.file.optinout.as_ref().map(|s| s.pacing.clone()),
        }
        .unwrap_or_default()
    }

    /// A digest of everything that shapes a workflow's behaviour: its section, the
    /// connections and limits it uses. Plugin file contents are fingerprinted separately.
    pub fn workflow_fingerprint(&self, workflow: WorkflowId) -> Option<String> {
        let section = match workflow {
            WorkflowId::Ingress => serde_json::to_value(self.file.ingress.as_ref()?),
            WorkflowId::Egress => serde_json::to_value(self.file.egress.as_ref()?),
            WorkflowId::OptInOut => serde_json::to_value(self.file.optinout.as_ref()?),
        }
        .ok()?;
        let shared = serde_json::json!({
            "section": section,
            "dynamics": self.file.dynamics,
            "campaign": self.file.campaign,
            "limits": self.file.limits,
        });
        let mut hasher = Sha256::new();
        hasher.update(shared.to_string().as_bytes());
        Some(hex::encode(hasher.finalize()))
    }

    /// A workflow's section as JSON, for the read-only view of its config.
    pub fn workflow_section_json(&self, workflow: WorkflowId) -> Option<serde_json::Value> {
        match workflow {
            WorkflowId::Ingress => serde_json::to_value(self.file.ingress.as_ref()?).ok(),
            WorkflowId::Egress => serde_json::to_value(self.file.egress.as_ref()?).ok(),
            WorkflowId::OptInOut => serde_json::to_value(self.file.optinout.as_ref()?).ok(),
        }
    }
}

/// The limits a workflow runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Wall-clock budget of one plugin call.
    pub plugin_deadline_ms: u64,
    /// Memory cap of one plugin instance.
    pub plugin_memory_mb: u64,
    /// Consecutive stage failures before ERROR.
    pub failure_threshold: u32,
    /// The replay guard.
    pub replay_max_rows: u64,
    /// How long an update-only write waits for its record to be created.
    pub missing_record_wait_secs: u64,
}

/// Turns byte offsets into file/line/column problems.
pub(crate) struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Locator<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Locator { path, text }
    }

    /// A problem at a span of the file.
    pub(crate) fn problem(
        &self,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) -> Problem {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map_or(0, |last| last.chars().count())
            + 1;
        Problem {
            file: self.path.to_path_buf(),
            line,
            column,
            message,
            hint,
        }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The dotted key a deserialization error is about (`dynamics.batch_size`), when it names one:
/// the message alone ("invalid type: string, expected usize") does not say which value is wrong.
fn key_path(error: &toml::de::Error) -> Option<String> {
    // Without its input, toml's rendering of an error ends with "in `<keys>`".
    let mut bare = error.clone();
    bare.set_input(None);
    bare.to_string().lines().find_map(|line| {
        line.strip_prefix("in `")
            .and_then(|rest| rest.strip_suffix('`'))
            .filter(|keys| !keys.is_empty())
            .map(str::to_owned)
    })
}

fn parse_hint(message: &str) -> String {
    if message.contains("unknown field") {
        "remove the key or fix its spelling; the README lists every key".into()
    } else if message.contains("invalid type") {
        "check the value's type: strings need quotes, numbers and booleans do not".into()
    } else if message.contains("missing field") {
        "add the required key to this section".into()
    } else {
        "see the annotated example conduit.example.toml".into()
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
