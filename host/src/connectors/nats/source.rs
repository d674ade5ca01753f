//! The NATS JetStream source's reader: a durable pull consumer, messages acknowledged when
//! the checkpoint that covers them completes.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use weir_framing::{BatchWriter, Record};

use super::connection::connect;
use super::{NatsSourceSpec, ranges_of};
use crate::connectors::external::background_runtime;
use crate::connectors::source::{SourceBatch, SourceError, SourceReader};

/// Messages asked for in one pull, and how long the server may take to fill it.
const PULL_MESSAGES: usize = 1000;
const PULL_WAIT: Duration = Duration::from_millis(50);

/// An emitted message not yet acknowledged: its stream sequence and where its ack goes.
struct Unacked {
    sequence: u64,
    reply: async_nats::Subject,
}

/// Reads a subtask's share of a stream through the shared durable consumer.
pub struct NatsSource {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    name: String,
    /// Emitted since the last barrier.
    current: Vec<Unacked>,
    /// Emitted before a barrier whose checkpoint has not completed yet, by checkpoint.
    covered: Vec<(u64, Vec<Unacked>)>,
    /// Sequences already counted: those the restored checkpoint covers, and those this
    /// subtask acknowledged (an acknowledgement can be lost). Skipped (and acknowledged) if
    /// delivered again; dropped once the consumer's ack floor passes them.
    skip: BTreeSet<u64>,
    /// Where each held (emitted, unacknowledged) sequence's acknowledgement goes now: a
    /// message the server delivers again while held is not emitted twice.
    replies: HashMap<u64, async_nats::Subject>,
    ack_wait: Duration,
    last_progress: Instant,
    bounded: bool,
    /// Without checkpoints, messages are acknowledged as they are emitted.
    checkpointing: bool,
    done: bool,
}

fn failed(spec: &NatsSourceSpec, message: impl std::fmt::Display) -> SourceError {
    SourceError::External {
        what: format!("nats stream `{}`", spec.stream),
        message: message.to_string(),
    }
}

/// The restored position as a set of sequences; a position that is no NATS source's (a
/// source of another kind once had this id) is refused rather than expanded.
fn skip_set(
    spec: &NatsSourceSpec,
    ranges: Option<Vec<(u64, u64)>>,
) -> Result<BTreeSet<u64>, SourceError> {
    let ranges = ranges.unwrap_or_default();
    let total: u64 = ranges.iter().map(|&(a, b)| b.saturating_sub(a)).sum();
    if total > 100_000_000 {
        return Err(failed(
            spec,
            format!("the restored position covers {total} messages: it is not this source's"),
        ));
    }
    Ok(ranges.into_iter().flat_map(|(a, b)| a..b).collect())
}

impl NatsSource {
    /// Opens a subtask: `skip` is every sequence the restored checkpoint covers (all of its
    /// subtasks', since any subtask may be handed any of them again).
    pub fn open(
        spec: &NatsSourceSpec,
        skip: Option<Vec<(u64, u64)>>,
        checkpointing: bool,
    ) -> Result<Self, SourceError> {
        let runtime = background_runtime().map_err(|e| failed(spec, e))?;
        let (client, consumer) = runtime.block_on(async {
            let client = connect(
                &spec.url,
                spec.user.as_deref(),
                spec.password.as_ref(),
                spec.connect_timeout(),
            )
            .await
            .map_err(|e| failed(spec, e))?;
            let context = jetstream::new(client.clone());
            let stream = context.get_stream(&spec.stream).await.map_err(|e| {
                failed(
                    spec,
                    format!("the stream cannot be found on {}: {e}", spec.url),
                )
            })?;
            let config = pull::Config {
                durable_name: Some(spec.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: spec.ack_wait(),
                filter_subject: spec.subject.clone().unwrap_or_default(),
                max_ack_pending: -1,
                ..Default::default()
            };
            let consumer: jetstream::consumer::Consumer<pull::Config> = stream
                .get_or_create_consumer(&spec.consumer, config)
                .await
                .map_err(|e| failed(spec, format!("consumer `{}`: {e}", spec.consumer)))?;
            // An existing consumer keeps its own settings: acknowledging all messages below
            // one (or none) would lose what another subtask holds.
            let existing = &consumer.cached_info().config;
            if existing.ack_policy != jetstream::consumer::AckPolicy::Explicit
                || existing.filter_subject != spec.subject.clone().unwrap_or_default()
            {
                return Err(failed(
                    spec,
                    format!(
                        "consumer `{}` exists with ack policy {:?} and filter `{}`; the source \
                         needs explicit acknowledgements and filter `{}` (delete it or name \
                         another `consumer`)",
                        spec.consumer,
                        existing.ack_policy,
                        existing.filter_subject,
                        spec.subject.clone().unwrap_or_default()
                    ),
                ));
            }
            Ok::<_, SourceError>((client, consumer))
        })?;
        Ok(NatsSource {
            runtime,
            client,
            consumer,
            name: spec.stream.clone(),
            current: Vec::new(),
            covered: Vec::new(),
            skip: skip_set(spec, skip)?,
            bounded: spec.bounded,
            checkpointing,
            done: false,
            replies: HashMap::new(),
            ack_wait: spec.ack_wait(),
            last_progress: Instant::now(),
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError::External {
            what: format!("nats stream `{}`", self.name),
            message: message.to_string(),
        }
    }

    fn held(&self) -> usize {
        self.replies.len()
    }

    /// Tells the server that held messages are still being worked on (`+WPI`), so it does not
    /// deliver them again while their checkpoint is under way; at most every third of
    /// `ack_wait`.
    fn keep_held(&mut self) -> Result<(), SourceError> {
        if self.replies.is_empty() || self.last_progress.elapsed() < self.ack_wait / 3 {
            return Ok(());
        }
        self.last_progress = Instant::now();
        let client = &self.client;
        let replies = &self.replies;
        self.runtime
            .block_on(async {
                for reply in replies.values() {
                    client.publish(reply.clone(), "+WPI".into()).await?;
                }
                client.flush().await.map_err(|e| e.to_string().into())
            })
            .map_err(|e: Box<dyn std::error::Error + Send + Sync>| {
                self.error(format!("cannot extend acknowledgement deadlines: {e}"))
            })
    }

    /// Acknowledges `messages` (at their latest delivery), waiting until the server has the
    /// acknowledgements; their sequences stay skipped until the ack floor passes them.
    fn ack(&mut self, messages: &[Unacked]) -> Result<(), SourceError> {
        let subjects: Vec<async_nats::Subject> = messages
            .iter()
            .map(|m| {
                self.skip.insert(m.sequence);
                self.replies
                    .remove(&m.sequence)
                    .unwrap_or_else(|| m.reply.clone())
            })
            .collect();
        let client = &self.client;
        self.runtime
            .block_on(async {
                for subject in subjects {
                    client.publish(subject, "".into()).await?;
                }
                client.flush().await.map_err(|e| e.to_string().into())
            })
            .map_err(|e: Box<dyn std::error::Error + Send + Sync>| {
                self.error(format!("cannot acknowledge: {e}"))
            })
    }
}

impl SourceReader for NatsSource {
    fn next_batch(
        &mut self,
        batch: &mut BatchWriter,
        _: usize,
    ) -> Result<SourceBatch, SourceError> {
        if self.done {
            return Ok(SourceBatch {
                records: 0,
                more: false,
                split: 0,
            });
        }
        let consumer = &self.consumer;
        let messages = self.runtime.block_on(async {
            let mut pulled = consumer
                .batch()
                .max_messages(PULL_MESSAGES)
                .expires(PULL_WAIT)
                .messages()
                .await?;
            let mut out = Vec::new();
            while let Some(message) = pulled.next().await {
                out.push(message?);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
        });
        let messages = messages.map_err(|e| self.error(format!("cannot pull: {e}")))?;
        let mut records = 0;
        let mut again = Vec::new();
        let mut emitted = Vec::new();
        for message in &messages {
            let info = message
                .info()
                .map_err(|e| self.error(format!("a message without JetStream metadata: {e}")))?;
            let sequence = info.stream_sequence;
            let timestamp = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            if self.skip.contains(&sequence) {
                again.push(Unacked { sequence, reply });
                continue;
            }
            if let Some(held) = self.replies.get_mut(&sequence) {
                // Delivered again while this subtask holds it: acknowledged later, there.
                *held = reply;
                continue;
            }
            batch.push(Record {
                value: &message.payload,
                key: None,
                timestamp: Some(timestamp),
            });
            records += 1;
            emitted.push(Unacked { sequence, reply });
        }
        // Delivered again but already in the restored state: acknowledged, not emitted.
        if !again.is_empty() {
            self.ack(&again)?;
        }
        if self.checkpointing {
            for m in &emitted {
                self.replies.insert(m.sequence, m.reply.clone());
            }
            self.current.extend(emitted);
            self.keep_held()?;
        } else {
            self.ack(&emitted)?;
        }
        if messages.is_empty() && self.bounded {
            // Done once nothing is left to deliver and nothing waits for an acknowledgement
            // but what this subtask holds (a failed attempt's messages come again after
            // `ack_wait`; other subtasks' are acknowledged as checkpoints complete).
            let info = self.runtime.block_on(self.consumer.info()).cloned();
            let info =
                info.map_err(|e| self.error(format!("cannot read the consumer's state: {e}")))?;
            self.done = info.num_pending == 0 && info.num_ack_pending <= self.held();
        }
        Ok(SourceBatch {
            records,
            more: !self.done,
            split: 0,
        })
    }

    fn barrier(&mut self, checkpoint: u64) {
        let emitted = std::mem::take(&mut self.current);
        if !emitted.is_empty() {
            self.covered.push((checkpoint, emitted));
        }
        // A subtask whose input ended is not polled; its barriers keep its messages held.
        // A failure here surfaces at the next acknowledgement.
        let _ = self.keep_held();
        // Sequences at or below the ack floor were all acknowledged: never delivered again.
        if !self.skip.is_empty()
            && let Ok(info) = self.runtime.block_on(self.consumer.info())
        {
            let floor = info.ack_floor.stream_sequence;
            self.skip = self.skip.split_off(&(floor + 1));
        }
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), SourceError> {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.covered)
            .into_iter()
            .partition(|(c, _)| *c <= checkpoint);
        self.covered = waiting;
        let done: Vec<Unacked> = done.into_iter().flat_map(|(_, m)| m).collect();
        self.ack(&done)
    }

    fn position(&self) -> Vec<(u64, u64)> {
        ranges_of(
            self.covered
                .iter()
                .flat_map(|(_, m)| m.iter().map(|u| u.sequence))
                .chain(self.skip.iter().copied()),
        )
    }

    fn unfinished_splits(&self) -> Vec<u64> {
        if self.done { Vec::new() } else { vec![0] }
    }
}
