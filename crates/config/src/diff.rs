//! Line diffs of config texts in the unified format (`diff -u`, `git apply`, `patch -p1`):
//! what an editor's save changed, and the patch offered when the file cannot be written.
//! Config files are small, so a plain longest-common-subsequence table is fast enough.

/// Lines of context around each change, as `diff -u` prints.
const CONTEXT: usize = 3;

/// Above this many table cells (lines of one text times the other's) the diff is one hunk
/// replacing everything, which is still a correct patch.
const MAX_CELLS: usize = 16_000_000;

/// One line of the edit script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// In both texts: index in the old, index in the new.
    Same(usize, usize),
    /// Only in the old text.
    Removed(usize),
    /// Only in the new text.
    Added(usize),
}

/// The unified diff turning `old` into `new`, naming the file `name` (as `a/<name>` and
/// `b/<name>`); empty when the texts are equal.
pub fn unified_diff(old: &str, new: &str, name: &str) -> String {
    if old == new {
        return String::new();
    }
    let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
    let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
    let script = edit_script(&old_lines, &new_lines);
    let mut out = format!("--- a/{name}\n+++ b/{name}\n");
    for hunk in hunks(&script) {
        let lines = &script[hunk];
        let (old_start, old_count) = span_of(lines, |line| match line {
            Line::Same(i, _) | Line::Removed(i) => Some(i),
            Line::Added(_) => None,
        });
        let (new_start, new_count) = span_of(lines, |line| match line {
            Line::Same(_, j) | Line::Added(j) => Some(j),
            Line::Removed(_) => None,
        });
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range_text(old_start, old_count),
            range_text(new_start, new_count),
        ));
        for line in lines {
            let (mark, text) = match *line {
                Line::Same(i, _) => (' ', old_lines[i]),
                Line::Removed(i) => ('-', old_lines[i]),
                Line::Added(j) => ('+', new_lines[j]),
            };
            out.push(mark);
            out.push_str(text);
            if !text.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// The first index and the count of the lines of one side in a hunk.
fn span_of(lines: &[Line], side: impl Fn(Line) -> Option<usize>) -> (Option<usize>, usize) {
    let indices: Vec<usize> = lines.iter().filter_map(|line| side(*line)).collect();
    (indices.first().copied(), indices.len())
}

/// `start,count` in `diff -u` form (1-based). A side is empty in a hunk only when that whole
/// text is empty (every other hunk has context lines), so its range is `0,0`.
fn range_text(start: Option<usize>, count: usize) -> String {
    match start {
        Some(start) if count == 1 => format!("{}", start + 1),
        Some(start) => format!("{},{count}", start + 1),
        None => "0,0".to_string(),
    }
}

/// The ranges of the script that make hunks: each change with up to three lines of context,
/// changes closer than twice that joined.
fn hunks(script: &[Line]) -> Vec<std::ops::Range<usize>> {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, line) in script.iter().enumerate() {
        if matches!(line, Line::Same(..)) {
            continue;
        }
        let start = index.saturating_sub(CONTEXT);
        let end = (index + 1 + CONTEXT).min(script.len());
        match ranges.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => ranges.push(start..end),
        }
    }
    ranges
}

/// The shortest edit script between two line lists (longest common subsequence).
fn edit_script(old: &[&str], new: &[&str]) -> Vec<Line> {
    // Lines equal at both ends are kept out of the table.
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let old_mid = &old[prefix..old.len() - suffix];
    let new_mid = &new[prefix..new.len() - suffix];
    let mut script: Vec<Line> = (0..prefix).map(|i| Line::Same(i, i)).collect();
    let (n, m) = (old_mid.len(), new_mid.len());
    if n.saturating_mul(m) > MAX_CELLS {
        script.extend((0..n).map(|i| Line::Removed(prefix + i)));
        script.extend((0..m).map(|j| Line::Added(prefix + j)));
    } else {
        // lengths[i][j]: the common subsequence of old_mid[i..] and new_mid[j..].
        let mut lengths = vec![0u32; (n + 1) * (m + 1)];
        let at = |i: usize, j: usize| i * (m + 1) + j;
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lengths[at(i, j)] = if old_mid[i] == new_mid[j] {
                    lengths[at(i + 1, j + 1)] + 1
                } else {
                    lengths[at(i + 1, j)].max(lengths[at(i, j + 1)])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && old_mid[i] == new_mid[j] {
                script.push(Line::Same(prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lengths[at(i + 1, j)] >= lengths[at(i, j + 1)]) {
                // Removals first, as `diff -u` writes a changed line.
                script.push(Line::Removed(prefix + i));
                i += 1;
            } else {
                script.push(Line::Added(prefix + j));
                j += 1;
            }
        }
    }
    let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
    script.extend((0..suffix).map(|k| Line::Same(old_end + k, new_end + k)));
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a unified diff to a text: the check that the patch we offer is usable.
    fn apply(old: &str, diff: &str) -> String {
        let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
        let mut out = String::new();
        let mut next = 0;
        let mut lines = diff.lines().skip(2).peekable();
        while let Some(header) = lines.next() {
            let range = header
                .strip_prefix("@@ -")
                .and_then(|rest| rest.split(' ').next())
                .expect("a hunk header");
            let (start, count) = match range.split_once(',') {
                Some((start, count)) => (start.parse::<usize>().unwrap(), count.parse().unwrap()),
                None => (range.parse().unwrap(), 1),
            };
            let first = if count == 0 { start } else { start - 1 };
            for line in &old_lines[next..first] {
                out.push_str(line);
            }
            next = first;
            while let Some(line) = lines.peek() {
                if line.starts_with("@@") {
                    break;
                }
                let line = lines.next().unwrap();
                match line.chars().next() {
                    Some(' ') => {
                        out.push_str(old_lines[next]);
                        next += 1;
                    }
                    Some('-') => next += 1,
                    Some('+') => {
                        out.push_str(&line[1..]);
                        out.push('\n');
                    }
                    _ => {}
                }
            }
        }
        for line in &old_lines[next..] {
            out.push_str(line);
        }
        out
    }

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified_diff("a\nb\n", "a\nb\n", "c.toml"), "");
    }

    #[test]
    fn a_changed_line_shows_with_its_context() {
        let old: String = (1..=20).map(|n| format!("line {n}\n")).collect();
        let new = old.replace("line 10\n", "line ten\n");
        let diff = unified_diff(&old, &new, "conduit.toml");
        assert!(diff.starts_with("--- a/conduit.toml\n+++ b/conduit.toml\n@@ -7,7 +7,7 @@\n"));
        assert!(diff.contains("-line 10\n+line ten\n"));
        assert!(
            !diff.contains("line 3\n"),
            "only three lines of context: {diff}"
        );
        assert_eq!(apply(&old, &diff), new);
    }

    #[test]
    fn additions_removals_and_far_apart_changes_apply_back() {
        let old: String = (1..=40).map(|n| format!("{n}\n")).collect();
        let cases = [
            old.replace("5\n", "")
                .replace("30\n", "30\nthirty and a half\n"),
            format!("first\n{old}last\n"),
            old.replace("1\n2\n3\n", ""),
            String::new(),
        ];
        for new in cases {
            let diff = unified_diff(&old, &new, "c.toml");
            assert_eq!(apply(&old, &diff), new, "{diff}");
        }
        let diff = unified_diff("", "x\n", "c.toml");
        assert!(diff.contains("@@ -0,0 +1 @@\n+x\n"), "{diff}");
    }
}
