//! Semantic checks of a parsed config: every problem is collected (not just the first), each
//! with its position in the file and a hint. Values that cannot be converted (a word outside
//! its set, a URL) are reported by the resolution into specs (`spec.rs`).

use std::collections::HashMap;

use toml::Spanned;

use super::choice::Choice;
use super::schema::ConfigFile;
use super::{Locator, Problem, TableMapping};
use conduit_model::{BUILTIN_PREFIX, OPT_OUT_ATTRIBUTES, WorkflowId, World};

struct Checker<'a> {
    file: &'a ConfigFile,
    base_dir: &'a std::path::Path,
    locate: &'a Locator<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report<T>(&mut self, at: &Spanned<T>, message: String, hint: &str) {
        let problem = self
            .locate
            .problem(at.span(), message, Some(hint.to_string()));
        self.problems.push(problem);
    }

    fn report_at_start(&mut self, message: String, hint: &str) {
        let problem = self.locate.problem(0..0, message, Some(hint.to_string()));
        self.problems.push(problem);
    }
}

/// Returns every problem of the config.
pub(super) fn validate(
    file: &ConfigFile,
    base_dir: &std::path::Path,
    locate: &Locator<'_>,
) -> Vec<Problem> {
    let mut checker = Checker {
        file,
        base_dir,
        locate,
        problems: Vec::new(),
    };
    check_host(&mut checker);
    check_connections(&mut checker);
    if let Some(ingress) = &file.ingress {
        check_plugin(&mut checker, &ingress.plugin, WorkflowId::Ingress);
        check_ingress_mappings(&mut checker, &ingress.mappings);
    }
    if let Some(egress) = &file.egress {
        check_plugin(&mut checker, &egress.plugin, WorkflowId::Egress);
    }
    if let Some(optinout) = &file.optinout {
        check_plugin(&mut checker, &optinout.plugin, WorkflowId::OptInOut);
        check_opt_out(&mut checker);
    }
    checker.problems
}

/// The admin settings: TLS files come in pairs, and `admin_hosts` holds bare host names.
fn check_host(checker: &mut Checker<'_>) {
    let file = checker.file;
    let host = &file.host;
    match (&host.admin_tls_cert, &host.admin_tls_key) {
        (Some(_), None) => checker.report_at_start(
            "host.admin_tls_cert is set but host.admin_tls_key is not".into(),
            "set host.admin_tls_key to the PEM private key of the certificate",
        ),
        (None, Some(_)) => checker.report_at_start(
            "host.admin_tls_key is set but host.admin_tls_cert is not".into(),
            "set host.admin_tls_cert to the PEM certificate (chain) the admin API serves",
        ),
        _ => {}
    }
    let bad: Vec<String> = host
        .admin_hosts
        .iter()
        .filter(|name| !is_host_name(name))
        .cloned()
        .collect();
    for name in bad {
        checker.report_at_start(
            format!("host.admin_hosts: '{name}' is not a host name"),
            "write the bare name or address the admin API is reached by, without scheme, port or path, e.g. \"conduit.internal\" or \"10.0.0.5\"",
        );
    }
}

/// A DNS name or an IP address, without scheme, port, path or user info.
fn is_host_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn check_connections(checker: &mut Checker<'_>) {
    let file = checker.file;
    let needs_both = file.ingress.is_some() || file.egress.is_some() || file.optinout.is_some();
    if needs_both && file.dynamics.is_none() {
        checker.report_at_start(
            "the workflows need a [dynamics] section".into(),
            "add [dynamics] with url, token_url, client_id and client_secret_env",
        );
    }
    if needs_both && file.campaign.is_none() {
        checker.report_at_start(
            "the workflows need a [campaign] section".into(),
            "add [campaign] with url, client_id and client_secret_env",
        );
    }
    if let Some(dynamics) = &file.dynamics {
        check_env_name(
            checker,
            &dynamics.client_secret_env,
            "dynamics.client_secret_env",
        );
        let batch = *dynamics.batch_size.get_ref();
        if batch == 0 || batch > 1000 {
            checker.report(
                &dynamics.batch_size,
                format!("dynamics.batch_size is {batch}, but a $batch holds 1 to 1000 operations"),
                "use a value from 1 to 1000, e.g. 500",
            );
        }
    }
    if let Some(campaign) = &file.campaign {
        check_env_name(
            checker,
            &campaign.client_secret_env,
            "campaign.client_secret_env",
        );
        if file.egress.is_some() && campaign.journal_url.is_none() {
            checker.report_at_start(
                "the egress workflow reads email events, but campaign.journal_url is not set"
                    .into(),
                "set campaign.journal_url to the event journal's URL",
            );
        }
    }
}

fn check_env_name(checker: &mut Checker<'_>, value: &Spanned<String>, key: &str) {
    let name = value.get_ref();
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        checker.report(
            value,
            // The value is not echoed: it may be the secret itself.
            format!("{key} must name an environment variable (letters, digits and _), not hold the secret itself"),
            "put the secret in an environment variable and write its name here, e.g. CONDUIT_D365_SECRET",
        );
    }
}

fn check_plugin(checker: &mut Checker<'_>, plugin: &Spanned<String>, workflow: WorkflowId) {
    let written = plugin.get_ref();
    let world: World = workflow.world();
    if let Some(name) = written.strip_prefix(BUILTIN_PREFIX) {
        match conduit_model::builtin(name) {
            None => checker.report(
                plugin,
                format!("there is no builtin plugin '{name}'"),
                &format!(
                    "use {} or a path to a .wasm file",
                    conduit_model::builtin_references()
                ),
            ),
            Some(builtin) if builtin.world != world => checker.report(
                plugin,
                format!(
                    "{written} implements the {} world, but the {workflow} workflow needs a {world} plugin",
                    builtin.world
                ),
                &format!("use a {world} plugin here"),
            ),
            Some(_) => {}
        }
    } else if !super::resolve_against(checker.base_dir, written).is_file() {
        checker.report(
            plugin,
            format!("the plugin file '{written}' does not exist"),
            "give a path to a .wasm component, relative to the config file, or a builtin: name",
        );
    }
}

fn check_ingress_mappings(checker: &mut Checker<'_>, mappings: &[TableMapping]) {
    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut sources: HashMap<&str, &str> = HashMap::new();
    let mut destinations: HashMap<&str, &str> = HashMap::new();
    for mapping in mappings {
        let name = mapping.name.get_ref().as_str();
        if names.insert(name, ()).is_some() {
            checker.report(
                &mapping.name,
                format!("two table mappings are named '{name}'"),
                "give each mapping its own name",
            );
        }
        let source = mapping.source.get_ref().as_str();
        if let Some(first) = sources.insert(source, name) {
            checker.report(
                &mapping.source,
                format!(
                    "the Dynamics 365 table '{source}' is mapped twice (in '{first}' and '{name}')"
                ),
                "a table can be the source of one mapping only",
            );
        }
        let destination = mapping.destination.get_ref().as_str();
        if let Some(first) = destinations.insert(destination, name) {
            checker.report(
                &mapping.destination,
                format!(
                    "the Campaign resource '{destination}' is mapped twice (in '{first}' and '{name}')"
                ),
                "a resource can be the destination of one mapping only",
            );
        }
        check_mapping_fields(checker, mapping);
    }
}

fn check_mapping_fields(checker: &mut Checker<'_>, mapping: &TableMapping) {
    let name = mapping.name.get_ref();
    let mut by_destination: HashMap<&str, &str> = HashMap::new();
    by_destination.insert(
        mapping.key.destination.get_ref().as_str(),
        mapping.key.source.get_ref().as_str(),
    );
    for field in &mapping.fields {
        let destination = field.destination.get_ref().as_str();
        let source = field.source.get_ref().as_str();
        if let Some(first) = by_destination.insert(destination, source) {
            checker.report(
                &field.destination,
                format!(
                    "mapping '{name}': '{first}' and '{source}' are both mapped onto the Campaign field '{destination}'"
                ),
                "several Dynamics 365 fields cannot map to one Campaign field; remove one",
            );
        }
    }
    for replacement in &mapping.replacements {
        let field = replacement.field.get_ref();
        if !mapping.fields.iter().any(|f| f.source.get_ref() == field) {
            checker.report(
                &replacement.field,
                format!(
                    "mapping '{name}': the replacement is on '{field}', which is not a mapped field"
                ),
                "replacements apply to fields listed under fields; map the field first",
            );
        }
    }
    if let Some(filters) = &mapping.filters {
        // A combinator or operator outside its set is reported by the resolution into specs.
        for rule in &filters.rules {
            if let Choice::Known(op) = rule.op.get_ref()
                && op.needs_value()
                && rule.value.is_none()
            {
                checker.report(
                    &rule.op,
                    format!(
                        "mapping '{name}': the filter on '{}' with '{op}' has no value",
                        rule.field.get_ref()
                    ),
                    "add value = \"...\" to the rule",
                );
            }
        }
    }
}

fn check_opt_out(checker: &mut Checker<'_>) {
    let file = checker.file;
    let Some(optinout) = &file.optinout else {
        return;
    };
    // A direction outside the set is reported by the resolution into specs.
    let direction = optinout.direction.get_ref().known();
    let mut seen_dynamics: HashMap<&str, ()> = HashMap::new();
    let mut seen_campaign: HashMap<&str, ()> = HashMap::new();
    for pair in &optinout.pairs {
        let campaign = pair.campaign.get_ref().as_str();
        if !OPT_OUT_ATTRIBUTES.contains(&campaign) {
            checker.report(
                &pair.campaign,
                format!("'{campaign}' is not a Campaign opt-out attribute"),
                &format!("use one of {}", OPT_OUT_ATTRIBUTES.join(", ")),
            );
        }
        if seen_campaign.insert(campaign, ()).is_some() {
            checker.report(
                &pair.campaign,
                format!("the Campaign attribute '{campaign}' is paired twice"),
                "pair each attribute once",
            );
        }
        let dynamics = pair.dynamics.get_ref().as_str();
        if seen_dynamics.insert(dynamics, ()).is_some() {
            checker.report(
                &pair.dynamics,
                format!("the Dynamics 365 field '{dynamics}' is paired twice"),
                "pair each field once",
            );
        }
    }
    let reads_exports = direction.is_some_and(super::choice::Direction::reads_exports);
    let has_exports = checker
        .file
        .campaign
        .as_ref()
        .is_some_and(|c| c.opt_out_exports.is_some());
    if reads_exports && !has_exports {
        checker.report(
            &optinout.direction,
            format!("the '{}' direction reads Campaign's opt-out exports, but campaign.opt_out_exports is not set", optinout.direction.get_ref().as_str()),
            "set campaign.opt_out_exports to the folder Campaign drops its export files into",
        );
    }
}
