//! Benchmark: records per second written by the Campaign connector to the Campaign simulator at
//! several concurrency limits, and the host's CPU time per record, for the three kinds of write
//! the engine makes: `create` (a new key: one POST), `update` (the href a previous write taught:
//! one PATCH) and `update-nohref` (a key that exists but whose href is not known, as after a
//! first load into a populated instance: the refused POST, the lookup and the PATCH).
//!
//! The simulator runs in a child process (this same binary, re-run with
//! `CONDUIT_BENCH_ROLE=campaign-sim`) so that the CPU time measured here is the connector's alone;
//! the child's own CPU time per record is reported beside it.
//!
//! Last, the same number of POSTs is sent by a bare pooled hyper client (the client the
//! connector is built on, with nothing of the connector around it) to a bare axum server in the
//! same child process that answers every POST with a fixed `PKey` and `href`: the floor of one
//! HTTP/1.1 call per record over loopback on this machine, for both ends. The connector's and
//! the simulator's CPU per record are divided by it in the same run.
//! Run: `cargo bench -p conduit --bench campaign_sink` (optional `-- <records>`, `limit=<n>` for
//! one concurrency limit, `create-only` to skip the update passes).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conduit_connectors::campaign::{CampaignConnector, CampaignSettings};
use conduit_connectors::http::{RetryPolicy, Secret};
use conduit_connectors::{Learnt, RecordSink, WriteOutcome};
use conduit_model::{Operation, System, Target, Value, WriteRecord};
use conduit_sim::campaign::{CampaignSim, CampaignSimOptions};

mod support;
use support::{cpu_time_of, process_cpu_time};

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
    // `limit=<n>` measures one concurrency limit only; `create-only` skips the update passes
    // (for a profile of the create path against the floor).
    let limits: Vec<usize> = match std::env::args().find_map(|arg| {
        arg.strip_prefix("limit=")
            .map(|limit| limit.parse().expect("limit=<number>"))
    }) {
        Some(limit) => vec![limit],
        None => vec![1, 8, 32],
    };
    let labels: &[&str] = if std::env::args().any(|arg| arg == "create-only") {
        &["create"]
    } else {
        &["create", "update", "update-nohref"]
    };
    let executable = std::env::current_exe().expect("the bench knows its own path");
    let mut child = Command::new(executable)
        .env(ROLE_VARIABLE, "campaign-sim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the simulator process");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut next_line = || {
        lines
            .next()
            .expect("the child prints its origins")
            .expect("readable child output")
    };
    let origin = next_line();
    let floor_origin = next_line();
    let child_stat = format!("/proc/{}/stat", child.id());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("Campaign sink: {records} records per run, batches of {BATCH}, simulator at {origin}");
    println!(
        "{:<14} {:<8} {:>12} {:>16} {:>18}",
        "write", "limit", "records/s", "host CPU us/rec", "server CPU us/rec"
    );
    let mut create_cpu = Vec::new();
    for (round, concurrency) in limits.into_iter().enumerate() {
        let connector = connector(&origin, concurrency);
        runtime
            .block_on(connector.check())
            .expect("the connector reaches the simulator");
        // Create the keys (learning their hrefs), update them at those hrefs, then update them
        // again as if the hrefs had never been learnt.
        let mut hrefs: Vec<Option<String>> = vec![None; records];
        for &label in labels {
            let batch: Vec<WriteRecord> = (0..records)
                .map(|index| record(round, index, label))
                .collect();
            let known: Vec<Option<String>> = match label {
                "update" => hrefs.clone(),
                _ => vec![None; records],
            };
            let cpu_before = process_cpu_time();
            let server_before = cpu_time_of(&child_stat);
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
            let pass = Pass::since(started, cpu_before, server_before, &child_stat, records);
            pass.print(label, concurrency);
            if label == "create" {
                create_cpu.push((concurrency, pass));
            }
        }
    }
    for (concurrency, create) in create_cpu {
        let server_before = cpu_time_of(&child_stat);
        let cpu_before = process_cpu_time();
        let started = Instant::now();
        runtime.block_on(bare_posts(&floor_origin, concurrency, records));
        let floor = Pass::since(started, cpu_before, server_before, &child_stat, records);
        floor.print("floor (bare)", concurrency);
        println!(
            "  create / floor at limit {concurrency}: client CPU {:.2}x, server CPU {:.2}x",
            create.client_us / floor.client_us,
            create.server_us / floor.server_us
        );
    }
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"stop\n");
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

/// What one pass measured: its rate and both processes' CPU per record.
struct Pass {
    records_per_second: f64,
    client_us: f64,
    server_us: f64,
}

impl Pass {
    fn since(
        started: Instant,
        cpu_before: Duration,
        server_before: Duration,
        child_stat: &str,
        records: usize,
    ) -> Pass {
        let elapsed = started.elapsed();
        let per_record = |cpu: Duration| cpu.as_secs_f64() * 1e6 / records as f64;
        Pass {
            records_per_second: records as f64 / elapsed.as_secs_f64(),
            client_us: per_record(process_cpu_time().saturating_sub(cpu_before)),
            server_us: per_record(cpu_time_of(child_stat).saturating_sub(server_before)),
        }
    }

    fn print(&self, label: &str, concurrency: usize) {
        println!(
            "{:<14} {:<8} {:>12.0} {:>16.1} {:>18.1}",
            label, concurrency, self.records_per_second, self.client_us, self.server_us
        );
    }
}

/// The floor: `records` POSTs of a profile-sized body from a bare pooled hyper client, at most
/// `concurrency` at a time, each answer's `PKey` and `href` read (borrowed, where the connector
/// keeps its own copies).
async fn bare_posts(origin: &str, concurrency: usize, records: usize) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};

    #[derive(serde::Deserialize)]
    #[allow(dead_code, non_snake_case)]
    struct Created<'a> {
        PKey: &'a str,
        href: &'a str,
    }

    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    let client: Client<HttpConnector, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_timer(TokioTimer::new())
        .build(tcp);
    let uri: http::Uri = format!("{origin}/profile").parse().expect("floor URI");
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let uri = uri.clone();
        workers.spawn(async move {
            for index in (worker..records).step_by(concurrency) {
                let body = format!(
                    r#"{{"externalId":"floor-{index}","email":"p{index}@example.com","firstName":"floor{index}","birthDate":"1990-02-03","blackListEmail":{}}}"#,
                    index.is_multiple_of(7)
                );
                let request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::AUTHORIZATION, "Bearer floor-token")
                    .header("x-api-key", "floor-client")
                    .body(Full::new(bytes::Bytes::from(body)))
                    .expect("floor request");
                let response = client.request(request).await.expect("floor POST");
                assert!(response.status().is_success(), "floor POST refused");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("floor answer")
                    .to_bytes();
                let created: Created<'_> =
                    serde_json::from_slice(&body).expect("floor answer is JSON");
                std::hint::black_box(created);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("floor worker");
    }
}

/// The floor's server: answers every POST with a fixed created profile, reading its body.
async fn serve_floor() -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    const CREATED: &str = r#"{"PKey":"@floor-pkey","href":"http://127.0.0.1/profileAndServicesExt/profile/@floor-pkey"}"#;
    let router = axum::Router::new().route(
        "/profile",
        axum::routing::post(|body: bytes::Bytes| async move {
            std::hint::black_box(body);
            (
                axum::http::StatusCode::CREATED,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                CREATED,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((origin, task))
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
        let (floor_origin, floor) = serve_floor().await.expect("serve the floor");
        println!("{}", server.origin());
        println!("{floor_origin}");
        let _ = std::io::stdout().flush();
        // Serve until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        floor.abort();
        server.shutdown().await;
    });
}
