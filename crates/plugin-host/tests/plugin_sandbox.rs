//! Hostile plugins (`plugins/fixtures/`) are contained: loops stop at the deadline, deep
//! recursion traps, memory stops at the cap and stays bounded over hundreds of batches, the
//! sandbox grants nothing, bad or giant output is refused, log floods are rate-limited, a
//! component of the wrong world or with unknown imports is refused at load, and after each
//! case the same `PluginHost` still maps a good batch correctly. A configured instance serves
//! many batches, never one after a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use conduit_model::{Operation, Outcome, Phase, RecordBatch, Row, Value};
use conduit_plugin_host::{
    Allocator, CALLS_PER_INSTANCE, Limits, LoadedPlugin, MAX_MESSAGE_BYTES, PluginError,
    PluginHost, PluginRef, World,
};
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
fn an_on_demand_host_enforces_the_same_memory_cap_and_deadline() {
    // The allocator for hosts whose address space is capped: the limits are the store's, not
    // the pool's, so they hold the same.
    let on_demand = PluginHost::with_allocator(None, Allocator::OnDemand).unwrap();
    let plugin = on_demand
        .load(
            &PluginRef::Path(fixture("fixture_hostile.wasm")),
            World::RecordMapper,
        )
        .unwrap();
    let run = |mode: &str| {
        plugin
            .record_mapper(&json!({ "mode": mode }), tight_limits())?
            .map(Phase::Initial, &batch(3))
    };
    let error = run("allocate").unwrap_err();
    assert!(matches!(error, PluginError::MemoryLimit { .. }), "{error}");
    let error = run("loop-in-map").unwrap_err();
    assert!(
        matches!(error, PluginError::DeadlineExceeded { .. }),
        "{error}"
    );
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
        ("giant-key", "whose key (`kkkkkkkk"),
        (
            "giant-value",
            "sets `lastName` of the record `c-0` to a value of 2097152 bytes, above the limit of 1048576 bytes",
        ),
    ];
    for (mode, problem_part) in cases {
        match run_hostile(mode) {
            Err(PluginError::InvalidOutput { problem, .. }) => {
                assert!(problem.contains(problem_part), "{mode}: {problem}");
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
    let captured = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let limits = tight_limits();
    let started = Instant::now();
    // The plugin call takes the caller's subscriber along, so a thread-local subscriber sees
    // every line it logs.
    let outcomes = tracing::subscriber::with_default(subscriber, || run_hostile("log-spam"));
    let elapsed = started.elapsed();
    assert_eq!(outcomes.unwrap().len(), 3);
    let text = captured.text();
    let passed = text.matches("spam line ").count();
    // The burst passes, then the refill rate: nothing like the 10,000 lines written.
    let allowed = f64::from(limits.log_burst)
        + f64::from(limits.log_lines_per_second) * elapsed.as_secs_f64()
        + 1.0;
    assert!(passed >= limits.log_burst as usize, "{passed} lines passed");
    assert!(
        (passed as f64) <= allowed,
        "{passed} lines passed in {elapsed:?}, more than the {allowed} the rate limit allows"
    );
    let dropped: usize = text
        .lines()
        .find(|line| line.contains("plugin log lines dropped by the rate limit"))
        .and_then(|line| line.split("dropped=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no warning counting the dropped lines in:\n{text}"));
    println!("{passed} log lines passed on, {dropped} dropped, in {elapsed:?}");
    assert_eq!(
        passed + dropped,
        10_000,
        "every line is passed on or counted"
    );
    assert!(elapsed < Duration::from_secs(10));
}

/// A `tracing` writer keeping everything in memory.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;

    fn make_writer(&'a self) -> CapturedLog {
        self.clone()
    }
}

#[test]
fn deep_recursion_traps_as_a_stack_overflow_and_the_host_survives() {
    let error = run_hostile("recursion").unwrap_err();
    let PluginError::Trap { message, .. } = &error else {
        panic!("{error}")
    };
    assert!(message.contains("call stack exhausted"), "{message}");
    assert!(error.is_batch_failure());
    assert_host_still_maps_a_good_batch();
}

#[test]
fn far_more_output_records_than_inputs_are_refused_naming_the_count_and_the_limit() {
    let error = run_hostile("flood").unwrap_err();
    let PluginError::InvalidOutput { problem, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        problem.contains("input 0 produced 10000 output records, above the limit of 16 per input"),
        "{problem}"
    );
    assert!(error.is_batch_failure());
    assert_host_still_maps_a_good_batch();
}

#[test]
fn many_strings_each_under_the_cap_are_refused_by_the_total_output_cap() {
    // 3 values of 2 MiB: each passes a 4 MiB string cap, together they pass the 4 MiB total.
    let limits = Limits {
        max_string_bytes: 4 << 20,
        max_output_bytes: 4 << 20,
        ..tight_limits()
    };
    let mut mapper = hostile()
        .record_mapper(&json!({ "mode": "giant-value" }), limits)
        .unwrap();
    let error = mapper.map(Phase::Initial, &batch(3)).unwrap_err();
    let PluginError::InvalidOutput { problem, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        problem.contains("more than 4194304 bytes in total"),
        "{problem}"
    );
    assert_host_still_maps_a_good_batch();
}

#[test]
fn a_record_mapper_loaded_as_another_world_is_refused_naming_the_world() {
    for (world, expected, export) in [
        (
            World::EventMapper,
            "event-mapper",
            "map(events: list<email-event>)",
        ),
        (
            World::OptOutResolver,
            "opt-out-resolver",
            "resolve(contacts: list<contact-opt-out>)",
        ),
    ] {
        let error = host()
            .load(&PluginRef::Path(fixture("fixture_hostile.wasm")), world)
            .unwrap_err();
        assert!(matches!(error, PluginError::WrongWorld { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("does not implement the {expected} world")),
            "{message}"
        );
        assert!(message.contains(export), "{message}");
        assert!(
            message.contains("it is a record-mapper component"),
            "{message}"
        );
    }
}

/// The process's resident set size, from `/proc/self/statm` (pages of 4 KiB on our machines).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn memory_stays_bounded_over_hundreds_of_hostile_batches() {
    let modes = ["allocate", "giant-value", "flood"];
    let run_round = || {
        for mode in modes {
            assert!(run_hostile(mode).is_err(), "{mode} must fail its batch");
        }
    };
    // Warm-up: the engine's pools, the compiled code and the allocator's arenas settle.
    for _ in 0..20 {
        run_round();
    }
    let before = resident_bytes();
    // 70 rounds of 3 modes: 210 hostile batches.
    for _ in 0..70 {
        run_round();
    }
    let after = resident_bytes();
    let grown = after.saturating_sub(before);
    println!(
        "RSS {} MiB -> {} MiB over 210 hostile batches",
        before >> 20,
        after >> 20
    );
    // Each allocate batch touches 16 MiB and each giant-value batch 6 MiB: a leak of either
    // would grow by gigabytes.
    assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
    assert_host_still_maps_a_good_batch();
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

/// Runs `call` on a tokio worker thread: where the engine used to run `configure`, and where
/// wasmtime-wasi's synchronous stdio panicked ("Cannot start a runtime from within a runtime").
fn on_async_worker<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async { tokio::spawn(async move { call() }).await.unwrap() })
}

/// Runs the hostile fixture with `settings` on a `rows`-row batch on an async worker, under
/// the default limits with `memory_mb` of memory, capturing what reaches the host log.
fn run_on_worker(
    settings: serde_json::Value,
    rows: usize,
    memory_mb: usize,
) -> (Result<Vec<Outcome>, PluginError>, String) {
    let captured = CapturedLog::default();
    let writer = captured.clone();
    let result = on_async_worker(move || {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let limits = Limits {
                memory_bytes: memory_mb << 20,
                ..Limits::default()
            };
            hostile()
                .record_mapper(&settings, limits)?
                .map(Phase::Initial, &batch(rows))
        })
    });
    (result, captured.text())
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`).
fn peak_resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn stdout_and_stderr_floods_are_logged_bounded_and_the_batch_still_maps() {
    for mode in ["stdout-flood", "stderr-flood"] {
        let (result, log) = run_on_worker(json!({"mode": mode, "flood_bytes": "16777216"}), 3, 64);
        let outcomes = result.unwrap_or_else(|error| panic!("{mode}: {error}"));
        assert_eq!(outcomes.len(), 3, "{mode}");
        let stream = &mode[..6];
        assert!(
            log.lines()
                .any(|line| line.contains("plugin=") && line.contains("ffffffff")),
            "{mode}: no flood line tagged with the plugin in the log"
        );
        assert!(
            log.contains(&format!(
                "of the plugin's {stream} were dropped (16777216 in all"
            )),
            "{mode}: {}",
            &log[log.len().saturating_sub(2000)..]
        );
        // 16 MiB written: the log holds a bounded head of it, rate-limited.
        let logged: usize = log
            .lines()
            .filter(|line| line.contains("stream="))
            .map(str::len)
            .sum();
        assert!(logged < 64 << 10, "{mode}: {logged} bytes logged");
    }
}

#[test]
fn log_lines_stdout_and_stderr_reach_the_host_log_tagged_with_the_plugin() {
    let (result, log) = run_on_worker(json!({"mode": "chatty"}), 1, 64);
    assert_eq!(result.unwrap().len(), 1);
    for line in [
        "chatty: a log line",
        "chatty: a stdout line",
        "chatty: a stderr line",
    ] {
        let found = log
            .lines()
            .find(|logged| logged.contains(line))
            .unwrap_or_else(|| panic!("{line} is not in the log:\n{log}"));
        assert!(
            found.contains("plugin=") && found.contains("fixture_hostile"),
            "{found}"
        );
    }
}

#[test]
fn stdin_and_udp_are_denied_without_taking_the_caller_down() {
    let (result, _) = run_on_worker(json!({"mode": "stdio-probe"}), 1, 64);
    assert_eq!(
        result.unwrap(),
        vec![Outcome::Skip {
            reason: "stdin=read 0 bytes udp=denied".into()
        }]
    );
}

#[test]
fn a_panic_or_trap_in_configure_is_an_error_with_the_reason_on_an_async_worker() {
    let (result, _) = run_on_worker(json!({"mode": "panic-in-configure"}), 1, 64);
    let error = result.unwrap_err();
    assert!(matches!(error, PluginError::Trap { .. }), "{error}");
    assert!(
        error.to_string().contains("panics in configure on purpose"),
        "{error}"
    );
    let (result, _) = run_on_worker(json!({"mode": "trap-in-configure"}), 1, 64);
    let error = result.unwrap_err();
    assert!(error.to_string().contains("unreachable"), "{error}");
    // A configure flooding stderr and then succeeding configures.
    let (result, _) = run_on_worker(
        json!({"mode": "stderr-flood-in-configure", "flood_bytes": "4194304"}),
        1,
        64,
    );
    assert_eq!(result.unwrap().len(), 1);
    assert_host_still_maps_a_good_batch();
}

#[test]
fn a_panic_in_map_on_an_async_worker_is_a_trap_with_its_message() {
    let (result, _) = run_on_worker(json!({"mode": "panic"}), 3, 64);
    let error = result.unwrap_err();
    assert!(error.to_string().contains("panics on purpose"), "{error}");
}

#[test]
fn an_allocation_failure_is_a_memory_error() {
    let (result, log) = run_on_worker(json!({"mode": "alloc-fail"}), 1, 64);
    let error = result.unwrap_err();
    assert!(matches!(error, PluginError::MemoryLimit { .. }), "{error}");
    assert!(log.contains("memory allocation of"), "{log}");
}

#[test]
fn giant_errors_and_reasons_are_kept_capped_noting_their_length() {
    // 60 MB from configure, 100 MB from map: only a few KiB of each is kept.
    let (result, _) = run_on_worker(
        json!({"mode": "fail-in-configure", "error_bytes": "60000000"}),
        1,
        256,
    );
    let error = result.unwrap_err();
    let PluginError::Configure { message, .. } = &error else {
        panic!("{error}")
    };
    assert!(message.len() <= MAX_MESSAGE_BYTES + 64, "{}", message.len());
    assert!(
        message.ends_with("[truncated, 60000000 bytes in all]"),
        "{}",
        &message[message.len() - 100..]
    );
    let (result, _) = run_on_worker(
        json!({"mode": "giant-error", "error_bytes": "100000000"}),
        3,
        256,
    );
    let error = result.unwrap_err();
    let PluginError::Batch { message, .. } = &error else {
        panic!("{error}")
    };
    assert!(message.len() <= MAX_MESSAGE_BYTES + 64, "{}", message.len());
    assert!(message.ends_with("[truncated, 100000000 bytes in all]"));
    let (result, _) = run_on_worker(json!({"mode": "giant-reject"}), 3, 64);
    for outcome in result.unwrap() {
        let Outcome::Reject { reason } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(reason.len() <= MAX_MESSAGE_BYTES + 64, "{}", reason.len());
        assert!(
            reason.ends_with("[truncated, 1048575 bytes in all]"),
            "{reason:.100}"
        );
    }
}

#[test]
fn amplified_column_names_and_targets_are_refused_within_the_memory_bound() {
    // 200 rows x 16 records x 64 fields naming one 1 MiB column would be 200 GiB of copies;
    // 200 x 16 records sharing a 1 MiB target, 3.2 GiB.
    for mode in ["amplify-columns", "amplify-targets"] {
        let (result, _) = run_on_worker(json!({ "mode": mode }), 200, 64);
        let error = result.unwrap_err();
        let PluginError::InvalidOutput { problem, .. } = &error else {
            panic!("{mode}: {error}")
        };
        assert!(problem.contains("counting every copy"), "{mode}: {problem}");
        let peak = peak_resident_bytes();
        println!("{mode}: peak RSS of the test process {} MiB", peak >> 20);
        assert!(peak < 512 << 20, "{mode}: peak RSS {} MiB", peak >> 20);
    }
    assert_host_still_maps_a_good_batch();
}

/// What the `count-calls` fixture says of the instance that mapped a batch.
fn calls_seen(outcomes: &[Outcome]) -> String {
    match &outcomes[0] {
        Outcome::Skip { reason } => reason.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_instance_serves_many_batches_and_a_failure_or_the_call_limit_starts_a_fresh_one() {
    let mut mapper = hostile()
        .record_mapper(&json!({ "mode": "count-calls" }), tight_limits())
        .unwrap();
    // `configure` ran once on the instance that serves the batches (the start's probe ran
    // on an instance of its own).
    for call in 1..=5 {
        let outcomes = mapper.map(Phase::Initial, &batch(2)).unwrap();
        assert_eq!(calls_seen(&outcomes), format!("configure 1, map {call}"));
    }
    // A failed call drops its instance: the next batch is mapped by a fresh, configured one.
    let mut poison = batch(2);
    poison.rows[1].values[0] = Value::Text("trap".into());
    let error = mapper.map(Phase::Initial, &poison).unwrap_err();
    assert!(
        error.to_string().contains("count-calls traps on request"),
        "{error}"
    );
    let outcomes = mapper.map(Phase::Initial, &batch(2)).unwrap();
    assert_eq!(calls_seen(&outcomes), "configure 1, map 1");
    // The call limit: after CALLS_PER_INSTANCE calls a fresh instance takes over.
    let mut long_lived = hostile()
        .record_mapper(&json!({ "mode": "count-calls" }), tight_limits())
        .unwrap();
    for _ in 1..CALLS_PER_INSTANCE {
        long_lived.map(Phase::Initial, &batch(1)).unwrap();
    }
    let last = long_lived.map(Phase::Initial, &batch(1)).unwrap();
    assert_eq!(
        calls_seen(&last),
        format!("configure 1, map {CALLS_PER_INSTANCE}")
    );
    let next = long_lived.map(Phase::Initial, &batch(1)).unwrap();
    assert_eq!(calls_seen(&next), "configure 1, map 1");
}
