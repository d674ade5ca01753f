//! A task: one subtask of a vertex, on its own thread, running Flink's mailbox loop. Control
//! mails (cancel, actions from other threads) are taken between steps of the default action,
//! which reads input (a source split or the input gate) and pushes it through the chain.
//!
//! Life of a task:
//! 1. its thread opens the chain (instantiating the operators) and the input;
//! 2. the loop runs until the input ends: a source then emits the final watermark (end of
//!    event time, which fires every event-time timer); a gate task, once every channel sent
//!    end-of-data;
//! 3. the chain's input ends: operators close in order and may emit their last records, and
//!    the tail sends end-of-data downstream;
//! 4. with checkpoints (Flink's FLIP-147), the task keeps taking part in checkpoints until the
//!    job's final checkpoint completes: the coordinator triggers it once every source has
//!    ended, so it covers every record, and its completion commits the last output of
//!    transactional sinks through the normal path;
//! 5. the chain finishes (the tail sends end-of-partition, sinks close);
//! 6. on cancel, or on any failure, the loop stops at once and the task reports why.
//!
//! Checkpoints: a source task takes checkpoint n when its mailbox says so; any other task when
//! barrier n has arrived on all its input channels. Either way the chain snapshots (and its tail
//! sends barrier n on), and the state files are written on another thread.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::chain::OperatorChain;
use super::input::{InputProcessor, InputStatus};
use super::submit::JobMasterConnection;
use crate::checkpoint::storage::{encode_state_file, write_atomically};
use crate::checkpoint::{Ack, CoordinatorEvent, SourceState, StateHandle};
use crate::connectors::{SourceError, SourceReader};
use crate::metrics::TaskMetrics;
use crate::network::{CancelFlag, ChannelItem, InputGate};
use crate::state::OperatorSnapshot;
use crate::state::processing_time_now;
use crate::stream::{Barrier, StreamError};

/// A control action run on the task thread between steps of the default action.
pub type MailAction = Box<dyn FnOnce(&mut OperatorChain) -> Result<(), StreamError> + Send>;

/// A control mail.
pub enum Mail {
    /// Stop as soon as possible.
    Cancel,
    /// Run an action with the chain.
    Action(MailAction),
    /// (Sources) snapshot the barrier's checkpoint now and send the barrier downstream.
    TriggerCheckpoint(Barrier),
    /// Checkpoint n completed; `last` when it is the job's final checkpoint, after which
    /// the task finishes.
    CheckpointComplete { id: u64, last: bool },
    /// (Sources) end the input here, as if it had run out: event time ends, every timer
    /// fires, operators close, and the job's final checkpoint follows (stop with `--drain`).
    /// Other tasks ignore it; their input ends when their producers' does.
    Drain,
}

/// The queue of control mails of one task.
#[derive(Default)]
pub struct Mailbox {
    mails: Mutex<VecDeque<Mail>>,
    pending: AtomicBool,
    /// Wakes a task that has nothing but mail to wait for (its input ended).
    arrived: Condvar,
}

impl Mailbox {
    pub fn send(&self, mail: Mail) {
        self.mails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(mail);
        self.pending.store(true, Ordering::Release);
        self.arrived.notify_one();
    }

    /// Waits until mail arrives, at most `timeout`.
    fn wait(&self, timeout: Duration) {
        let mails = self.mails.lock().unwrap_or_else(|p| p.into_inner());
        if mails.is_empty() {
            let _ = self.arrived.wait_timeout(mails, timeout);
        }
    }

    fn take(&self) -> Option<Mail> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut mails = self.mails.lock().unwrap_or_else(|p| p.into_inner());
        let mail = mails.pop_front();
        if mails.is_empty() {
            self.pending.store(false, Ordering::Release);
        }
        mail
    }
}

/// Where a task's input comes from.
pub enum TaskInput {
    Source(Box<dyn SourceReader>),
    /// The gate, and the ranges of its channels that carry the head's second input.
    Gate(InputGate, Vec<std::ops::Range<usize>>),
}

/// What a task needs to take part in checkpoints.
pub struct TaskCheckpointing {
    /// The task's index in the job, as the coordinator counts acknowledgements.
    pub index: usize,
    pub subtask: u32,
    /// The source's node id, for a source task.
    pub source: Option<String>,
    pub master: Arc<dyn JobMasterConnection>,
}

/// Why a task stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("task {task} failed: {error}")]
    Chain { task: String, error: StreamError },
    #[error("task {task} failed: {error}")]
    Source { task: String, error: SourceError },
    /// An input channel from another TaskExecutor broke.
    #[error("task {task} lost an input: {reason}")]
    Input { task: String, reason: String },
    #[error("task {task} was cancelled")]
    Cancelled { task: String },
    #[error("task {task} cannot restore its state: {error}")]
    Restore {
        task: String,
        error: crate::checkpoint::RestoreError,
    },
    /// A task in another process failed; its TaskExecutor's account of it.
    #[error("{reason}")]
    Remote { task: String, reason: String },
    /// The job could not take a checkpoint it needs (its final one).
    #[error("{0}")]
    Checkpoint(String),
    /// The job went over a quota of its tenant (restarting cannot help).
    #[error("{0}")]
    Quota(String),
}

impl TaskFailure {
    /// The task that failed (`vertex (subtask/parallelism)`); none for a failed checkpoint.
    pub fn task_name(&self) -> Option<&str> {
        match self {
            TaskFailure::Chain { task, .. }
            | TaskFailure::Source { task, .. }
            | TaskFailure::Cancelled { task }
            | TaskFailure::Restore { task, .. }
            | TaskFailure::Input { task, .. }
            | TaskFailure::Remote { task, .. } => Some(task),
            TaskFailure::Checkpoint(_) | TaskFailure::Quota(_) => None,
        }
    }
}

/// Bytes of source records per batch handed to the chain.
const SOURCE_BATCH_BYTES: usize = 32 << 10;
/// How often processing time advances through the chain (firing processing-time timers).
const PROCESSING_TIME_TICK: Duration = Duration::from_millis(10);

/// A running subtask.
pub struct Task {
    pub name: String,
    pub input: TaskInput,
    pub chain: OperatorChain,
    pub metrics: Arc<TaskMetrics>,
    pub cancel: CancelFlag,
    pub mailbox: Arc<Mailbox>,
    pub buffer_timeout: Duration,
    pub checkpointing: Option<TaskCheckpointing>,
    /// How far the task is on its way to finishing; a new task starts with
    /// `Default::default()` (nothing ended yet).
    pub(crate) ending: Ending,
    /// (Sources, with checkpoints) after the first batch, wait for this many checkpoints to
    /// complete before reading on.
    pub wait_for_checkpoints: Option<u64>,
    /// (Sources with a watermark generator) tells it which split each batch comes from.
    pub split_cursor: Option<super::watermarks::SplitCursor>,
}

/// Where a task stands on its way to finishing.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    /// The chain's input ended (its operators closed).
    input_ended: bool,
    /// Every input channel ended (gate tasks), or the source has nothing more (sources).
    channels_ended: bool,
    /// The job's final checkpoint completed.
    final_checkpoint_done: bool,
    /// Checkpoints completed since the task started.
    checkpoints_completed: u64,
    /// (Sources) the first batch was read.
    read_a_batch: bool,
    /// (Sources) told to end their input now.
    drained: bool,
}

/// How long a task with nothing but mail to wait for sleeps between looks at its cancel flag.
const IDLE_WAIT: Duration = Duration::from_millis(50);

impl Task {
    /// Runs the mailbox loop to the end of the input.
    pub fn run(mut self) -> Result<(), TaskFailure> {
        let started = Instant::now();
        let result = self.run_loop(started);
        self.metrics.set_elapsed(started.elapsed());
        if result.is_ok()
            && let Some(cp) = &self.checkpointing
        {
            // No checkpoint can complete without this task from now on.
            cp.master
                .checkpoint_event(CoordinatorEvent::TaskFinished(cp.index));
        }
        result
    }

    fn cancelled(&self) -> TaskFailure {
        TaskFailure::Cancelled {
            task: self.name.clone(),
        }
    }

    fn chain_failed(&self, error: StreamError) -> TaskFailure {
        if self.cancel.is_cancelled() {
            return self.cancelled();
        }
        TaskFailure::Chain {
            task: self.name.clone(),
            error,
        }
    }

    fn handle_mail(&mut self, mail: Mail) -> Result<(), TaskFailure> {
        match mail {
            Mail::Cancel => Err(self.cancelled()),
            Mail::Action(action) => action(&mut self.chain).map_err(|e| self.chain_failed(e)),
            Mail::TriggerCheckpoint(barrier) => self.checkpoint(barrier, Duration::ZERO),
            Mail::CheckpointComplete { id, last } => {
                self.ending.final_checkpoint_done |= last;
                self.ending.checkpoints_completed += 1;
                if let TaskInput::Source(reader) = &mut self.input {
                    reader
                        .notify_checkpoint_complete(id)
                        .map_err(|error| TaskFailure::Source {
                            task: self.name.clone(),
                            error,
                        })?;
                }
                self.chain
                    .notify_checkpoint_complete(id)
                    .map_err(|e| self.chain_failed(e))
            }
            Mail::Drain => {
                self.ending.drained = matches!(self.input, TaskInput::Source(_));
                Ok(())
            }
        }
    }

    /// Ends the chain's input; a source tells the coordinator, which triggers the final
    /// checkpoint once every source has.
    fn end_input(&mut self) -> Result<(), TaskFailure> {
        self.chain.end_input().map_err(|e| self.chain_failed(e))?;
        self.ending.input_ended = true;
        if let Some(cp) = &self.checkpointing
            && cp.source.is_some()
        {
            cp.master
                .checkpoint_event(CoordinatorEvent::EndOfInput(cp.index));
        }
        Ok(())
    }

    /// A source has read all it will: event time ends (every event-time timer fires) and the
    /// input ends.
    fn end_source(&mut self) -> Result<(), TaskFailure> {
        self.chain
            .emit_watermark(i64::MAX)
            .map_err(|e| self.chain_failed(e))?;
        self.end_input()?;
        self.ending.channels_ended = true;
        Ok(())
    }

    /// Whether the task is done: its input ended and, with checkpoints, the final checkpoint
    /// completed.
    fn done(&self) -> bool {
        let e = &self.ending;
        e.input_ended
            && e.channels_ended
            && (self.checkpointing.is_none() || e.final_checkpoint_done)
    }

    fn run_loop(&mut self, started: Instant) -> Result<(), TaskFailure> {
        let mut processor = match &self.input {
            TaskInput::Gate(gate, second) => {
                Some(InputProcessor::new(gate.channels()).with_second_input(second))
            }
            TaskInput::Source(_) => None,
        };
        let mut batch = weir_framing::BatchWriter::with_capacity(SOURCE_BATCH_BYTES + 1024);
        let mut last_tick = Instant::now();
        loop {
            while let Some(mail) = self.mailbox.take() {
                self.handle_mail(mail)?;
            }
            if self.cancel.is_cancelled() {
                return Err(self.cancelled());
            }
            if self.done() {
                self.chain.finish().map_err(|e| self.chain_failed(e))?;
                return Ok(());
            }
            if self.ending.channels_ended {
                // Only mail can move the task on now: the final checkpoint's trigger (for a
                // source), its completion, or a cancel.
                self.mailbox.wait(IDLE_WAIT);
                continue;
            }
            if !self.ending.input_ended && last_tick.elapsed() >= PROCESSING_TIME_TICK {
                last_tick = Instant::now();
                self.metrics.set_elapsed(started.elapsed());
                self.chain
                    .advance_processing_time(processing_time_now())
                    .map_err(|e| self.chain_failed(e))?;
            }
            let waiting = self.checkpointing.is_some()
                && self.ending.read_a_batch
                && self
                    .wait_for_checkpoints
                    .is_some_and(|n| self.ending.checkpoints_completed < n);
            match &mut self.input {
                TaskInput::Source(_) if self.ending.drained => self.end_source()?,
                TaskInput::Source(_) if waiting => self.mailbox.wait(IDLE_WAIT),
                TaskInput::Source(source) => {
                    batch.clear();
                    let read =
                        source
                            .next_batch(&mut batch, SOURCE_BATCH_BYTES)
                            .map_err(|error| TaskFailure::Source {
                                task: self.name.clone(),
                                error,
                            })?;
                    let more = read.more;
                    if let Some(cursor) = &self.split_cursor {
                        cursor.set(read.split, &source.unfinished_splits());
                    }
                    self.ending.read_a_batch = true;
                    self.metrics.add_records_in(read.records);
                    if !batch.is_empty() {
                        self.chain
                            .process_batch(batch.as_bytes())
                            .map_err(|e| self.chain_failed(e))?;
                    } else if more {
                        // An unbounded source with nothing new (a Kafka topic at its end):
                        // what the chain emitted so far must not wait for the next record.
                        self.chain.flush().map_err(|e| self.chain_failed(e))?;
                    }
                    if !more {
                        self.end_source()?;
                    }
                }
                TaskInput::Gate(gate, _) => {
                    let processor = processor.as_mut().expect("gate tasks have a processor");
                    let waiting = Instant::now();
                    let next = processor.next_item(gate, self.buffer_timeout);
                    self.metrics.add_idle(waiting.elapsed());
                    let Some((channel, item)) = next else {
                        // Nothing came for a buffer timeout: let partly filled output buffers
                        // go.
                        self.chain.flush().map_err(|e| self.chain_failed(e))?;
                        continue;
                    };
                    if let ChannelItem::Failed(reason) = item {
                        return Err(TaskFailure::Input {
                            task: self.name.clone(),
                            reason,
                        });
                    }
                    let (n, mut status) = processor
                        .process(channel, item, &mut self.chain)
                        .map_err(|e| self.chain_failed(e))?;
                    self.metrics.add_records_in(n);
                    self.metrics.set_watermark(processor.watermark());
                    loop {
                        match status {
                            InputStatus::More => break,
                            InputStatus::EndOfData => self.end_input()?,
                            InputStatus::Aligned(barrier) => {
                                self.checkpoint(barrier, processor.last_alignment())?
                            }
                            InputStatus::Ended => {
                                self.ending.channels_ended = true;
                                break;
                            }
                        }
                        status = processor.status();
                    }
                }
            }
        }
    }

    /// Takes the barrier's checkpoint: the synchronous part (operators snapshot, the barrier
    /// goes downstream) on this thread; the state files are written to the barrier's location,
    /// and the acknowledgement sent, on another, while records keep flowing. A checkpoint
    /// abandoned meanwhile has lost its directory: the write fails, and the coordinator ignores
    /// the refusal of a checkpoint it no longer waits for.
    fn checkpoint(&mut self, barrier: Barrier, alignment: Duration) -> Result<(), TaskFailure> {
        let id = barrier.id;
        let Some(cp) = &self.checkpointing else {
            return Ok(());
        };
        let position = match (&mut self.input, &cp.source) {
            (TaskInput::Source(reader), Some(source)) => {
                reader.barrier(id);
                vec![SourceState {
                    source: source.clone(),
                    subtask: cp.subtask,
                    remaining: reader.position(),
                }]
            }
            _ => Vec::new(),
        };
        let (index, master) = (cp.index, cp.master.clone());
        let snapshots = self
            .chain
            .snapshot(&barrier)
            .map_err(|e| self.chain_failed(e))?;
        let dir = barrier.location;
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot {id}"))
            .spawn(move || {
                let event = match write_snapshots(&dir, &snapshots) {
                    Ok((handles, bytes)) => CoordinatorEvent::Ack(Ack {
                        checkpoint: id,
                        location: dir.to_path_buf(),
                        task: index,
                        handles,
                        sources: position,
                        bytes,
                        alignment,
                    }),
                    Err(reason) => CoordinatorEvent::Declined {
                        checkpoint: id,
                        task: index,
                        reason,
                    },
                };
                master.checkpoint_event(event);
            });
        spawned.map(|_| ()).map_err(|e| {
            self.chain_failed(StreamError::Output(format!(
                "cannot start the snapshot writer: {e}"
            )))
        })
    }
}

/// Writes one state file per operator snapshot into `dir`; returns their handles and size.
fn write_snapshots(
    dir: &Path,
    snapshots: &[OperatorSnapshot],
) -> Result<(Vec<StateHandle>, u64), String> {
    let mut handles = Vec::with_capacity(snapshots.len());
    let mut total = 0;
    for snapshot in snapshots {
        let file = format!("{}-{}.state", snapshot.operator, snapshot.subtask);
        let bytes = encode_state_file(snapshot);
        write_atomically(&dir.join(&file), &bytes).map_err(|e| format!("writing `{file}`: {e}"))?;
        total += bytes.len() as u64;
        handles.push(StateHandle {
            operator: snapshot.operator.clone(),
            subtask: snapshot.subtask,
            parallelism: snapshot.parallelism,
            file,
            bytes: bytes.len() as u64,
            crc32: crate::checkpoint::storage::state_file_crc(&bytes),
        });
    }
    Ok((handles, total))
}
