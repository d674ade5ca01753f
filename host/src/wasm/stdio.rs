//! Guest stdout, stderr and the `logging` import, captured line by line into the task's log
//! under one byte cap per instance.
//!
//! A guest that writes past the cap fails: its write traps with [`OutputCapExceeded`], which the
//! operator reports as [`FailureKind::OutputCap`](super::FailureKind::OutputCap). Nothing it
//! writes reaches the host's own stdout.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Where guest log lines go.
pub trait LogSink: Send + Sync {
    /// One complete line from `source` (an operator and subtask); `stream` is `stdout`,
    /// `stderr` or the log level.
    fn line(&self, source: &str, stream: &str, line: &str);
}

/// Writes guest lines to the host's stderr, prefixed with their source.
#[derive(Debug, Default)]
pub struct StderrLog;

impl LogSink for StderrLog {
    fn line(&self, source: &str, stream: &str, line: &str) {
        eprintln!("[{source} {stream}] {line}");
    }
}

/// The trap a write past the cap raises.
#[derive(Debug, thiserror::Error)]
#[error("guest output exceeded its cap of {cap} bytes")]
pub struct OutputCapExceeded {
    pub cap: usize,
}

/// Lines of one instance passed on to the log sink; later lines still count against the byte
/// cap but are not shown, so a guest printing in a loop cannot flood the host's log before the
/// cap stops it.
pub const ECHOED_LINES: usize = 1_000;

struct LogState {
    written: usize,
    /// Lines passed to the sink so far.
    echoed: usize,
    overflowed: bool,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

/// The capped log of one operator instance, shared by its stdout, stderr and log import.
pub struct GuestLog {
    source: String,
    cap: usize,
    sink: Arc<dyn LogSink>,
    state: Mutex<LogState>,
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl GuestLog {
    pub fn new(source: String, cap: usize, sink: Arc<dyn LogSink>) -> Arc<Self> {
        Arc::new(GuestLog {
            source,
            cap,
            sink,
            state: Mutex::new(LogState {
                written: 0,
                echoed: 0,
                overflowed: false,
                partial_stdout: Vec::new(),
                partial_stderr: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means a log sink panicked mid-line; the counters are still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the guest has written past its cap.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn charge(&self, state: &mut LogState, bytes: usize) -> Result<(), OutputCapExceeded> {
        if state.overflowed || state.written + bytes > self.cap {
            state.overflowed = true;
            return Err(OutputCapExceeded { cap: self.cap });
        }
        state.written += bytes;
        Ok(())
    }

    /// A message from the log import.
    pub fn message(&self, level: &str, message: &str) -> Result<(), OutputCapExceeded> {
        let mut state = self.lock();
        self.charge(&mut state, message.len())?;
        for line in message.lines() {
            self.echo(&mut state, level, line);
        }
        Ok(())
    }

    /// Passes a line to the sink while the instance is within [`ECHOED_LINES`]; says once
    /// when it stops.
    fn echo(&self, state: &mut LogState, stream: &str, line: &str) {
        state.echoed += 1;
        if state.echoed <= ECHOED_LINES {
            self.sink.line(&self.source, stream, line);
        } else if state.echoed == ECHOED_LINES + 1 {
            self.sink.line(
                &self.source,
                stream,
                &format!(
                    "(more output than {ECHOED_LINES} lines: the rest is not shown; it still \
                     counts toward the cap of {} bytes)",
                    self.cap
                ),
            );
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) -> Result<(), OutputCapExceeded> {
        let mut state = self.lock();
        self.charge(&mut state, bytes.len())?;
        let state = &mut *state;
        let (name, partial) = match stream {
            Stream::Stdout => ("stdout", &mut state.partial_stdout),
            Stream::Stderr => ("stderr", &mut state.partial_stderr),
        };
        partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            lines.push(line);
        }
        for line in lines {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            self.echo(state, name, &text);
        }
        Ok(())
    }

    /// Writes out lines still missing their newline, when the instance goes away.
    pub fn flush_partial(&self) {
        let mut state = self.lock();
        for (name, partial) in [
            ("stdout", std::mem::take(&mut state.partial_stdout)),
            ("stderr", std::mem::take(&mut state.partial_stderr)),
        ] {
            if !partial.is_empty() {
                self.echo(&mut state, name, &String::from_utf8_lossy(&partial));
            }
        }
    }
}

/// stdout or stderr of a guest, as wasmtime-wasi sees it.
#[derive(Clone)]
pub struct GuestStdio {
    log: Arc<GuestLog>,
    stream: Stream,
}

impl GuestStdio {
    pub fn stdout(log: Arc<GuestLog>) -> Self {
        GuestStdio {
            log,
            stream: Stream::Stdout,
        }
    }
    pub fn stderr(log: Arc<GuestLog>) -> Self {
        GuestStdio {
            log,
            stream: Stream::Stderr,
        }
    }
}

impl IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pollable for GuestStdio {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStdio {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.log
            .write(self.stream, &bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready; the cap is enforced in `write` so that the overflow traps with a reason
        // instead of closing the stream quietly.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestStdio {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.log
                .write(self.stream, buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
