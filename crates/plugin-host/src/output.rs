//! A plugin's stdout and stderr: WASI output streams that never block, never fail and never
//! grow past a bound. Each keeps the head of what one call wrote (passed to the host log after
//! the call, rate-limited together with the plugin's `log` lines) and the tail (attached to a
//! trap's reason: Rust, JavaScript and Python runtimes print the panic or the uncaught
//! exception there just before they trap). Everything past the head is counted and dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of each stream kept per call for the host log.
pub(super) const HEAD_BYTES: usize = 16 * 1024;

/// Bytes of the end of stderr kept per call for a trap's reason.
pub(super) const TAIL_BYTES: usize = 4 * 1024;

/// What one write may offer: writes are always accepted whole (and dropped past the head), so
/// the permit only sizes the guest's chunks.
const WRITE_PERMIT: usize = 64 * 1024;

/// The bounded record of one stream.
#[derive(Default)]
struct Captured {
    head: Vec<u8>,
    /// The last bytes written; between `TAIL_BYTES` and twice that, trimmed on write.
    tail: Vec<u8>,
    total: u64,
}

impl Captured {
    fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        let room = HEAD_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - TAIL_BYTES..]);
        } else {
            self.tail.extend_from_slice(bytes);
            if self.tail.len() > 2 * TAIL_BYTES {
                let excess = self.tail.len() - TAIL_BYTES;
                self.tail.drain(..excess);
            }
        }
    }
}

/// One captured stream of one plugin instance; clones share the record.
#[derive(Clone, Default)]
pub(super) struct CapturedStream {
    inner: Arc<Mutex<Captured>>,
}

/// What a stream held at the end of a call.
pub(super) struct Written {
    /// The first [`HEAD_BYTES`] bytes.
    pub(super) head: Vec<u8>,
    /// Every byte written, kept or not.
    pub(super) total: u64,
}

impl CapturedStream {
    fn with<R>(&self, f: impl FnOnce(&mut Captured) -> R) -> R {
        // The record holds plain bytes that a panic cannot leave half-written.
        let mut captured = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut captured)
    }

    /// Takes the head and the count, leaving the stream empty.
    pub(super) fn take(&self) -> Written {
        self.with(|captured| {
            let taken = std::mem::take(captured);
            Written {
                head: taken.head,
                total: taken.total,
            }
        })
    }

    /// The last bytes written, as capped text without surrounding whitespace.
    pub(super) fn tail_text(&self) -> String {
        self.with(|captured| {
            let start = captured.tail.len().saturating_sub(TAIL_BYTES);
            let text = super::untrusted::cap_bytes(&captured.tail[start..], TAIL_BYTES);
            let text = text.trim();
            if captured.total > TAIL_BYTES as u64 {
                format!("[{} bytes in all, the last ones:] {text}", captured.total)
            } else {
                text.to_owned()
            }
        })
    }
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.with(|captured| captured.push(&bytes));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|captured| captured.push(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_only_the_head_and_the_tail_and_counts_the_rest() {
        let mut stream = CapturedStream::default();
        for _ in 0..10_000 {
            stream
                .write(Bytes::from_static(b"0123456789abcdef\n"))
                .unwrap();
        }
        stream.write(Bytes::from_static(b"the last words")).unwrap();
        assert_eq!(stream.check_write().unwrap(), WRITE_PERMIT);
        let tail = stream.tail_text();
        assert!(tail.ends_with("the last words"), "{tail}");
        assert!(tail.starts_with("[170014 bytes in all"), "{tail}");
        assert!(tail.len() < TAIL_BYTES + 64, "{}", tail.len());
        let written = stream.take();
        assert_eq!(written.head.len(), HEAD_BYTES);
        assert_eq!(written.total, 170_014);
        assert_eq!(stream.take().total, 0, "take empties the stream");
    }

    #[test]
    fn one_huge_write_keeps_its_end_as_the_tail() {
        let mut stream = CapturedStream::default();
        let mut big = vec![b'a'; 1 << 20];
        big.extend_from_slice(b"end");
        stream.write(Bytes::from(big)).unwrap();
        assert!(stream.tail_text().ends_with("aaend"));
        assert_eq!(stream.take().head.len(), HEAD_BYTES);
    }
}
