//! The table mapping's settings (one Ingress `contact -> profile` style mapping), parsed
//! strictly and checked for the mistakes the product's editor prevents.

use std::collections::{HashMap, HashSet};

use conduit_plugin::{datetime, settings::yes};
use serde::Deserialize;

/// One table mapping as the config section gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The mapping's name, used in messages.
    pub name: String,
    /// The Dynamics 365 table's logical name, e.g. `contact`.
    pub source: String,
    /// The Campaign resource, e.g. `profile`.
    pub destination: String,
    /// The primary-key pair.
    pub key: KeyMapping,
    /// The mapped fields.
    pub fields: Vec<FieldMapping>,
    /// Value replacements on mapped fields.
    #[serde(default)]
    pub replacements: Vec<Replacement>,
    /// Which rows pass.
    #[serde(default)]
    pub filters: Option<Filters>,
    /// Whether source deletes delete the Campaign record.
    #[serde(default = "yes")]
    pub apply_deletes: bool,
    /// Write picklists' numeric values instead of their labels.
    #[serde(default)]
    pub technical_picklist_values: bool,
    /// The plugin's own settings table (`settings` in the config): this plugin takes none, so
    /// any key there is reported; parsing it is its only use.
    #[serde(default, rename = "settings")]
    pub _settings: conduit_plugin::settings::NoSettings,
}

/// The source primary key and the Campaign field (a custom identification key) holding it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMapping {
    /// E.g. `contactid`.
    pub source: String,
    /// E.g. `externalId`.
    pub destination: String,
}

/// One mapped field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The Dynamics 365 column.
    pub source: String,
    /// The Campaign field.
    pub destination: String,
    /// When false, incremental changes of this field are not propagated.
    #[serde(default = "yes")]
    pub apply_updates: bool,
}

/// Replace an exact source value of a mapped field with another text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The mapped source field.
    pub field: String,
    /// The source value's text form (picklist value or label, `true`/`false`, number, text).
    pub from: String,
    /// The text written instead.
    pub to: String,
}

/// The filter section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// How rule results combine.
    #[serde(default)]
    pub combine: Combine,
    /// The rules; none means every row passes.
    pub rules: Vec<RuleSettings>,
    /// Delete the Campaign record of a row that fails the filter.
    #[serde(default)]
    pub delete_filtered_out: bool,
}

/// `and`: every rule must hold; `or`: any rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// All rules.
    #[default]
    And,
    /// Any rule.
    Or,
}

/// A comparison operator (the Dataverse `$filter` set plus null checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
    /// Text contains.
    Contains,
    /// Text starts with.
    Startswith,
    /// Text ends with.
    Endswith,
    /// The column has no value.
    Null,
    /// The column has a value.
    Notnull,
}

impl Op {
    /// The operator as the settings spell it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::Lt => "lt",
            Op::Le => "le",
            Op::Contains => "contains",
            Op::Startswith => "startswith",
            Op::Endswith => "endswith",
            Op::Null => "null",
            Op::Notnull => "notnull",
        }
    }
}

/// One filter rule as written in the settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Any source column of the table (need not be mapped).
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with; absent for `null` / `notnull`.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// A rule with its value pre-parsed in every form a column may need.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The source column.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The value's text, lower-cased (text comparisons ignore case like Dataverse).
    pub text: String,
    /// The value as a number, when it is one.
    pub number: Option<f64>,
    /// The value as an instant, when it is a datetime.
    pub instant: Option<datetime::Instant>,
    /// The value as a boolean, when it is one.
    pub boolean: Option<bool>,
    /// `statecode eq 0`, for skip reasons.
    pub description: String,
}

/// Settings after validation, in the shapes the mapper uses.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The parsed settings.
    pub settings: Settings,
    /// The filter rules, pre-parsed.
    pub rules: Vec<Rule>,
    /// Replacements by source field: (from, to) pairs.
    pub replacements: HashMap<String, Vec<(String, String)>>,
}

/// Parses and validates the settings JSON; the error names the offending setting.
pub fn parse(json: &str) -> Result<Validated, String> {
    let settings: Settings = conduit_plugin::settings::parse(json)?;
    for (path, text) in [
        ("name", &settings.name),
        ("source", &settings.source),
        ("destination", &settings.destination),
        ("key.source", &settings.key.source),
        ("key.destination", &settings.key.destination),
    ] {
        if text.trim().is_empty() {
            return Err(format!("invalid setting `{path}`: must not be empty"));
        }
    }
    let mut destinations: HashMap<&str, &str> = HashMap::new();
    for (index, field) in settings.fields.iter().enumerate() {
        if field.source.trim().is_empty() {
            return Err(format!(
                "invalid setting `fields[{index}].source`: must not be empty"
            ));
        }
        if field.destination.trim().is_empty() {
            return Err(format!(
                "invalid setting `fields[{index}].destination`: must not be empty"
            ));
        }
        if field.source == settings.key.source || field.destination == settings.key.destination {
            return Err(format!(
                "invalid setting `fields[{index}]`: `{}` -> `{}` maps the key field, which `key` already maps ({} -> {}); remove it from `fields`",
                field.source, field.destination, settings.key.source, settings.key.destination
            ));
        }
        if let Some(earlier) = destinations.insert(&field.destination, &field.source) {
            return Err(format!(
                "invalid setting `fields[{index}].destination`: `{}` already receives `{earlier}`; two source fields cannot map onto one destination field",
                field.destination
            ));
        }
    }
    let mapped: HashSet<&str> = settings.fields.iter().map(|f| f.source.as_str()).collect();
    let mut replacements: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (index, replacement) in settings.replacements.iter().enumerate() {
        if !mapped.contains(replacement.field.as_str()) {
            return Err(format!(
                "invalid setting `replacements[{index}].field`: `{}` is not a mapped source field; replacements apply to mapped fields only",
                replacement.field
            ));
        }
        let pairs = replacements.entry(replacement.field.clone()).or_default();
        if pairs.iter().any(|(from, _)| *from == replacement.from) {
            return Err(format!(
                "invalid setting `replacements[{index}]`: `{}` = `{}` is replaced twice",
                replacement.field, replacement.from
            ));
        }
        pairs.push((replacement.from.clone(), replacement.to.clone()));
    }
    let rules = match &settings.filters {
        Some(filters) => filters
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| parse_rule(index, rule))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(Validated {
        settings,
        rules,
        replacements,
    })
}

fn parse_rule(index: usize, rule: &RuleSettings) -> Result<Rule, String> {
    let path = format!("filters.rules[{index}]");
    if rule.field.trim().is_empty() {
        return Err(format!("invalid setting `{path}.field`: must not be empty"));
    }
    let needs_value = !matches!(rule.op, Op::Null | Op::Notnull);
    let text = match (&rule.value, needs_value) {
        (None, false) => String::new(),
        (Some(_), false) => {
            return Err(format!(
                "invalid setting `{path}.value`: operator `{}` takes no value",
                rule.op.name()
            ));
        }
        (None, true) => {
            return Err(format!(
                "invalid setting `{path}.value`: operator `{}` needs a value",
                rule.op.name()
            ));
        }
        (Some(serde_json::Value::String(text)), true) => text.clone(),
        (Some(serde_json::Value::Number(number)), true) => number.to_string(),
        (Some(serde_json::Value::Bool(flag)), true) => flag.to_string(),
        (Some(other), true) => {
            return Err(format!(
                "invalid setting `{path}.value`: expected text, a number or a boolean, got {other}"
            ));
        }
    };
    let description = if needs_value {
        format!("{} {} {text}", rule.field, rule.op.name())
    } else {
        format!("{} {}", rule.field, rule.op.name())
    };
    let lowered = text.to_lowercase();
    Ok(Rule {
        field: rule.field.clone(),
        op: rule.op,
        number: text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        instant: datetime::parse(text.trim()).ok(),
        boolean: match lowered.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        text: lowered,
        description,
    })
}
