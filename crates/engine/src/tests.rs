//! Engine tests with in-memory connectors and a native mapper: lifecycle, delivery, stop and
//! resume, poison records, transient failures and schema drift.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::services::*;
use super::*;
use conduit_config::EffectiveLimits;
use conduit_connectors::*;
use conduit_model::*;
use conduit_store::{InFlight, now_ms};

const CONFIG: &str = r#"
[host]
data_dir = "data"
[dynamics]
url = "http://127.0.0.1:1/"
token_url = "http://127.0.0.1:1/t/oauth2/v2.0/token"
client_id = "app"
client_secret_env = "UNUSED_SECRET"
[campaign]
url = "http://127.0.0.1:1/acme/campaign"
client_id = "key"
client_secret_env = "UNUSED_SECRET"
journal_url = "http://127.0.0.1:1/journal"
[ingress]
pacing = { page_size = 7, write_batch = 5, poll_interval_ms = 50 }
limits = { failure_threshold = 2 }
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [{ source = "firstname", destination = "firstName" }]
"#;

#[derive(Default)]
struct FakeDynamics {
    rows: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl ChangeSource for FakeDynamics {
    async fn read_changes(
        &self,
        request: &ChangeRequest,
        cursor: Option<&str>,
    ) -> Result<ChangePage, ConnectorError> {
        let rows = self.rows.lock().unwrap().clone();
        let start: usize = cursor.map_or(0, |c| c.parse().unwrap());
        let end = (start + request.page_size as usize).min(rows.len());
        let batch = RecordBatch {
            table: request.table.clone(),
            columns: vec!["contactid".into(), "firstname".into()],
            rows: rows[start..end]
                .iter()
                .map(|(key, name)| Row {
                    key: key.clone(),
                    op: Operation::Upsert,
                    values: vec![Value::Guid(key.clone()), Value::Text(name.clone())],
                    modified_at: None,
                })
                .collect(),
        };
        Ok(ChangePage {
            batch,
            cursor: end.to_string(),
            caught_up: end == rows.len(),
        })
    }

    async fn read_rows(
        &self,
        request: &ChangeRequest,
        keys: &[String],
    ) -> Result<RecordBatch, ConnectorError> {
        let rows = self.rows.lock().unwrap().clone();
        Ok(RecordBatch {
            table: request.table.clone(),
            columns: vec!["contactid".into(), "firstname".into()],
            rows: rows
                .iter()
                .filter(|(key, _)| keys.contains(key))
                .map(|(key, name)| Row {
                    key: key.clone(),
                    op: Operation::Upsert,
                    values: vec![Value::Guid(key.clone()), Value::Text(name.clone())],
                    modified_at: None,
                })
                .collect(),
        })
    }

    async fn count_rows(&self, _table: &str) -> Result<u64, ConnectorError> {
        Ok(self.rows.lock().unwrap().len() as u64)
    }

    async fn describe(&self, _table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        Ok(["contactid", "firstname", "modifiedon"]
            .map(|name| FieldInfo {
                name: name.into(),
                kind: FieldKind::Text,
            })
            .to_vec())
    }
}

#[derive(Default)]
struct FakeCampaign {
    profiles: Mutex<HashMap<String, Vec<(String, Value)>>>,
    fail_next: AtomicUsize,
    fields: Mutex<Vec<(String, FieldKind)>>,
}

#[async_trait]
impl RecordSink for FakeCampaign {
    async fn write(&self, records: &[WriteRecord]) -> Vec<WriteOutcome> {
        records
            .iter()
            .map(|record| {
                if self.fail_next.load(Ordering::SeqCst) > 0 {
                    self.fail_next.fetch_sub(1, Ordering::SeqCst);
                    return WriteOutcome::Failed(ConnectorError::Transient {
                        message: "503".into(),
                        retry_after: None,
                    });
                }
                if record.key == "refused" {
                    return WriteOutcome::Failed(ConnectorError::Permanent {
                        message: "400 bad".into(),
                    });
                }
                self.profiles
                    .lock()
                    .unwrap()
                    .insert(record.key.clone(), record.fields.clone());
                WriteOutcome::Written
            })
            .collect()
    }

    async fn describe(&self, _table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        Ok(self
            .fields
            .lock()
            .unwrap()
            .iter()
            .map(|(name, kind)| FieldInfo {
                name: name.clone(),
                kind: kind.clone(),
            })
            .collect())
    }

    async fn check(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

struct NoEvents;

#[async_trait]
impl EventSource for NoEvents {
    async fn read_events(
        &self,
        cursor: Option<&str>,
        _limit: u32,
    ) -> Result<EventPage, ConnectorError> {
        Ok(EventPage {
            events: vec![],
            cursor: cursor.map(str::to_string),
        })
    }
}

struct FakeConnect {
    dynamics: Arc<FakeDynamics>,
    campaign: Arc<FakeCampaign>,
}

impl Connect for FakeConnect {
    fn connect(&self, _config: &Config) -> Result<Services, ConnectFailed> {
        Ok(Services {
            dynamics_source: self.dynamics.clone(),
            dynamics_sink: self.campaign.clone(),
            campaign_sink: self.campaign.clone(),
            events: Arc::new(NoEvents),
            opt_out_exports: None,
            profile_opt_outs: None,
            campaign_records: None,
            dynamics_records: None,
        })
    }
}

/// Fails every call, like a plugin broken by a bad deploy.
struct BrokenMapper;

impl RecordMapping for BrokenMapper {
    fn map(&mut self, _phase: Phase, _batch: &RecordBatch) -> Result<Vec<Outcome>, MappingFailed> {
        Err(MappingFailed::new("trap: out of bounds memory access"))
    }
}

/// Maps firstname onto firstName; fails the whole batch when a row is named "poison".
struct NativeMapper;

impl RecordMapping for NativeMapper {
    fn map(&mut self, _phase: Phase, batch: &RecordBatch) -> Result<Vec<Outcome>, MappingFailed> {
        batch
            .rows
            .iter()
            .map(|row| match &row.values[1] {
                Value::Text(name) if name == "poison" => {
                    Err(MappingFailed::new("trap: unreachable"))
                }
                value => Ok(Outcome::Write {
                    records: vec![WriteRecord {
                        target: Target {
                            system: System::Campaign,
                            table: "profile".into(),
                            key_field: "externalId".into(),
                        },
                        key: row.key.clone(),
                        op: Operation::Upsert,
                        fields: vec![("firstName".into(), value.clone())],
                    }],
                }),
            })
            .collect()
    }
}

struct NativePlugins;

impl PluginFactory for NativePlugins {
    fn record_mapper(
        &self,
        plugin: &str,
        _settings: &serde_json::Value,
        _limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn RecordMapping>>, LoadFailed> {
        if plugin.ends_with("panics.wasm") {
            // Like a plugin runtime failing inside `configure`.
            panic!("configure panicked on purpose");
        }
        let mapper: Box<dyn RecordMapping> = if plugin.ends_with("broken.wasm") {
            Box::new(BrokenMapper)
        } else {
            Box::new(NativeMapper)
        };
        Ok(Loaded {
            plugin: mapper,
            fingerprint: "native".into(),
            build: None,
        })
    }

    fn event_mapper(
        &self,
        _plugin: &str,
        _settings: &serde_json::Value,
        _limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn EventMapping>>, LoadFailed> {
        Err(LoadFailed::new("not used"))
    }

    fn opt_out_resolver(
        &self,
        _plugin: &str,
        _settings: &serde_json::Value,
        _limits: &EffectiveLimits,
    ) -> Result<Loaded<Box<dyn OptOutResolution>>, LoadFailed> {
        Err(LoadFailed::new("not used"))
    }

    fn current_fingerprint(&self, _plugin: &str) -> Option<String> {
        Some("native".into())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    config_path: PathBuf,
    supervisor: Supervisor,
    dynamics: Arc<FakeDynamics>,
    campaign: Arc<FakeCampaign>,
}

fn harness(rows: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("conduit.toml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let dynamics = Arc::new(FakeDynamics::default());
    *dynamics.rows.lock().unwrap() = (0..rows)
        .map(|i| (format!("c{i}"), format!("name{i}")))
        .collect();
    let campaign = Arc::new(FakeCampaign::default());
    *campaign.fields.lock().unwrap() = vec![
        ("externalId".into(), FieldKind::Text),
        ("firstName".into(), FieldKind::Text),
    ];
    let store = Store::open(&dir.path().join("data/conduit.redb")).unwrap();
    let supervisor = Supervisor::new(Environment {
        store,
        connect: Arc::new(FakeConnect {
            dynamics: dynamics.clone(),
            campaign: campaign.clone(),
        }),
        plugins: Arc::new(NativePlugins),
        config_path: config_path.clone(),
    });
    Harness {
        _dir: dir,
        config_path,
        supervisor,
        dynamics,
        campaign,
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn status(h: &Harness) -> WorkflowView {
    h.supervisor.workflow_view(WorkflowId::Ingress).unwrap()
}

#[tokio::test]
async fn start_delivers_every_record_and_reaches_running() {
    let h = harness(40);
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("running", || status(&h).status == StatusKind::Running).await;
    wait_for("all written", || {
        h.campaign.profiles.lock().unwrap().len() == 40
    })
    .await;
    wait_for("backlog drained", || status(&h).backlog == 0).await;
    let view = status(&h);
    assert_eq!(view.counters.read, 40);
    assert_eq!(view.counters.written, 40);
    assert_eq!(view.cursors[0].phase, Phase::Incremental);
}

#[tokio::test]
async fn stop_keeps_backlog_and_resumes_after_start() {
    let h = harness(30);
    h.campaign.fail_next.store(usize::MAX / 2, Ordering::SeqCst);
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("everything queued", || status(&h).backlog == 30).await;
    h.supervisor.stop(WorkflowId::Ingress).await.unwrap();
    assert_eq!(status(&h).status, StatusKind::Stopped);
    assert_eq!(status(&h).backlog, 30);
    assert!(h.campaign.profiles.lock().unwrap().is_empty());
    h.campaign.fail_next.store(0, Ordering::SeqCst);
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("drained after restart", || status(&h).backlog == 0).await;
    assert_eq!(h.campaign.profiles.lock().unwrap().len(), 30);
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_alone_and_the_rest_flows() {
    let h = harness(10);
    h.dynamics.rows.lock().unwrap()[4].1 = "poison".into();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("nine written", || {
        h.campaign.profiles.lock().unwrap().len() == 9
    })
    .await;
    let letters = h
        .supervisor
        .store()
        .dead_letters(WorkflowId::Ingress, &Default::default())
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("trap: unreachable"),
        "{}",
        letters[0].reason
    );
    assert_eq!(status(&h).status, StatusKind::Running);

    // A retry maps it again with the plugin as configured now: still poison, it fails on the
    // record; once its mapping is gone from the config, the retry names the mapping.
    let letter = letters[0].id;
    let again = h
        .supervisor
        .retry_dead_letter(WorkflowId::Ingress, letter)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, EngineError::Remap(RemapError::Plugin(reason)) if reason.contains("unreachable")),
        "{again:?}"
    );
    std::fs::write(
        &h.config_path,
        CONFIG.replace("name = \"contacts\"", "name = \"people\""),
    )
    .unwrap();
    let gone = h
        .supervisor
        .retry_dead_letter(WorkflowId::Ingress, letter)
        .await
        .unwrap_err();
    assert!(
        matches!(&gone, EngineError::Remap(RemapError::MappingGone(name)) if name == "contacts"),
        "{gone:?}"
    );
    assert_eq!(
        h.supervisor
            .store()
            .dead_letters(WorkflowId::Ingress, &Default::default())
            .unwrap()
            .len(),
        1,
        "a failed retry keeps the dead letter"
    );
}

#[tokio::test]
async fn transient_write_failures_are_retried_until_written() {
    let h = harness(12);
    h.campaign.fail_next.store(8, Ordering::SeqCst);
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("all written", || {
        h.campaign.profiles.lock().unwrap().len() == 12
    })
    .await;
    assert!(
        h.supervisor
            .store()
            .dead_letters(WorkflowId::Ingress, &Default::default())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_missing_destination_field_at_start_is_an_error_naming_it() {
    let h = harness(3);
    h.campaign
        .fields
        .lock()
        .unwrap()
        .retain(|(name, _)| name != "firstName");
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("error", || status(&h).status == StatusKind::Error).await;
    let reason = status(&h).reason.unwrap();
    assert!(reason.contains("firstName"), "{reason}");
    assert!(h.campaign.profiles.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_invalid_config_is_refused_at_start_with_its_problems() {
    let h = harness(3);
    std::fs::write(
        &h.config_path,
        CONFIG.replace("name = \"contacts\"", "nmae = \"contacts\""),
    )
    .unwrap();
    let error = h.supervisor.start(WorkflowId::Ingress).await.unwrap_err();
    assert!(error.to_string().contains("nmae"), "{error}");
    assert_eq!(status(&h).status, StatusKind::Stopped);
}

#[tokio::test]
async fn an_edit_marks_only_the_running_workflow_as_pending_until_restart() {
    let h = harness(3);
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("running", || status(&h).status == StatusKind::Running).await;
    assert!(!status(&h).pending_changes);
    std::fs::write(
        &h.config_path,
        CONFIG.replace("page_size = 7", "page_size = 9"),
    )
    .unwrap();
    let host = h.supervisor.view().unwrap();
    let ingress = &host.workflows[0];
    assert!(ingress.pending_changes);
    assert_eq!(
        ingress.pending_summary,
        ["ingress.pacing.page_size: 7 -> 9"]
    );
    // an invalid edit is reported and disturbs nothing
    std::fs::write(&h.config_path, "this is = = not toml").unwrap();
    let host = h.supervisor.view().unwrap();
    assert!(!host.config_problems.is_empty());
    assert_eq!(status(&h).status, StatusKind::Running);
    std::fs::write(
        &h.config_path,
        CONFIG.replace("page_size = 7", "page_size = 9"),
    )
    .unwrap();
    h.supervisor.stop(WorkflowId::Ingress).await.unwrap();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("running again", || status(&h).status == StatusKind::Running).await;
    assert!(!status(&h).pending_changes);
}

#[tokio::test]
async fn the_desired_state_is_restored_when_the_host_starts() {
    let h = harness(5);
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("running", || status(&h).status == StatusKind::Running).await;
    h.supervisor.shutdown().await;
    let store = h.supervisor.store().clone();
    let restored = Supervisor::new(Environment {
        store,
        connect: Arc::new(FakeConnect {
            dynamics: h.dynamics.clone(),
            campaign: h.campaign.clone(),
        }),
        plugins: Arc::new(NativePlugins),
        config_path: h.config_path.clone(),
    });
    assert!(restored.restore().await.is_empty());
    wait_for("running after restore", || {
        restored.workflow_view(WorkflowId::Ingress).unwrap().status == StatusKind::Running
    })
    .await;
    assert_eq!(
        restored.workflow_view(WorkflowId::Egress).unwrap().status,
        StatusKind::Stopped
    );
}

#[tokio::test]
async fn replay_is_refused_over_the_row_limit_and_taken_at_the_next_start() {
    let h = harness(5);
    std::fs::write(
        &h.config_path,
        CONFIG.replace(
            "limits = { failure_threshold = 2 }",
            "limits = { failure_threshold = 2, replay_max_rows = 5 }",
        ),
    )
    .unwrap();
    let refused = h
        .supervisor
        .replay(WorkflowId::Ingress, "contacts")
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            EngineError::TableOverLimit {
                rows: 5,
                limit: 5,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("holds 5 rows"), "{refused}");
    std::fs::write(&h.config_path, CONFIG).unwrap();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("written", || status(&h).counters.written == 5).await;
    h.supervisor
        .replay(WorkflowId::Ingress, "contacts")
        .await
        .unwrap();
    assert_eq!(status(&h).pending_replays, ["contacts"]);
    let again = h
        .supervisor
        .replay(WorkflowId::Ingress, "contacts")
        .await
        .unwrap_err();
    assert!(
        matches!(&again, EngineError::ReplayPending(name) if name == "contacts"),
        "{again:?}"
    );
    assert!(again.to_string().contains("already pending"));
    let unknown = h
        .supervisor
        .replay(WorkflowId::Ingress, "accounts")
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, EngineError::UnknownMapping { known, .. } if known == &["contacts"]),
        "{unknown:?}"
    );
    let not_ingress = h
        .supervisor
        .replay(WorkflowId::Egress, "contacts")
        .await
        .unwrap_err();
    assert!(
        matches!(
            not_ingress,
            EngineError::ReplayNotIngress(WorkflowId::Egress)
        ),
        "{not_ingress:?}"
    );
    h.supervisor.stop(WorkflowId::Ingress).await.unwrap();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("replayed", || status(&h).counters.written == 10).await;
    assert!(status(&h).pending_replays.is_empty());
}

#[tokio::test]
async fn a_plugin_failing_every_record_puts_the_workflow_in_error_after_the_threshold() {
    let h = harness(40);
    std::fs::write(
        h.config_path.with_file_name("broken.wasm"),
        b"not used by the fake",
    )
    .unwrap();
    std::fs::write(
        &h.config_path,
        CONFIG.replace("[ingress]\n", "[ingress]\nplugin = \"broken.wasm\"\n"),
    )
    .unwrap();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("error", || status(&h).status == StatusKind::Error).await;
    let view = status(&h);
    let reason = view.reason.unwrap();
    assert!(
        reason.contains("the plugin fails on every record"),
        "{reason}"
    );
    assert!(reason.contains("out of bounds"), "{reason}");
    // Nothing is lost: the records of the failed batches are dead letters, not dropped.
    assert_eq!(view.counters.dead_letters, view.counters.read);
    assert!(
        view.counters.read >= 14,
        "two batches of seven before the threshold"
    );
}

/// A sink that fails chosen keys once, transiently, and keeps every write it accepted. With
/// `addresses`, it gives each written record an address (`/p/<key>`) and notes the addresses
/// it is handed.
#[derive(Default)]
struct FlakySink {
    fail_once: Mutex<std::collections::HashSet<String>>,
    written: Mutex<Vec<(String, Value)>>,
    addresses: bool,
    handed: Mutex<Vec<(String, Option<String>)>>,
}

#[async_trait]
impl RecordSink for FlakySink {
    async fn write(&self, records: &[WriteRecord]) -> Vec<WriteOutcome> {
        records
            .iter()
            .map(|record| {
                if self.fail_once.lock().unwrap().remove(&record.key) {
                    return WriteOutcome::Failed(ConnectorError::Transient {
                        message: "503 Service Unavailable".into(),
                        retry_after: None,
                    });
                }
                let value = record
                    .fields
                    .first()
                    .map_or(Value::Null, |field| field.1.clone());
                self.written
                    .lock()
                    .unwrap()
                    .push((record.key.clone(), value));
                WriteOutcome::Written
            })
            .collect()
    }

    fn location_scope(&self) -> Option<String> {
        self.addresses.then(|| "flaky".to_string())
    }

    async fn write_located(
        &self,
        records: &[WriteRecord],
        known: &[Option<String>],
    ) -> Vec<(WriteOutcome, Learnt)> {
        {
            let mut handed = self.handed.lock().unwrap();
            for (index, record) in records.iter().enumerate() {
                handed.push((record.key.clone(), known.get(index).cloned().flatten()));
            }
        }
        let outcomes = self.write(records).await;
        records
            .iter()
            .zip(outcomes)
            .map(|(record, outcome)| {
                let learnt = match (&outcome, record.op) {
                    (WriteOutcome::Written, Operation::Delete) => Learnt::Gone,
                    (WriteOutcome::Written, _) => Learnt::At(format!("/p/{}", record.key)),
                    _ => Learnt::Nothing,
                };
                (outcome, learnt)
            })
            .collect()
    }

    async fn describe(&self, _table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        Ok(Vec::new())
    }

    async fn check(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

fn profile(key: &str, name: &str) -> WriteRecord {
    WriteRecord {
        target: Target {
            system: System::Campaign,
            table: "profile".into(),
            key_field: "externalId".into(),
        },
        key: key.into(),
        op: Operation::Upsert,
        fields: vec![("firstName".into(), Value::Text(name.into()))],
    }
}

fn enqueue(store: &Store, records: Vec<WriteRecord>) {
    enqueue_checked(store, records, conduit_store::LedgerPolicy::Off);
}

/// Queues `records` as Ingress's reader does, checked against the ledger by `ledger`.
fn enqueue_checked(store: &Store, records: Vec<WriteRecord>, ledger: conduit_store::LedgerPolicy) {
    store
        .commit_read(
            WorkflowId::Ingress,
            ReadCommit {
                source: "contacts".into(),
                records: records
                    .into_iter()
                    .map(|r| ("contacts".to_string(), r))
                    .collect(),
                ledger,
                ..ReadCommit::default()
            },
        )
        .unwrap();
}

/// A writer of batches of 5 over `sink`, running until the returned sender says stop. Every
/// delay is an hour: a deferred record is not retried while the test runs, and a writer that
/// paused its whole queue would write nothing more.
fn spawn_writer(sink: Arc<FlakySink>) -> WriterRun {
    spawn_writer_with(sink, drift::DriftGuard::default())
}

/// [`spawn_writer`] over any sink, with its schema-drift guard.
fn spawn_writer_with(sink: Arc<dyn RecordSink>, drift: drift::DriftGuard) -> WriterRun {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("conduit.redb")).unwrap();
    let writer = writer::Writer {
        workflow: WorkflowId::Ingress,
        store: store.clone(),
        services: Services {
            dynamics_source: Arc::new(FakeDynamics::default()),
            dynamics_sink: sink.clone(),
            campaign_sink: sink,
            events: Arc::new(NoEvents),
            opt_out_exports: None,
            profile_opt_outs: None,
            campaign_records: None,
            dynamics_records: None,
        },
        batch_size: 5,
        drift: Arc::new(drift),
        missing_record_wait: Duration::from_secs(3600),
    };
    let (stop, stopped) = watch::channel(false);
    let live = Arc::new(LiveState::default());
    let ctx = StageContext {
        stop: stopped,
        queue_changed: Arc::new(Notify::new()),
        live: live.clone(),
    };
    let hour = Duration::from_secs(3600);
    let timing = writer::RetryTiming {
        record: conduit_base::retry::Backoff::new(hour, hour),
        queue: conduit_base::retry::Backoff::new(hour, hour),
    };
    let task = tokio::spawn(async move { writer.write_with(&ctx, timing).await });
    (dir, store, live, stop, task)
}

/// A running writer: its folder, store, live state, stop switch and task.
type WriterRun = (
    tempfile::TempDir,
    Store,
    Arc<LiveState>,
    watch::Sender<bool>,
    JoinHandle<Result<(), stage::StageError>>,
);

fn written_keys(sink: &FlakySink) -> Vec<String> {
    sink.written
        .lock()
        .unwrap()
        .iter()
        .map(|(key, _)| key.clone())
        .collect()
}

#[tokio::test]
async fn a_batch_with_some_transient_failures_does_not_delay_the_records_behind_it() {
    let sink = Arc::new(FlakySink::default());
    sink.fail_once
        .lock()
        .unwrap()
        .extend(["c1".to_string(), "c3".to_string()]);
    let (_dir, store, live, stop, task) = spawn_writer(sink.clone());
    enqueue(
        &store,
        (0..5).map(|i| profile(&format!("c{i}"), "v1")).collect(),
    );
    // The first batch writes three and defers two.
    wait_for("the first batch committed", || {
        store.backlog(WorkflowId::Ingress).unwrap() == 2
    })
    .await;
    // Behind it: five new keys, and a newer write of a deferred key.
    let mut behind: Vec<_> = (5..10).map(|i| profile(&format!("c{i}"), "v1")).collect();
    behind.push(profile("c1", "v2"));
    enqueue(&store, behind);
    wait_for("the records behind written", || {
        written_keys(&sink).len() == 8
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    let mut written = written_keys(&sink);
    written.sort();
    assert_eq!(
        written,
        ["c0", "c2", "c4", "c5", "c6", "c7", "c8", "c9"],
        "the failed ones wait for their own retry, the rest flowed"
    );
    assert_eq!(live.warning(), None, "the queue was never paused");
    // The deferred ones keep their place, attempt and reason; c1's newer write waits behind
    // c1's older one.
    let later = now_ms() + 2 * 3600 * 1000;
    let queued = store
        .ready_batch(WorkflowId::Ingress, 10, later, &InFlight::default())
        .unwrap()
        .records;
    let seen: Vec<_> = queued
        .iter()
        .map(|q| (q.record.key.as_str(), q.attempts, q.last_reason.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("c1", 1, Some("503 Service Unavailable")),
            ("c3", 1, Some("503 Service Unavailable"))
        ]
    );
    assert_eq!(queued[0].record.fields[0].1, Value::Text("v1".into()));
    assert_eq!(store.backlog(WorkflowId::Ingress).unwrap(), 3);
}

#[tokio::test]
async fn a_batch_that_mostly_fails_pauses_the_whole_queue() {
    let sink = Arc::new(FlakySink::default());
    sink.fail_once
        .lock()
        .unwrap()
        .extend((0..5).filter(|i| *i != 2).map(|i| format!("c{i}")));
    let (_dir, store, live, stop, task) = spawn_writer(sink.clone());
    enqueue(
        &store,
        (0..5).map(|i| profile(&format!("c{i}"), "v1")).collect(),
    );
    wait_for("the batch committed", || {
        store.backlog(WorkflowId::Ingress).unwrap() == 4
    })
    .await;
    wait_for("the pause reported", || live.warning().is_some()).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let warning = live.warning().unwrap();
    assert!(warning.contains("destination unavailable"), "{warning}");
    assert_eq!(written_keys(&sink), ["c2"]);
}

#[tokio::test]
async fn a_panic_while_configuring_the_plugin_is_an_error_with_the_reason_and_a_fixed_plugin_starts()
 {
    let h = harness(10);
    std::fs::write(
        h.config_path.with_file_name("panics.wasm"),
        b"not used by the fake",
    )
    .unwrap();
    std::fs::write(
        &h.config_path,
        CONFIG.replace("[ingress]\n", "[ingress]\nplugin = \"panics.wasm\"\n"),
    )
    .unwrap();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("error", || status(&h).status == StatusKind::Error).await;
    let reason = status(&h).reason.unwrap();
    assert!(reason.contains("configure panicked on purpose"), "{reason}");

    // The plugin is fixed: the next start works.
    std::fs::write(&h.config_path, CONFIG).unwrap();
    h.supervisor.start(WorkflowId::Ingress).await.unwrap();
    wait_for("running", || status(&h).status == StatusKind::Running).await;
    wait_for("all written", || {
        h.campaign.profiles.lock().unwrap().len() == 10
    })
    .await;
}

#[tokio::test]
async fn the_writer_keeps_what_writes_teach_of_addresses_and_hands_it_back() {
    writer_keeps_addresses(conduit_store::LedgerPolicy::Off).await;
}

/// The same with the ledger on, as Ingress's reader queues: addresses kept by address slot.
#[tokio::test]
async fn the_writer_keeps_addresses_by_slot_for_records_the_ledger_checked() {
    writer_keeps_addresses(conduit_store::LedgerPolicy::Record).await;
}

async fn writer_keeps_addresses(ledger: conduit_store::LedgerPolicy) {
    let sink = Arc::new(FlakySink {
        addresses: true,
        ..FlakySink::default()
    });
    let (_dir, store, _live, stop, task) = spawn_writer(sink.clone());
    enqueue_checked(
        &store,
        (0..3).map(|i| profile(&format!("c{i}"), "v1")).collect(),
        ledger,
    );
    wait_for("the first writes committed", || {
        store.backlog(WorkflowId::Ingress).unwrap() == 0
    })
    .await;
    assert_eq!(store.location_count().unwrap(), 3);
    // The next writes of those keys are handed their addresses; a delete forgets it; a
    // transient failure keeps it for the retry.
    sink.fail_once.lock().unwrap().insert("c2".to_string());
    let mut delete = profile("c1", "gone");
    delete.op = Operation::Delete;
    enqueue_checked(
        &store,
        vec![
            profile("c0", "v2"),
            delete,
            profile("c2", "v2"),
            profile("c9", "v1"),
        ],
        ledger,
    );
    wait_for("the second writes committed", || {
        store.backlog(WorkflowId::Ingress).unwrap() == 1
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let handed = sink.handed.lock().unwrap().clone();
    assert_eq!(
        handed,
        [
            ("c0".to_string(), None),
            ("c1".to_string(), None),
            ("c2".to_string(), None),
            ("c0".to_string(), Some("/p/c0".to_string())),
            ("c1".to_string(), Some("/p/c1".to_string())),
            ("c2".to_string(), Some("/p/c2".to_string())),
            ("c9".to_string(), None),
        ]
    );
    // c0, c2 (kept through its failure) and c9; c1 forgotten.
    assert_eq!(store.location_count().unwrap(), 3);
}

/// A sink whose writes of `profile` wait until the test lets them go, and whose `describe` of
/// the table `later` waits until those writes are done: while the writer's loop is describing
/// `later` (before its batch is written), only the `profile` batch's own task can finish it.
#[derive(Default)]
struct GatedSink {
    release_profiles: Notify,
    profiles_written: Notify,
    describing_later: Notify,
    written: Mutex<Vec<String>>,
}

#[async_trait]
impl RecordSink for GatedSink {
    async fn write(&self, records: &[WriteRecord]) -> Vec<WriteOutcome> {
        let profiles = records.iter().all(|r| r.target.table == "profile");
        if profiles {
            self.release_profiles.notified().await;
        }
        self.written
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.key.clone()));
        if profiles {
            self.profiles_written.notify_one();
        }
        vec![WriteOutcome::Written; records.len()]
    }

    async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        if table == "later" {
            self.describing_later.notify_one();
            self.profiles_written.notified().await;
        }
        Ok(vec![FieldInfo {
            name: "firstName".into(),
            kind: FieldKind::Text,
        }])
    }

    async fn check(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_batch_being_written_goes_on_while_the_writer_prepares_the_next() {
    let sink = Arc::new(GatedSink::default());
    let mut drift = drift::DriftGuard::default();
    drift.learn_on_first_write(System::Campaign);
    let (_dir, store, _live, stop, task) = spawn_writer_with(sink.clone(), drift);
    let mut records: Vec<_> = (0..5).map(|i| profile(&format!("p{i}"), "v1")).collect();
    records.extend((0..5).map(|i| {
        let mut record = profile(&format!("l{i}"), "v1");
        record.target.table = "later".into();
        record
    }));
    enqueue(&store, records);
    // The profile batch is in flight; the loop has taken the next batch and is describing
    // its table, which waits for the profile batch to be written.
    tokio::time::timeout(Duration::from_secs(10), sink.describing_later.notified())
        .await
        .expect("the writer took the second batch while the first was in flight");
    sink.release_profiles.notify_one();
    wait_for("both batches written and committed", || {
        sink.written.lock().unwrap().len() == 10 && store.backlog(WorkflowId::Ingress).unwrap() == 0
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}
