//! `conduit verify <workflow>`: asks the running host to compare the destination with the
//! source (`POST /api/workflows/{id}/verify`), shows its progress on a terminal (stderr, so
//! that stdout holds only the report), prints the report as a table or JSON, and exits 0 when
//! in sync and 7 (`exit::OUT_OF_SYNC`) when not.

use std::io::IsTerminal;

use clap::Args;
use conduit_admin::views::{MappingCheck, VerifyEvent, VerifyReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{AdminClient, CallError, decode, exit, pretty_json};

/// `conduit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The workflow: ingress, egress or optinout.
    pub workflow: String,
    /// Only this table mapping (default: every mapping; Egress has one, `events`).
    #[arg(long)]
    pub mapping: Option<String>,
    /// Compare only the first N source records of each mapping, looked up by key (records
    /// only the destination holds are then not looked for).
    #[arg(long, conflicts_with = "full", value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: Option<u32>,
    /// Compare the whole tables, orphans included (the default).
    #[arg(long)]
    pub full: bool,
    /// Queue the records that differ for the writer: each is read again from the source and
    /// written as the mapping in force maps it (visible in the backlog).
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a verify against the host and prints its report.
pub async fn verify(client: &AdminClient, args: &VerifyArgs) -> Result<(), CallError> {
    let mut path = format!(
        "/api/workflows/{}/verify?repair={}",
        args.workflow, args.repair
    );
    if let Some(mapping) = &args.mapping {
        path.push_str("&mapping=");
        path.push_str(&url_escape(mapping));
    }
    if let Some(sample) = args.sample {
        path.push_str(&format!("&sample={sample}"));
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(format!("verifying {}...", args.workflow));
        bar
    });
    let mut report: Option<VerifyReport> = None;
    let mut failure: Option<String> = None;
    let endpoint = format!("POST {path}");
    client
        .post_lines(&path, |line| {
            match decode::<VerifyEvent>(&endpoint, line)? {
                VerifyEvent::Progress(step) => {
                    if let Some(bar) = &bar {
                        bar.set_message(format!(
                            "verifying {}: mapping {}: {} {} records read",
                            args.workflow, step.mapping, step.records, step.side
                        ));
                    }
                }
                VerifyEvent::Report(done) => report = Some(done),
                VerifyEvent::Failed { error } => failure = Some(error),
            }
            Ok(())
        })
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(error) = failure {
        return Err(CallError {
            code: 1,
            message: format!("the verify failed: {error}"),
        });
    }
    let report = report.ok_or_else(|| CallError {
        code: 1,
        message: format!("the host's answer to {endpoint} ended without a report"),
    })?;
    if args.json {
        outln!("{}", pretty_json(&report));
    } else {
        outln!("{}", render(&report).trim_end());
    }
    if report.in_sync {
        Ok(())
    } else {
        Err(CallError {
            code: exit::OUT_OF_SYNC,
            message: if report.repaired > 0 {
                format!(
                    "{} record(s) out of sync; {} queued for the writer (run verify again once the backlog has drained)",
                    report.differences, report.repaired
                )
            } else {
                format!(
                    "{} record(s) out of sync (`--repair` queues them for the writer)",
                    report.differences
                )
            },
        })
    }
}

/// The report for people: a verdict, then per mapping the counts and the keys of each kind
/// of difference.
pub fn render(report: &VerifyReport) -> String {
    let verdict = if report.in_sync {
        "IN SYNC".to_owned()
    } else {
        format!("NOT IN SYNC: {} record(s) differ", report.differences)
    };
    let mut out = format!("{} ({}): {verdict}\n", report.workflow, report.scope);
    for check in &report.mappings {
        out.push_str(&render_mapping(check));
    }
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

fn render_mapping(check: &MappingCheck) -> String {
    let mut out = format!(
        "  {} ({} -> {}): {} source, {} destination, {} matching\n",
        check.mapping,
        check.source,
        check.destination,
        check.source_records,
        check.destination_records,
        check.matching
    );
    let list = |out: &mut String, what: &str, keys: &conduit_admin::views::KeyList| {
        if keys.count == 0 {
            return;
        }
        let more = keys.count.saturating_sub(keys.keys.len() as u64);
        let tail = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "    {what} {}: {}{tail}\n",
            keys.count,
            keys.keys.join(", ")
        ));
    };
    list(&mut out, "missing", &check.missing);
    if check.stale_count > 0 {
        out.push_str(&format!("    stale {}:\n", check.stale_count));
        for record in &check.stale {
            let fields: Vec<String> = record
                .fields
                .iter()
                .map(|f| format!("{} is {} (expected {})", f.field, f.actual, f.expected))
                .collect();
            out.push_str(&format!("      {}: {}\n", record.key, fields.join("; ")));
        }
    }
    list(&mut out, "orphaned", &check.orphaned);
    list(&mut out, "rejected by the plugin", &check.rejected);
    list(&mut out, "still in the backlog", &check.in_backlog);
    list(&mut out, "in dead letters", &check.dead_lettered);
    list(
        &mut out,
        "not written by Conduit (left alone)",
        &check.foreign,
    );
    if check.filtered > 0 {
        out.push_str(&format!(
            "    filtered out by the mapping: {}\n",
            check.filtered
        ));
    }
    if check.repaired > 0 {
        out.push_str(&format!("    queued for the writer: {}\n", check.repaired));
    }
    out
}

/// A query value with everything but unreserved characters percent-encoded.
pub(super) fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_admin::views::{FieldDifference, KeyList, StaleRecord};
    use conduit_model::WorkflowId;

    #[test]
    fn the_report_names_each_kind_of_difference_and_its_keys() {
        let check = MappingCheck {
            mapping: "contacts".into(),
            source: "contact".into(),
            destination: "profile".into(),
            source_records: 3,
            destination_records: 3,
            matching: 1,
            missing: KeyList {
                count: 1,
                keys: vec!["c-2".into()],
            },
            stale_count: 1,
            stale: vec![StaleRecord {
                key: "c-3".into(),
                fields: vec![FieldDifference {
                    field: "lastName".into(),
                    expected: serde_json::json!("Lee"),
                    actual: serde_json::json!("Li"),
                }],
            }],
            foreign: KeyList {
                count: 1,
                keys: vec!["x-1".into()],
            },
            ..MappingCheck::default()
        };
        let report = VerifyReport {
            workflow: WorkflowId::Ingress,
            scope: "full".into(),
            in_sync: false,
            differences: 2,
            mappings: vec![check],
            repaired: 0,
            notes: vec![],
        };
        let text = render(&report);
        assert!(
            text.starts_with("ingress (full): NOT IN SYNC: 2 record(s) differ"),
            "{text}"
        );
        assert!(text.contains("missing 1: c-2"), "{text}");
        assert!(
            text.contains("c-3: lastName is \"Li\" (expected \"Lee\")"),
            "{text}"
        );
        assert!(
            text.contains("not written by Conduit (left alone) 1: x-1"),
            "{text}"
        );
        assert_eq!(url_escape("my mapping/1"), "my%20mapping%2F1");
    }
}
