//! Tests of config parsing, validation diagnostics and fingerprints.

use std::path::Path;

use super::*;

const VALID: &str = r#"
[host]
data_dir = "data"

[dynamics]
url = "https://org.api.crm.dynamics.com/"
token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token"
client_id = "app"
client_secret_env = "D365_SECRET"

[campaign]
url = "https://mc.adobe.io/acme/campaign"
client_id = "key"
client_secret_env = "ACS_SECRET"
journal_url = "https://events.adobe.io/journal"
opt_out_exports = "exports"

[ingress]
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [
  { source = "firstname", destination = "firstName" },
  { source = "lastname", destination = "lastName", apply_updates = false },
]
replacements = [{ field = "firstname", from = "Bob", to = "Robert" }]
filters = { combine = "and", rules = [{ field = "statecode", op = "eq", value = "0" }] }

[egress]
send = true
click = true

[optinout]
direction = "bidirectional"
pairs = [{ dynamics = "donotbulkemail", campaign = "blackListEmail" }]
"#;

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(Path::new("/etc/conduit/conduit.toml"), text)
}

#[test]
fn a_complete_config_is_accepted() {
    let config = parse(VALID).unwrap();
    assert_eq!(config.data_dir(), Path::new("/etc/conduit/data"));
    assert_eq!(
        config.plugin(WorkflowId::Ingress),
        Some("builtin:table-mapper")
    );
    assert_eq!(config.limits(WorkflowId::Egress).failure_threshold, 5);
}

#[test]
fn an_unknown_key_is_reported_with_line_and_column() {
    let text = VALID.replace("send = true", "sned = true");
    let problems = parse(&text).unwrap_err();
    assert_eq!(problems.len(), 1);
    let problem = &problems[0];
    let expected_line = text.lines().position(|l| l.starts_with("sned")).unwrap() + 1;
    assert_eq!(problem.line, expected_line, "{problem}");
    assert_eq!(problem.column, 1, "{problem}");
    assert!(problem.message.contains("sned"), "{problem}");
    assert!(problem.hint.is_some());
}

#[test]
fn a_wrong_type_is_reported() {
    let text = VALID.replace("send = true", "send = \"yes\"");
    let problems = parse(&text).unwrap_err();
    assert!(
        problems[0].message.contains("invalid type"),
        "{}",
        problems[0]
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = VALID
        .replace(
            "{ source = \"lastname\", destination = \"lastName\", apply_updates = false },",
            "{ source = \"lastname\", destination = \"firstName\" },",
        )
        .replace(
            "field = \"firstname\", from",
            "field = \"telephone1\", from",
        )
        .replace("op = \"eq\"", "op = \"like\"")
        .replace("direction = \"bidirectional\"", "direction = \"sideways\"");
    let problems = parse(&text).unwrap_err();
    let messages: Vec<_> = problems.iter().map(ToString::to_string).collect();
    let all = messages.join("\n");
    assert!(
        all.contains(
            "'firstname' and 'lastname' are both mapped onto the Campaign field 'firstName'"
        ),
        "{all}"
    );
    assert!(
        all.contains("'telephone1', which is not a mapped field"),
        "{all}"
    );
    assert!(all.contains("unknown filter operator 'like'"), "{all}");
    assert!(all.contains("optinout.direction is 'sideways'"), "{all}");
    assert_eq!(problems.len(), 4, "{all}");
}

#[test]
fn a_table_mapped_twice_on_either_side_is_reported() {
    let text = format!(
        "{VALID}\n[[ingress.mappings]]\nname = \"again\"\nsource = \"contact\"\ndestination = \"profile\"\nkey = {{ source = \"contactid\", destination = \"externalId\" }}\n"
    );
    let problems = parse(&text).unwrap_err();
    let all: Vec<_> = problems.iter().map(|p| p.message.clone()).collect();
    assert!(
        all.iter()
            .any(|m| m.contains("Dynamics 365 table 'contact' is mapped twice")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|m| m.contains("Campaign resource 'profile' is mapped twice")),
        "{all:?}"
    );
}

#[test]
fn a_plugin_of_the_wrong_world_is_reported() {
    let text = VALID.replace(
        "[egress]\n",
        "[egress]\nplugin = \"builtin:table-mapper\"\n",
    );
    let problems = parse(&text).unwrap_err();
    assert!(
        problems[0]
            .message
            .contains("implements the record-mapper world, but the egress workflow needs a event-mapper plugin"),
        "{}",
        problems[0]
    );
}

#[test]
fn a_secret_written_inline_is_refused() {
    let text = VALID.replace(
        "client_secret_env = \"D365_SECRET\"",
        "client_secret_env = \"s3cr3t!value\"",
    );
    let problems = parse(&text).unwrap_err();
    assert!(
        problems[0]
            .message
            .contains("must name an environment variable")
    );
    assert!(
        !problems[0].to_string().contains("s3cr3t!value"),
        "{}",
        problems[0]
    );
}

#[test]
fn editing_one_workflow_changes_only_its_fingerprint() {
    let before = parse(VALID).unwrap();
    let after = parse(&VALID.replace("click = true", "click = false")).unwrap();
    assert_ne!(
        before.workflow_fingerprint(WorkflowId::Egress),
        after.workflow_fingerprint(WorkflowId::Egress)
    );
    assert_eq!(
        before.workflow_fingerprint(WorkflowId::Ingress),
        after.workflow_fingerprint(WorkflowId::Ingress)
    );
    assert_eq!(
        before.workflow_fingerprint(WorkflowId::OptInOut),
        after.workflow_fingerprint(WorkflowId::OptInOut)
    );
}

#[test]
fn whitespace_and_comments_do_not_change_fingerprints() {
    let before = parse(VALID).unwrap();
    let after = parse(&VALID.replace("[egress]\n", "# events\n[egress]\n\n")).unwrap();
    assert_eq!(
        before.workflow_fingerprint(WorkflowId::Egress),
        after.workflow_fingerprint(WorkflowId::Egress)
    );
}

#[test]
fn the_annotated_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conduit.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = parse(&text).unwrap();
    assert_eq!(config.file.ingress.unwrap().mappings.len(), 2);
}

/// Found by the property `a_value_of_the_wrong_type_is_reported_at_its_key`: toml's message
/// alone ("invalid type: string \"many\", expected usize") did not say which key was wrong.
#[test]
fn a_wrong_type_names_its_dotted_key() {
    let text = VALID.replace(
        "client_id = \"app\"",
        "client_id = \"app\"\nbatch_size = \"many\"",
    );
    let problems = parse(&text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .starts_with("dynamics.batch_size: invalid type"),
        "{}",
        problems[0]
    );
}

#[test]
fn admin_tls_files_come_in_pairs_and_admin_hosts_are_bare_names() {
    let with_host = |host: &str| VALID.replace("[host]\n", &format!("[host]\n{host}\n"));
    let both = parse(&with_host(
        "admin_tls_cert = \"cert.pem\"\nadmin_tls_key = \"key.pem\"\nadmin_hosts = [\"conduit.internal\", \"10.0.0.5\", \"::1\"]",
    ))
    .unwrap();
    assert_eq!(both.file.host.admin_hosts.len(), 3);
    let only_cert = parse(&with_host("admin_tls_cert = \"cert.pem\"")).unwrap_err();
    assert!(
        only_cert[0].message.contains("host.admin_tls_key is not"),
        "{only_cert:?}"
    );
    let only_key = parse(&with_host("admin_tls_key = \"key.pem\"")).unwrap_err();
    assert!(
        only_key[0].message.contains("host.admin_tls_cert is not"),
        "{only_key:?}"
    );
    let urls = parse(&with_host(
        "admin_hosts = [\"https://conduit.internal\", \"conduit.internal:7878\", \"ok.example\"]",
    ))
    .unwrap_err();
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(
        urls[0]
            .message
            .contains("host.admin_hosts: 'https://conduit.internal'"),
        "{urls:?}"
    );
    assert!(
        urls[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("without scheme, port or path"),
        "{urls:?}"
    );
}
