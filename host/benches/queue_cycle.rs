//! The durable queue's cost: one cycle = a reader commit of N records (`commit_read`), the
//! writer taking them (`next_batch`) and removing them (`commit_write`), at N = 1, 100 and
//! 1000 (target: >= 200,000 records/s at 1000), against the floor of raw redb doing the same
//! two commits of the same bytes (insert N values; range-read and remove them). The store side
//! is handed the reader's step as the reader hands it, records it owns; the raw side, bytes
//! already encoded. Neither side's input is made inside the measured time.
//!
//! Criterion reports each side; a closing pass measures both sides back to back in one run
//! and prints records/s and the store-to-raw ratio per batch size.
//!
//! Run: `cargo bench -p conduit --bench queue_cycle`. Instruction counts (repeatable on a busy
//! machine): `CONDUIT_BENCH_COUNT=1 valgrind --tool=callgrind --toggle-collect='*counted_*'` on
//! the bench binary counts `COUNTED_CYCLES` store cycles and raw cycles of 1000, and the
//! queue's binary encoding against JSON of the same records (see BENCHMARKS.md).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use conduit_model::{Operation, System, Target, Value, WorkflowId, WriteRecord};
use conduit_store::{QueuedRecord, ReadCommit, Store, WriteCommit};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use redb::{Database, ReadableTable, TableDefinition};

const BATCHES: [usize; 3] = [1, 100, 1000];
/// The raw side's table has the store's queue key shape: (workflow, sequence).
const RAW_QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const ORIGIN: &str = "contacts";

/// A mapped contact as the table-mapper queues it for Campaign.
fn contact(index: u64) -> WriteRecord {
    WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".into(),
            key_field: "externalId".into(),
        },
        key: format!("7d3b7c5e-0000-4000-8000-{index:012}"),
        op: Operation::Upsert,
        fields: vec![
            ("firstName".into(), Value::Text(format!("First{index}"))),
            ("lastName".into(), Value::Text(format!("Last{index}"))),
            (
                "email".into(),
                Value::Text(format!("contact{index}@example.com")),
            ),
            ("gender".into(), Value::Text("female".into())),
            (
                "birthDate".into(),
                Value::Datetime("1984-05-17T00:00:00Z".into()),
            ),
        ],
    }
}

/// The queue's encoding of a record, so that the raw side commits exactly the store's bytes.
fn queued_bytes(index: u64) -> Vec<u8> {
    let queued = QueuedRecord::new(index, contact(index), ORIGIN.into(), 1_796_000_000_000);
    queued.to_queue_bytes()
}

/// The reader's step as it reaches the store: records it owns (mapped by the plugin, which
/// the map stage pays for), so building it is not part of the store's cycle.
fn read_commit(records: &[WriteRecord]) -> ReadCommit {
    ReadCommit {
        source: ORIGIN.into(),
        records: records
            .iter()
            .map(|record| (ORIGIN.to_string(), record.clone()))
            .collect(),
        read: records.len() as u64,
        ..ReadCommit::default()
    }
}

/// One store cycle of a reader's step: enqueue, take, remove.
fn store_cycle(store: &Store, commit: ReadCommit) {
    let records = commit.records.len();
    store
        .commit_read(WorkflowId::Ingress, commit)
        .expect("enqueue");
    let batch = store
        .next_batch(WorkflowId::Ingress, records)
        .expect("take");
    assert_eq!(batch.len(), records, "the whole batch comes back");
    store
        .commit_write(
            WorkflowId::Ingress,
            WriteCommit {
                written: batch.iter().map(|queued| queued.seq).collect(),
                ..WriteCommit::default()
            },
        )
        .expect("remove");
}

/// Raw redb doing the same two commits: insert the bytes; read the range back and remove it.
struct RawQueue {
    db: Database,
    next_seq: u64,
}

impl RawQueue {
    fn open(path: &Path) -> RawQueue {
        RawQueue {
            db: Database::create(path).expect("raw redb"),
            next_seq: 0,
        }
    }

    fn cycle(&mut self, values: &[Vec<u8>]) {
        let write = self.db.begin_write().expect("write txn");
        {
            let mut table = write.open_table(RAW_QUEUE).expect("table");
            for value in values {
                table
                    .insert(("ingress", self.next_seq), value.as_slice())
                    .expect("insert");
                self.next_seq += 1;
            }
        }
        write.commit().expect("commit insert");
        let write = self.db.begin_write().expect("write txn");
        {
            let mut table = write.open_table(RAW_QUEUE).expect("table");
            let mut taken = Vec::with_capacity(values.len());
            for entry in table
                .range(("ingress", 0)..=("ingress", u64::MAX))
                .expect("range")
                .take(values.len())
            {
                let (key, value) = entry.expect("entry");
                black_box(value.value().len());
                taken.push(key.value().1);
            }
            for seq in taken {
                table.remove(("ingress", seq)).expect("remove");
            }
        }
        write.commit().expect("commit remove");
    }
}

fn criterion_part(store: &Store, raw: &mut RawQueue) {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let mut group = criterion.benchmark_group("queue_cycle");
    for batch in BATCHES {
        let records: Vec<WriteRecord> = (0..batch as u64).map(contact).collect();
        let values: Vec<Vec<u8>> = (0..batch as u64).map(queued_bytes).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("store", batch), &records, |b, records| {
            b.iter_batched(
                || read_commit(records),
                |commit| store_cycle(store, commit),
                BatchSize::SmallInput,
            );
        });
        group.bench_with_input(BenchmarkId::new("raw_redb", batch), &values, |b, values| {
            b.iter(|| raw.cycle(values));
        });
    }
    group.finish();
    criterion.final_summary();
}

/// Runs `cycle` on inputs made by `prepare` for at least `budget` of measured time (the
/// preparing is not measured) and returns records per second.
fn rate<T>(
    batch: usize,
    budget: Duration,
    mut prepare: impl FnMut() -> T,
    mut cycle: impl FnMut(T),
) -> f64 {
    let mut measured = Duration::ZERO;
    let mut cycles = 0u64;
    while measured < budget || cycles < 3 {
        let input = prepare();
        let started = Instant::now();
        cycle(input);
        measured += started.elapsed();
        cycles += 1;
    }
    (cycles * batch as u64) as f64 / measured.as_secs_f64()
}

/// Cycles of 1000 counted per side in instruction-count mode.
const COUNTED_CYCLES: usize = 10;

/// The store side of the instruction count.
#[inline(never)]
fn counted_store_cycles(store: &Store, commits: Vec<ReadCommit>) {
    for commit in commits {
        store_cycle(store, commit);
    }
}

/// The raw redb side of the instruction count.
#[inline(never)]
fn counted_raw_cycles(raw: &mut RawQueue, values: &[Vec<u8>]) {
    for _ in 0..COUNTED_CYCLES {
        raw.cycle(values);
    }
}

/// The queue's binary encoding: each record encoded and decoded once.
#[inline(never)]
fn counted_binary_codec(records: &[QueuedRecord]) {
    for queued in records {
        let bytes = queued.to_queue_bytes();
        black_box(QueuedRecord::from_queue_bytes(queued.seq, &bytes).expect("decodes"));
    }
}

/// The JSON the queue held before format 3, for comparison.
#[inline(never)]
fn counted_json_codec(records: &[QueuedRecord]) {
    for queued in records {
        let bytes = serde_json::to_vec(queued).expect("encodes");
        black_box(serde_json::from_slice::<QueuedRecord>(&bytes).expect("decodes"));
    }
}

/// Instruction-count mode (`CONDUIT_BENCH_COUNT=1`, under callgrind with
/// `--toggle-collect=*counted_*`): one warm-up cycle per side, then the counted ones.
fn count_instructions(dir: &Path) {
    let store = Store::open(&dir.join("counted.redb")).expect("store");
    let mut raw = RawQueue::open(&dir.join("counted-raw.redb"));
    let records: Vec<WriteRecord> = (0..1000).map(contact).collect();
    let values: Vec<Vec<u8>> = (0..1000).map(queued_bytes).collect();
    store_cycle(&store, read_commit(&records));
    raw.cycle(&values);
    let commits = (0..COUNTED_CYCLES).map(|_| read_commit(&records)).collect();
    counted_store_cycles(&store, commits);
    counted_raw_cycles(&mut raw, &values);
    let queued: Vec<QueuedRecord> = (0..1000u64)
        .map(|index| QueuedRecord::new(index, contact(index), ORIGIN.into(), 1_796_000_000_000))
        .collect();
    counted_binary_codec(&queued);
    counted_json_codec(&queued);
    println!(
        "counted {COUNTED_CYCLES} store and raw cycles of 1000, and 1000 records through each codec"
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    if std::env::var_os("CONDUIT_BENCH_COUNT").is_some() {
        count_instructions(dir.path());
        return;
    }
    let store = Store::open(&dir.path().join("conduit.redb")).expect("store");
    let mut raw = RawQueue::open(&dir.path().join("raw.redb"));
    criterion_part(&store, &mut raw);

    println!("\nqueue_cycle summary (same run, alternating sides, 3 s per side and batch):");
    println!(
        "{:>6} {:>16} {:>16} {:>12}",
        "batch", "store rec/s", "raw redb rec/s", "store/raw"
    );
    for batch in BATCHES {
        let records: Vec<WriteRecord> = (0..batch as u64).map(contact).collect();
        let values: Vec<Vec<u8>> = (0..batch as u64).map(queued_bytes).collect();
        let budget = Duration::from_millis(1500);
        // Two alternating halves per side so that a burst of load from other processes on
        // the machine does not land on one side only.
        let mut store_rates = Vec::new();
        let mut raw_rates = Vec::new();
        for _ in 0..2 {
            store_rates.push(rate(
                batch,
                budget,
                || read_commit(&records),
                |commit| store_cycle(&store, commit),
            ));
            raw_rates.push(rate(batch, budget, || (), |()| raw.cycle(&values)));
        }
        let store_rate = store_rates.iter().sum::<f64>() / store_rates.len() as f64;
        let raw_rate = raw_rates.iter().sum::<f64>() / raw_rates.len() as f64;
        println!(
            "{batch:>6} {store_rate:>16.0} {raw_rate:>16.0} {:>12.2}",
            store_rate / raw_rate
        );
    }
}
