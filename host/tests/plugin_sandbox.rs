//! Hostile plugins (`plugins/fixtures/`) are contained: loops stop at the deadline, memory
//! stops at the cap, the sandbox grants nothing, bad output is refused, and after each case
//! the same `PluginHost` still maps a good batch correctly.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conduit::model::{Operation, Outcome, Phase, RecordBatch, Row, Value};
use conduit::plugin::{Limits, LoadedPlugin, PluginError, PluginHost, PluginRef, World};
use serde_json::json;

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| PluginHost::new(None).unwrap())
}

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CONDUIT_PLUGIN_FIXTURES")).join(file)
}

fn hostile() -> LoadedPlugin {
    static PLUGIN: OnceLock<LoadedPlugin> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            host()
                .load(
                    &PluginRef::Path(fixture("fixture_hostile.wasm")),
                    World::RecordMapper,
                )
                .unwrap()
        })
        .clone()
}

fn tight_limits() -> Limits {
    Limits {
        deadline: Duration::from_millis(200),
        memory_bytes: 16 << 20,
        ..Limits::default()
    }
}

fn batch(rows: usize) -> RecordBatch {
    RecordBatch {
        table: "contact".into(),
        columns: vec!["firstname".into()],
        rows: (0..rows)
            .map(|i| Row {
                key: format!("c-{i}"),
                op: Operation::Upsert,
                values: vec![Value::Text(format!("name {i}"))],
                modified_at: None,
            })
            .collect(),
    }
}

/// Runs the hostile fixture in `mode` on a 3-row batch.
fn run_hostile(mode: &str) -> Result<Vec<Outcome>, PluginError> {
    let mut mapper = hostile().record_mapper(&json!({ "mode": mode }), tight_limits())?;
    mapper.map(Phase::Initial, &batch(3))
}

/// The good batch every hostile case is followed by: the builtin still maps correctly.
fn assert_host_still_maps_a_good_batch() {
    let plugin = host()
        .load(
            &PluginRef::Builtin("table-mapper".into()),
            World::RecordMapper,
        )
        .unwrap();
    let mut mapper = plugin
        .record_mapper(
            &json!({"name": "contacts", "source": "contact", "destination": "profile",
                "key": {"source": "contactid", "destination": "externalId"},
                "fields": [{"source": "firstname", "destination": "firstName"}]}),
            tight_limits(),
        )
        .unwrap();
    let outcomes = mapper.map(Phase::Initial, &batch(2)).unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        let Outcome::Write { records } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(records[0].key, format!("c-{i}"));
        assert_eq!(
            records[0].fields,
            vec![("firstName".to_owned(), Value::Text(format!("name {i}")))]
        );
    }
}

#[test]
fn an_endless_loop_in_map_is_stopped_at_the_deadline() {
    let started = Instant::now();
    let error = run_hostile("loop-in-map").unwrap_err();
    assert!(
        matches!(error, PluginError::DeadlineExceeded { .. }),
        "{error}"
    );
    assert!(error.is_batch_failure());
    // Generous bound: the deadline is 200 ms, and shared CI machines are slow.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_host_still_maps_a_good_batch();
}

#[test]
fn an_endless_loop_in_configure_is_stopped_at_the_deadline() {
    let error = hostile()
        .record_mapper(&json!({"mode": "loop-in-configure"}), tight_limits())
        .unwrap_err();
    assert!(
        matches!(error, PluginError::DeadlineExceeded { .. }),
        "{error}"
    );
    assert_host_still_maps_a_good_batch();
}

#[test]
fn allocation_past_the_memory_cap_is_stopped() {
    let error = run_hostile("allocate").unwrap_err();
    assert!(matches!(error, PluginError::MemoryLimit { .. }), "{error}");
    assert!(error.is_batch_failure());
    assert_host_still_maps_a_good_batch();
}

#[test]
fn files_env_network_and_name_lookup_give_nothing() {
    // A real listener on loopback: a connection would succeed if the sandbox allowed it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // The host has environment variables (PATH at least); the plugin must see none.
    assert!(std::env::vars().count() > 0);
    let mut mapper = hostile()
        .record_mapper(
            &json!({"mode": "probe", "probe_addr": address}),
            tight_limits(),
        )
        .unwrap();
    let outcomes = mapper.map(Phase::Initial, &batch(1)).unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Skip {
            reason: "file=denied env=denied tcp=denied dns=denied".into()
        }]
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the plugin reached the listener"
    );
    assert_host_still_maps_a_good_batch();
}

#[test]
fn sleeping_traps_instead_of_outliving_the_deadline() {
    let started = Instant::now();
    let error = run_hostile("sleep").unwrap_err();
    let PluginError::Trap { message, .. } = &error else {
        panic!("{error}")
    };
    assert!(message.contains("may not block"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_host_still_maps_a_good_batch();
}

#[test]
fn plugins_see_a_stopped_clock() {
    let outcomes = run_hostile("clock").unwrap();
    assert_eq!(
        outcomes[0],
        Outcome::Skip {
            reason: "wall=0 monotonic_moved=0".into()
        }
    );
}

#[test]
fn a_panic_is_a_trap_carrying_the_panic_message() {
    let error = run_hostile("panic").unwrap_err();
    let PluginError::Trap { message, .. } = &error else {
        panic!("{error}")
    };
    assert!(message.contains("panics on purpose"), "{message}");
    assert!(error.is_batch_failure());
    assert_host_still_maps_a_good_batch();
}

#[test]
fn invalid_output_is_refused_by_validation() {
    let cases = [
        ("oversized", "bytes long"),
        ("flood", "10000 output records"),
        ("bad-target", "target 7"),
        ("missing-outcome", "2 outcomes for 3 inputs"),
        ("empty-key", "empty key"),
    ];
    for (mode, problem_part) in cases {
        match run_hostile(mode) {
            Err(PluginError::InvalidOutput { problem, .. }) => {
                assert!(problem.contains(problem_part), "{mode}: {problem}")
            }
            other => panic!("{mode}: {other:?}"),
        }
        assert_host_still_maps_a_good_batch();
    }
}

#[test]
fn a_plugin_reported_batch_error_is_a_batch_failure() {
    let error = run_hostile("batch-error").unwrap_err();
    assert!(matches!(error, PluginError::Batch { .. }), "{error}");
    assert!(error.is_batch_failure());
}

#[test]
fn log_spam_is_rate_limited_without_failing_the_batch() {
    let started = Instant::now();
    let outcomes = run_hostile("log-spam").unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_settings_and_load_failures_are_not_batch_failures() {
    let configure = hostile()
        .record_mapper(&json!({"mode": "teleport"}), tight_limits())
        .unwrap_err();
    assert!(
        matches!(configure, PluginError::Configure { .. }),
        "{configure}"
    );
    assert!(configure.to_string().contains("teleport"), "{configure}");
    assert!(!configure.is_batch_failure());
}

#[test]
fn a_component_importing_an_unknown_function_is_refused_naming_it() {
    let error = host()
        .load(
            &PluginRef::Path(fixture("fixture_unknown_import.wasm")),
            World::RecordMapper,
        )
        .unwrap_err();
    assert!(matches!(error, PluginError::Load { .. }), "{error}");
    assert!(error.to_string().contains("steal-secrets"), "{error}");
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let error = host()
        .load(&PluginRef::Path(core), World::RecordMapper)
        .unwrap_err();
    assert!(error.to_string().contains("not a component"), "{error}");
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let error = host()
        .load(&PluginRef::Path(text), World::RecordMapper)
        .unwrap_err();
    assert!(
        error.to_string().contains("not a WebAssembly file"),
        "{error}"
    );
}

#[test]
fn limits_outside_the_engine_are_refused() {
    let error = hostile()
        .record_mapper(
            &json!({"mode": "panic"}),
            Limits {
                memory_bytes: 64 << 30,
                ..Limits::default()
            },
        )
        .unwrap_err();
    assert!(matches!(error, PluginError::Limits(_)), "{error}");
}
