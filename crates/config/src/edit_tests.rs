//! Tests of the editor's saves: comments, order and formatting survive, only the edited lines
//! change, invalid edits and stale versions write nothing, and problems name their field.

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use super::*;

/// The annotated example: a file full of comments and hand formatting.
const EXAMPLE: &str = include_str!("../../../conduit.example.toml");

fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conduit.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn section(path: &Path, workflow: WorkflowId) -> (String, Json) {
    let loaded = load(path, workflow).unwrap();
    (loaded.version, loaded.section.unwrap())
}

/// The lines of a diff that were removed or added, without the file names.
fn changed_lines(diff: &str) -> Vec<&str> {
    diff.lines()
        .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---"))
        .filter(|l| !l.starts_with("+++"))
        .collect()
}

fn comments(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.find('#').map(|at| &line[at..]))
        .collect()
}

#[test]
fn an_edit_keeps_every_comment_and_changes_only_its_lines() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut ingress) = section(&path, WorkflowId::Ingress);
    ingress["mappings"][0]["replacements"][0]["to"] = json!("M");
    ingress["mappings"][0]["filters"]["combine"] = json!("or");
    ingress["mappings"][0]["filters"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "field": "lastname", "op": "startswith", "value": "A" }));
    let saved = save(&path, &version, WorkflowId::Ingress, &ingress).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(saved.version, version_of(&text));
    assert_eq!(comments(&text), comments(EXAMPLE), "every comment survives");
    let changed = changed_lines(&saved.diff);
    assert_eq!(changed.len(), 4, "{}", saved.diff);
    assert!(changed.contains(&r#"+  { field = "gendercode", from = "Male", to = "M" },"#));
    assert!(
        changed
            .iter()
            .any(|l| l.starts_with("+filters = { combine = \"or\"")
                && l.contains(r#"{ field = "lastname", op = "startswith", value = "A" }"#)),
        "{changed:?}"
    );
    // Read back, the file says what the editor sent.
    let (_, again) = section(&path, WorkflowId::Ingress);
    assert_eq!(again, ingress);
    let config = Config::load(&path).unwrap();
    let mapping = &config.ingress().unwrap().mappings[0];
    assert_eq!(mapping.replacements[0].to, "M");
}

#[test]
fn saving_the_section_unchanged_writes_nothing() {
    let (_dir, path) = file_with(EXAMPLE);
    for workflow in WorkflowId::ALL {
        let (version, value) = section(&path, workflow);
        let saved = save(&path, &version, workflow, &value).unwrap();
        assert_eq!(saved.diff, "");
        assert_eq!(saved.version, version);
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXAMPLE);
}

#[test]
fn removing_and_adding_mappings_leaves_the_others_as_written() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut ingress) = section(&path, WorkflowId::Ingress);
    let mappings = ingress["mappings"].as_array_mut().unwrap();
    mappings.remove(0);
    mappings.push(json!({
        "name": "accounts", "source": "account", "destination": "cusAccount",
        "key": { "source": "accountid", "destination": "cusCrmId" },
        "fields": [{ "source": "name", "destination": "cusName", "apply_updates": true }],
        "apply_deletes": false, "technical_picklist_values": true,
    }));
    let saved = save(&path, &version, WorkflowId::Ingress, &ingress).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("name = \"contacts\""));
    assert!(
        !text.contains("gendercode"),
        "the removed mapping's lines are gone"
    );
    let vehicles = text.find("name = \"vehicles\"").unwrap();
    let accounts = text.find("name = \"accounts\"").unwrap();
    let egress = text.find("\n[egress]").unwrap();
    assert!(vehicles < accounts && accounts < egress, "{text}");
    assert!(text.contains("# Egress: \"Campaign to Microsoft Dynamics 365\""));
    assert!(text.contains("source = \"new_vehicle\"\ndestination = \"cusVehicle\"\n"));
    // No line of the vehicles mapping or of the other sections changed.
    assert!(
        changed_lines(&saved.diff)
            .iter()
            .all(|l| !l.contains("vehicle") && !l.contains("egress")),
        "{}",
        saved.diff
    );
    let config = Config::load(&path).unwrap();
    let names: Vec<&str> = config
        .ingress()
        .unwrap()
        .mappings
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["vehicles", "accounts"]);
    assert!(!config.ingress().unwrap().mappings[1].apply_deletes);
}

#[test]
fn egress_switches_and_opt_out_settings_are_edited() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut egress) = section(&path, WorkflowId::Egress);
    egress["open"] = json!(false);
    egress["plugin"] = json!("builtin:email-events");
    let saved = save(&path, &version, WorkflowId::Egress, &egress).unwrap();
    assert_eq!(
        changed_lines(&saved.diff),
        ["-open = true", "+open = false"]
    );
    let (version, mut optinout) = section(&path, WorkflowId::OptInOut);
    optinout["direction"] = json!("dynamics-to-campaign");
    optinout["pairs"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "dynamics": "donotemail", "campaign": "blackList" }));
    save(&path, &version, WorkflowId::OptInOut, &optinout).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("direction = \"dynamics-to-campaign\"\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  { dynamics = \"donotbulkemail\", campaign = \"blackListEmail\" },\n  { dynamics = \"donotemail\", campaign = \"blackList\" },\n]"
        ),
        "a list written one item per line stays so: {text}"
    );
    assert_eq!(comments(&text), comments(EXAMPLE));
}

#[test]
fn an_invalid_edit_writes_nothing_and_names_its_fields() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut ingress) = section(&path, WorkflowId::Ingress);
    ingress["mappings"][0]["replacements"][1]["field"] = json!("jobtitle");
    ingress["mappings"][0]["filters"]["rules"][0]["op"] = json!("sometimes");
    ingress["mappings"][1]["destination"] = json!("profile");
    let Err(EditError::Invalid(problems)) = save(&path, &version, WorkflowId::Ingress, &ingress)
    else {
        panic!("the edit was accepted");
    };
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXAMPLE);
    let paths: Vec<Option<&str>> = problems.iter().map(|p| p.path.as_deref()).collect();
    for expected in [
        "mappings[0].replacements[1].field",
        "mappings[0].filters.rules[0].op",
        "mappings[1].destination",
    ] {
        assert!(
            paths.contains(&Some(expected)),
            "{expected} in {problems:?}"
        );
    }
    let op = problems
        .iter()
        .find(|p| p.path.as_deref() == Some("mappings[0].filters.rules[0].op"))
        .unwrap();
    assert!(op.message.contains("sometimes"), "{op:?}");
}

#[test]
fn a_plugin_check_refuses_at_the_mapping_settings_or_the_plugin_and_writes_nothing() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut ingress) = section(&path, WorkflowId::Ingress);
    ingress["mappings"][1]["settings"] = json!({ "colour": "blue" });
    // A stand-in for the plugin's `configure`: it refuses every mapping that has settings.
    let refuse = |config: &Config| {
        let mut problems = Vec::new();
        for mapping in config.ingress().into_iter().flat_map(|s| &s.mappings) {
            if !mapping.settings.is_empty() {
                let at = crate::ConfigKey::Mapping(&mapping.name);
                problems.push(config.problem(at, format!("{} refused", mapping.name), None));
            }
        }
        if config
            .ingress()
            .is_some_and(|s| s.mapping("people").is_some())
        {
            let at = crate::ConfigKey::Plugin(WorkflowId::Ingress);
            problems.push(config.problem(at, "cannot load".into(), None));
        }
        problems
    };
    let Err(EditError::Invalid(problems)) =
        check_with(&path, WorkflowId::Ingress, &ingress, &refuse)
    else {
        panic!("the check passed");
    };
    let places: Vec<_> = problems.iter().map(|p| p.path.as_deref()).collect();
    assert_eq!(places, [Some("mappings[1].settings")], "{problems:?}");
    assert_eq!(problems[0].message, "vehicles refused");
    let Err(EditError::Invalid(refused)) =
        save_with(&path, &version, WorkflowId::Ingress, &ingress, &refuse)
    else {
        panic!("the save was accepted");
    };
    assert_eq!(refused, problems);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXAMPLE);

    // A renamed mapping without settings passes; the plugin problem lands at `plugin`, also
    // when the section leaves the plugin at its default (no `plugin` key in the file).
    let (_, mut ingress) = section(&path, WorkflowId::Ingress);
    ingress["mappings"][0]["name"] = json!("people");
    for plugin in [json!("builtin:table-mapper"), Json::Null] {
        ingress["plugin"] = plugin;
        let Err(EditError::Invalid(problems)) =
            check_with(&path, WorkflowId::Ingress, &ingress, &refuse)
        else {
            panic!("the check passed");
        };
        let places: Vec<_> = problems.iter().map(|p| p.path.as_deref()).collect();
        assert_eq!(places, [Some("plugin")], "{problems:?}");
    }
    // Without a plugin check the same edit is fine: the problems came from it alone.
    assert!(check(&path, WorkflowId::Ingress, &ingress).is_ok());
}

#[test]
fn a_value_of_the_wrong_shape_is_refused_at_its_field() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut egress) = section(&path, WorkflowId::Egress);
    egress["send"] = json!("yes");
    let Err(EditError::Invalid(problems)) = save(&path, &version, WorkflowId::Egress, &egress)
    else {
        panic!("the edit was accepted");
    };
    assert_eq!(problems[0].path.as_deref(), Some("send"), "{problems:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), EXAMPLE);
    assert!(matches!(
        save(&path, &version, WorkflowId::Egress, &json!([1])),
        Err(EditError::BadEdit(_))
    ));
}

#[test]
fn a_save_from_a_stale_version_is_refused() {
    let (_dir, path) = file_with(EXAMPLE);
    let (version, mut egress) = section(&path, WorkflowId::Egress);
    let other = EXAMPLE.replace("click = true", "click = false");
    std::fs::write(&path, &other).unwrap();
    egress["send"] = json!(false);
    let Err(EditError::Conflict {
        current_text,
        current_version,
    }) = save(&path, &version, WorkflowId::Egress, &egress)
    else {
        panic!("a stale save was accepted");
    };
    assert_eq!(current_text, other);
    assert_eq!(current_version, version_of(&other));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), other);
}

#[test]
fn a_section_the_file_lacks_is_added() {
    let without = EXAMPLE
        .split("\n# ---------------------------------------------------------------------------------------\n# Egress")
        .next()
        .unwrap()
        .to_string();
    let (_dir, path) = file_with(&without);
    let loaded = load(&path, WorkflowId::Egress).unwrap();
    assert_eq!(loaded.section, None);
    let saved = save(
        &path,
        &loaded.version,
        WorkflowId::Egress,
        &json!({ "send": true, "bounce": true }),
    )
    .unwrap();
    assert!(
        saved
            .diff
            .contains("+[egress]\n+send = true\n+bounce = true\n"),
        "{}",
        saved.diff
    );
    let config = Config::load(&path).unwrap();
    assert!(config.egress().is_some_and(|e| e.send && !e.open));
}

#[test]
fn a_linked_config_stays_linked_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, real) = file_with(EXAMPLE);
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("linked.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (version, mut egress) = section(&link, WorkflowId::Egress);
    egress["bounce"] = json!(false);
    save(&link, &version, WorkflowId::Egress, &egress).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("bounce = false")
    );
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".conduit-edit")
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary file is left behind");
}

#[test]
fn a_read_only_mount_is_told_apart_from_other_write_failures() {
    // Tests run as root, which permission bits do not stop, and cannot mount a read-only file
    // system: the classification is checked on the error kinds such a mount answers with.
    let readonly = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
    assert!(matches!(
        WriteFailure::from(readonly),
        WriteFailure::ReadOnly(_)
    ));
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    assert!(matches!(
        WriteFailure::from(denied),
        WriteFailure::ReadOnly(_)
    ));
    let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
    assert!(matches!(WriteFailure::from(full), WriteFailure::Other(_)));
}
