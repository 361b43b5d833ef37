//! End-to-end Ingress through the simulators: a real host (store, Wasm table-mapper,
//! connectors, supervisor) in this process, both simulators in a `conduit sim both` child
//! process seeded with N contacts (default 1,000,000), so that the CPU time and peak RSS read
//! from `/proc/self` are the host's own.
//!
//! Two scenarios, each in a fresh process (this binary re-runs itself) so that one's peak RSS
//! does not leak into the other's:
//! - `throughput`: the initial load of every contact into Campaign; reports records/s from
//!   RUNNING until the last write, the host's and the simulators' CPU time, and peak RSS
//!   (targets: >= 20,000 records/s on the same 2 cores as the simulators).
//! - `backlog`: Campaign answers every API call with 503 from the moment the workflow runs, so
//!   the whole table piles up in the durable queue; reports the peak RSS of the host once
//!   the backlog holds every contact (target: <= 150 MB).
//! - `faults`: the drain rate (records written per second, RUNNING to the last write) without
//!   faults, then, in the same run with fresh simulators and a fresh host, with 2% mixed faults
//!   on every Campaign API call (0.5% each of 5xx, connection resets, lost responses and
//!   malformed 200 answers); reports both and their ratio (target: >= 0.70). Not part of the
//!   default run; default size 100,000 contacts (shorter runs' phases last a few seconds,
//!   too few for a steady ratio).
//!
//! Run: `cargo bench -p conduit --bench ingress_e2e [-- throughput|backlog|faults] [-- <contacts>]`

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit::runtime::{self, HostOptions, ServiceConnect};
use conduit_engine::StatusKind;
use conduit_model::WorkflowId;

mod support;
use support::{cpu_time_of, process_cpu_time};

const DEFAULT_CONTACTS: usize = 1_000_000;
const D365_SECRET_ENV: &str = "BENCH_D365_SECRET";
const ACS_SECRET_ENV: &str = "BENCH_ACS_SECRET";
/// The simulators' default credentials (`conduit sim` without overrides).
const D365_CLIENT: &str = "conduit-sim-client";
const D365_SECRET: &str = "conduit-sim-secret";
const ACS_CLIENT: &str = "conduit-campaign-client";
const ACS_SECRET: &str = "conduit-campaign-secret";
const TIMEOUT: Duration = Duration::from_secs(3600);

/// The `conduit sim both` child; killed when the bench ends.
struct Simulators {
    child: Child,
    dynamics_url: String,
    campaign_origin: String,
    campaign_api: String,
    ims_url: String,
}

impl Drop for Simulators {
    fn drop(&mut self) {
        // Ctrl-C first, as an operator stops them: a profiler running the simulators
        // (callgrind with `--trace-children=yes`) then writes their counts on the way out.
        // A kill after a grace period in any case.
        let interrupted = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if interrupted {
            let deadline = Instant::now() + SIMULATORS_STOP_GRACE;
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the simulators get to stop after Ctrl-C (a profiled run writes its counts then).
const SIMULATORS_STOP_GRACE: Duration = Duration::from_secs(60);

impl Simulators {
    fn start(contacts: usize) -> Simulators {
        let mut child = Command::new(env!("CARGO_BIN_EXE_conduit"))
            .args([
                "sim",
                "both",
                "--port",
                "0",
                "--seed-contacts",
                &contacts.to_string(),
                "--seed-vehicles",
                "0",
                "--seed-events",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the conduit binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut found: HashMap<&str, String> = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("readable simulator output");
            for (label, prefix) in [
                ("dynamics", "Dynamics 365 simulator listening on "),
                ("campaign", "Campaign simulator listening on "),
                ("api", "  API base:"),
                ("ims", "  IMS token:"),
            ] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    found.insert(label, rest.trim().to_string());
                }
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        let take = |label: &str| {
            found
                .get(label)
                .cloned()
                .unwrap_or_else(|| panic!("the simulator did not print its {label} URL"))
        };
        Simulators {
            dynamics_url: take("dynamics"),
            campaign_origin: take("campaign"),
            campaign_api: take("api"),
            ims_url: take("ims"),
            child,
        }
    }

    /// User + system CPU time of the simulator process.
    fn cpu_time(&self) -> Duration {
        cpu_time_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Peak RSS of the simulator process, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib_of(&format!("/proc/{}/status", self.child.id()))
    }
}

fn config(sims: &Simulators) -> String {
    format!(
        r#"
[host]
data_dir = "data"
admin_listen = "127.0.0.1:0"
[dynamics]
url = "{dynamics}"
token_url = "{dynamics}bench-tenant/oauth2/v2.0/token"
client_id = "{D365_CLIENT}"
client_secret_env = "{D365_SECRET_ENV}"
[campaign]
url = "{api}"
ims_url = "{ims}"
client_id = "{ACS_CLIENT}"
client_secret_env = "{ACS_SECRET_ENV}"
max_concurrency = 32
[ingress]
pacing = {{ page_size = 5000, write_batch = 1000, poll_interval_ms = 500 }}
{contacts_mapping}"#,
        dynamics = sims.dynamics_url,
        api = sims.campaign_api,
        ims = sims.ims_url,
        contacts_mapping = conduit_sim::SEEDED_CONTACTS_MAPPING,
    )
}

/// `VmHWM` (peak resident set) from a `/proc/<pid>/status` file, in KiB.
fn peak_rss_kib_of(path: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib_now() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Throughput,
    Backlog,
    /// The initial load with the given Campaign faults (the `faults` comparison's phases).
    Drain(Option<MixedFaults>),
}

/// Mixed faults on every Campaign API call: each kind at `each` probability.
#[derive(Clone, Copy, PartialEq)]
struct MixedFaults {
    each: f64,
}

impl MixedFaults {
    /// The simulator's fault rates: 5xx, resets, lost responses and malformed answers.
    fn rates(self) -> serde_json::Value {
        serde_json::json!({
            "error_rate": self.each,
            "error_status": 503,
            "reset_rate": self.each,
            "lost_response_rate": self.each,
            "malformed_rate": self.each,
            "seed": 13,
        })
    }
}

/// The size of the `faults` comparison when none is given.
const DEFAULT_FAULTS_CONTACTS: usize = 100_000;

/// Runs the drain with and without 2% mixed faults and prints both rates and their ratio.
fn compare_faults(contacts: usize) {
    let clean = run(Scenario::Drain(None), contacts);
    let faulty = run(Scenario::Drain(Some(MixedFaults { each: 0.005 })), contacts);
    println!(
        "ingress_e2e faults: {contacts} contacts; drain without faults {clean:.0} records/s, with 2% mixed Campaign faults {faulty:.0} records/s = {:.2} of the fault-free rate (target >= 0.70)",
        faulty / clean
    );
}

/// Runs a scenario; returns the write rate (records/s) for the throughput and drain ones.
fn run(scenario: Scenario, contacts: usize) -> f64 {
    let sims_started = Instant::now();
    let sims = Simulators::start(contacts);
    println!(
        "simulators up in {:.1?} (Dynamics 365 {}, Campaign {}), {contacts} contacts",
        sims_started.elapsed(),
        sims.dynamics_url,
        sims.campaign_origin
    );
    let dir = tempfile::tempdir().expect("temporary folder");
    let config_path = dir.path().join("conduit.toml");
    std::fs::write(&config_path, config(&sims)).expect("write the config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let http = reqwest::Client::new();
    runtime.block_on(async {
        let secrets = HashMap::from([
            (D365_SECRET_ENV.to_string(), D365_SECRET.to_string()),
            (ACS_SECRET_ENV.to_string(), ACS_SECRET.to_string()),
        ]);
        let host = runtime::start(
            &config_path,
            Arc::new(ServiceConnect::with_secrets(secrets)),
            HostOptions {
                admin_listen: Some("127.0.0.1:0".into()),
                watch_interval: Some(Duration::from_secs(60)),
            },
        )
        .await
        .expect("the host starts");
        let supervisor = host.supervisor.clone();
        let store = supervisor.store().clone();
        supervisor
            .start(WorkflowId::Ingress)
            .await
            .expect("ingress starts");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let view = supervisor
                .workflow_view(WorkflowId::Ingress)
                .expect("view");
            let status = view.status;
            if status == StatusKind::Running {
                break;
            }
            assert!(
                status != StatusKind::Error,
                "ingress failed to start: {:?}",
                view.reason
            );
            assert!(Instant::now() < deadline, "ingress did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Scenario::Drain(Some(faults)) = scenario {
            let reply = http
                .put(format!("{}/_sim/faults/rates", sims.campaign_origin))
                .json(&faults.rates())
                .send()
                .await
                .expect("the Campaign control API answers");
            assert!(reply.status().is_success(), "fault injection refused");
        }
        if scenario == Scenario::Backlog {
            let reply = http
                .put(format!("{}/_sim/faults/rates", sims.campaign_origin))
                .json(&serde_json::json!({ "error_rate": 1.0 }))
                .send()
                .await
                .expect("the Campaign control API answers");
            assert!(reply.status().is_success(), "fault injection refused");
        }
        let host_cpu_before = process_cpu_time();
        let host_writes_before = DiskWrites::of_this_process();
        let sims_cpu_before = sims.cpu_time();
        let started = Instant::now();
        let mut max_backlog = 0u64;
        let mut max_rss_sampled = 0u64;
        let mut last_print = Instant::now();
        let counters = loop {
            let counters = store.counters(WorkflowId::Ingress).expect("counters");
            max_backlog = max_backlog.max(counters.queued);
            max_rss_sampled = max_rss_sampled.max(rss_kib_now());
            if last_print.elapsed() > Duration::from_secs(10) {
                println!(
                    "  {:>6.1}s read {:>8} queued {:>8} written {:>8} rss {:>6.1} MiB",
                    started.elapsed().as_secs_f64(),
                    counters.read,
                    counters.queued,
                    counters.written,
                    mib(rss_kib_now())
                );
                last_print = Instant::now();
            }
            let done = match scenario {
                Scenario::Throughput | Scenario::Drain(_) => {
                    counters.written + counters.dead_lettered >= contacts as u64
                }
                Scenario::Backlog => counters.read >= contacts as u64,
            };
            if done {
                break counters;
            }
            let view = supervisor
                .workflow_view(WorkflowId::Ingress)
                .expect("view");
            assert!(
                view.status != StatusKind::Error,
                "ingress failed: {:?}",
                view.reason
            );
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let elapsed = started.elapsed();
        let host_cpu = process_cpu_time().saturating_sub(host_cpu_before);
        let host_writes = DiskWrites::of_this_process().since(host_writes_before);
        let sims_cpu = sims.cpu_time().saturating_sub(sims_cpu_before);
        let data_file = runtime::store_path(&dir.path().join("data"));
        let file_mib = std::fs::metadata(&data_file)
            .map(|m| m.len() as f64 / 1_048_576.0)
            .unwrap_or(0.0);
        let rate = counters.written as f64 / elapsed.as_secs_f64();
        match scenario {
            Scenario::Drain(faults) => {
                println!(
                    "  drain {}: {} written ({} dead-lettered) in {:.1?} = {rate:.0} records/s; host CPU {host_cpu:.1?}, simulators {sims_cpu:.1?}",
                    if faults.is_some() { "with 2% mixed faults" } else { "without faults" },
                    counters.written,
                    counters.dead_lettered,
                    elapsed,
                );
            }
            Scenario::Throughput => {
                let records = counters.written as f64;
                println!(
                    "ingress_e2e throughput: {} written ({} dead-lettered) in {:.1?} = {:.0} records/s",
                    counters.written,
                    counters.dead_lettered,
                    elapsed,
                    records / elapsed.as_secs_f64()
                );
                println!(
                    "  CPU: host {host_cpu:.1?} ({:.1} µs/record), simulators {sims_cpu:.1?} ({:.1} µs/record), {:.2} of 2 cores busy",
                    host_cpu.as_secs_f64() * 1e6 / records,
                    sims_cpu.as_secs_f64() * 1e6 / records,
                    (host_cpu + sims_cpu).as_secs_f64() / elapsed.as_secs_f64()
                );
                let groups = store.group_commits();
                println!(
                    "  queue: {} reader and writer steps in {} transactions ({} fsyncs saved by group commits)",
                    groups.steps,
                    groups.transactions,
                    groups.steps.saturating_sub(groups.transactions)
                );
                println!(
                    "  writes per record: {:.2} write calls handed {:.1} KiB (HTTP included), {:.1} KiB sent to storage; data file {file_mib:.0} MiB",
                    host_writes.calls as f64 / records,
                    host_writes.handed as f64 / 1024.0 / records,
                    host_writes.stored as f64 / 1024.0 / records
                );
            }
            Scenario::Backlog => {
                println!(
                    "ingress_e2e backlog: {} read, backlog {} (peak {}), {} written before the fault, in {:.1?}; data file {file_mib:.0} MiB",
                    counters.read, counters.queued, max_backlog, counters.written, elapsed
                );
                println!(
                    "  CPU: host {host_cpu:.1?} ({:.1} µs/record read)",
                    host_cpu.as_secs_f64() * 1e6 / counters.read.max(1) as f64
                );
            }
        }
        println!(
            "  host peak RSS (VmHWM) {:.1} MiB, highest sampled VmRSS {:.1} MiB, now {:.1} MiB; simulators' peak RSS {:.0} MiB",
            mib(peak_rss_kib_of("/proc/self/status")),
            mib(max_rss_sampled),
            mib(rss_kib_now()),
            mib(sims.peak_rss_kib())
        );
        host.shutdown().await;
        rate
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let contacts = args
        .iter()
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(DEFAULT_CONTACTS);
    if args.iter().any(|arg| arg == "faults") {
        let contacts = args
            .iter()
            .find_map(|arg| arg.parse().ok())
            .unwrap_or(DEFAULT_FAULTS_CONTACTS);
        compare_faults(contacts);
        return;
    }
    let scenario = if args.iter().any(|arg| arg == "throughput") {
        Some(Scenario::Throughput)
    } else if args.iter().any(|arg| arg == "backlog") {
        Some(Scenario::Backlog)
    } else {
        None
    };
    match scenario {
        Some(scenario) => {
            run(scenario, contacts);
        }
        None => {
            // Each scenario in its own process so that peak RSS is per scenario.
            let executable = std::env::current_exe().expect("the bench knows its own path");
            for name in ["throughput", "backlog"] {
                let status = Command::new(&executable)
                    .args([name, &contacts.to_string()])
                    .status()
                    .expect("the bench re-runs itself");
                assert!(status.success(), "the {name} scenario failed");
            }
        }
    }
}

/// What this process has written, from `/proc/self/io` (zero where it cannot be read).
/// `write_bytes` depends on when the kernel writes dirty pages back (a page dirtied again
/// before its writeback counts once), so builds are compared by the write calls and the
/// bytes handed to them, which do not.
#[derive(Debug, Clone, Copy, Default)]
struct DiskWrites {
    /// `syscw`: write-like system calls (files and sockets).
    calls: u64,
    /// `wchar`: bytes handed to those calls (the HTTP requests included).
    handed: u64,
    /// `write_bytes`: bytes this process caused to be sent to storage.
    stored: u64,
}

impl DiskWrites {
    /// This process's totals so far.
    fn of_this_process() -> DiskWrites {
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let field = |name: &str| -> u64 {
            io.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0)
        };
        DiskWrites {
            calls: field("syscw"),
            handed: field("wchar"),
            stored: field("write_bytes"),
        }
    }

    /// What was written between `earlier` and these totals.
    fn since(self, earlier: DiskWrites) -> DiskWrites {
        DiskWrites {
            calls: self.calls.saturating_sub(earlier.calls),
            handed: self.handed.saturating_sub(earlier.handed),
            stored: self.stored.saturating_sub(earlier.stored),
        }
    }
}
