//! The NATS JetStream sink: records written ahead into the checkpoint, published with
//! de-duplication ids when it completes.

use std::sync::Arc;

use async_nats::jetstream;
use weir_framing::Record;

use super::connection::jetstream_of;
use super::{NatsSinkSpec, decode_epochs, encode_epochs, nats_message_id};
use crate::connectors::external::{connector_runtime, on_own_runtime};
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
    /// Records since the last barrier.
    current: Vec<Vec<u8>>,
    /// Records of checkpoints not completed yet, by checkpoint.
    waiting: Vec<(u64, Vec<Vec<u8>>)>,
    checkpointing: bool,
    metrics: Arc<TaskMetrics>,
}

/// Publishes `records` to `subject`, each with its id (if any), and waits for every
/// acknowledgement (a duplicate id is acknowledged as such, not stored again).
async fn publish(
    context: &jetstream::Context,
    subject: &str,
    records: impl Iterator<Item = (Option<String>, Vec<u8>)>,
) -> Result<usize, String> {
    let mut acks = Vec::with_capacity(IN_FLIGHT);
    let mut duplicates = 0;
    let mut records = records.peekable();
    while records.peek().is_some() {
        for (id, value) in records.by_ref().take(IN_FLIGHT) {
            let mut message = jetstream::message::PublishMessage::build().payload(value.into());
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
        let runtime = connector_runtime().map_err(|e| failed(e.to_string()))?;
        let context = runtime
            .block_on(async {
                let context = jetstream_of(
                    &spec.url,
                    spec.user.as_deref(),
                    spec.password.as_ref(),
                    spec.connect_timeout(),
                )
                .await?;
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
            current: Vec::new(),
            waiting: Vec::new(),
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
    fn publish_epochs(&self, epochs: &[(u64, Vec<Vec<u8>>)]) -> Result<(), StreamError> {
        let records = epochs.iter().flat_map(|(checkpoint, records)| {
            records.iter().enumerate().map(|(i, r)| {
                let id = nats_message_id(&self.job, &self.sink, self.subtask, *checkpoint, i);
                (Some(id), r.clone())
            })
        });
        let published = self
            .runtime
            .block_on(publish(&self.context, &self.spec.subject, records));
        published.map(|_| ()).map_err(|e| self.failed(e))
    }
}

impl Output for NatsSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.current.push(record.value.to_vec());
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
            self.waiting.push((barrier.id, records));
        }
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
            .partition(|(c, _)| *c <= checkpoint);
        self.waiting = later;
        self.publish_epochs(&due)
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.flush()
    }
}

/// Before a (re)start from a checkpoint: publishes again, under their ids, the records its
/// sink subtasks had written ahead (`states`, one per subtask): their checkpoint completed,
/// but the process may have died before or while publishing them. The stream drops those it
/// already has. Returns how many records it stored now.
pub fn republish(
    spec: &NatsSinkSpec,
    job: &str,
    sink: &str,
    states: Vec<(u32, Vec<u8>)>,
) -> Result<usize, String> {
    let mut all = Vec::new();
    for (subtask, bytes) in states {
        let epochs = decode_epochs(&bytes)
            .ok_or_else(|| format!("the state of its subtask {subtask} is not a NATS sink's"))?;
        for (checkpoint, records) in epochs {
            for (i, r) in records.into_iter().enumerate() {
                all.push((Some(nats_message_id(job, sink, subtask, checkpoint, i)), r));
            }
        }
    }
    if all.is_empty() {
        return Ok(0);
    }
    let total = all.len();
    on_own_runtime(|| async {
        let context = jetstream_of(
            &spec.url,
            spec.user.as_deref(),
            spec.password.as_ref(),
            spec.connect_timeout(),
        )
        .await?;
        let duplicates = publish(&context, &spec.subject, all.into_iter()).await?;
        Ok::<_, String>(total - duplicates)
    })
    .map_err(|e| format!("no runtime: {e}"))?
}
