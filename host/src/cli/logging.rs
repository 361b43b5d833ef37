//! The host's log lines on stderr: a human format for terminals, or one JSON object per line
//! for log aggregators, where the fields of the spans an event happens in (the workflow, the
//! stage, the plugin) sit at the top level beside the event's own fields, so a query can
//! filter on `workflow` without knowing which span carried it.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and every field of
    /// the event and of its spans (`workflow`, `stage`, `plugin`, ...).
    Json,
}

/// Log lines go to stderr in `format`; `RUST_LOG` chooses the level (default: info).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (never in the binary) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init(),
    };
}

/// Formats an event as one JSON object: the spans' fields from the outermost in, then the
/// event's own fields (an event's field wins over a span's field of the same name), then
/// `timestamp`, `level` and `target`. Values are JSON-escaped, so a plugin's control
/// characters cannot break a line in two.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                // Span fields are stored as a JSON object by `JsonFields`; anything else (an
                // empty span) adds nothing.
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&fields.fields) {
                    line.extend(fields);
                }
            }
        }
        let mut own = String::new();
        JsonFields::new().format_fields(Writer::new(&mut own), event)?;
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&own) {
            line.extend(fields);
        }
        let metadata = event.metadata();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert(
            "target".into(),
            Value::String(metadata.target().to_string()),
        );
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps every byte in memory.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_is_one_json_line_with_its_spans_fields_at_the_top_level() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let workflow = tracing::info_span!("workflow", workflow = "ingress");
            let _workflow = workflow.enter();
            let stage = tracing::info_span!("stage", stage = "reader");
            let _stage = stage.enter();
            tracing::warn!(plugin = "table-mapper", "line\nwith a \u{1b}[31m break");
            tracing::info!(stage = "writer", attempt = 2, "the event's field wins");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["workflow"], "ingress");
        assert_eq!(lines[0]["stage"], "reader");
        assert_eq!(lines[0]["plugin"], "table-mapper");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["message"], "line\nwith a \u{1b}[31m break");
        assert!(
            lines[0]["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(lines[1]["stage"], "writer");
        assert_eq!(lines[1]["attempt"], 2);
        assert_eq!(lines[1]["workflow"], "ingress");
    }
}
