//! The per-instance sandbox: a `Store` whose WASI context grants nothing (no files, env,
//! args, sockets or name lookup; stdin closed; stdout and stderr captured, bounded, into the
//! host log), a memory cap, an epoch deadline, the rate-limited `log` import, and
//! [`run_isolated`], the thread every plugin call runs on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{log, wit};
use super::output::{CapturedStream, Written};
use super::untrusted::{cap_to, panic_message};
use super::{Limits, PluginError};

/// How often the host's ticker bumps the engine epoch; deadlines are rounded up to it.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The data of one plugin instance's `Store`.
pub(super) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) memory: MemoryCap,
    log: LogBucket,
    stdout: CapturedStream,
    stderr: CapturedStream,
}

impl StoreState {
    /// The end of what the plugin wrote to stderr (e.g. a panic message or a JS/Python
    /// runtime's uncaught exception), capped.
    pub(super) fn stderr_text(&self) -> String {
        self.stderr.tail_text()
    }

    /// Passes what the plugin wrote to stdout and stderr to the host log, line by line,
    /// through the same rate limit as its `log` lines, and empties both records.
    pub(super) fn log_output(&mut self) {
        for (stream, captured) in [
            ("stdout", self.stdout.take()),
            ("stderr", self.stderr.take()),
        ] {
            let Written { head, total } = captured;
            if total == 0 {
                continue;
            }
            let plugin = Arc::clone(&self.log.plugin);
            let plugin = &*plugin;
            let text = String::from_utf8_lossy(&head);
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                if !self.log.take() {
                    break;
                }
                let line = sanitize(line, self.log.max_line_bytes);
                match stream {
                    "stdout" => tracing::info!(plugin, stream, "{line}"),
                    _ => tracing::warn!(plugin, stream, "{line}"),
                }
            }
            let unlogged = total.saturating_sub(head.len() as u64);
            if unlogged > 0 {
                tracing::warn!(
                    plugin,
                    stream,
                    "{unlogged} more bytes of the plugin's {stream} were dropped ({total} in all in one call)"
                );
            }
        }
    }
}

impl Drop for StoreState {
    fn drop(&mut self) {
        // What the last call wrote: a store is dropped when a call fails, when it has served
        // its batches, or with its mapper; a kept store is flushed after each call.
        self.log_output();
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses linear-memory growth past the cap, remembering that it did so the host can tell
/// a memory overrun from any other trap.
pub(super) struct MemoryCap {
    limit_bytes: usize,
    /// True once a growth request was refused.
    pub(super) refused: bool,
}

/// Table growth is not what the memory cap is about, but it must not be unbounded either.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A token bucket per instance, so a chatty plugin cannot flood the host's log.
struct LogBucket {
    plugin: Arc<str>,
    tokens: f64,
    burst: f64,
    per_second: f64,
    refilled_at: Instant,
    max_line_bytes: usize,
    dropped: u64,
}

impl LogBucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl Drop for LogBucket {
    fn drop(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                plugin = %self.plugin,
                dropped = self.dropped,
                "plugin log lines dropped by the rate limit"
            );
        }
    }
}

impl log::Host for StoreState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        if !self.log.take() {
            return;
        }
        let line = sanitize(&message, self.log.max_line_bytes);
        let plugin = &*self.log.plugin;
        match level {
            wit::LogLevel::Debug => tracing::debug!(plugin, "{line}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{line}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{line}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{line}"),
        }
    }
}

/// One line of at most `max_bytes` (capped by [`cap_to`]), with control characters replaced
/// so a plugin cannot forge extra log lines.
fn sanitize(message: &str, max_bytes: usize) -> String {
    cap_to(message, max_bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Runs one plugin call outside any async runtime, and turns a panic into a trap.
/// wasmtime-wasi's synchronous WASI functions (every stdout, stderr or stdin access) drive a
/// runtime of their own, which panics on a tokio thread ("Cannot start a runtime from within a
/// runtime"); and no plugin behaviour may take its caller down.
///
/// A caller already outside any runtime (the engine's plugin threads, the CLI, benches) runs
/// the call on its own thread: a thread per call costs ~50 µs here, more than a small batch's
/// whole mapping. A caller inside one (a tokio blocking thread) gets a thread of its own for
/// the call; the caller's log subscriber and span come along, so the plugin's lines go where
/// the caller's do, with the caller's fields (workflow, stage).
pub(super) fn run_isolated<T: Send>(
    plugin: &str,
    call: impl FnOnce() -> Result<T, PluginError> + Send,
) -> Result<T, PluginError> {
    let runtime_panicked = |payload: Box<dyn std::any::Any + Send>| {
        Err(PluginError::Trap {
            plugin: plugin.to_owned(),
            message: format!("the plugin runtime panicked: {}", panic_message(&*payload)),
        })
    };
    if tokio::runtime::Handle::try_current().is_err() {
        // The call owns everything it touches (its store and instance are dropped by the
        // unwinding when it panics), so no broken state is observed after a caught panic.
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
            .unwrap_or_else(runtime_panicked);
    }
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("plugin-call".to_owned())
            .spawn_scoped(scope, || {
                tracing::dispatcher::with_default(&dispatch, || span.in_scope(call))
            })
            .map_err(|error| {
                PluginError::Engine(format!("cannot start a thread for a plugin call: {error}"))
            })?;
        thread.join().unwrap_or_else(runtime_panicked)
    })
}

/// The WASI interface whose functions wait on the host.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// Links WASI p2 (granting nothing, see [`new_store`]) and the `log` import.
pub(super) fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // Epoch deadlines only interrupt Wasm code, not a host call: a plugin that sleeps or
    // waits on a pollable would hold its thread past any deadline. Plugins have nothing to
    // wait for, so waiting traps instead.
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    for function in ["poll", "[method]pollable.block"] {
        poll.func_new(function, |_store, _type, _params, _results| {
            Err(wasmtime::format_err!(
                "plugins may not block (sleep or wait on a pollable)"
            ))
        })?;
    }
    linker.allow_shadowing(false);
    log::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// A clock stopped at the Unix epoch: mappings must not depend on when they run, so that a
/// replay maps the same input to the same output.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A fresh store for one call: nothing granted, memory capped, deadline armed.
pub(super) fn new_store(engine: &Engine, plugin: &Arc<str>, limits: &Limits) -> Store<StoreState> {
    let stdout = CapturedStream::default();
    let stderr = CapturedStream::default();
    // The builder's defaults grant nothing: no preopened dirs, env or args, every socket
    // address denied, name lookup off and stdin closed. Only randomness (Rust's std seeds hash
    // maps with it) is real. stdout and stderr never block and keep a bounded record.
    let wasi = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(StoppedClock)
        .monotonic_clock(StoppedClock)
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .build();
    let state = StoreState {
        wasi,
        table: ResourceTable::new(),
        memory: MemoryCap {
            limit_bytes: limits.memory_bytes,
            refused: false,
        },
        log: LogBucket {
            plugin: Arc::clone(plugin),
            tokens: f64::from(limits.log_burst),
            burst: f64::from(limits.log_burst),
            per_second: f64::from(limits.log_lines_per_second),
            refilled_at: Instant::now(),
            max_line_bytes: limits.max_log_line_bytes,
            dropped: 0,
        },
        stdout,
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    // wasmtime copies a plugin's result (and each log line) into host values before the host
    // sees any of it, and the canonical ABI lets any number of strings point at the same
    // bytes: without this bound, a small component could make that copy gigabytes. The fuel
    // counts every string and list copied in one lift, so a call's result can never occupy
    // more than the output budget before `convert` checks it.
    store.set_hostcall_fuel(limits.max_output_bytes);
    arm_deadline(&mut store, limits.deadline);
    store
}

/// Arms the epoch deadline for the next call, counted from now.
pub(super) fn arm_deadline(store: &mut Store<StoreState>, deadline: Duration) {
    let ticks = deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    store.epoch_deadline_trap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_cut_on_a_char_boundary_and_stripped_of_control_characters() {
        let line = sanitize("héllo\nforged line", 2);
        assert_eq!(line, "h… [truncated, 18 bytes in all]");
        assert_eq!(sanitize("a\nb", 100), "a b");
    }

    #[test]
    fn a_panic_in_a_plugin_call_is_a_trap_of_that_call() {
        let result: Result<(), PluginError> = run_isolated("p", || panic!("boom in the runtime"));
        let Err(PluginError::Trap { message, .. }) = &result else {
            panic!("{result:?}")
        };
        assert!(message.contains("boom in the runtime"), "{message}");
    }

    #[test]
    fn a_panic_in_a_call_made_inside_a_runtime_is_a_trap_too() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let result: Result<(), PluginError> =
            runtime.block_on(async { run_isolated("p", || panic!("boom on the call's thread")) });
        let Err(PluginError::Trap { message, .. }) = &result else {
            panic!("{result:?}")
        };
        assert!(message.contains("boom on the call's thread"), "{message}");
    }

    #[test]
    fn a_caller_outside_any_runtime_runs_the_call_on_its_own_thread() {
        let caller = std::thread::current().id();
        let on = run_isolated("p", || Ok(std::thread::current().id())).unwrap();
        assert_eq!(on, caller, "a thread was spawned for an off-runtime call");
    }

    #[test]
    fn plugin_calls_run_outside_any_async_runtime() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let inside = runtime
            .block_on(async {
                run_isolated("p", || Ok(tokio::runtime::Handle::try_current().is_ok()))
            })
            .unwrap();
        assert!(!inside, "a plugin call ran inside the caller's runtime");
    }

    #[test]
    fn log_bucket_drops_lines_past_the_burst() {
        let mut bucket = LogBucket {
            plugin: Arc::from("test"),
            tokens: 3.0,
            burst: 3.0,
            per_second: 0.0,
            refilled_at: Instant::now(),
            max_line_bytes: 10,
            dropped: 0,
        };
        let allowed = (0..10).filter(|_| bucket.take()).count();
        assert_eq!(allowed, 3);
        assert_eq!(bucket.dropped, 7);
    }
}
