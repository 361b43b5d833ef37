//! `conduit preview <workflow>`: asks the running host what restarting the workflow with the
//! config file as it is now would change (`POST /api/workflows/{id}/preview`), on a sample of
//! source records (Ingress's rows, Egress's email events, Opt-in/out's contacts), and prints it
//! per record as a table or JSON. Nothing is written anywhere.

use clap::Args;
use conduit_admin::views::{MappingPreview, PreviewReport};
use conduit_model::WorkflowId;

use super::client::{AdminClient, CallError, pretty_json};

/// `conduit preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The workflow: ingress, egress or optinout.
    pub workflow: String,
    /// Only this table mapping (Ingress; default: every mapping). Egress has one part,
    /// `events`, and Opt-in/out one, `opt-out pairs`.
    #[arg(long)]
    pub mapping: Option<String>,
    /// Source records read per mapping (rows, email events or contacts).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Print the preview as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a preview on the host and prints it.
pub async fn preview(client: &AdminClient, args: &PreviewArgs) -> Result<(), CallError> {
    let mut path = format!(
        "/api/workflows/{}/preview?limit={}",
        args.workflow, args.limit
    );
    if let Some(mapping) = &args.mapping {
        path.push_str("&mapping=");
        path.push_str(&super::verify::url_escape(mapping));
    }
    let report: PreviewReport = client.post(&path).await?;
    if args.json {
        outln!("{}", pretty_json(&report));
    } else {
        outln!("{}", render(&report).trim_end());
    }
    Ok(())
}

/// The preview for people: per mapping, each record a restart would change and how.
pub fn render(report: &PreviewReport) -> String {
    let mut out = if report.pending {
        format!("{}: changes pending restart\n", report.workflow)
    } else {
        format!(
            "{}: no change pending (the file matches what runs)\n",
            report.workflow
        )
    };
    for mapping in &report.mappings {
        out.push_str(&render_mapping(mapping, report.workflow));
    }
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// A written value, or that nothing is written.
fn shown(value: &serde_json::Value) -> String {
    if value.is_null() {
        "(not written)".to_owned()
    } else {
        value.to_string()
    }
}

fn render_mapping(preview: &MappingPreview, workflow: WorkflowId) -> String {
    let mut out = format!(
        "  {} ({}): {} read, {} would change, {} unchanged\n",
        preview.mapping,
        preview.status,
        preview.records_read,
        preview.records.len(),
        preview.unchanged
    );
    if let Some(error) = &preview.pending_error {
        out.push_str(&format!("    the pending plugin fails: {error}\n"));
    }
    for record in &preview.records {
        let detail = match record.change.as_str() {
            "fields" | "written" => record
                .fields
                .iter()
                .map(|f| format!("{}: {} -> {}", f.field, shown(&f.before), shown(&f.after)))
                .collect::<Vec<_>>()
                .join("; "),
            _ => record.reason.clone().unwrap_or_default(),
        };
        let what = match record.change.as_str() {
            "fields" if workflow == WorkflowId::OptInOut => "flags written",
            "fields" => "written as",
            "written" => "newly written",
            "filtered" => "newly filtered out",
            "deleted" => "newly deleted",
            "rejected" => "newly dead-lettered",
            other => other,
        };
        out.push_str(&format!("    {} {what}: {detail}\n", record.key));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_admin::views::{FieldChange, RecordChange};

    #[test]
    fn each_record_says_what_would_change() {
        let report = PreviewReport {
            workflow: WorkflowId::Ingress,
            pending: true,
            mappings: vec![MappingPreview {
                mapping: "contacts".into(),
                status: "changed".into(),
                records_read: 3,
                records: vec![
                    RecordChange {
                        key: "c-1".into(),
                        change: "fields".into(),
                        fields: vec![FieldChange {
                            field: "lastName".into(),
                            before: "Lee".into(),
                            after: "Li".into(),
                        }],
                        reason: None,
                    },
                    RecordChange {
                        key: "c-2".into(),
                        change: "filtered".into(),
                        fields: vec![],
                        reason: Some("filtered out by firstname ne Ann".into()),
                    },
                ],
                unchanged: 1,
                pending_error: None,
            }],
            notes: vec![],
        };
        let text = render(&report);
        assert!(
            text.starts_with("ingress: changes pending restart"),
            "{text}"
        );
        assert!(
            text.contains("contacts (changed): 3 read, 2 would change, 1 unchanged"),
            "{text}"
        );
        assert!(
            text.contains("c-1 written as: lastName: \"Lee\" -> \"Li\""),
            "{text}"
        );
        assert!(
            text.contains("c-2 newly filtered out: filtered out by firstname ne Ann"),
            "{text}"
        );
    }

    #[test]
    fn a_flag_one_rule_leaves_alone_reads_as_not_written() {
        let report = PreviewReport {
            workflow: WorkflowId::OptInOut,
            pending: true,
            mappings: vec![MappingPreview {
                mapping: "opt-out pairs".into(),
                status: "changed".into(),
                records_read: 2,
                records: vec![RecordChange {
                    key: "c-1".into(),
                    change: "fields".into(),
                    fields: vec![
                        FieldChange {
                            field: "campaign blackListEmail".into(),
                            before: serde_json::Value::Null,
                            after: false.into(),
                        },
                        FieldChange {
                            field: "dynamics donotbulkemail".into(),
                            before: true.into(),
                            after: serde_json::Value::Null,
                        },
                    ],
                    reason: None,
                }],
                unchanged: 1,
                pending_error: None,
            }],
            notes: vec![],
        };
        let text = render(&report);
        assert!(
            text.contains("c-1 flags written: campaign blackListEmail: (not written) -> false; dynamics donotbulkemail: true -> (not written)"),
            "{text}"
        );
    }
}
