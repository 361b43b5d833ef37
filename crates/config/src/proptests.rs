//! Property tests (fixed seeds, run in CI) of config parsing and validation: arbitrary text
//! never panics and every problem is located; configs generated from the schema are accepted;
//! a value of the wrong type is reported at, and naming, its key. `fuzz/` drives the same
//! entry point (`config_parse`) without a case budget.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::tests::settings_as_before;
use super::*;
use conduit_model::OPT_OUT_ATTRIBUTES;

const PATH: &str = "/etc/conduit/conduit.toml";

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(Path::new(PATH), text)
}

/// Every problem is inside the file, says what is wrong and how to fix it.
fn assert_located(text: &str, problems: &[Problem]) -> Result<(), TestCaseError> {
    prop_assert!(!problems.is_empty());
    let lines = text.split('\n').count();
    for problem in problems {
        prop_assert_eq!(problem.file.as_path(), Path::new(PATH));
        prop_assert!(problem.line >= 1 && problem.line <= lines, "{}", problem);
        let line_chars = text
            .split('\n')
            .nth(problem.line - 1)
            .map_or(0, |line| line.chars().count());
        prop_assert!(
            problem.column >= 1 && problem.column <= line_chars + 1,
            "{}",
            problem
        );
        prop_assert!(!problem.message.is_empty(), "{}", problem);
        prop_assert!(problem.hint.is_some(), "{}", problem);
    }
    Ok(())
}

/// A TOML bare key of the kind Dynamics and Campaign names use.
fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-zA-Z0-9_]{0,10}"
}

/// A string value with characters TOML must escape.
fn text_value() -> impl Strategy<Value = String> {
    "[ -~éü\"\\\\]{0,12}"
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[derive(Debug, Clone)]
struct GeneratedMapping {
    fields: Vec<(String, bool)>,
    replacements: Vec<(usize, String, String)>,
    rules: Vec<(usize, &'static str, String)>,
    combine_or: bool,
    delete_filtered_out: bool,
    apply_deletes: bool,
    technical_picklist_values: bool,
}

fn mapping() -> impl Strategy<Value = GeneratedMapping> {
    (
        proptest::collection::btree_set(ident(), 0..5),
        proptest::collection::vec(any::<bool>(), 5),
        proptest::collection::vec(
            (any::<prop::sample::Index>(), text_value(), text_value()),
            0..3,
        ),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::sample::select(FilterOp::NAMES.to_vec()),
                text_value(),
            ),
            0..3,
        ),
        any::<[bool; 4]>(),
    )
        .prop_map(|(names, updates, replacements, rules, flags)| {
            let fields: Vec<(String, bool)> = names.into_iter().zip(updates).collect();
            let count = fields.len();
            GeneratedMapping {
                replacements: if count == 0 {
                    Vec::new()
                } else {
                    replacements
                        .into_iter()
                        .map(|(index, from, to)| (index.index(count), from, to))
                        .collect()
                },
                rules: rules
                    .into_iter()
                    .map(|(index, op, value)| (index.index(count.max(1)), op, value))
                    .collect(),
                fields,
                combine_or: flags[0],
                delete_filtered_out: flags[1],
                apply_deletes: flags[2],
                technical_picklist_values: flags[3],
            }
        })
}

#[derive(Debug, Clone)]
struct GeneratedConfig {
    mappings: Vec<GeneratedMapping>,
    egress: Option<[bool; 4]>,
    optinout: Option<(&'static str, Vec<&'static str>)>,
    limits: (u64, u64, u32, u64),
    batch_size: usize,
    page_size: u32,
}

fn config() -> impl Strategy<Value = GeneratedConfig> {
    (
        proptest::collection::vec(mapping(), 0..3),
        proptest::option::of(any::<[bool; 4]>()),
        proptest::option::of((
            prop::sample::select(Direction::NAMES.to_vec()),
            prop::sample::subsequence(OPT_OUT_ATTRIBUTES.to_vec(), 0..4),
        )),
        (1..10_000u64, 1..1024u64, 1..100u32, 1..10_000_000u64),
        1..=1000usize,
        1..=5000u32,
    )
        .prop_map(
            |(mappings, egress, optinout, limits, batch_size, page_size)| GeneratedConfig {
                mappings,
                egress,
                optinout,
                limits,
                batch_size,
                page_size,
            },
        )
}

/// Writes a generated config as the TOML a user would write.
fn render(config: &GeneratedConfig) -> String {
    let (deadline, memory, threshold, replay) = config.limits;
    let mut text = format!(
        r#"[host]
data_dir = "data"

[dynamics]
url = "https://org.api.crm.dynamics.com/"
token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token"
client_id = "app"
client_secret_env = "D365_SECRET"
batch_size = {batch}

[campaign]
url = "https://mc.adobe.io/acme/campaign"
client_id = "key"
client_secret_env = "ACS_SECRET"
journal_url = "https://events.adobe.io/journal"
opt_out_exports = "exports"

[limits]
plugin_deadline_ms = {deadline}
plugin_memory_mb = {memory}
failure_threshold = {threshold}
replay_max_rows = {replay}

[ingress]
pacing = {{ page_size = {page} }}
"#,
        batch = config.batch_size,
        page = config.page_size,
    );
    for (index, mapping) in config.mappings.iter().enumerate() {
        text.push_str(&format!(
            "\n[[ingress.mappings]]\nname = \"m{index}\"\nsource = \"table{index}\"\ndestination = \"cusResource{index}\"\nkey = {{ source = \"table{index}id\", destination = \"cusCrmId\" }}\napply_deletes = {}\ntechnical_picklist_values = {}\nfields = [\n",
            mapping.apply_deletes, mapping.technical_picklist_values
        ));
        for (name, apply_updates) in &mapping.fields {
            text.push_str(&format!(
                "  {{ source = {}, destination = {}, apply_updates = {apply_updates} }},\n",
                quoted(name),
                quoted(&format!("cus_{name}"))
            ));
        }
        text.push_str("]\nreplacements = [\n");
        for (field, from, to) in &mapping.replacements {
            text.push_str(&format!(
                "  {{ field = {}, from = {}, to = {} }},\n",
                quoted(&mapping.fields[*field].0),
                quoted(from),
                quoted(to)
            ));
        }
        text.push_str("]\n");
        if !mapping.rules.is_empty() {
            let rules: Vec<String> = mapping
                .rules
                .iter()
                .map(|(field, op, value)| {
                    let field = mapping
                        .fields
                        .get(*field)
                        .map_or("statecode", |(name, _)| name.as_str());
                    if matches!(*op, "null" | "notnull") {
                        format!("{{ field = {}, op = \"{op}\" }}", quoted(field))
                    } else {
                        format!(
                            "{{ field = {}, op = \"{op}\", value = {} }}",
                            quoted(field),
                            quoted(value)
                        )
                    }
                })
                .collect();
            text.push_str(&format!(
                "filters = {{ combine = \"{}\", delete_filtered_out = {}, rules = [{}] }}\n",
                if mapping.combine_or { "or" } else { "and" },
                mapping.delete_filtered_out,
                rules.join(", ")
            ));
        }
    }
    if let Some([send, open, click, bounce]) = config.egress {
        text.push_str(&format!(
            "\n[egress]\nsend = {send}\nopen = {open}\nclick = {click}\nbounce = {bounce}\n"
        ));
    }
    if let Some((direction, attributes)) = &config.optinout {
        let pairs: Vec<String> = attributes
            .iter()
            .enumerate()
            .map(|(index, attribute)| {
                format!("{{ dynamics = \"donot{index}\", campaign = \"{attribute}\" }}")
            })
            .collect();
        text.push_str(&format!(
            "\n[optinout]\ndirection = \"{direction}\"\npairs = [{}]\n",
            pairs.join(", ")
        ));
    }
    text
}

/// The keys whose value [`a_value_of_the_wrong_type_is_reported_at_its_key`] replaces, with a
/// value of another type; each key occurs once in every rendered config.
const RETYPED: [(&str, &str); 8] = [
    ("batch_size", "\"many\""),
    ("token_url", "42"),
    ("plugin_deadline_ms", "\"soon\""),
    ("failure_threshold", "-1"),
    ("replay_max_rows", "true"),
    ("journal_url", "[1, 2]"),
    ("data_dir", "{ path = \"x\" }"),
    ("opt_out_exports", "1.5"),
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: RngSeed::Fixed(0xC0_4F16),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_text_is_refused_with_located_problems_or_accepted(text in "[\\[\\]a-z_=\"{}.,0-9 \n#'-]{0,200}") {
        if let Err(problems) = parse(&text) {
            assert_located(&text, &problems)?;
        }
    }

    #[test]
    fn any_unicode_text_never_panics_the_parser(text in "\\PC{0,120}") {
        if let Err(problems) = parse(&text) {
            assert_located(&text, &problems)?;
        }
    }

    #[test]
    fn configs_generated_from_the_schema_are_accepted(config in config()) {
        let text = render(&config);
        let parsed = parse(&text);
        prop_assert!(parsed.is_ok(), "{}\n{:?}", text, parsed.err());
        let parsed = parsed.expect("checked above");
        let ingress = parsed.file.ingress.as_ref().expect("rendered");
        prop_assert_eq!(ingress.mappings.len(), config.mappings.len());
        prop_assert_eq!(parsed.has_workflow(WorkflowId::Egress), config.egress.is_some());
        prop_assert_eq!(parsed.limits(WorkflowId::Ingress).failure_threshold, config.limits.2);
        prop_assert_eq!(parsed.pacing(WorkflowId::Ingress).page_size, config.page_size);
        // What a plugin's `configure` receives, and the digest that tells a changed mapping,
        // are what the raw table serialised to before the specs existed.
        let specs = parsed.ingress().expect("rendered");
        prop_assert_eq!(specs.mappings.len(), ingress.mappings.len());
        for (raw, spec) in ingress.mappings.iter().zip(&specs.mappings) {
            prop_assert_eq!(spec.plugin_settings(), settings_as_before(raw));
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_is_reported_at_its_key(
        config in config(),
        retyped in prop::sample::select(RETYPED.to_vec()),
    ) {
        let (key, wrong) = retyped;
        let text = render(&config);
        let prefix = format!("{key} = ");
        let line_index = text.lines().position(|line| line.starts_with(&prefix));
        prop_assert!(line_index.is_some(), "{} is not in\n{}", key, text);
        let line_index = line_index.expect("checked above");
        let broken: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(index, line)| if index == line_index { format!("{prefix}{wrong}") } else { line.to_owned() })
            .collect();
        let broken = broken.join("\n");
        let problems = parse(&broken);
        prop_assert!(problems.is_err(), "{}", broken);
        let problems = problems.expect_err("checked above");
        assert_located(&broken, &problems)?;
        prop_assert_eq!(problems.len(), 1, "{:?}", problems);
        prop_assert_eq!(problems[0].line, line_index + 1, "{}", problems[0]);
        prop_assert!(problems[0].message.contains(key), "{} does not name {}", problems[0], key);
    }
}
