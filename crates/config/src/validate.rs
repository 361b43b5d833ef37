//! Semantic checks of a parsed config: every problem is collected (not just the first), each
//! with its position in the file and a hint.

use std::collections::HashMap;

use toml::Spanned;

use super::{Config, Locator, Problem, TableMapping};
use conduit_model::WorkflowId;

/// The filter operators the table mapper understands.
pub const FILTER_OPERATORS: [&str; 11] = [
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "contains",
    "startswith",
    "endswith",
    "null",
    "notnull",
];

/// The opt-out directions.
pub const DIRECTIONS: [&str; 4] = [
    "disabled",
    "dynamics-to-campaign",
    "campaign-to-dynamics",
    "bidirectional",
];

/// The Campaign attributes an opt-out pair may use.
pub const CAMPAIGN_OPT_OUT_ATTRIBUTES: [&str; 8] = [
    "blackList",
    "blackListEmail",
    "blackListFax",
    "blackListMobile",
    "blackListPhone",
    "blackListPostalMail",
    "blackListPushnotification",
    "ccpaOptOut",
];

/// The builtin plugins and the world each implements.
pub const BUILTIN_PLUGINS: [(&str, &str); 3] = [
    ("builtin:table-mapper", "record-mapper"),
    ("builtin:email-events", "event-mapper"),
    ("builtin:opt-out", "opt-out-resolver"),
];

struct Checker<'a> {
    config: &'a Config,
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
pub(super) fn validate(config: &Config, locate: &Locator<'_>) -> Vec<Problem> {
    let mut checker = Checker {
        config,
        locate,
        problems: Vec::new(),
    };
    check_host(&mut checker);
    check_connections(&mut checker);
    if let Some(ingress) = &config.file.ingress {
        check_plugin(
            &mut checker,
            &ingress.plugin,
            WorkflowId::Ingress,
            "record-mapper",
        );
        check_ingress_mappings(&mut checker, &ingress.mappings);
    }
    if let Some(egress) = &config.file.egress {
        check_plugin(
            &mut checker,
            &egress.plugin,
            WorkflowId::Egress,
            "event-mapper",
        );
    }
    if let Some(optinout) = &config.file.optinout {
        check_plugin(
            &mut checker,
            &optinout.plugin,
            WorkflowId::OptInOut,
            "opt-out-resolver",
        );
        check_opt_out(&mut checker);
    }
    checker.problems
}

/// The admin settings: TLS files come in pairs, and `admin_hosts` holds bare host names.
fn check_host(checker: &mut Checker<'_>) {
    let host = &checker.config.file.host;
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
    let file = &checker.config.file;
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
        check_url(checker, &dynamics.url, "dynamics.url");
        check_url(checker, &dynamics.token_url, "dynamics.token_url");
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
        check_url(checker, &campaign.url, "campaign.url");
        check_url(checker, &campaign.ims_url, "campaign.ims_url");
        check_env_name(
            checker,
            &campaign.client_secret_env,
            "campaign.client_secret_env",
        );
        if let Some(journal) = &campaign.journal_url {
            check_url(checker, journal, "campaign.journal_url");
        }
        if file.egress.is_some() && campaign.journal_url.is_none() {
            checker.report_at_start(
                "the egress workflow reads email events, but campaign.journal_url is not set"
                    .into(),
                "set campaign.journal_url to the event journal's URL",
            );
        }
    }
}

fn check_url(checker: &mut Checker<'_>, value: &Spanned<String>, key: &str) {
    if let Err(error) = url::Url::parse(value.get_ref()) {
        checker.report(
            value,
            format!("{key} = '{}' is not a URL: {error}", value.get_ref()),
            "write a full URL such as https://host/path",
        );
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

fn check_plugin(
    checker: &mut Checker<'_>,
    plugin: &Spanned<String>,
    workflow: WorkflowId,
    world: &str,
) {
    let written = plugin.get_ref();
    if let Some(name) = written.strip_prefix("builtin:") {
        match BUILTIN_PLUGINS.iter().find(|(builtin, _)| *builtin == written) {
            None => checker.report(
                plugin,
                format!("there is no builtin plugin '{name}'"),
                "use builtin:table-mapper, builtin:email-events or builtin:opt-out, or a path to a .wasm file",
            ),
            Some((_, builtin_world)) if *builtin_world != world => checker.report(
                plugin,
                format!(
                    "{written} implements the {builtin_world} world, but the {workflow} workflow needs a {world} plugin"
                ),
                &format!("use a {world} plugin here"),
            ),
            Some(_) => {}
        }
    } else if !checker.config.resolve_path(written).is_file() {
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
        let combine = filters.combine.get_ref().as_str();
        if combine != "and" && combine != "or" {
            checker.report(
                &filters.combine,
                format!("mapping '{name}': filters.combine is '{combine}'"),
                "use \"and\" (all rules) or \"or\" (any rule)",
            );
        }
        for rule in &filters.rules {
            let op = rule.op.get_ref().as_str();
            if !FILTER_OPERATORS.contains(&op) {
                checker.report(
                    &rule.op,
                    format!("mapping '{name}': unknown filter operator '{op}'"),
                    "use one of eq ne gt ge lt le contains startswith endswith null notnull",
                );
            } else if op != "null" && op != "notnull" && rule.value.is_none() {
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
    let Some(optinout) = &checker.config.file.optinout else {
        return;
    };
    let direction = optinout.direction.get_ref().as_str();
    if !DIRECTIONS.contains(&direction) {
        checker.report(
            &optinout.direction,
            format!("optinout.direction is '{direction}'"),
            "use disabled, dynamics-to-campaign, campaign-to-dynamics or bidirectional",
        );
    }
    let mut seen_dynamics: HashMap<&str, ()> = HashMap::new();
    let mut seen_campaign: HashMap<&str, ()> = HashMap::new();
    for pair in &optinout.pairs {
        let campaign = pair.campaign.get_ref().as_str();
        if !CAMPAIGN_OPT_OUT_ATTRIBUTES.contains(&campaign) {
            checker.report(
                &pair.campaign,
                format!("'{campaign}' is not a Campaign opt-out attribute"),
                "use one of blackList, blackListEmail, blackListFax, blackListMobile, blackListPhone, blackListPostalMail, blackListPushnotification, ccpaOptOut",
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
    let reads_exports = direction == "campaign-to-dynamics" || direction == "bidirectional";
    let has_exports = checker
        .config
        .file
        .campaign
        .as_ref()
        .is_some_and(|c| c.opt_out_exports.is_some());
    if reads_exports && !has_exports {
        checker.report(
            &optinout.direction,
            format!("the '{direction}' direction reads Campaign's opt-out exports, but campaign.opt_out_exports is not set"),
            "set campaign.opt_out_exports to the folder Campaign drops its export files into",
        );
    }
}
