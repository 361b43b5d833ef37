//! The admin API's vocabulary: every JSON answer it gives, as one `Serialize + Deserialize`
//! type per endpoint. The server serialises these types and the CLI deserialises the same
//! ones, so the two cannot drift apart without a compile error or a failing round-trip test.
//!
//! The views are computed where their data lives (the workflow views in `conduit-engine`, dead
//! letters and the audit trail in `conduit-store`, config problems in `conduit-config`) and
//! re-exported here; the small answers of state changes and errors are the API's own.
//!
//! | Endpoint | Answer |
//! |---|---|
//! | `GET /api/workflows` | [`HostView`] |
//! | `GET /api/workflows/{id}` | [`WorkflowView`] |
//! | `POST /api/workflows/{id}/start`, `.../stop` | [`StatusAnswer`] |
//! | `POST /api/workflows/{id}/replay/{mapping}`, dead-letter retry and drop | [`MessageAnswer`] |
//! | `GET /api/workflows/{id}/config` | [`ConfigSectionView`] |
//! | `POST /api/workflows/{id}/verify` | JSON lines, one [`VerifyEvent`] each (the last a report or a failure) |
//! | `POST /api/workflows/{id}/preview` | [`PreviewReport`] |
//! | `GET /api/workflows/{id}/edit` | [`EditableSection`] |
//! | `POST /api/workflows/{id}/edit` (body [`SectionEdit`]) | [`EditSaved`], refused with [`EditRefused`] |
//! | `POST /api/workflows/{id}/edit/check` (body [`SectionEdit`]) | [`EditChecked`] |
//! | `GET /api/metadata/{system}/{table}` (`dynamics` or `campaign`) | a list of [`MetadataField`] |
//! | `GET /api/workflows/{id}/dead-letters` | a list of [`DeadLetter`] |
//! | `GET /api/workflows/{id}/dead-letters/{letter}` | [`DeadLetter`] |
//! | `GET /api/workflows/ingress/mappings` | a list of [`MappingView`] |
//! | `GET /api/config/problems` | [`ProblemsView`] |
//! | `GET /api/audit` | a list of [`AuditEntry`] |
//! | `GET /readyz` (200 or 503) | [`ReadinessView`] |
//! | `POST /api/backup` | the backup itself (a redb file, `application/octet-stream`) |
//! | any refusal or failure (4xx, 5xx) | [`ErrorBody`] |

use serde::{Deserialize, Serialize};

mod editor;

pub use conduit_config::Problem;
pub use conduit_engine::{
    CursorView, FieldChange, FieldDifference, HostView, KeyList, MappingCheck, MappingPreview,
    MappingView, PreviewReport, RecordChange, StaleRecord, StatusKind, VerifyEvent, VerifyOptions,
    VerifyProgress, VerifyReport, WorkflowView,
};
pub use conduit_store::{
    AuditEntry, AuditOutcome, Caller, Counters, DeadLetter, DeadLetterPayload, DesiredState, Stage,
};
pub use editor::{
    EditChecked, EditRefusal, EditRefused, EditSaved, EditableSection, EditorChoices, FieldProblem,
    MetadataField, MetadataSystem, SectionEdit,
};

/// The answer of `/readyz`: whether the store is open and every workflow is where the
/// operator's desired state says (RUNNING when desired running, STOPPED when desired stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessView {
    /// True when the host is ready (answered with 200, else 503).
    pub ready: bool,
    /// Whether the store answered a read.
    pub store_open: bool,
    /// Why the store did not answer, when it did not.
    pub store_error: Option<String>,
    /// Each workflow, desired and actual.
    pub workflows: Vec<WorkflowReadiness>,
    /// One line per reason the host is not ready, for probes' event messages.
    pub not_ready: Vec<String>,
}

/// One workflow in the readiness answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowReadiness {
    /// The workflow.
    pub id: conduit_model::WorkflowId,
    /// What the operator asked for.
    pub desired: DesiredState,
    /// Where it is.
    pub status: StatusKind,
    /// Whether that is where it should be.
    pub ready: bool,
}

/// The answer of a start or stop: where the workflow is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// The workflow's status after the call.
    pub status: StatusKind,
}

/// The answer of a replay, a dead-letter retry or drop: what was done, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAnswer {
    /// What was done.
    pub message: String,
}

/// A workflow's config section as the host last read it, and what waits for a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSectionView {
    /// The section of the latest valid config, `null` when the workflow is not configured.
    pub section: Option<serde_json::Value>,
    /// True when the section (or its plugin) differs from what the workflow started with.
    pub pending_changes: bool,
    /// What changed, briefly.
    pub pending_summary: Vec<String>,
}

/// The problems of the config on disk, empty when it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemsView {
    /// Each problem with its place in the file.
    pub problems: Vec<Problem>,
}

/// The body of every refusal or failure: what went wrong and what to do, and the config's
/// problems when an invalid config is the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
    /// The config's problems, when the call was refused because the config is invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ErrorBody {
    /// An error without config problems.
    pub fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            problems: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_model::{Phase, RecordBatch, Row, Value, WorkflowId};
    use serde::de::DeserializeOwned;

    /// Sends `value` the way the API does and reads it back the way the CLI does: the answer
    /// must come back whole, and serialised again it must be the same JSON (what `--json`
    /// prints).
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
        let wire = serde_json::to_vec(value).unwrap();
        let read: T = serde_json::from_slice(&wire).unwrap_or_else(|error| {
            panic!("{error}: {}", String::from_utf8_lossy(&wire));
        });
        assert_eq!(&read, value);
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&wire).unwrap()
        );
    }

    fn problem() -> Problem {
        Problem {
            file: "conduit.toml".into(),
            line: 7,
            column: 3,
            message: "unknown key \"bogus\"".into(),
            hint: Some("remove it".into()),
            span: 0..0,
        }
    }

    /// Every optional field set and every list non-empty, so that no field is left out.
    fn workflow() -> WorkflowView {
        WorkflowView {
            id: WorkflowId::Ingress,
            name: WorkflowId::Ingress.display_name().into(),
            status: StatusKind::Error,
            reason: Some("the plugin trapped".into()),
            warning: Some("Campaign answered 503; retrying".into()),
            waiting: Some("2 writes wait for their contact".into()),
            backlog: 12,
            counters: Counters {
                queued: 12,
                read: 40,
                written: 27,
                skipped: 1,
                skipped_unchanged: 1,
                skipped_not_owned: 2,
                dead_lettered: 3,
                dead_letters: 2,
            },
            read_rate: 12.25,
            write_rate: 0.1,
            eta_seconds: Some(120.000_000_000_1),
            pending_changes: true,
            pending_summary: vec!["ingress.mappings[0].plugin: \"a\" -> \"b\"".into()],
            pending_replays: vec!["contacts".into()],
            cursors: vec![CursorView {
                source: "contacts".into(),
                phase: Phase::Replay,
                age_seconds: 1.5,
            }],
            plugin: Some("builtin:table-mapper".into()),
            configured: true,
        }
    }

    #[test]
    fn every_answer_of_the_api_reads_back_whole_into_the_same_type() {
        round_trip(&HostView {
            workflows: vec![workflow()],
            config_problems: vec![problem()],
        });
        round_trip(&WorkflowView {
            reason: None,
            warning: None,
            waiting: None,
            eta_seconds: None,
            plugin: None,
            ..workflow()
        });
        round_trip(&vec![MappingView {
            name: "contacts".into(),
            source: "contact".into(),
            destination: "profile".into(),
            replay_pending: true,
            replay_blocked: Some("Refused: the backlog holds 9 records".into()),
        }]);
        for status in [
            StatusKind::Stopped,
            StatusKind::Starting,
            StatusKind::Running,
            StatusKind::Error,
        ] {
            round_trip(&StatusAnswer { status });
        }
        round_trip(&MessageAnswer {
            message: "dead letter 3 dropped".into(),
        });
        round_trip(&ConfigSectionView {
            section: Some(serde_json::json!({"mappings": [{"name": "contacts"}], "rate": 1.5})),
            pending_changes: true,
            pending_summary: vec!["ingress.rate: 1 -> 1.5".into()],
        });
        round_trip(&ConfigSectionView {
            section: None,
            pending_changes: false,
            pending_summary: Vec::new(),
        });
        round_trip(&ProblemsView {
            problems: vec![problem()],
        });
        round_trip(&ErrorBody::new("no such workflow"));
        round_trip(&ErrorBody {
            error: "the config is invalid (1 problem(s)); fix it and try again".into(),
            problems: vec![problem()],
        });
        let batch = RecordBatch {
            table: "contact".into(),
            columns: vec!["firstname".into(), "revenue".into(), "parent".into()],
            rows: vec![Row {
                key: "c-1".into(),
                op: conduit_model::Operation::Upsert,
                values: vec![
                    Value::Text("Ada".into()),
                    Value::Decimal(0.1 + 0.2),
                    Value::Lookup {
                        table: "account".into(),
                        id: "a-1".into(),
                    },
                ],
                modified_at: Some("2026-01-02T03:04:05Z".into()),
            }],
        };
        round_trip(&vec![DeadLetter {
            id: 4,
            workflow: WorkflowId::Ingress,
            stage: Stage::Read,
            origin: "contacts".into(),
            reason: "the plugin rejected it".into(),
            payload: DeadLetterPayload::SourceRecord {
                batch,
                phase: Phase::Initial,
            },
            attempts: 1,
            failed_at_ms: 1_767_000_000_000,
        }]);
        round_trip(&vec![AuditEntry {
            id: 9,
            at_ms: 1_767_000_000_123,
            action: "replay".into(),
            target: "ingress/contacts".into(),
            caller: Caller {
                auth: "token".into(),
                peer: Some("10.0.0.5:51000".into()),
                via: "cli".into(),
            },
            outcome: AuditOutcome::Refused,
            detail: "already pending".into(),
        }]);
    }

    #[test]
    fn the_names_the_cli_prints_are_the_names_the_api_sends() {
        let sent = |value: serde_json::Value| value.as_str().unwrap().to_string();
        for phase in [Phase::Initial, Phase::Incremental, Phase::Replay] {
            assert_eq!(sent(serde_json::to_value(phase).unwrap()), phase.as_str());
        }
        for stage in [Stage::Read, Stage::Write] {
            assert_eq!(sent(serde_json::to_value(stage).unwrap()), stage.as_str());
        }
        for outcome in [
            AuditOutcome::Ok,
            AuditOutcome::Refused,
            AuditOutcome::Failed,
        ] {
            assert_eq!(
                sent(serde_json::to_value(outcome).unwrap()),
                outcome.as_str()
            );
        }
        for status in [StatusKind::Stopped, StatusKind::Running, StatusKind::Error] {
            assert_eq!(sent(serde_json::to_value(status).unwrap()), status.name());
        }
    }

    /// The fields the Workflows page reads (`workflow.status`, `m.replay_blocked`, ...),
    /// found in its script by the names of its variables.
    fn page_fields(prefix: &str) -> Vec<(String, Option<String>)> {
        let script = include_str!("page/app.js");
        let ident = |text: &str| -> String {
            text.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let needle = format!("{prefix}.");
        let mut found = Vec::new();
        for (at, _) in script.match_indices(&needle) {
            let before = script[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let rest = &script[at + needle.len()..];
            let first = ident(rest);
            let second = rest[first.len()..].strip_prefix('.').map(ident);
            if !first.is_empty() {
                found.push((first, second));
            }
        }
        found
    }

    /// Fails when the page reads a field (or a field of an object field) that the view it
    /// gets does not have.
    fn assert_page_reads_only(prefix: &str, sample: &impl Serialize) {
        let sample = serde_json::to_value(sample).unwrap();
        let fields = page_fields(prefix);
        assert!(!fields.is_empty(), "the page no longer reads `{prefix}.`");
        for (first, second) in fields {
            let value = sample
                .get(&first)
                .unwrap_or_else(|| panic!("the page reads {prefix}.{first}, which is not sent"));
            if let (Some(second), serde_json::Value::Object(inner)) = (second, value) {
                assert!(
                    inner.contains_key(&second),
                    "the page reads {prefix}.{first}.{second}, which is not sent"
                );
            }
        }
    }

    #[test]
    fn every_field_the_page_reads_is_sent() {
        assert_page_reads_only(
            "view",
            &HostView {
                workflows: vec![workflow()],
                config_problems: vec![problem()],
            },
        );
        assert_page_reads_only("workflow", &workflow());
        assert_page_reads_only(
            "m",
            &MappingView {
                name: "contacts".into(),
                source: "contact".into(),
                destination: "profile".into(),
                replay_pending: false,
                replay_blocked: None,
            },
        );
        assert_page_reads_only(
            "config",
            &ConfigSectionView {
                section: None,
                pending_changes: false,
                pending_summary: Vec::new(),
            },
        );
        // The workflow editor's answers.
        assert_page_reads_only(
            "loaded",
            &EditableSection {
                workflow: WorkflowId::Ingress,
                version: "v".into(),
                section: Some(serde_json::json!({})),
                file: "conduit.toml".into(),
                pending_changes: true,
                pending_summary: vec!["changed".into()],
                choices: EditorChoices {
                    builtin_plugins: vec!["builtin:table-mapper".into()],
                    filter_ops: vec!["eq".into()],
                    combines: vec!["and".into()],
                    directions: vec!["disabled".into()],
                    opt_out_attributes: vec!["blackList".into()],
                },
            },
        );
        let field_problem = FieldProblem {
            path: Some("send".into()),
            line: 1,
            column: 1,
            message: "wrong".into(),
            hint: Some("fix it".into()),
        };
        assert_page_reads_only("problem", &field_problem);
        assert_page_reads_only(
            "saved",
            &EditSaved {
                version: "v".into(),
                changed: true,
                diff: "+x".into(),
                pending_changes: true,
                pending_summary: Vec::new(),
            },
        );
        assert_page_reads_only(
            "refusal",
            &EditRefused {
                error: "no".into(),
                refusal: EditRefusal::Changed,
                field_problems: vec![field_problem],
                current_version: Some("v".into()),
                current_text: Some("text".into()),
                other_change: Some("+x".into()),
                patch: Some("+x".into()),
            },
        );
        assert_page_reads_only(
            "field",
            &MetadataField {
                name: "firstname".into(),
                kind: "text".into(),
            },
        );
        // The restart preview's field changes.
        assert_page_reads_only(
            "change",
            &FieldChange {
                field: "lastName".into(),
                before: serde_json::json!("Andersen"),
                after: serde_json::json!("Previewed"),
            },
        );
        assert_page_reads_only(
            "letter",
            &DeadLetter {
                id: 1,
                workflow: WorkflowId::Egress,
                stage: Stage::Write,
                origin: "events".into(),
                reason: "refused".into(),
                payload: DeadLetterPayload::SourceRecord {
                    batch: RecordBatch::default(),
                    phase: Phase::Incremental,
                },
                attempts: 3,
                failed_at_ms: 0,
            },
        );
    }

    #[test]
    fn verify_and_preview_answers_come_back_whole() {
        let check = MappingCheck {
            mapping: "contacts".into(),
            source: "contact".into(),
            destination: "profile".into(),
            source_records: 2,
            destination_records: 2,
            matching: 1,
            stale_count: 1,
            stale: vec![StaleRecord {
                key: "c-1".into(),
                fields: vec![FieldDifference {
                    field: "lastName".into(),
                    expected: serde_json::json!("Lee"),
                    actual: serde_json::json!(null),
                }],
            }],
            foreign: KeyList {
                count: 1,
                keys: vec!["x".into()],
            },
            ..MappingCheck::default()
        };
        let report = VerifyReport {
            workflow: WorkflowId::Ingress,
            scope: "full".into(),
            in_sync: false,
            differences: 1,
            mappings: vec![check],
            repaired: 1,
            notes: vec!["a note".into()],
        };
        round_trip(&VerifyEvent::Report(report));
        round_trip(&VerifyEvent::Progress(VerifyProgress {
            mapping: "contacts".into(),
            side: "source".into(),
            records: 200,
        }));
        round_trip(&VerifyEvent::Failed {
            error: "gone".into(),
        });
        round_trip(&PreviewReport {
            workflow: WorkflowId::Ingress,
            pending: true,
            mappings: vec![MappingPreview {
                mapping: "contacts".into(),
                status: "changed".into(),
                records_read: 1,
                records: vec![RecordChange {
                    key: "c-1".into(),
                    change: "fields".into(),
                    fields: vec![FieldChange {
                        field: "lastName".into(),
                        before: "Lee".into(),
                        after: "Li".into(),
                    }],
                    reason: None,
                }],
                unchanged: 0,
                pending_error: None,
            }],
            notes: vec![],
        });
    }
}
