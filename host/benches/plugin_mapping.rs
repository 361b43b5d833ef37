//! Plugin runtime costs: contact mapping through the Wasm table-mapper vs the same mapping
//! compiled natively (batches of 1, 100 and 1000; target: Wasm within 2x of native at 1000),
//! a fresh configured instance (target <= 10 us), and a load from the compiled-component cache
//! vs a compile (target <= 1 ms).
//!
//! Run: `cargo bench -p conduit --bench plugin_mapping`. Instruction counts of the mapping at
//! batch 1000: `CONDUIT_BENCH_COUNT=1 valgrind --tool=callgrind --toggle-collect='*counted_*'`
//! on the bench binary (see BENCHMARKS.md). Both sides of the mapping comparison
//! pay the same host work: the model batch is converted into the plugin's input types and
//! the result resolved back into self-contained model outcomes.

use std::hint::black_box;
use std::time::Duration;

use conduit_model::{Operation, Outcome, Phase, RecordBatch, Row, Target, Value, WriteRecord};
use conduit_plugin as sdk;
use conduit_plugin_host::{Allocator, Limits, PluginHost, PluginRef, World};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use serde_json::json;
use table_mapper::TableMapper;

fn settings() -> serde_json::Value {
    json!({
        "name": "contacts", "source": "contact", "destination": "profile",
        "key": {"source": "contactid", "destination": "externalId"},
        "fields": [
            {"source": "firstname", "destination": "firstName"},
            {"source": "lastname", "destination": "lastName"},
            {"source": "emailaddress1", "destination": "email"},
            {"source": "telephone1", "destination": "phone"},
            {"source": "gendercode", "destination": "gender"},
            {"source": "birthdate", "destination": "birthDate", "apply_updates": false},
            {"source": "creditlimit", "destination": "creditLimit"},
            {"source": "donotbulkemail", "destination": "blackListEmail"}
        ],
        "replacements": [{"field": "gendercode", "from": "1", "to": "male"}],
        "filters": {"combine": "and", "rules": [{"field": "statecode", "op": "eq", "value": 0}]}
    })
}

fn contacts(rows: usize) -> RecordBatch {
    let columns = [
        "firstname",
        "lastname",
        "emailaddress1",
        "telephone1",
        "gendercode",
        "birthdate",
        "creditlimit",
        "donotbulkemail",
        "statecode",
    ];
    RecordBatch {
        table: "contact".into(),
        columns: columns
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        rows: (0..rows)
            .map(|i| Row {
                key: format!("7d3b7c5e-0000-4000-8000-{i:012}"),
                op: Operation::Upsert,
                values: vec![
                    Value::Text(format!("First{i}")),
                    Value::Text(format!("Last{i}")),
                    Value::Text(format!("person{i}@example.com")),
                    Value::Text("+49 30 1234567".into()),
                    Value::Picklist {
                        value: (i % 2 + 1) as i64,
                        label: Some(if i % 2 == 0 { "Male" } else { "Female" }.into()),
                    },
                    Value::Datetime("1990-05-17".into()),
                    Value::Decimal(1000.0 + i as f64),
                    Value::Boolean(i % 7 == 0),
                    Value::Picklist {
                        value: i64::from(i % 10 == 0),
                        label: None,
                    },
                ],
                modified_at: Some("2026-11-29T04:57:52Z".into()),
            })
            .collect(),
    }
}

// The native side of the comparison: the same host-side conversions the runtime does.

fn to_sdk_value(value: &Value) -> sdk::Value {
    match value {
        Value::Null => sdk::Value::Null,
        Value::Boolean(v) => sdk::Value::Boolean(*v),
        Value::Integer(v) => sdk::Value::Integer(*v),
        Value::Decimal(v) => sdk::Value::Decimal(*v),
        Value::Text(v) => sdk::Value::Text(v.clone()),
        Value::Datetime(v) => sdk::Value::Datetime(v.clone()),
        Value::Picklist { value, label } => sdk::Value::Picklist {
            value: *value,
            label: label.clone(),
        },
        Value::Guid(v) => sdk::Value::Guid(v.clone()),
        Value::Lookup { table, id } => sdk::Value::Lookup {
            table: table.clone(),
            id: id.clone(),
        },
    }
}

fn from_sdk_value(value: sdk::Value) -> Value {
    match value {
        sdk::Value::Null => Value::Null,
        sdk::Value::Boolean(v) => Value::Boolean(v),
        sdk::Value::Integer(v) => Value::Integer(v),
        sdk::Value::Decimal(v) => Value::Decimal(v),
        sdk::Value::Text(v) => Value::Text(v),
        sdk::Value::Datetime(v) => Value::Datetime(v),
        sdk::Value::Picklist { value, label } => Value::Picklist { value, label },
        sdk::Value::Guid(v) => Value::Guid(v),
        sdk::Value::Lookup { table, id } => Value::Lookup { table, id },
    }
}

fn to_sdk_op(op: Operation) -> sdk::Operation {
    match op {
        Operation::Upsert => sdk::Operation::Upsert,
        Operation::Update => sdk::Operation::Update,
        Operation::Delete => sdk::Operation::Delete,
    }
}

fn from_sdk_op(op: sdk::Operation) -> Operation {
    match op {
        sdk::Operation::Upsert => Operation::Upsert,
        sdk::Operation::Update => Operation::Update,
        sdk::Operation::Delete => Operation::Delete,
    }
}

fn native_map(mapper: &TableMapper, batch: &RecordBatch) -> Vec<Outcome> {
    let input = sdk::RecordBatch {
        table: batch.table.clone(),
        columns: batch.columns.clone(),
        rows: batch
            .rows
            .iter()
            .map(|row| sdk::Row {
                key: row.key.clone(),
                op: to_sdk_op(row.op),
                values: row.values.iter().map(to_sdk_value).collect(),
                modified_at: row.modified_at.clone(),
            })
            .collect(),
    };
    let Ok(mapped) = mapper.map(sdk::Phase::Initial, input) else {
        panic!("the benchmark batch is valid");
    };
    let targets: Vec<Target> = mapped
        .targets
        .iter()
        .map(|t| Target {
            system: conduit_model::System::Campaign,
            table: t.table.clone(),
            key_field: t.key_field.clone(),
        })
        .collect();
    mapped
        .outcomes
        .into_iter()
        .map(|outcome| match outcome {
            sdk::Outcome::Write(records) => Outcome::Write {
                records: records
                    .into_iter()
                    .map(|r| WriteRecord {
                        target: targets[r.target as usize].clone(),
                        key: r.key,
                        op: from_sdk_op(r.op),
                        fields: r
                            .fields
                            .into_iter()
                            .map(|(c, v)| (mapped.columns[c as usize].clone(), from_sdk_value(v)))
                            .collect(),
                    })
                    .collect(),
            },
            sdk::Outcome::Skip(reason) => Outcome::Skip { reason },
            sdk::Outcome::Reject(reason) => Outcome::Reject { reason },
        })
        .collect()
}

/// The contact mapping both ways: the builtin table-mapper on `host`, and natively.
fn mappers(host: &PluginHost) -> (conduit_plugin_host::RecordMapper, TableMapper) {
    let plugin = host
        .load(
            &PluginRef::Builtin("table-mapper".into()),
            World::RecordMapper,
        )
        .unwrap();
    let wasm = plugin
        .record_mapper(&settings(), Limits::default())
        .unwrap();
    (
        wasm,
        TableMapper::configure(&settings().to_string()).unwrap(),
    )
}

fn contact_mapping(c: &mut Criterion) {
    let (mut wasm, native) = mappers(&PluginHost::new(None).unwrap());
    let mut group = c.benchmark_group("contact_mapping");
    for rows in [1usize, 100, 1000] {
        let batch = contacts(rows);
        // Same answer both ways, or the comparison means nothing.
        assert_eq!(
            wasm.map(Phase::Initial, &batch).unwrap(),
            native_map(&native, &batch)
        );
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("wasm", rows), &batch, |b, batch| {
            b.iter(|| black_box(wasm.map(Phase::Initial, batch).unwrap()));
        });
        group.bench_with_input(BenchmarkId::new("native", rows), &batch, |b, batch| {
            b.iter(|| black_box(native_map(&native, batch)));
        });
    }
    group.finish();
}

fn fresh_instance(c: &mut Criterion) {
    let host = PluginHost::new(None).unwrap();
    let plugin = host
        .load(
            &PluginRef::Builtin("table-mapper".into()),
            World::RecordMapper,
        )
        .unwrap();
    let mut mapper = plugin
        .record_mapper(&settings(), Limits::default())
        .unwrap();
    let empty = contacts(0);
    // An empty batch on a clone (which starts without an instance): a fresh store and
    // instance, `configure`, and one call that maps nothing.
    c.bench_function("fresh_instance/configure_and_empty_map", |b| {
        b.iter_batched(
            || mapper.clone(),
            |mut fresh| black_box(fresh.map(Phase::Initial, &empty).unwrap()),
            BatchSize::SmallInput,
        );
    });
    // The same call on one mapper, as a workflow makes it: the instance is kept between
    // calls and replaced every `CALLS_PER_INSTANCE`, so this is the amortised cost per batch.
    c.bench_function("fresh_instance/amortised_empty_map", |b| {
        b.iter(|| black_box(mapper.map(Phase::Initial, &empty).unwrap()));
    });
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cached = PluginHost::new(Some(dir.path())).unwrap();
    let uncached = PluginHost::new(None).unwrap();
    let table_mapper = PluginRef::Builtin("table-mapper".into());
    cached.load(&table_mapper, World::RecordMapper).unwrap();
    let mut group = c.benchmark_group("load");
    group.bench_function("from_cache", |b| {
        b.iter(|| {
            let plugin = cached.load(&table_mapper, World::RecordMapper).unwrap();
            assert!(plugin.from_cache());
            black_box(plugin)
        });
    });
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("compile", |b| {
        b.iter(|| black_box(uncached.load(&table_mapper, World::RecordMapper).unwrap()));
    });
    group.finish();
}

/// The batches each counted side maps (after one warm-up batch each).
const COUNTED_BATCHES: usize = 20;

/// The Wasm side of the instruction count: `COUNTED_BATCHES` batches through one mapper.
#[inline(never)]
fn counted_wasm(mapper: &mut conduit_plugin_host::RecordMapper, batch: &RecordBatch) {
    for _ in 0..COUNTED_BATCHES {
        black_box(mapper.map(Phase::Initial, batch).unwrap());
    }
}

/// The native side of the instruction count.
#[inline(never)]
fn counted_native(mapper: &TableMapper, batch: &RecordBatch) {
    for _ in 0..COUNTED_BATCHES {
        black_box(native_map(mapper, batch));
    }
}

/// Instruction-count mode (`CONDUIT_BENCH_COUNT=1`, run under callgrind with
/// `--toggle-collect=*counted_*`): maps `COUNTED_BATCHES` contact batches of 1000 each way,
/// after one warm-up batch each, so that only the steady state is counted; the instance is
/// kept between batches as a workflow keeps it. The engine allocates on demand here (see
/// `count_instructions`' first line), which changes what a fresh instance costs, not a call.
fn count_instructions() {
    // valgrind refuses the pooling allocator's address-space reservation; the mapping path
    // is the same with either allocator.
    let host = PluginHost::with_allocator(None, Allocator::OnDemand).unwrap();
    let (mut wasm, native) = mappers(&host);
    let batch = contacts(1000);
    assert_eq!(
        wasm.map(Phase::Initial, &batch).unwrap(),
        native_map(&native, &batch)
    );
    counted_wasm(&mut wasm, &batch);
    counted_native(&native, &batch);
    println!(
        "counted {COUNTED_BATCHES} batches of {} contacts each way",
        batch.rows.len()
    );
}

criterion_group!(benches, contact_mapping, fresh_instance, load);

fn main() {
    if std::env::var_os("CONDUIT_BENCH_COUNT").is_some() {
        count_instructions();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
