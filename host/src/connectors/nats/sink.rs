//! The NATS JetStream sink: records written ahead into the checkpoint, published with
//! de-duplication ids when it completes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use weir_framing::Record;

use super::connection::jetstream_of;
use super::{Epoch, NatsSinkSpec, decode_epochs, encode_epochs, nats_message_id, published_note};
use crate::connectors::external::{background_runtime, on_own_runtime};
use crate::metrics::TaskMetrics;
use crate::state::OperatorSnapshot;
use crate::stream::{Barrier, Output, StreamError};

/// Acknowledgements awaited at once: publishing is pipelined up to this many.
const IN_FLIGHT: usize = 1024;

/// Publishes the records of a sink subtask.
pub struct NatsSink {
    runtime: tokio::runtime::Runtime,
    context: jetstream::Context,
    spec: NatsSinkSpec,
    job: String,
    sink: String,
    subtask: u32,
    parallelism: u32,
    /// This instance's run: part of every message id it makes.
    run: u64,
    /// Records since the last barrier.
    current: Vec<Bytes>,
    /// Records of checkpoints not completed yet.
    waiting: Vec<Epoch>,
    /// Where each pending checkpoint's files go: its note goes there once published.
    locations: Vec<(u64, PathBuf)>,
    checkpointing: bool,
    metrics: Arc<TaskMetrics>,
}

/// Publishes `records` to `subject`, each with its id (if any), and waits for every
/// acknowledgement (a duplicate id is acknowledged as such, not stored again).
async fn publish(
    context: &jetstream::Context,
    subject: &str,
    records: impl Iterator<Item = (Option<String>, Bytes)>,
) -> Result<usize, String> {
    let mut acks = Vec::with_capacity(IN_FLIGHT);
    let mut duplicates = 0;
    let mut records = records.peekable();
    while records.peek().is_some() {
        for (id, value) in records.by_ref().take(IN_FLIGHT) {
            let mut message = jetstream::message::PublishMessage::build().payload(value);
            if let Some(id) = id {
                message = message.message_id(id);
            }
            let ack = context
                .send_publish(subject.to_string(), message)
                .await
                .map_err(|e| format!("cannot publish to `{subject}`: {e}"))?;
            acks.push(ack);
        }
        for ack in acks.drain(..) {
            let ack = ack
                .await
                .map_err(|e| format!("a record to `{subject}` was not stored: {e}"))?;
            duplicates += usize::from(ack.duplicate);
        }
    }
    Ok(duplicates)
}

/// A JetStream context on the sink's server.
async fn jetstream_for(spec: &NatsSinkSpec) -> Result<jetstream::Context, String> {
    jetstream_of(
        &spec.url,
        spec.user.as_deref(),
        spec.password.as_ref(),
        spec.connect_timeout(),
    )
    .await
}

/// Checks that a stream takes `subject`, so a wrong subject fails at once rather than at the
/// first checkpoint.
async fn check_subject(context: &jetstream::Context, subject: &str) -> Result<(), String> {
    context
        .stream_by_subject(subject)
        .await
        .map(|_| ())
        .map_err(|e| format!("no stream takes subject `{subject}`: {e}"))
}

impl NatsSink {
    pub fn open(
        spec: &NatsSinkSpec,
        job: &str,
        sink: &str,
        subtask: u32,
        parallelism: u32,
        checkpointing: bool,
        metrics: Arc<TaskMetrics>,
    ) -> Result<Self, StreamError> {
        let failed =
            |e: String| StreamError::Output(format!("sink `{sink}` (subtask {subtask}): {e}"));
        let runtime = background_runtime().map_err(|e| failed(e.to_string()))?;
        let mut run = [0u8; 8];
        getrandom::fill(&mut run).map_err(|e| failed(format!("no randomness: {e}")))?;
        let context = runtime
            .block_on(async {
                let context = jetstream_for(spec).await?;
                check_subject(&context, &spec.subject).await?;
                Ok::<_, String>(context)
            })
            .map_err(failed)?;
        Ok(NatsSink {
            runtime,
            context,
            spec: spec.clone(),
            job: job.to_string(),
            sink: sink.to_string(),
            subtask,
            parallelism,
            run: u64::from_le_bytes(run),
            current: Vec::new(),
            waiting: Vec::new(),
            locations: Vec::new(),
            checkpointing,
            metrics,
        })
    }

    fn failed(&self, e: String) -> StreamError {
        StreamError::Output(format!(
            "sink `{}` (subtask {}): {e}",
            self.sink, self.subtask
        ))
    }

    /// Publishes the records of `epochs` under their ids.
    fn publish_epochs(&self, epochs: &[Epoch]) -> Result<(), StreamError> {
        let records = with_ids(&self.job, &self.sink, self.subtask, epochs);
        let published = self
            .runtime
            .block_on(publish(&self.context, &self.spec.subject, records));
        published.map(|_| ()).map_err(|e| self.failed(e))
    }
}

/// The records of `epochs` with their message ids.
fn with_ids<'a>(
    job: &'a str,
    sink: &'a str,
    subtask: u32,
    epochs: &'a [Epoch],
) -> impl Iterator<Item = (Option<String>, Bytes)> + 'a {
    epochs.iter().flat_map(move |e| {
        e.records.iter().enumerate().map(move |(i, r)| {
            let id = nats_message_id(job, sink, subtask, e.run, e.checkpoint, i);
            (Some(id), r.clone())
        })
    })
}

/// Notes in `dir` that subtask `subtask`'s records there are published (best effort: without
/// the note a restore publishes them again, and the stream drops them within its duplicate
/// window).
fn note_published(dir: &Path, sink: &str, subtask: u32) {
    if dir.as_os_str().is_empty() || !dir.is_dir() {
        return;
    }
    let note = dir.join(published_note(sink, subtask));
    if let Err(e) = std::fs::write(&note, b"") {
        eprintln!("sink `{sink}`: cannot write `{}`: {e}", note.display());
    }
}

impl Output for NatsSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.current.push(Bytes::copy_from_slice(record.value));
        self.metrics.add_records_out(1);
        if !self.checkpointing && self.current.len() >= IN_FLIGHT {
            self.flush()?;
        }
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        if self.checkpointing || self.current.is_empty() {
            return Ok(());
        }
        // Without checkpoints nothing is written ahead: records go out as they come.
        let records = std::mem::take(&mut self.current);
        let published = self.runtime.block_on(publish(
            &self.context,
            &self.spec.subject,
            records.into_iter().map(|r| (None, r)),
        ));
        published.map(|_| ()).map_err(|e| self.failed(e))
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        if !self.checkpointing {
            return self.flush();
        }
        let records = std::mem::take(&mut self.current);
        if !records.is_empty() {
            self.waiting.push(Epoch {
                checkpoint: barrier.id,
                run: self.run,
                records,
            });
        }
        self.locations
            .push((barrier.id, barrier.location.to_path_buf()));
        into.push(OperatorSnapshot {
            operator: self.sink.clone(),
            subtask: self.subtask,
            parallelism: self.parallelism,
            guest_state: encode_epochs(&self.waiting),
            keyed: Default::default(),
            timers: Default::default(),
        });
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|e| e.checkpoint <= checkpoint);
        self.waiting = later;
        self.publish_epochs(&due)?;
        // The completed checkpoint holds exactly what was just published.
        if let Some((_, dir)) = self.locations.iter().find(|(c, _)| *c == checkpoint) {
            note_published(dir, &self.sink, self.subtask);
        }
        self.locations.retain(|(c, _)| *c > checkpoint);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.flush()
    }
}

/// Before a (re)start from the checkpoint in `dir`: publishes again, under their ids, the
/// records its sink subtasks had written ahead (`states`, one per subtask) and had not noted
/// as published: their checkpoint completed, but the process may have died before or while
/// publishing them. The stream drops those it already has. Returns how many records it stored
/// now.
pub fn republish(
    spec: &NatsSinkSpec,
    job: &str,
    sink: &str,
    dir: &Path,
    states: Vec<(u32, Vec<u8>)>,
) -> Result<usize, String> {
    let mut all = Vec::new();
    let mut subtasks = Vec::new();
    for (subtask, bytes) in states {
        if dir.join(published_note(sink, subtask)).exists() {
            continue;
        }
        let epochs = decode_epochs(&bytes)
            .ok_or_else(|| format!("the state of its subtask {subtask} is not a NATS sink's"))?;
        all.extend(with_ids(job, sink, subtask, &epochs).collect::<Vec<_>>());
        subtasks.push(subtask);
    }
    let total = all.len();
    if total > 0 {
        let duplicates = on_own_runtime(|| async {
            let context = jetstream_for(spec).await?;
            publish(&context, &spec.subject, all.into_iter()).await
        })
        .map_err(|e| format!("no runtime: {e}"))??;
        for subtask in subtasks {
            note_published(dir, sink, subtask);
        }
        return Ok(total - duplicates);
    }
    for subtask in subtasks {
        note_published(dir, sink, subtask);
    }
    Ok(0)
}
