//! The configuration: parsing `conduit.toml`, validating it with file/line/column diagnostics
//! and hints, and fingerprinting each workflow's effective settings so that an edit made while
//! the host runs can be reported as "changes pending restart".
//!
//! A parsed config is resolved once into typed specs ([`Specs`]: [`IngressSpec`],
//! [`EgressSpec`], [`OptInOutSpec`], the connections, limits and pacing) of plain Rust values;
//! the closed sets of words it may write are serde enums ([`Direction`], [`FilterOp`],
//! [`Combine`]) whose bad values are reported located, with the valid values. The TOML schema
//! and its spans stay inside this crate.
//!
//! It knows the data model (workflow ids, plugin worlds, the builtin plugins, the opt-out
//! attributes), never plugins, redb or HTTP: the engine and the binary read the specs of a
//! validated [`Config`].

mod choice;
mod diff;
pub mod edit;
mod render;
mod schema;
mod spec;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use conduit_model::WorkflowId;

pub use choice::{ClosedSet, Combine, Direction, FilterOp, NotInSet};
pub use spec::{
    CampaignSpec, DynamicsSpec, EffectiveLimits, EgressSpec, FieldSpec, FilterRuleSpec,
    FiltersSpec, HostSpec, IngressSpec, KeySpec, MappingSpec, OptInOutSpec, OptOutPairSpec,
    OwnSettings, PacingSpec, PicklistMode, ReplacementSpec, Specs, TlsFiles, WorkflowSpec,
};

pub use diff::unified_diff;
pub use render::{Style, render};

use schema::{ConfigFile, TableMapping};

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
    /// The bytes of the file the problem points at (empty when it has no place in the file,
    /// such as a file that cannot be read); [`render`] shows them in an excerpt.
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            render::printable(&self.message)
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {})", render::printable(hint))?;
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

/// A parsed and validated configuration, resolved into specs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Its content as written (for fingerprints, the section view and located problems).
    file: ConfigFile,
    /// The text it was parsed from: spans found in `file` point into it, not into the file
    /// on disk now, which an operator may have edited since.
    text: Arc<str>,
    /// Its content resolved.
    specs: Specs,
}

/// A place in the config file that a problem found after loading (a plugin that fails to
/// load or to configure) is reported at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKey<'a> {
    /// The `plugin` key of a workflow's section (its section when the default is used).
    Plugin(WorkflowId),
    /// The `name` of an Ingress table mapping.
    Mapping(&'a str),
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
        let base_dir = base_dir_of(path);
        let mut problems = validate::validate(&file, &base_dir, &locate);
        match spec::resolve(&file, &base_dir, &locate) {
            Ok(specs) if problems.is_empty() => Ok(Config {
                path: path.to_path_buf(),
                file,
                text: Arc::from(text),
                specs,
            }),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }

    /// A problem at a key of this config's file, located by reading the file again (line 1,
    /// column 1 when it cannot be read or the key is not written): for checks made after
    /// loading, such as loading and configuring the plugins.
    pub fn problem(&self, at: ConfigKey<'_>, message: String, hint: Option<String>) -> Problem {
        let span = match at {
            ConfigKey::Plugin(workflow) => match workflow {
                WorkflowId::Ingress => self.file.ingress.as_ref().map(|s| s.plugin.span()),
                WorkflowId::Egress => self.file.egress.as_ref().map(|s| s.plugin.span()),
                WorkflowId::OptInOut => self.file.optinout.as_ref().map(|s| s.plugin.span()),
            },
            ConfigKey::Mapping(name) => self.file.ingress.as_ref().and_then(|s| {
                s.mappings
                    .iter()
                    .find(|m| m.name.get_ref() == name)
                    .map(|m| m.name.span())
            }),
        };
        Locator::new(&self.path, &self.text).problem(span.unwrap_or(0..0), message, hint)
    }

    /// Every spec of the config.
    pub fn specs(&self) -> &Specs {
        &self.specs
    }

    /// Host-wide settings.
    pub fn host(&self) -> &HostSpec {
        &self.specs.host
    }

    /// The Dynamics 365 connection, when configured.
    pub fn dynamics(&self) -> Option<&DynamicsSpec> {
        self.specs.dynamics.as_ref()
    }

    /// The Campaign Standard connection, when configured.
    pub fn campaign(&self) -> Option<&CampaignSpec> {
        self.specs.campaign.as_ref()
    }

    /// Dynamics 365 to Campaign, when configured.
    pub fn ingress(&self) -> Option<&IngressSpec> {
        self.specs.ingress.as_ref()
    }

    /// Campaign to Dynamics 365, when configured.
    pub fn egress(&self) -> Option<&EgressSpec> {
        self.specs.egress.as_ref()
    }

    /// Opt-in/out, when configured.
    pub fn optinout(&self) -> Option<&OptInOutSpec> {
        self.specs.optinout.as_ref()
    }

    /// The folder relative paths in the config are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        base_dir_of(&self.path)
    }

    /// Resolves a path written in the config.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        resolve_against(&self.base_dir(), written)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.specs.host.data_dir.clone()
    }

    /// Whether a workflow has a section.
    pub fn has_workflow(&self, workflow: WorkflowId) -> bool {
        self.specs.workflow(workflow).is_some()
    }

    /// The plugin a workflow uses, as written (`builtin:...` or a path).
    pub fn plugin(&self, workflow: WorkflowId) -> Option<&str> {
        self.specs.workflow(workflow).map(|s| s.plugin.as_str())
    }

    /// The effective limits of a workflow: its overrides over the defaults (the defaults when
    /// it is not configured).
    pub fn limits(&self, workflow: WorkflowId) -> EffectiveLimits {
        match self.specs.workflow(workflow) {
            Some(spec) => spec.limits,
            None => spec::default_limits(&self.file.limits),
        }
    }

    /// The pacing of a workflow.
    pub fn pacing(&self, workflow: WorkflowId) -> PacingSpec {
        self.specs
            .workflow(workflow)
            .map(|s| s.pacing)
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

/// The folder relative paths in a config at `path` are resolved against.
fn base_dir_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A path written in the config, resolved against `base_dir` unless absolute.
fn resolve_against(base_dir: &Path, written: &str) -> PathBuf {
    let path = Path::new(written);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
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
            span,
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
