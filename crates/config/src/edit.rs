//! Editing a workflow's section of the config file in place, for the page's editor: the
//! section as structured JSON with a version (a digest of the file text), and a save that
//! writes a changed section back into the TOML with its comments, key order and formatting
//! kept (`toml_edit`), only when the file is still the version the edit started from and the
//! result passes the same validation as `conduit config check`, atomically (a temporary file
//! in the same folder, then a rename). A file that cannot be written (a read-only mount such
//! as a Kubernetes ConfigMap) is answered with the change as a unified diff to apply to the
//! source of the config.
//!
//! Only what the edit changed is touched: the new section is compared with the section as the
//! file has it, and keys, list items and values that are equal stay byte for byte as written.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use conduit_model::WorkflowId;

use super::schema::ConfigFile;
use super::{Config, Problem};

/// One problem of an edit, at its place in the section when it has one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldProblem {
    /// The JSON path of the field inside the workflow's section (`mappings[0].key.source`);
    /// `None` when the problem is about the file or another section.
    pub path: Option<String>,
    /// 1-based line of the edited text.
    pub line: usize,
    /// 1-based column of the edited text.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// A workflow's section as the editor loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Editable {
    /// The digest of the file text the section was read from; a save names it.
    pub version: String,
    /// The section with every default filled in, or `None` when the file has no section.
    pub section: Option<Json>,
    /// The file text.
    pub text: String,
}

/// A save that was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The new file's version.
    pub version: String,
    /// What changed, as a unified diff (empty when the edit changed nothing).
    pub diff: String,
}

/// Why a save wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML (or not the schema's shape), so it cannot be edited here.
    #[error("the config file cannot be edited from the page until it parses: {0}")]
    Unparsable(String),
    /// The edit is not a section's shape (not an object, a value TOML cannot hold).
    #[error("the edit cannot be written: {0}")]
    BadEdit(String),
    /// The file changed since the edit loaded it.
    #[error(
        "the config file changed since the editor loaded it; reload it, redo the change and save again"
    )]
    Conflict {
        /// The file text now.
        current_text: String,
        /// Its version.
        current_version: String,
    },
    /// The edited file would not pass validation.
    #[error("the edit has {} problem(s); nothing was written", .0.len())]
    Invalid(Vec<FieldProblem>),
    /// The file cannot be written (a read-only mount): the change is offered as a patch.
    #[error(
        "the config file {path} cannot be written ({source}); apply the change to the source of the config (e.g. the ConfigMap) with the patch"
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
        /// The change as a unified diff of the file.
        patch: String,
    },
    /// Writing failed for another reason; the file is as it was.
    #[error("cannot write the config file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The version of a file text: its SHA-256, in hex.
pub fn version_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The TOML table name of a workflow's section.
fn section_key(workflow: WorkflowId) -> &'static str {
    match workflow {
        WorkflowId::Ingress => "ingress",
        WorkflowId::Egress => "egress",
        WorkflowId::OptInOut => "optinout",
    }
}

/// Reads a workflow's section for editing.
pub fn load(path: &Path, workflow: WorkflowId) -> Result<Editable, EditError> {
    let text = read(path)?;
    let section = section_json(&text, workflow)?;
    Ok(Editable {
        version: version_of(&text),
        section,
        text,
    })
}

fn read(path: &Path) -> Result<String, EditError> {
    std::fs::read_to_string(path).map_err(|source| EditError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A section of a text as JSON, defaults filled in (as the read-only view shows it).
fn section_json(text: &str, workflow: WorkflowId) -> Result<Option<Json>, EditError> {
    let file: ConfigFile =
        toml::from_str(text).map_err(|error| EditError::Unparsable(error.message().to_string()))?;
    let value = match workflow {
        WorkflowId::Ingress => file.ingress.as_ref().map(serde_json::to_value),
        WorkflowId::Egress => file.egress.as_ref().map(serde_json::to_value),
        WorkflowId::OptInOut => file.optinout.as_ref().map(serde_json::to_value),
    };
    value
        .transpose()
        .map_err(|error| EditError::Unparsable(error.to_string()))
}

/// The text of `text` with a workflow's section replaced by `section`, touching only what
/// differs from the section the text has; nothing is validated.
pub fn apply(text: &str, workflow: WorkflowId, section: &Json) -> Result<String, EditError> {
    let Json::Object(new) = section else {
        return Err(EditError::BadEdit(
            "the section must be a JSON object of the section's keys".into(),
        ));
    };
    let old = section_json(text, workflow)?.unwrap_or(Json::Object(Default::default()));
    let mut document: DocumentMut = text
        .parse()
        .map_err(|error: toml_edit::TomlError| EditError::Unparsable(error.message().into()))?;
    let key = section_key(workflow);
    if document.get(key).is_none() {
        let mut table = Table::new();
        // A blank line before a new section, as the rest of the file has.
        table.decor_mut().set_prefix("\n");
        document.insert(key, Item::Table(table));
    }
    let Some(table) = document.get_mut(key).and_then(Item::as_table_like_mut) else {
        return Err(EditError::Unparsable(format!("'{key}' is not a table")));
    };
    let empty = serde_json::Map::new();
    merge_table(table, old.as_object().unwrap_or(&empty), new)?;
    Ok(document.to_string())
}

/// What a save of `section` would change, as a unified diff, or its problems at their fields:
/// validation as the editor edits, writing nothing.
pub fn check(path: &Path, workflow: WorkflowId, section: &Json) -> Result<String, EditError> {
    check_with(path, workflow, section, &|_| Vec::new())
}

/// [`check`], then `more` on the edited config when it is valid (the admin API passes the
/// plugin's own check: its `configure` with its settings); its problems are placed by
/// [`place_plugin_problems`].
pub fn check_with(
    path: &Path,
    workflow: WorkflowId,
    section: &Json,
    more: &dyn Fn(&Config) -> Vec<Problem>,
) -> Result<String, EditError> {
    let text = read(path)?;
    let edited = apply(&text, workflow, section)?;
    validate(path, &edited, workflow, section, more)?;
    Ok(super::diff::unified_diff(&text, &edited, &file_name(path)))
}

/// The validation of an edited text: the config validator's problems, or when there are none
/// the problems `more` finds in the config.
fn validate(
    path: &Path,
    edited: &str,
    workflow: WorkflowId,
    section: &Json,
    more: &dyn Fn(&Config) -> Vec<Problem>,
) -> Result<(), EditError> {
    let config = Config::parse(path, edited)
        .map_err(|problems| EditError::Invalid(locate_problems(edited, workflow, &problems)))?;
    let problems = more(&config);
    if problems.is_empty() {
        return Ok(());
    }
    let located = locate_problems(edited, workflow, &problems);
    Err(EditError::Invalid(place_plugin_problems(located, section)))
}

/// Places the problems of a plugin check at the editor's fields: a mapping's problem (found at
/// its `name`) at the mapping's own `settings` when the edit gives it some, as those are what
/// only the plugin reads; a problem with no place of its own (the default plugin, not written
/// in the file) at `plugin`.
pub fn place_plugin_problems(problems: Vec<FieldProblem>, section: &Json) -> Vec<FieldProblem> {
    problems
        .into_iter()
        .map(|mut problem| {
            match problem.path.as_deref() {
                None => problem.path = Some("plugin".into()),
                Some(path) => {
                    let settings = path
                        .strip_prefix("mappings[")
                        .and_then(|rest| rest.strip_suffix("].name"))
                        .and_then(|index| index.parse::<usize>().ok())
                        .and_then(|index| section.get("mappings")?.get(index)?.get("settings"))
                        .and_then(Json::as_object)
                        .is_some_and(|settings| !settings.is_empty());
                    if settings && let Some(mapping) = path.strip_suffix(".name") {
                        problem.path = Some(format!("{mapping}.settings"));
                    }
                }
            }
            problem
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || "conduit.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Validates and writes an edit of a workflow's section, if the file is still at `version`.
pub fn save(
    path: &Path,
    version: &str,
    workflow: WorkflowId,
    section: &Json,
) -> Result<Saved, EditError> {
    save_with(path, version, workflow, section, &|_| Vec::new())
}

/// [`save`], refusing also an edit in which `more` finds problems (as [`check_with`]).
pub fn save_with(
    path: &Path,
    version: &str,
    workflow: WorkflowId,
    section: &Json,
    more: &dyn Fn(&Config) -> Vec<Problem>,
) -> Result<Saved, EditError> {
    let text = read(path)?;
    let current_version = version_of(&text);
    if current_version != version {
        return Err(EditError::Conflict {
            current_text: text,
            current_version,
        });
    }
    let edited = apply(&text, workflow, section)?;
    validate(path, &edited, workflow, section, more)?;
    let diff = super::diff::unified_diff(&text, &edited, &file_name(path));
    if edited == text {
        return Ok(Saved {
            version: current_version,
            diff,
        });
    }
    write_atomically(path, &edited).map_err(|error| match error {
        WriteFailure::ReadOnly(source) => EditError::ReadOnly {
            path: path.to_path_buf(),
            source,
            patch: diff.clone(),
        },
        WriteFailure::Other(source) => EditError::Write {
            path: path.to_path_buf(),
            source,
        },
    })?;
    Ok(Saved {
        version: version_of(&edited),
        diff,
    })
}

enum WriteFailure {
    /// The file or its folder cannot be written at all.
    ReadOnly(std::io::Error),
    /// Anything else.
    Other(std::io::Error),
}

impl From<std::io::Error> for WriteFailure {
    fn from(error: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
                WriteFailure::ReadOnly(error)
            }
            _ => WriteFailure::Other(error),
        }
    }
}

/// Writes `text` to a temporary file beside the target (through a symlink, beside the file it
/// points at, so a linked config stays linked), with the target's permissions, then renames it
/// over the target: a reader sees the old file or the new one, never half of it.
fn write_atomically(path: &Path, text: &str) -> Result<(), WriteFailure> {
    let target = std::fs::canonicalize(path)?;
    let folder = target.parent().unwrap_or(Path::new("."));
    let permissions = std::fs::metadata(&target)?.permissions();
    let mut temporary = tempfile::Builder::new()
        .prefix(".conduit-edit-")
        .tempfile_in(folder)?;
    temporary.write_all(text.as_bytes())?;
    temporary.as_file().sync_all()?;
    std::fs::set_permissions(temporary.path(), permissions)?;
    temporary
        .persist(&target)
        .map_err(|error| WriteFailure::from(error.error))?;
    Ok(())
}

// ---- merging a JSON section into the document ------------------------------------------

/// The order keys are written in when the edit adds them: the order of the schema and of the
/// annotated example.
const KEY_ORDER: &[&str] = &[
    "name",
    "plugin",
    "pacing",
    "limits",
    "field",
    "source",
    "destination",
    "key",
    "fields",
    "apply_updates",
    "from",
    "to",
    "replacements",
    "combine",
    "rules",
    "op",
    "value",
    "delete_filtered_out",
    "filters",
    "apply_deletes",
    "technical_picklist_values",
    "mappings",
    "send",
    "open",
    "click",
    "bounce",
    "direction",
    "pairs",
    "dynamics",
    "campaign",
    "page_size",
    "write_batch",
    "poll_interval_ms",
    "plugin_deadline_ms",
    "plugin_memory_mb",
    "failure_threshold",
    "replay_max_rows",
    "missing_record_wait_secs",
    "settings",
];

fn ordered(map: &serde_json::Map<String, Json>) -> Vec<(&String, &Json)> {
    let mut entries: Vec<_> = map.iter().filter(|(_, v)| !v.is_null()).collect();
    let rank = |key: &str| {
        KEY_ORDER
            .iter()
            .position(|k| *k == key)
            .unwrap_or(usize::MAX)
    };
    entries.sort_by_key(|(key, _)| rank(key));
    entries
}

/// Brings a table of the document from `old` to `new`: equal keys untouched, changed ones
/// merged in place, new ones added after the others, dropped ones removed. A JSON `null`
/// means the key is absent.
fn merge_table(
    table: &mut dyn TableLike,
    old: &serde_json::Map<String, Json>,
    new: &serde_json::Map<String, Json>,
) -> Result<(), EditError> {
    for (key, value) in ordered(new) {
        let before = old.get(key).unwrap_or(&Json::Null);
        if before == value {
            continue;
        }
        match table.get_mut(key) {
            Some(item) => merge_item(item, before, value)?,
            None => {
                table.insert(key, Item::Value(to_value(value)?));
            }
        }
    }
    let dropped: Vec<&String> = old
        .iter()
        .filter(|(key, value)| !value.is_null() && new.get(*key).is_none_or(Json::is_null))
        .map(|(key, _)| key)
        .collect();
    for key in dropped {
        table.remove(key);
    }
    Ok(())
}

fn merge_item(item: &mut Item, old: &Json, new: &Json) -> Result<(), EditError> {
    match (old, new) {
        (Json::Object(old), Json::Object(new)) if item.is_table_like() => {
            if let Some(table) = item.as_table_like_mut() {
                merge_table(table, old, new)?;
            }
            Ok(())
        }
        (Json::Array(old), Json::Array(new)) if item.is_array_of_tables() => {
            if let Some(tables) = item.as_array_of_tables_mut() {
                merge_tables(tables, old, new)?;
            }
            Ok(())
        }
        (Json::Array(old), Json::Array(new)) if item.is_array() => {
            if let Some(array) = item.as_array_mut() {
                merge_array(array, old, new)?;
            }
            Ok(())
        }
        _ => {
            let mut value = to_value(new)?;
            if let Some(before) = item.as_value() {
                *value.decor_mut() = before.decor().clone();
            }
            *item = Item::Value(value);
            Ok(())
        }
    }
}

/// What happens to each item of a list between the file's version and the edit's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Equal: untouched.
    Keep,
    /// Edited in place: old index, new index.
    Change(usize, usize),
    /// Removed.
    Remove,
    /// Added: new index.
    Insert(usize),
}

/// Aligns two lists by their longest run of equal items, so that removing or adding one item
/// leaves the others (and their comments) where they are.
fn align(old: &[Json], new: &[Json]) -> Vec<Step> {
    let (n, m) = (old.len(), new.len());
    let mut lengths = vec![0usize; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[at(i, j)] = if old[i] == new[j] {
                lengths[at(i + 1, j + 1)] + 1
            } else {
                lengths[at(i + 1, j)].max(lengths[at(i, j + 1)])
            };
        }
    }
    let mut steps = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut removed, mut added): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    // A run of removed and added items between equal ones is paired up as edits in place.
    let flush = |steps: &mut Vec<Step>, removed: &mut Vec<usize>, added: &mut Vec<usize>| {
        let paired = removed.len().min(added.len());
        for k in 0..paired {
            steps.push(Step::Change(removed[k], added[k]));
        }
        steps.extend(removed[paired..].iter().map(|_| Step::Remove));
        steps.extend(added[paired..].iter().map(|&j| Step::Insert(j)));
        removed.clear();
        added.clear();
    };
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            flush(&mut steps, &mut removed, &mut added);
            steps.push(Step::Keep);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lengths[at(i, j + 1)] > lengths[at(i + 1, j)]) {
            added.push(j);
            j += 1;
        } else {
            removed.push(i);
            i += 1;
        }
    }
    flush(&mut steps, &mut removed, &mut added);
    steps
}

fn merge_tables(tables: &mut ArrayOfTables, old: &[Json], new: &[Json]) -> Result<(), EditError> {
    let mut at = 0;
    for step in align(old, new) {
        match step {
            Step::Keep => at += 1,
            Step::Change(i, j) => {
                if let (Some(table), Json::Object(before), Json::Object(after)) =
                    (tables.get_mut(at), &old[i], &new[j])
                {
                    merge_table(table, before, after)?;
                }
                at += 1;
            }
            Step::Remove => {
                if at < tables.len() {
                    tables.remove(at);
                }
            }
            Step::Insert(j) => {
                let Json::Object(fields) = &new[j] else {
                    return Err(EditError::BadEdit(format!(
                        "item {j} of a list of tables is not an object"
                    )));
                };
                let mut table = Table::new();
                table.decor_mut().set_prefix("\n");
                for (key, value) in ordered(fields) {
                    table.insert(key, Item::Value(to_value(value)?));
                }
                tables.insert(at.min(tables.len()), table);
                at += 1;
            }
        }
    }
    Ok(())
}

fn merge_array(array: &mut toml_edit::Array, old: &[Json], new: &[Json]) -> Result<(), EditError> {
    let mut at = 0;
    for step in align(old, new) {
        match step {
            Step::Keep => at += 1,
            Step::Change(i, j) => {
                if let Some(value) = array.get_mut(at) {
                    match (value, &old[i], &new[j]) {
                        (Value::InlineTable(table), Json::Object(before), Json::Object(after)) => {
                            merge_table(table, before, after)?;
                        }
                        (value, _, after) => {
                            let decor = value.decor().clone();
                            *value = to_value(after)?;
                            *value.decor_mut() = decor;
                        }
                    }
                }
                at += 1;
            }
            Step::Remove => {
                if at < array.len() {
                    array.remove(at);
                }
            }
            Step::Insert(j) => {
                let mut value = to_value(&new[j])?;
                // Laid out like its neighbour: on its own line in a list written one per line.
                let neighbour = if at < array.len() {
                    array.get(at)
                } else {
                    array.len().checked_sub(1).and_then(|last| array.get(last))
                };
                if let Some(neighbour) = neighbour {
                    *value.decor_mut() = neighbour.decor().clone();
                }
                // The first item of a one-line list has no space before it; the others do.
                if at > 0 && value.decor().prefix().and_then(|p| p.as_str()) == Some("") {
                    value.decor_mut().set_prefix(" ");
                }
                array.insert_formatted(at.min(array.len()), value);
                at += 1;
            }
        }
    }
    Ok(())
}

/// A JSON value as a TOML value: objects become inline tables (keys in schema order), lists of
/// tables are written one per line.
fn to_value(json: &Json) -> Result<Value, EditError> {
    Ok(match json {
        Json::Null => {
            return Err(EditError::BadEdit(
                "a list holds null, which TOML cannot write".into(),
            ));
        }
        Json::Bool(flag) => Value::from(*flag),
        Json::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => Value::from(integer),
            (None, Some(float)) if number.is_f64() => Value::from(float),
            _ => {
                return Err(EditError::BadEdit(format!(
                    "the number {number} is too large for TOML"
                )));
            }
        },
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => {
            let mut array = toml_edit::Array::new();
            let tables = !items.is_empty() && items.iter().all(Json::is_object);
            for item in items {
                let mut value = to_value(item)?;
                if tables {
                    value.decor_mut().set_prefix("\n  ");
                }
                array.push_formatted(value);
            }
            if tables {
                array.set_trailing_comma(true);
                array.set_trailing("\n");
            } else {
                array.fmt();
            }
            Value::Array(array)
        }
        Json::Object(fields) => {
            let mut table = InlineTable::new();
            for (key, value) in ordered(fields) {
                table.insert(key, to_value(value)?);
            }
            table.fmt();
            Value::InlineTable(table)
        }
    })
}

// ---- problems at their fields ----------------------------------------------------------

/// The problems of an edited text, each with the JSON path of the section's field it points
/// at (the smallest key or value of the section whose bytes hold the problem's start).
fn locate_problems(text: &str, workflow: WorkflowId, problems: &[Problem]) -> Vec<FieldProblem> {
    let mut places: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    if let Ok(document) = toml_edit::Document::parse(text)
        && let Some(section) = document.get(section_key(workflow))
    {
        collect_item(section, String::new(), &mut places);
    }
    problems
        .iter()
        .map(|problem| {
            let start = problem.span.start;
            let path = if problem.span == (0..0) {
                None
            } else {
                places
                    .iter()
                    .filter(|(span, _)| span.start <= start && start < span.end.max(span.start + 1))
                    .min_by_key(|(span, _)| span.end - span.start)
                    .map(|(_, path)| path.clone())
            };
            FieldProblem {
                path,
                line: problem.line,
                column: problem.column,
                message: problem.message.clone(),
                hint: problem.hint.clone(),
            }
        })
        .collect()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn collect_item(item: &Item, path: String, places: &mut Vec<(std::ops::Range<usize>, String)>) {
    if let Some(span) = item.span() {
        places.push((span, path.clone()));
    }
    match item {
        Item::Table(table) => collect_table(table, &path, places),
        Item::ArrayOfTables(tables) => {
            for (index, table) in tables.iter().enumerate() {
                let here = format!("{path}[{index}]");
                if let Some(span) = table.span() {
                    places.push((span, here.clone()));
                }
                collect_table(table, &here, places);
            }
        }
        Item::Value(value) => collect_value(value, path, places),
        Item::None => {}
    }
}

fn collect_table(table: &Table, path: &str, places: &mut Vec<(std::ops::Range<usize>, String)>) {
    for (key, item) in table {
        let here = join(path, key);
        if let Some((written, _)) = table.get_key_value(key)
            && let Some(span) = written.span()
        {
            places.push((span, here.clone()));
        }
        collect_item(item, here, places);
    }
}

fn collect_value(value: &Value, path: String, places: &mut Vec<(std::ops::Range<usize>, String)>) {
    if let Some(span) = value.span() {
        places.push((span, path.clone()));
    }
    match value {
        Value::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                collect_value(item, format!("{path}[{index}]"), places);
            }
        }
        Value::InlineTable(table) => {
            for (key, item) in table {
                let here = join(&path, key);
                if let Some(written) = table.key(key)
                    && let Some(span) = written.span()
                {
                    places.push((span, here.clone()));
                }
                collect_value(item, here, places);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
