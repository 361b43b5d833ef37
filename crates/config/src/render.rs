//! Renders config problems for people: each problem as an excerpt of the file with the offending
//! bytes underlined and its hint below, the way compilers show errors (`annotate-snippets`).
//!
//! The one-line form (`file:line:column: message (hint: …)`, the [`Problem`] `Display`) stays
//! what scripts, logs and the admin API see; this is the form `conduit config check` prints for
//! a person at a terminal.

use annotate_snippets::{AnnotationKind, Group, Level, Origin, Renderer, Snippet};

use crate::Problem;

/// How to render: with terminal colours or plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// ANSI colours, for a terminal.
    Styled,
    /// No escape codes, for files, pipes and tests.
    Plain,
}

/// Renders `problems` found in `source` (the config file's text) as excerpts, one after the
/// other. A problem whose span lies outside `source` (the file changed since, or it was never
/// read) is rendered without an excerpt, with its position in the title.
pub fn render(problems: &[Problem], source: &str, style: Style) -> String {
    let renderer = match style {
        Style::Styled => Renderer::styled(),
        Style::Plain => Renderer::plain(),
    };
    let mut out = String::new();
    for problem in problems {
        let path = problem.file.display().to_string();
        let message = printable(&problem.message);
        let title = Level::ERROR.primary_title(message.as_ref());
        let excerpt = excerpt_span(source, &problem.span);
        let first = match &excerpt {
            Some(span) => title.element(
                Snippet::source(source)
                    .line_start(1)
                    .path(path.as_str())
                    .fold(true)
                    .annotation(AnnotationKind::Primary.span(span.clone())),
            ),
            None => title.element(
                Origin::path(path.as_str())
                    .line(problem.line)
                    .char_column(problem.column),
            ),
        };
        let mut report = vec![first];
        let hint = problem.hint.as_deref().map(printable);
        if let Some(hint) = &hint {
            report.push(Group::with_title(
                Level::HELP.secondary_title(hint.as_ref()),
            ));
        }
        out.push_str(&renderer.render(&report));
        out.push_str("\n\n");
    }
    out
}

/// `text` with control characters other than line breaks and tabs shown as `\u{..}` escapes:
/// a message can quote a plugin's error, and no plugin may drive the operator's terminal.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The span to underline: the problem's span when it lies inside `source` on character
/// boundaries, widened to one character when empty (a missing key points at its table).
fn excerpt_span(source: &str, span: &std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
    let (start, end) = (span.start, span.end.max(span.start));
    if source.is_empty()
        || start >= source.len()
        || end > source.len()
        || !source.is_char_boundary(start)
        || !source.is_char_boundary(end)
    {
        return None;
    }
    if start < end {
        return Some(start..end);
    }
    let width = source[start..].chars().next().map_or(1, char::len_utf8);
    Some(start..start + width)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    #[test]
    fn a_problem_is_shown_in_its_line_with_the_value_underlined_and_its_hint() {
        let text = "[host]\ndata_dir = \"data\"\n\n[dynamics]\nbatch_size = \"many\"\n";
        let problems = Config::parse(Path::new("conduit.toml"), text).unwrap_err();
        let problem = problems
            .iter()
            .find(|p| p.message.contains("batch_size"))
            .expect("a problem about batch_size");
        let shown = render(std::slice::from_ref(problem), text, Style::Plain);
        assert!(shown.starts_with("error: "), "{shown}");
        assert!(shown.contains(&problem.message), "{shown}");
        assert!(
            shown.contains(&format!(
                "--> conduit.toml:{}:{}",
                problem.line, problem.column
            )),
            "{shown}"
        );
        // The source line, numbered, and the carets under exactly the offending value.
        let row = format!("{} | batch_size = \"many\"", problem.line);
        let source_line = shown
            .lines()
            .find(|l| l.trim_start().starts_with(&row))
            .unwrap_or_else(|| panic!("no numbered source line {row:?}:\n{shown}"));
        let carets = shown
            .lines()
            .skip_while(|l| *l != source_line)
            .nth(1)
            .expect("a line under the source line");
        let under = &source_line[carets.find('^').expect("carets")..];
        let width = carets.matches('^').count();
        assert!(under.starts_with("\"many\""), "{source_line}\n{carets}");
        assert_eq!(width, "\"many\"".len(), "{source_line}\n{carets}");
        if let Some(hint) = &problem.hint {
            assert!(shown.contains(&format!("help: {hint}")), "{shown}");
        }
        assert!(
            !shown.contains('\u{1b}'),
            "plain output has no escape codes: {shown:?}"
        );
    }

    #[test]
    fn a_problem_outside_the_text_is_rendered_with_its_position_only() {
        let problem = Problem {
            file: "conduit.toml".into(),
            line: 3,
            column: 1,
            message: "cannot read the config".into(),
            hint: None,
            span: 500..510,
        };
        let shown = render(&[problem], "short", Style::Plain);
        assert!(shown.contains("error: cannot read the config"), "{shown}");
        assert!(shown.contains("--> conduit.toml:3:1"), "{shown}");
    }

    #[test]
    fn control_characters_of_a_message_or_hint_never_reach_the_terminal() {
        let problem = Problem {
            file: "conduit.toml".into(),
            line: 1,
            column: 1,
            message: "plugin said \u{1b}[2Jclear".into(),
            hint: Some("fix \u{1b}[31mred".into()),
            span: 0..1,
        };
        let shown = render(std::slice::from_ref(&problem), "x = 1\n", Style::Plain);
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(shown.contains("plugin said \\u{1b}[2Jclear"), "{shown}");
        let line = problem.to_string();
        assert!(!line.contains('\u{1b}'), "{line:?}");
        assert!(line.contains("\\u{1b}[31mred"), "{line}");
    }

    #[test]
    fn an_empty_span_underlines_one_character_and_never_splits_one() {
        assert_eq!(excerpt_span("ab", &(1..1)), Some(1..2));
        assert_eq!(excerpt_span("é", &(0..0)), Some(0..2));
        assert_eq!(excerpt_span("é", &(1..1)), None);
        assert_eq!(excerpt_span("ab", &(2..2)), None);
        assert_eq!(excerpt_span("", &(0..0)), None);
    }
}
