//! The CLI's standard output and error: every command prints through here (`outln!`,
//! `errln!`) so that a closed pipe (`conduit dlq list ingress | head`) ends the output quietly
//! instead of panicking the way `println!` does. A closed stdout means the reader has seen
//! enough: further output is dropped, streaming commands stop, and the command still exits with
//! its own documented code. Any other write failure (a full disk) is reported once at the end.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout met a closed pipe.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write failure that was not a closed pipe, reported when the command ends.
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Prints formatted text and a newline to stdout (see the module doc for a closed pipe).
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints formatted text and a newline to stderr; a closed stderr is ignored, never a panic.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout through the closed-pipe rule; used by `outln!`.
pub fn write(args: fmt::Arguments<'_>) {
    if closed() {
        return;
    }
    let mut stdout = io::stdout().lock();
    let result = stdout.write_fmt(args).and_then(|()| stdout.flush());
    settle(result);
}

/// Writes raw bytes to stdout through the closed-pipe rule (e.g. a generated script).
pub fn write_bytes(bytes: &[u8]) {
    if closed() {
        return;
    }
    let mut stdout = io::stdout().lock();
    let result = stdout.write_all(bytes).and_then(|()| stdout.flush());
    settle(result);
}

/// Writes to stderr, ignoring failures: there is nowhere left to report them.
pub fn write_err(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// True once stdout is closed: a command that keeps printing (`status --watch`) stops.
pub fn closed() -> bool {
    CLOSED.load(Ordering::SeqCst)
}

/// The first write failure that was not a closed pipe, if any (taken once).
pub fn take_failure() -> Option<String> {
    FAILED.lock().ok().and_then(|mut failed| failed.take())
}

fn settle(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::SeqCst);
        }
        Err(error) => {
            if let Ok(mut failed) = FAILED.lock() {
                failed.get_or_insert_with(|| format!("cannot write the output: {error}"));
            }
        }
    }
}
