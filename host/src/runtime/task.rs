//! A task: one subtask of a vertex, on its own thread, running Flink's mailbox loop. Control
//! mails (cancel, actions from other threads) are taken between steps of the default action,
//! which reads input (a source split or the input gate) and pushes it through the chain.
//!
//! Life of a task:
//! 1. its thread opens the chain (instantiating the operators) and the input;
//! 2. the loop runs until the input ends: a source then emits the final watermark (end of
//!    event time, which fires every event-time timer), a gate passes on the watermarks and
//!    end-of-partition of its channels;
//! 3. the chain finishes (operators close in order, the tail sends end-of-partition);
//! 4. on cancel, or on any failure, the loop stops at once and the task reports why.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chain::OperatorChain;
use super::input::{InputProcessor, InputStatus};
use super::output::ChainError;
use crate::connectors::{SourceError, SourceReader};
use crate::metrics::TaskMetrics;
use crate::network::{CancelFlag, InputGate};
use crate::state::processing_time_now;

/// A control action run on the task thread between steps of the default action.
pub type MailAction = Box<dyn FnOnce(&mut OperatorChain) -> Result<(), ChainError> + Send>;

/// A control mail.
pub enum Mail {
    /// Stop as soon as possible.
    Cancel,
    /// Run an action with the chain (checkpoint triggers come this way).
    Action(MailAction),
}

/// The queue of control mails of one task.
#[derive(Default)]
pub struct Mailbox {
    mails: Mutex<VecDeque<Mail>>,
    pending: AtomicBool,
}

impl Mailbox {
    pub fn send(&self, mail: Mail) {
        self.mails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(mail);
        self.pending.store(true, Ordering::Release);
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
    Gate(InputGate),
}

/// Why a task stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("task {task} failed: {error}")]
    Chain { task: String, error: ChainError },
    #[error("task {task} failed: {error}")]
    Source { task: String, error: SourceError },
    #[error("task {task} was cancelled")]
    Cancelled { task: String },
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
}

impl Task {
    /// Runs the mailbox loop to the end of the input.
    pub fn run(mut self) -> Result<(), TaskFailure> {
        let started = Instant::now();
        let result = self.run_loop(started);
        self.metrics.set_elapsed(started.elapsed());
        result
    }

    fn chain_failed(&self, error: ChainError) -> TaskFailure {
        if self.cancel.is_cancelled() {
            return TaskFailure::Cancelled {
                task: self.name.clone(),
            };
        }
        TaskFailure::Chain {
            task: self.name.clone(),
            error,
        }
    }

    fn run_loop(&mut self, started: Instant) -> Result<(), TaskFailure> {
        let mut processor = match &self.input {
            TaskInput::Gate(gate) => Some(InputProcessor::new(gate.channels())),
            TaskInput::Source(_) => None,
        };
        let mut batch = Vec::with_capacity(SOURCE_BATCH_BYTES + 1024);
        let mut last_tick = Instant::now();
        loop {
            while let Some(mail) = self.mailbox.take() {
                match mail {
                    Mail::Cancel => {
                        return Err(TaskFailure::Cancelled {
                            task: self.name.clone(),
                        });
                    }
                    Mail::Action(action) => {
                        action(&mut self.chain).map_err(|e| self.chain_failed(e))?
                    }
                }
            }
            if self.cancel.is_cancelled() {
                return Err(TaskFailure::Cancelled {
                    task: self.name.clone(),
                });
            }
            if last_tick.elapsed() >= PROCESSING_TIME_TICK {
                last_tick = Instant::now();
                self.metrics.set_elapsed(started.elapsed());
                self.chain
                    .advance_processing_time(processing_time_now())
                    .map_err(|e| self.chain_failed(e))?;
            }
            let ended = match &mut self.input {
                TaskInput::Source(source) => {
                    batch.clear();
                    let more =
                        source
                            .next_batch(&mut batch, SOURCE_BATCH_BYTES)
                            .map_err(|error| TaskFailure::Source {
                                task: self.name.clone(),
                                error,
                            })?;
                    let n = weir_framing::count_records(&batch).unwrap_or(0) as u64;
                    self.metrics.add_records_in(n);
                    if !batch.is_empty() {
                        self.chain
                            .process_batch(&batch)
                            .map_err(|e| self.chain_failed(e))?;
                    }
                    if !more {
                        // A bounded source ends event time: every event-time timer fires.
                        self.chain
                            .emit_watermark(i64::MAX)
                            .map_err(|e| self.chain_failed(e))?;
                    }
                    !more
                }
                TaskInput::Gate(gate) => {
                    let waiting = Instant::now();
                    match gate.poll(self.buffer_timeout) {
                        None => {
                            self.metrics.add_idle(waiting.elapsed());
                            // Nothing came for a buffer timeout: let partly filled output
                            // buffers go.
                            self.chain.flush().map_err(|e| self.chain_failed(e))?;
                            false
                        }
                        Some((channel, item)) => {
                            self.metrics.add_idle(waiting.elapsed());
                            let processor =
                                processor.as_mut().expect("gate tasks have a processor");
                            let (n, status) = processor
                                .process(channel, item, &mut self.chain)
                                .map_err(|e| self.chain_failed(e))?;
                            self.metrics.add_records_in(n);
                            status == InputStatus::Ended
                        }
                    }
                }
            };
            if ended {
                self.chain.finish().map_err(|e| self.chain_failed(e))?;
                return Ok(());
            }
        }
    }
}
