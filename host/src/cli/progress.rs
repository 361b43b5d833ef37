//! Progress lines for long CLI operations (the demo's catch-up): redrawn in place by
//! `indicatif` when stdout is a terminal; as plain lines otherwise, printed only when a line
//! changed, so a log file or a pipe gets a readable record instead of one table per tick.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A block of lines (one per workflow) that is updated as things progress.
pub(crate) struct LiveLines {
    /// The bars that redraw the lines, when stdout is a terminal.
    bars: Option<(MultiProgress, Mutex<Vec<ProgressBar>>)>,
    /// What was printed last, in plain mode.
    printed: Mutex<Vec<String>>,
}

impl LiveLines {
    /// Lines redrawn on a terminal, plain elsewhere.
    pub(crate) fn new() -> LiveLines {
        let bars = std::io::stdout().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                Mutex::new(Vec::new()),
            )
        });
        LiveLines {
            bars,
            printed: Mutex::new(Vec::new()),
        }
    }

    /// Shows `lines` now: redraws them, or prints those that changed since the last call.
    pub(crate) fn show(&self, lines: &[String]) {
        match &self.bars {
            Some((multi, bars)) => {
                let mut bars = bars
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while bars.len() < lines.len() {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bars.push(bar);
                }
                for (bar, line) in bars.iter().zip(lines) {
                    bar.set_message(line.clone());
                }
            }
            None => {
                let mut printed = self
                    .printed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let changed = printed.len() != lines.len()
                    || printed.iter().zip(lines).any(|(old, new)| old != new);
                if changed {
                    for line in lines {
                        outln!("{line}");
                    }
                    *printed = lines.to_vec();
                }
            }
        }
    }

    /// Leaves the last lines on screen and starts a fresh block for the next `show`.
    pub(crate) fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            let mut bars = bars
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for bar in bars.drain(..) {
                bar.finish();
            }
        }
        self.printed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}
