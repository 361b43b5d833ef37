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

/// What the engine handed a table mapping's plugin before the specs existed: the raw table
/// serialised, with `settings` defaulting to `{}`. Specs must produce exactly this (the
/// plugin contract, and the stored digests that tell a changed mapping at start).
pub(super) fn settings_as_before(mapping: &TableMapping) -> serde_json::Value {
    let mut value = serde_json::to_value(mapping).unwrap();
    value
        .as_object_mut()
        .unwrap()
        .entry("settings")
        .or_insert_with(|| serde_json::json!({}));
    value
}

/// A problem's message and hint, for assertions.
fn only_problem(text: &str) -> Problem {
    let problems = parse(text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.into_iter().next().unwrap()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_bad_direction_is_located_and_lists_the_directions() {
    let text = VALID.replace("direction = \"bidirectional\"", "direction = \"both\"");
    let problem = only_problem(&text);
    assert_eq!(
        problem.line,
        line_of(&text, "direction = \"both\""),
        "{problem}"
    );
    assert_eq!(problem.column, "direction = ".len() + 1, "{problem}");
    assert_eq!(problem.message, "optinout.direction is 'both'");
    assert_eq!(
        problem.hint.as_deref(),
        Some("use one of disabled, dynamics-to-campaign, campaign-to-dynamics, bidirectional")
    );
}

#[test]
fn an_unknown_filter_operator_is_located_and_lists_the_operators() {
    let text = VALID.replace("op = \"eq\"", "op = \"like\"");
    let problem = only_problem(&text);
    assert_eq!(problem.line, line_of(&text, "op = \"like\""), "{problem}");
    assert_eq!(
        problem.message,
        "mapping 'contacts': filters.rules[0].op: unknown filter operator 'like'"
    );
    assert_eq!(
        problem.hint.as_deref(),
        Some("use one of eq, ne, gt, ge, lt, le, contains, startswith, endswith, null, notnull")
    );
}

#[test]
fn a_bad_combinator_is_located_and_lists_and_or() {
    let text = VALID.replace("combine = \"and\"", "combine = \"xor\"");
    let problem = only_problem(&text);
    assert_eq!(
        problem.line,
        line_of(&text, "combine = \"xor\""),
        "{problem}"
    );
    let column = text
        .lines()
        .nth(problem.line - 1)
        .unwrap()
        .find("\"xor\"")
        .unwrap()
        + 1;
    assert_eq!(problem.column, column, "{problem}");
    assert_eq!(
        problem.message,
        "mapping 'contacts': filters.combine is 'xor'"
    );
    assert_eq!(problem.hint.as_deref(), Some("use one of and, or"));
}

#[test]
fn a_word_of_the_wrong_case_is_not_in_its_set() {
    let text = VALID.replace("op = \"eq\"", "op = \"EQ\"");
    assert!(
        only_problem(&text)
            .message
            .contains("unknown filter operator 'EQ'")
    );
}

#[test]
fn a_bad_url_is_reported_once_at_its_key() {
    let text = VALID.replace(
        "journal_url = \"https://events.adobe.io/journal\"",
        "journal_url = \"events journal\"",
    );
    let problem = only_problem(&text);
    assert_eq!(problem.line, line_of(&text, "journal_url"), "{problem}");
    assert!(
        problem
            .message
            .starts_with("campaign.journal_url = 'events journal' is not a URL"),
        "{problem}"
    );
}

#[test]
fn a_builtin_of_another_world_and_an_unknown_builtin_name_the_builtins() {
    let unknown =
        only_problem(&VALID.replace("[egress]\n", "[egress]\nplugin = \"builtin:events\"\n"));
    assert_eq!(unknown.message, "there is no builtin plugin 'events'");
    assert!(
        unknown
            .hint
            .as_deref()
            .unwrap()
            .contains("builtin:table-mapper, builtin:email-events, builtin:opt-out"),
        "{unknown}"
    );
}

#[test]
fn the_specs_resolve_a_representative_config_field_by_field() {
    let text = VALID
        .replace(
            "[ingress]\n",
            "[ingress]\nlimits = { plugin_deadline_ms = 750 }\npacing = { page_size = 40, write_batch = 20, poll_interval_ms = 250 }\n",
        )
        .replace(
            "filters = { combine = \"and\",",
            "technical_picklist_values = true\napply_deletes = false\nsettings = { locale = \"fr\", retries = 2 }\nfilters = { combine = \"or\", delete_filtered_out = true,",
        )
        .replace(
            "rules = [{ field = \"statecode\", op = \"eq\", value = \"0\" }]",
            "rules = [{ field = \"statecode\", op = \"eq\", value = \"0\" }, { field = \"emailaddress1\", op = \"notnull\" }]",
        )
        .replace("[limits]\n", "")
        .replace("[host]\n", "[limits]\nfailure_threshold = 9\n\n[host]\nadmin_tls_cert = \"tls/cert.pem\"\nadmin_tls_key = \"/keys/key.pem\"\n")
        .replace("click = true\n", "click = true\nsettings = { subject = \"Hello\" }\n");
    let config = parse(&text).unwrap();
    let specs = config.specs();

    assert_eq!(
        specs.host,
        HostSpec {
            data_dir: "/etc/conduit/data".into(),
            admin_listen: "127.0.0.1:7878".into(),
            admin_hosts: Vec::new(),
            admin_tls: Some(TlsFiles {
                cert: "/etc/conduit/tls/cert.pem".into(),
                key: "/keys/key.pem".into(),
            }),
            admin_allow_plain_http: false,
        }
    );
    assert_eq!(
        specs.dynamics,
        Some(DynamicsSpec {
            url: "https://org.api.crm.dynamics.com/".into(),
            token_url: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
            client_id: "app".into(),
            client_secret_env: "D365_SECRET".into(),
            scope: None,
            max_concurrency: 8,
            batch_size: 500,
            ca_file: None,
        })
    );
    let url = |text: &str| url::Url::parse(text).unwrap();
    assert_eq!(
        specs.campaign,
        Some(CampaignSpec {
            url: url("https://mc.adobe.io/acme/campaign"),
            ims_url: url("https://ims-na1.adobelogin.com/ims/token/v3"),
            client_id: "key".into(),
            client_secret_env: "ACS_SECRET".into(),
            scopes: [
                "AdobeID",
                "openid",
                "read_organizations",
                "campaign_sdk",
                "event_receiver_api"
            ]
            .map(String::from)
            .to_vec(),
            journal_url: Some(url("https://events.adobe.io/journal")),
            opt_out_exports: Some("/etc/conduit/exports".into()),
            max_concurrency: 8,
            ca_file: None,
        })
    );

    let defaults = |deadline_ms: u64| EffectiveLimits {
        plugin_deadline: std::time::Duration::from_millis(deadline_ms),
        plugin_memory_mb: 64,
        failure_threshold: 9,
        replay_max_rows: 2_000_000,
        missing_record_wait: std::time::Duration::from_secs(3_600),
    };
    let text_field = |source: &str, destination: &str, apply_updates: bool| FieldSpec {
        source: source.into(),
        destination: destination.into(),
        apply_updates,
    };
    let settings = |json: serde_json::Value| match json {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    };
    assert_eq!(
        specs.ingress,
        Some(IngressSpec {
            workflow: WorkflowSpec {
                plugin: "builtin:table-mapper".into(),
                pacing: PacingSpec {
                    page_size: 40,
                    write_batch: 20,
                    poll_interval: std::time::Duration::from_millis(250),
                },
                limits: defaults(750),
            },
            mappings: vec![MappingSpec {
                name: "contacts".into(),
                source: "contact".into(),
                destination: "profile".into(),
                key: KeySpec {
                    source: "contactid".into(),
                    destination: "externalId".into(),
                },
                fields: vec![
                    text_field("firstname", "firstName", true),
                    text_field("lastname", "lastName", false),
                ],
                replacements: vec![ReplacementSpec {
                    field: "firstname".into(),
                    from: "Bob".into(),
                    to: "Robert".into(),
                }],
                filters: Some(FiltersSpec {
                    combine: Combine::Or,
                    rules: vec![
                        FilterRuleSpec {
                            field: "statecode".into(),
                            op: FilterOp::Eq,
                            value: Some("0".into()),
                        },
                        FilterRuleSpec {
                            field: "emailaddress1".into(),
                            op: FilterOp::NotNull,
                            value: None,
                        },
                    ],
                    delete_filtered_out: true,
                }),
                apply_deletes: false,
                picklists: PicklistMode::TechnicalValues,
                settings: settings(serde_json::json!({"locale": "fr", "retries": 2})),
            }],
        })
    );
    let pacing_default = PacingSpec {
        page_size: 1000,
        write_batch: 500,
        poll_interval: std::time::Duration::from_millis(2000),
    };
    assert_eq!(
        specs.egress,
        Some(EgressSpec {
            workflow: WorkflowSpec {
                plugin: "builtin:email-events".into(),
                pacing: pacing_default,
                limits: defaults(2_000),
            },
            send: true,
            open: false,
            click: true,
            bounce: false,
            settings: settings(serde_json::json!({"subject": "Hello"})),
        })
    );
    assert_eq!(
        specs.optinout,
        Some(OptInOutSpec {
            workflow: WorkflowSpec {
                plugin: "builtin:opt-out".into(),
                pacing: pacing_default,
                limits: defaults(2_000),
            },
            direction: Direction::Bidirectional,
            pairs: vec![OptOutPairSpec {
                dynamics: "donotbulkemail".into(),
                campaign: "blackListEmail".into(),
            }],
            settings: OwnSettings::new(),
        })
    );

    // What plugins receive is what the sections gave them before the specs.
    let file = &config.file;
    let mapping = &file.ingress.as_ref().unwrap().mappings[0];
    let ingress = config.ingress().unwrap();
    assert_eq!(
        ingress.mappings[0].plugin_settings(),
        settings_as_before(mapping)
    );
    let egress = file.egress.as_ref().unwrap();
    assert_eq!(
        config.egress().unwrap().plugin_settings(),
        serde_json::json!({
            "send": egress.send, "open": egress.open, "click": egress.click,
            "bounce": egress.bounce, "settings": egress.settings,
        })
    );
    let optinout = file.optinout.as_ref().unwrap();
    assert_eq!(
        config.optinout().unwrap().plugin_settings(),
        serde_json::json!({
            "direction": optinout.direction.get_ref(),
            "pairs": [{"dynamics": "donotbulkemail", "campaign": "blackListEmail"}],
            "settings": {},
        })
    );
    assert_eq!(
        ingress.mappings[0].source_columns(),
        [
            "contactid",
            "firstname",
            "lastname",
            "statecode",
            "emailaddress1",
            "modifiedon"
        ]
    );
}

#[test]
fn problems_after_loading_are_located_at_the_plugin_or_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conduit.toml");
    std::fs::write(&path, VALID).unwrap();
    let config = Config::load(&path).unwrap();
    let at_mapping = config.problem(ConfigKey::Mapping("contacts"), "m".into(), None);
    assert_eq!(at_mapping.line, line_of(VALID, "name = \"contacts\""));
    let with_plugin = VALID.replace(
        "[egress]\n",
        "[egress]\nplugin = \"builtin:email-events\"\n",
    );
    std::fs::write(&path, &with_plugin).unwrap();
    let config = Config::load(&path).unwrap();
    let at_plugin = config.problem(ConfigKey::Plugin(WorkflowId::Egress), "p".into(), None);
    assert_eq!(at_plugin.line, line_of(&with_plugin, "plugin = "));
    assert_eq!(at_plugin.column, "plugin = ".len() + 1);
    // An edit after loading (the host keeps running on what it loaded) does not move the
    // place: the problem is located in the text the config was parsed from.
    std::fs::write(&path, format!("# a new comment\n\n{with_plugin}")).unwrap();
    let after_edit = config.problem(ConfigKey::Plugin(WorkflowId::Egress), "p".into(), None);
    assert_eq!(after_edit.line, at_plugin.line);
    assert_eq!(after_edit.span, at_plugin.span);
}
