//! Sinks, as the tail outputs of chains: lines to a file (or a part file per subtask), lines to
//! stdout, nowhere (counting them).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_framing::Record;

use crate::metrics::TaskMetrics;
use crate::stream::{Barrier, Output, StreamError};

/// Creates `dir` and its parents. A file where a directory must go is named as such (the
/// system's own error, `File exists`, names neither the file nor the problem).
pub fn create_output_dir(dir: &Path) -> std::io::Result<()> {
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if let Ok(meta) = fs::metadata(ancestor)
            && !meta.is_dir()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("`{}` is a file, not a directory", ancestor.display()),
            ));
        }
    }
    fs::create_dir_all(dir)
}

/// Committed part files (`part-<subtask>-<checkpoint>`) in a transactional sink's directory:
/// (name, checkpoint), sorted by name.
pub fn committed_parts(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = files_with_epochs(dir, |name| {
        let (subtask, epoch) = name.strip_prefix("part-")?.split_once('-')?;
        subtask.parse::<u32>().ok()?;
        epoch.parse().ok()
    })?;
    out.sort();
    Ok(out)
}

/// The files of `dir` whose names `epoch_of` reads an epoch from, with it; none if `dir` does
/// not exist.
fn files_with_epochs(
    dir: &Path,
    epoch_of: impl Fn(&str) -> Option<u64>,
) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some(epoch) = epoch_of(&name) {
                    out.push((name, epoch));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Drops everything, counting it: the discard sink.
#[derive(Debug, Default)]
pub struct DiscardSink {
    metrics: Arc<TaskMetrics>,
}

impl DiscardSink {
    pub fn new(metrics: Arc<TaskMetrics>) -> Self {
        DiscardSink { metrics }
    }
}

impl Output for DiscardSink {
    fn collect(&mut self, _: Record<'_>) -> Result<(), StreamError> {
        self.metrics.add_records_out(1);
        Ok(())
    }
    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        let n = weir_framing::count_records(batch)
            .map_err(|e| StreamError::Output(format!("malformed batch: {e}")))?;
        self.metrics.add_records_out(n as u64);
        Ok(())
    }
    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }
}

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
    ) -> Result<Self, StreamError> {
        let file_path = if parallelism == 1 {
            path.to_path_buf()
        } else {
            path.join(format!("part-{subtask}"))
        };
        let io = |e: std::io::Error| {
            StreamError::Output(format!("cannot write `{}`: {e}", file_path.display()))
        };
        if let Some(dir) = file_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_output_dir(dir).map_err(io)?;
        }
        let file = File::create(&file_path).map_err(io)?;
        Ok(FileSink {
            out: BufWriter::with_capacity(64 << 10, file),
            path: file_path,
            metrics,
        })
    }

    fn io_error(&self, e: std::io::Error) -> StreamError {
        StreamError::Output(format!("cannot write `{}`: {e}", self.path.display()))
    }
}

impl Output for FileSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.out
            .write_all(record.value)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.io_error(e))?;
        self.metrics.add_records_out(1);
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
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
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        let mut out = std::io::stdout().lock();
        out.write_all(record.value)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| StreamError::Output(format!("cannot write to stdout: {e}")))?;
        self.metrics.add_records_out(1);
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        std::io::stdout()
            .flush()
            .map_err(|e| StreamError::Output(format!("cannot write to stdout: {e}")))
    }
}

/// The exactly-once file sink: a two-phase commit over checkpoints. Records of the epoch
/// between barriers n-1 and n go to a hidden pending file `.part-<subtask>-<n>.pending`; at
/// barrier n the file is flushed, synced and closed (pre-commit); when checkpoint n completes it
/// is renamed to `part-<subtask>-<n>` (commit). On recovery from checkpoint n, pending files up
/// to n are committed and later ones deleted ([`recover_transactional_dir`]), so the committed
/// output holds every record exactly once after any failure. A finishing job commits its last
/// epoch through its final checkpoint, like any other.
pub struct TransactionalFileSink {
    dir: PathBuf,
    subtask: u32,
    epoch: u64,
    current: Option<BufWriter<File>>,
    metrics: Arc<TaskMetrics>,
}

fn pending_name(subtask: u32, epoch: u64) -> String {
    format!(".part-{subtask}-{epoch}.pending")
}

/// (subtask, epoch) of a pending file name.
fn parse_pending(name: &str) -> Option<(u32, u64)> {
    let inner = name.strip_prefix(".part-")?.strip_suffix(".pending")?;
    let (subtask, epoch) = inner.split_once('-')?;
    Some((subtask.parse().ok()?, epoch.parse().ok()?))
}

/// Makes renames and new files in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn commit(dir: &Path, name: &str) -> std::io::Result<()> {
    let (subtask, epoch) = parse_pending(name)
        .ok_or_else(|| std::io::Error::other(format!("`{name}` is not a pending part file")))?;
    let target = dir.join(format!("part-{subtask}-{epoch}"));
    if target.exists() {
        // Committed output is never replaced: that would hide a duplicate or lose records.
        return Err(std::io::Error::other(format!(
            "`{}` is already committed; refusing to overwrite it with `{name}`",
            target.display()
        )));
    }
    fs::rename(dir.join(name), target)?;
    sync_dir(dir)
}

fn pending_files(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    files_with_epochs(dir, |name| parse_pending(name).map(|(_, epoch)| epoch))
}

/// Before a (re)start from checkpoint `restored` (`None`: a fresh start): commits pending files
/// of checkpoints up to it, which completed but may not have been committed, and deletes the
/// rest, written after it by an attempt that failed.
pub fn recover_transactional_dir(dir: &Path, restored: Option<u64>) -> std::io::Result<()> {
    for (name, epoch) in pending_files(dir)? {
        match restored {
            Some(n) if epoch <= n => commit(dir, &name)?,
            _ => fs::remove_file(dir.join(&name))?,
        }
    }
    Ok(())
}

impl TransactionalFileSink {
    /// Writes into directory `dir`; `epoch` is the first checkpoint id this attempt will use.
    pub fn create(
        dir: &Path,
        subtask: u32,
        epoch: u64,
        metrics: Arc<TaskMetrics>,
    ) -> Result<Self, StreamError> {
        create_output_dir(dir)
            .map_err(|e| StreamError::Output(format!("cannot create `{}`: {e}", dir.display())))?;
        Ok(TransactionalFileSink {
            dir: dir.to_path_buf(),
            subtask,
            epoch,
            current: None,
            metrics,
        })
    }

    fn io_error(&self, e: std::io::Error) -> StreamError {
        StreamError::Output(format!(
            "cannot write pending part file in `{}`: {e}",
            self.dir.display()
        ))
    }

    fn writer(&mut self) -> Result<&mut BufWriter<File>, StreamError> {
        if self.current.is_none() {
            let path = self.dir.join(pending_name(self.subtask, self.epoch));
            let file = File::create(&path).map_err(|e| self.io_error(e))?;
            self.current = Some(BufWriter::with_capacity(64 << 10, file));
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    /// Pre-commit: the current epoch's file is made durable and closed.
    /// Pre-commit: the current epoch's file is made durable, closed, and named after
    /// `checkpoint`, the checkpoint whose completion will commit it (ids can skip when a
    /// checkpoint is abandoned).
    fn close_epoch(&mut self, checkpoint: Option<u64>) -> Result<(), StreamError> {
        if let Some(mut w) = self.current.take() {
            w.flush()
                .and_then(|()| w.get_ref().sync_all())
                .map_err(|e| self.io_error(e))?;
            if let Some(id) = checkpoint.filter(|&id| id != self.epoch) {
                let from = self.dir.join(pending_name(self.subtask, self.epoch));
                let to = self.dir.join(pending_name(self.subtask, id));
                fs::rename(from, to).map_err(|e| self.io_error(e))?;
            }
            sync_dir(&self.dir).map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }
}

impl Output for TransactionalFileSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        let w = self.writer()?;
        let written = w.write_all(record.value).and_then(|()| w.write_all(b"\n"));
        written.map_err(|e| self.io_error(e))?;
        self.metrics.add_records_out(1);
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        _: &mut Vec<crate::state::OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        self.close_epoch(Some(barrier.id))?;
        self.epoch = barrier.id + 1;
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        let own = pending_files(&self.dir).map_err(|e| self.io_error(e))?;
        for (name, epoch) in own {
            let mine = parse_pending(&name).is_some_and(|(s, _)| s == self.subtask);
            if mine && epoch <= checkpoint {
                commit(&self.dir, &name).map_err(|e| self.io_error(e))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.close_epoch(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_path_under_a_regular_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, "x").unwrap();
        let metrics = Arc::new(TaskMetrics::default());
        let Err(err) = FileSink::create(&file.join("out"), 0, 2, metrics.clone()) else {
            panic!("a directory under a file")
        };
        let expected = format!("`{}` is a file, not a directory", file.display());
        assert!(err.to_string().contains(&expected), "{err}");
        let Err(err) = TransactionalFileSink::create(&file.join("out"), 0, 1, metrics) else {
            panic!("a directory under a file")
        };
        assert!(err.to_string().contains(&expected), "{err}");
    }

    #[test]
    fn pending_files_commit_on_completion_and_recovery_drops_later_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(TaskMetrics::default());
        let mut sink = TransactionalFileSink::create(dir.path(), 0, 1, metrics).unwrap();
        sink.collect(Record::value(b"a")).unwrap();
        sink.snapshot(&Barrier::in_memory(1), &mut Vec::new())
            .unwrap();
        sink.collect(Record::value(b"b")).unwrap();
        sink.snapshot(&Barrier::in_memory(2), &mut Vec::new())
            .unwrap();
        sink.collect(Record::value(b"c")).unwrap();
        sink.notify_checkpoint_complete(1).unwrap();
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(dir.path()),
            [".part-0-2.pending", ".part-0-3.pending", "part-0-1"]
        );
        // Crash; checkpoint 2 had completed but was not committed yet.
        drop(sink);
        recover_transactional_dir(dir.path(), Some(2)).unwrap();
        assert_eq!(names(dir.path()), ["part-0-1", "part-0-2"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("part-0-2")).unwrap(),
            "b\n"
        );
    }
}
