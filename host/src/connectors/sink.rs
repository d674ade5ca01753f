//! Sinks, as the tail outputs of chains: lines to a file (or a part file per subtask), lines to
//! stdout. The discard sink is `runtime::DiscardOutput`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_framing::Record;

use crate::metrics::TaskMetrics;
use crate::runtime::{ChainError, Output};

/// Writes each record's value as one line.
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
    metrics: Arc<TaskMetrics>,
}

impl FileSink {
    /// At parallelism 1 the sink writes `path` itself; above, `path` is a directory of
    /// `part-<subtask>` files.
    pub fn create(
        path: &Path,
        subtask: u32,
        parallelism: u32,
        metrics: Arc<TaskMetrics>,
    ) -> Result<Self, ChainError> {
        let file_path = if parallelism == 1 {
            path.to_path_buf()
        } else {
            path.join(format!("part-{subtask}"))
        };
        let io = |e: std::io::Error| {
            ChainError::Output(format!("cannot write `{}`: {e}", file_path.display()))
        };
        if let Some(dir) = file_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let file = File::create(&file_path).map_err(io)?;
        Ok(FileSink {
            out: BufWriter::with_capacity(64 << 10, file),
            path: file_path,
            metrics,
        })
    }

    fn io_error(&self, e: std::io::Error) -> ChainError {
        ChainError::Output(format!("cannot write `{}`: {e}", self.path.display()))
    }
}

impl Output for FileSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), ChainError> {
        self.out
            .write_all(record.value)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.io_error(e))?;
        self.metrics.add_records_out(1);
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), ChainError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ChainError> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
            .map_err(|e| self.io_error(e))
    }
}

/// Writes each record's value as a line to the process's stdout.
pub struct StdoutSink {
    metrics: Arc<TaskMetrics>,
}

impl StdoutSink {
    pub fn new(metrics: Arc<TaskMetrics>) -> Self {
        StdoutSink { metrics }
    }
}

impl Output for StdoutSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), ChainError> {
        let mut out = std::io::stdout().lock();
        out.write_all(record.value)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| ChainError::Output(format!("cannot write to stdout: {e}")))?;
        self.metrics.add_records_out(1);
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), ChainError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ChainError> {
        std::io::stdout()
            .flush()
            .map_err(|e| ChainError::Output(format!("cannot write to stdout: {e}")))
    }
}
