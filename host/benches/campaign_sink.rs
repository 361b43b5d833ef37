//! Benchmark: records per second written by the Campaign connector to the Campaign simulator at
//! several concurrency limits, and the host's CPU time per record, for the three kinds of write
//! the engine makes: `create` (a new key: one POST), `update` (the href a previous write taught:
//! one PATCH) and `update-nohref` (a key that exists but whose href is not known, as after a
//! first load into a populated instance: the refused POST, the lookup and the PATCH).
//!
//! The simulator runs in a child process (this same binary, re-run with
//! `CONDUIT_BENCH_ROLE=campaign-sim`) so that the CPU time measured here is the connector's alone.
//! Run: `cargo bench -p conduit --bench campaign_sink` (optional `-- <records>`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conduit_connectors::campaign::{CampaignConnector, CampaignSettings};
use conduit_connectors::http::{RetryPolicy, Secret};
use conduit_connectors::{Learnt, RecordSink, WriteOutcome};
use conduit_model::{Operation, System, Target, Value, WriteRecord};
use conduit_sim::campaign::{CampaignSim, CampaignSimOptions};

mod support;
use support::process_cpu_time;

const ROLE_VARIABLE: &str = "CONDUIT_BENCH_ROLE";
const BATCH: usize = 500;

fn main() {
    if std::env::var(ROLE_VARIABLE).as_deref() == Ok("campaign-sim") {
        serve_simulator();
        return;
    }
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(10_000);
    let executable = std::env::current_exe().expect("the bench knows its own path");
    let mut child = Command::new(executable)
        .env(ROLE_VARIABLE, "campaign-sim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the simulator process");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let origin = lines
        .next()
        .expect("the simulator prints its origin")
        .expect("readable simulator output");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("Campaign sink: {records} records per run, batches of {BATCH}, simulator at {origin}");
    println!(
        "{:<14} {:<8} {:>12} {:>16}",
        "write", "limit", "records/s", "host CPU us/rec"
    );
    for (round, concurrency) in [1usize, 8, 32].into_iter().enumerate() {
        let connector = connector(&origin, concurrency);
        runtime
            .block_on(connector.check())
            .expect("the connector reaches the simulator");
        // Create the keys (learning their hrefs), update them at those hrefs, then update them
        // again as if the hrefs had never been learnt.
        let mut hrefs: Vec<Option<String>> = vec![None; records];
        for label in ["create", "update", "update-nohref"] {
            let batch: Vec<WriteRecord> = (0..records)
                .map(|index| record(round, index, label))
                .collect();
            let known: Vec<Option<String>> = match label {
                "update" => hrefs.clone(),
                _ => vec![None; records],
            };
            let cpu_before = process_cpu_time();
            let started = Instant::now();
            runtime.block_on(async {
                for (chunk, (known, learnt)) in batch
                    .chunks(BATCH)
                    .zip(known.chunks(BATCH).zip(hrefs.chunks_mut(BATCH)))
                {
                    let results = connector.write_located(chunk, known).await;
                    for ((outcome, taught), slot) in results.into_iter().zip(learnt) {
                        if outcome != WriteOutcome::Written {
                            panic!("a benchmark write failed: {outcome:?}");
                        }
                        if let Learnt::At(href) = taught {
                            *slot = Some(href);
                        }
                    }
                }
            });
            let elapsed = started.elapsed();
            let cpu = process_cpu_time().saturating_sub(cpu_before);
            println!(
                "{:<14} {:<8} {:>12.0} {:>16.1}",
                label,
                concurrency,
                records as f64 / elapsed.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / records as f64
            );
        }
    }
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"stop\n");
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

fn connector(origin: &str, concurrency: usize) -> CampaignConnector {
    let defaults = CampaignSimOptions::default();
    let url = |path: &str| url::Url::parse(&format!("{origin}{path}")).expect("simulator URL");
    CampaignConnector::new(CampaignSettings {
        api_base: url(&format!("/{}/campaign", defaults.org)),
        ims_token_url: url("/ims/token/v3"),
        client_id: defaults.client_id,
        client_secret: Secret::new(defaults.client_secret),
        scopes: vec!["campaign_sdk".into()],
        max_concurrency: concurrency,
        events_journal_url: url("/events"),
        opt_out_drop_root: std::env::temp_dir(),
        extra_ca_pem: None,
        retry: RetryPolicy::default(),
        request_timeout: Duration::from_secs(30),
    })
    .expect("connector settings")
}

fn record(round: usize, index: usize, label: &str) -> WriteRecord {
    WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".into(),
            key_field: "externalId".into(),
        },
        key: format!("bench-{round}-{index}"),
        op: Operation::Upsert,
        fields: vec![
            ("email".into(), Value::Text(format!("p{index}@example.com"))),
            ("firstName".into(), Value::Text(format!("{label}{index}"))),
            (
                "birthDate".into(),
                Value::Datetime("1990-02-03T00:00:00Z".into()),
            ),
            (
                "blackListEmail".into(),
                Value::Boolean(index.is_multiple_of(7)),
            ),
        ],
    }
}

fn serve_simulator() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let sim = CampaignSim::new(CampaignSimOptions::default());
        let server = sim
            .serve("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .expect("serve the simulator");
        println!("{}", server.origin());
        let _ = std::io::stdout().flush();
        // Serve until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        server.shutdown().await;
    });
}
