//! The compiled-component cache: a second load hits it, an entry compiled under other engine
//! settings is never loaded, and a corrupt entry is recompiled rather than trusted.

use std::fs;
use std::path::Path;

use conduit_model::{Operation, Outcome, Phase, RecordBatch, Row, Value};
use conduit_plugin_host::{Limits, LoadedPlugin, PluginHost, PluginRef, World};
use serde_json::json;

fn table_mapper() -> PluginRef {
    PluginRef::Builtin("table-mapper".into())
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    found.sort();
    found
}

/// The plugin still maps correctly (the compiled code is sound).
fn assert_maps(plugin: &LoadedPlugin) {
    let mut mapper = plugin
        .record_mapper(
            &json!({"name": "contacts", "source": "contact", "destination": "profile",
                "key": {"source": "contactid", "destination": "externalId"},
                "fields": [{"source": "firstname", "destination": "firstName"}]}),
            Limits::default(),
        )
        .unwrap();
    let batch = RecordBatch {
        table: "contact".into(),
        columns: vec!["firstname".into()],
        rows: vec![Row {
            key: "c-1".into(),
            op: Operation::Upsert,
            values: vec![Value::Text("Ada".into())],
            modified_at: None,
        }],
    };
    let outcomes = mapper.map(Phase::Initial, &batch).unwrap();
    assert!(matches!(&outcomes[0], Outcome::Write { records } if records[0].key == "c-1"));
}

#[test]
fn second_load_hits_the_disk_cache_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    assert!(!first.from_cache());
    assert_eq!(entries(dir.path()).len(), 1);

    // A new host is a restart: same directory, same engine settings.
    let restarted = PluginHost::new(Some(dir.path())).unwrap();
    let second = restarted
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    assert!(second.from_cache());
    assert_eq!(second.fingerprint(), first.fingerprint());
    assert_maps(&second);
}

#[test]
fn entry_names_carry_the_component_hash_and_the_engine_key() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    let entry = entries(dir.path()).remove(0);
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("{}-", plugin.fingerprint())),
        "{name}"
    );
}

#[test]
fn an_entry_compiled_under_other_engine_settings_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    let entry = entries(dir.path()).remove(0);
    let original = fs::read(&entry).unwrap();

    // Plant, under our entry's name, a well-formed entry (valid header and checksum) whose
    // code was compiled by an engine without epoch interruption: running it would ignore
    // deadlines, so it must never be loaded.
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let other = wasmtime::Engine::new(&config).unwrap();
    let component_bytes = include_bytes!(env!("CONDUIT_BUILTIN_TABLE_MAPPER"));
    let foreign = other.precompile_component(component_bytes).unwrap();
    let mut planted = original[..8].to_vec();
    planted.extend_from_slice(&crc32fast::hash(&foreign).to_le_bytes());
    planted.extend_from_slice(&foreign);
    fs::write(&entry, &planted).unwrap();

    let reloaded = PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    assert!(!reloaded.from_cache(), "a foreign entry was loaded");
    assert_maps(&reloaded);
    // The bad entry was replaced by a good one.
    let rewritten = fs::read(&entry).unwrap();
    assert_ne!(rewritten, planted);
    assert!(
        PluginHost::new(Some(dir.path()))
            .unwrap()
            .load(&table_mapper(), World::RecordMapper)
            .unwrap()
            .from_cache()
    );
}

#[test]
fn a_corrupt_entry_is_recompiled_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    let entry = entries(dir.path()).remove(0);
    let mut bytes = fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&entry, &bytes).unwrap();

    let reloaded = PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    assert!(!reloaded.from_cache());
    assert_maps(&reloaded);

    fs::write(&entry, b"truncated").unwrap();
    let reloaded = PluginHost::new(Some(dir.path()))
        .unwrap()
        .load(&table_mapper(), World::RecordMapper)
        .unwrap();
    assert!(!reloaded.from_cache());
    assert_maps(&reloaded);
}
