//! Operator commands against a running host: status (table, JSON, watch), start, stop,
//! replay, the dead-letter tools and the audit trail.

use std::time::Duration;

use clap::{Args, Subcommand};
use conduit_admin::views::{AuditEntry, DeadLetter, HostView, MessageAnswer};

use super::client::{AdminClient, CallError, pretty_json};

/// `conduit status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `conduit audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// At most this many entries, newest first (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Only entries older than this id (to page back).
    #[arg(long)]
    pub before: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the audit trail, newest first.
pub async fn audit(client: &AdminClient, args: &AuditArgs) -> Result<(), CallError> {
    let mut path = format!("/api/audit?limit={}", args.limit);
    if let Some(before) = args.before {
        path.push_str(&format!("&before={before}"));
    }
    let entries: Vec<AuditEntry> = client.get(&path).await?;
    if args.json {
        println!("{}", pretty_json(&entries));
        return Ok(());
    }
    print!("{}", render_audit(&entries));
    Ok(())
}

/// The audit table: one line per entry, newest first.
pub fn render_audit(entries: &[AuditEntry]) -> String {
    let mut out = format!(
        "{:>5}  {:<24} {:<18} {:<32} {:<18} {:<22} {:<8} {}\n",
        "ID", "TIME (UTC)", "ACTION", "TARGET", "AUTH", "FROM", "OUTCOME", "DETAIL"
    );
    for entry in entries {
        let time = chrono::DateTime::from_timestamp_millis(entry.at_ms).map_or_else(
            || "?".into(),
            |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        );
        let caller = &entry.caller;
        let from = format!("{} {}", caller.via, caller.peer.as_deref().unwrap_or(""));
        // The id is printed unpadded, as the table always has (the header's width is not
        // applied to it).
        out.push_str(&format!(
            "{}  {:<24} {:<18} {:<32} {:<18} {:<22} {:<8} {}\n",
            entry.id,
            time,
            entry.action,
            entry.target,
            caller.auth,
            from.trim_end(),
            entry.outcome.as_str(),
            entry.detail
        ));
    }
    out
}

/// `conduit dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a workflow's dead letters.
    List {
        /// ingress, egress or optinout.
        workflow: String,
        /// Only this stage: read or write.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["read", "write"]))]
        stage: Option<String>,
        /// Only this origin (mapping name, events, opt-out).
        #[arg(long)]
        origin: Option<String>,
        /// Only reasons containing this text.
        #[arg(long)]
        reason: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full, or (--as-input) its input as a `plugin test` input file.
    Show {
        /// The workflow.
        workflow: String,
        /// The dead letter's id.
        id: u64,
        /// Write the records the plugin failed on or rejected (a read-stage dead letter) as a
        /// `conduit plugin test --input` file: to FILE, or to stdout without one.
        #[arg(long, value_name = "FILE", num_args = 0..=1)]
        as_input: Option<Option<std::path::PathBuf>>,
    },
    /// Retry a dead letter (a refused write is queued again; a rejected record is mapped
    /// again by the current plugin).
    Retry {
        /// The workflow.
        workflow: String,
        /// The dead letter's id.
        id: u64,
    },
    /// Delete a dead letter for good.
    Drop {
        /// The workflow.
        workflow: String,
        /// The dead letter's id.
        id: u64,
    },
}

/// Prints the workflows table (or JSON), once or every second.
pub async fn status(client: &AdminClient, args: &StatusArgs) -> Result<(), CallError> {
    loop {
        let view: HostView = client.get("/api/workflows").await?;
        let text = if args.json {
            pretty_json(&view)
        } else {
            render_table(&view)
        };
        if args.watch {
            outln!("\x1b[2J\x1b[H{text}");
            // Nobody reads any more (`| head`): the watch is over.
            if super::output::closed() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            outln!("{text}");
            return Ok(());
        }
    }
}

/// The status table: one row per workflow, plus progress and problems.
pub fn render_table(view: &HostView) -> String {
    let mut out = format!(
        "{:<10} {:<9} {:>9} {:>8} {:>9} {:>9} {:>10}  {}\n",
        "WORKFLOW", "STATUS", "BACKLOG", "DEAD", "READ/S", "WRITE/S", "ETA", "PENDING"
    );
    for workflow in &view.workflows {
        let pending = if workflow.pending_changes {
            "changes pending restart"
        } else {
            ""
        };
        let eta = workflow
            .eta_seconds
            .map_or_else(|| "-".to_string(), format_eta);
        out.push_str(&format!(
            "{:<10} {:<9} {:>9} {:>8} {:>9.1} {:>9.1} {:>10}  {}\n",
            workflow.id.as_str(),
            workflow.status.name(),
            workflow.backlog,
            workflow.counters.dead_letters,
            workflow.read_rate,
            workflow.write_rate,
            eta,
            pending
        ));
        if let Some(reason) = &workflow.reason {
            out.push_str(&format!("           error: {reason}\n"));
        }
        if let Some(warning) = &workflow.warning {
            out.push_str(&format!("           warning: {warning}\n"));
        }
        if let Some(waiting) = &workflow.waiting {
            out.push_str(&format!("           waiting: {waiting}\n"));
        }
        let not_owned = workflow.counters.skipped_not_owned;
        if not_owned > 0 {
            out.push_str(&format!(
                "           left alone: {not_owned} deletes of records Conduit did not create\n"
            ));
        }
        for change in &workflow.pending_summary {
            out.push_str(&format!("           changed: {change}\n"));
        }
        for cursor in &workflow.cursors {
            if cursor.phase != conduit_model::Phase::Incremental {
                out.push_str(&format!(
                    "           {} load of {}: {} read, {} written\n",
                    cursor.phase.as_str(),
                    cursor.source,
                    workflow.counters.read,
                    workflow.counters.written,
                ));
            }
        }
    }
    for problem in &view.config_problems {
        out.push_str(&format!(
            "config problem (running workflows are unaffected): {problem}\n"
        ));
    }
    out
}

/// An estimate of time left, as an operator reads it (`1m 5s`, `2h 3m`).
fn format_eta(seconds: f64) -> String {
    let total = seconds.round() as u64;
    // Past an hour, seconds are noise in an estimate and would widen the column.
    let shown = if total >= 3600 {
        total - total % 60
    } else {
        total
    };
    humantime::format_duration(std::time::Duration::from_secs(shown)).to_string()
}

/// Runs a dead-letter command.
pub async fn dlq(client: &AdminClient, command: &DlqCommand) -> Result<(), CallError> {
    match command {
        DlqCommand::List {
            workflow,
            stage,
            origin,
            reason,
            limit,
            json,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (key, value) in [("stage", stage), ("origin", origin), ("reason", reason)] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", url_encode(value)));
                }
            }
            let letters: Vec<DeadLetter> = client
                .get(&format!(
                    "/api/workflows/{workflow}/dead-letters?{}",
                    query.join("&")
                ))
                .await?;
            if *json {
                outln!("{}", pretty_json(&letters));
                return Ok(());
            }
            outln!(
                "{:>6}  {:<6} {:<14} {:>8}  REASON",
                "ID",
                "STAGE",
                "ORIGIN",
                "ATTEMPTS"
            );
            // The id and attempts are printed unpadded, as the list always has.
            for letter in &letters {
                outln!(
                    "{}  {:<6} {:<14} {}  {}",
                    letter.id,
                    letter.stage.as_str(),
                    letter.origin,
                    letter.attempts,
                    letter.reason
                );
            }
            Ok(())
        }
        DlqCommand::Show {
            workflow,
            id,
            as_input,
        } => {
            let letter: DeadLetter = client
                .get(&format!("/api/workflows/{workflow}/dead-letters/{id}"))
                .await?;
            match as_input {
                None => outln!("{}", pretty_json(&letter)),
                Some(file) => write_as_input(&letter, workflow, *id, file.as_deref())?,
            }
            Ok(())
        }
        DlqCommand::Retry { workflow, id } => {
            let answer: MessageAnswer = client
                .post(&format!(
                    "/api/workflows/{workflow}/dead-letters/{id}/retry"
                ))
                .await?;
            outln!("{}", answer.message);
            Ok(())
        }
        DlqCommand::Drop { workflow, id } => {
            let answer: MessageAnswer = client
                .post(&format!("/api/workflows/{workflow}/dead-letters/{id}/drop"))
                .await?;
            outln!("{}", answer.message);
            Ok(())
        }
    }
}

/// Writes a dead letter's input as a `plugin test` input file (or to stdout), and says on
/// stderr how to run it.
fn write_as_input(
    letter: &DeadLetter,
    workflow: &str,
    id: u64,
    file: Option<&std::path::Path>,
) -> Result<(), CallError> {
    let failed = |message: String| CallError { code: 1, message };
    let (input, settings) = super::plugin_test::dead_letter_input(letter, workflow)
        .map_err(|error| failed(format!("dead letter {id}: {error:#}")))?;
    let text = serde_json::to_string_pretty(&input).unwrap_or_default();
    let written = match file {
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .map_err(|error| failed(format!("cannot write {}: {error}", path.display())))?;
            path.display().to_string()
        }
        None => {
            outln!("{text}");
            "FILE".to_owned()
        }
    };
    errln!(
        "the input of dead letter {id}; run it as the workflow does with: conduit plugin test {settings} --input {written}"
    );
    Ok(())
}

fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::format_eta;

    #[test]
    fn an_eta_reads_as_a_duration_and_drops_seconds_past_an_hour() {
        assert_eq!(format_eta(0.2), "0s");
        assert_eq!(format_eta(65.4), "1m 5s");
        assert_eq!(format_eta(3725.0), "1h 2m");
        assert_eq!(format_eta(90_061.0), "1day 1h 1m");
    }
}
