//! Read throughput of the Dynamics 365 connector: a full change-tracked read (pages of 5000)
//! of a seeded table from the simulator, which runs as a separate `conduit sim dynamics`
//! process so that the figures below count the host's work only.
//!
//! Reports criterion's records/s, then the host's CPU time per record (user + system time of
//! this process over a measured pass, from /proc/self/stat).
//!
//! Run: `cargo bench -p conduit --bench dynamics_connector`. Instruction counts (repeatable on
//! a busy machine): `CONDUIT_BENCH_COUNT=1 valgrind --tool=callgrind --toggle-collect='*counted_*'`
//! on the bench binary counts `COUNTED_READS` full reads after one warm-up read (see
//! BENCHMARKS.md); the simulator's process is not traced.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conduit_connectors::dynamics365::{Dynamics365Connector, Dynamics365Settings};
use conduit_connectors::http::Secret;
use conduit_connectors::{ChangeRequest, ChangeSource};
use criterion::{Criterion, Throughput};

mod support;
use support::process_cpu_time;

const ROWS: usize = 50_000;
const PAGE_SIZE: u32 = 5000;
const COLUMNS: [&str; 9] = [
    "firstname",
    "lastname",
    "emailaddress1",
    "gendercode",
    "statecode",
    "donotemail",
    "creditlimit",
    "birthdate",
    "numberofchildren",
];

/// Stops the simulator process when the bench ends.
struct Simulator(Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_simulator(runtime: &tokio::runtime::Runtime) -> (Simulator, String) {
    use std::io::BufRead;
    // Port 0: the simulator binds a port itself and prints it (a port picked here and released
    // could be taken by another process before the simulator binds it).
    let mut child = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args([
            "sim",
            "dynamics",
            "--port",
            "0",
            "--seed-contacts",
            &ROWS.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the conduit binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = lines
        .find_map(|line| {
            line.ok()?
                .split_once(" listening on ")
                .map(|(_, url)| url.trim().to_string())
        })
        .expect("the simulator prints its address");
    std::thread::spawn(move || lines.for_each(drop));
    let started = Instant::now();
    runtime.block_on(async {
        while reqwest::get(format!("{base}_sim/tables/contact/count"))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the simulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (Simulator(child), base)
}

/// Full reads counted in instruction-count mode (`CONDUIT_BENCH_COUNT=1`).
const COUNTED_READS: usize = 2;

/// The reads callgrind counts (`--toggle-collect='*counted_*'`): every page's request, receipt,
/// parsing and conversion into record batches.
#[inline(never)]
fn counted_reads(
    runtime: &tokio::runtime::Runtime,
    connector: &Dynamics365Connector,
    request: &ChangeRequest,
) -> usize {
    (0..COUNTED_READS)
        .map(|_| runtime.block_on(read_all(connector, request)))
        .sum()
}

async fn read_all(connector: &Dynamics365Connector, request: &ChangeRequest) -> usize {
    let mut cursor: Option<String> = None;
    let mut rows = 0;
    loop {
        let page = connector
            .read_changes(request, cursor.as_deref())
            .await
            .expect("the page reads");
        rows += page.batch.rows.len();
        if page.caught_up {
            return rows;
        }
        cursor = Some(page.cursor);
    }
}

fn main() {
    let counting = std::env::var_os("CONDUIT_BENCH_COUNT").is_some();
    // Counting runs every task on this thread, so that the connection's work (hyper's reading
    // and parsing of the response) is inside `counted_reads` too.
    let runtime = if counting {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
    .expect("a tokio runtime");
    let (_simulator, base) = start_simulator(&runtime);
    let connector = Dynamics365Connector::new(Dynamics365Settings::new(
        base.clone(),
        format!("{base}bench-tenant/oauth2/v2.0/token"),
        "conduit-sim-client",
        Secret::new("conduit-sim-secret"),
    ))
    .expect("valid settings");
    let request = ChangeRequest {
        table: "contact".to_string(),
        columns: COLUMNS
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        page_size: PAGE_SIZE,
    };
    assert_eq!(runtime.block_on(read_all(&connector, &request)), ROWS);
    if counting {
        let rows = counted_reads(&runtime, &connector, &request);
        println!("dynamics_connector: counted {rows} records in {COUNTED_READS} full reads");
        return;
    }

    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let mut group = criterion.benchmark_group("dynamics_connector");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("change_tracked_full_read_50k_pages_of_5000", |bencher| {
        bencher.iter(|| runtime.block_on(read_all(&connector, &request)));
    });
    group.finish();
    criterion.final_summary();

    let passes = 5;
    let cpu_before = process_cpu_time();
    let wall = Instant::now();
    for _ in 0..passes {
        runtime.block_on(read_all(&connector, &request));
    }
    let wall = wall.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let records = (passes * ROWS) as f64;
    println!(
        "dynamics_connector: {records} records in {wall:.2?} = {:.0} records/s; host CPU {cpu:.2?} = {:.2} µs/record",
        records / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / records
    );
}
