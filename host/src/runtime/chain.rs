//! The operator chain of a task: operators joined by forward edges at equal parallelism, run in
//! one thread. Each operator owns the next as its [`Output`], so a record (or a whole batch)
//! passes from one to the next by a plain call, as in Flink's `OperatorChain`.
//!
//! The chain is built from its tail backwards (each operator needs its output to exist), and
//! opened in that order too, as Flink opens a chain's operators from the tail.

use std::sync::Arc;

use weir_framing::Record;

use super::stream_operator::WasmOperator;
use super::watermarks::{SplitCursor, WatermarkGenerator, WatermarkStrategy};
use crate::metrics::TaskMetrics;
use crate::state::OperatorSnapshot;
use crate::stream::{Barrier, Output, StreamError};
use crate::wasm::{LoadedComponent, OperatorSpec, WasmRuntime};

/// One wasm operator of a chain: the component it runs and how.
pub struct ChainSpec {
    pub component: Arc<LoadedComponent>,
    pub spec: OperatorSpec,
}

/// One operator of a chain, wasm or native.
pub enum ChainLink {
    Wasm(ChainSpec),
    /// A native operator by name, made by the process's [`NativeOperators`].
    Native(String),
    /// The watermark generator, with the task's split cursor if it is a source task.
    Watermarks {
        strategy: WatermarkStrategy,
        cursor: Option<SplitCursor>,
        metrics: Arc<TaskMetrics>,
    },
}

/// Operators written in Rust and built into the process that runs the tasks, by the name a
/// manifest gives in `native = "..."`. The runtime has none of its own: the benchmark brings
/// the native twins of its wasm operators, to price the wasm boundary.
pub trait NativeOperators: Send + Sync {
    /// A new instance of operator `name` passing its results to `next`.
    fn create(&self, name: &str, next: Box<dyn Output>) -> Result<Box<dyn Output>, StreamError>;
}

/// A chain of operators ending in an output.
pub struct OperatorChain {
    head: Box<dyn Output>,
    operators: Vec<String>,
    batched: Vec<bool>,
}

impl OperatorChain {
    /// Instantiates and opens `operators` in chain order, in front of `tail`. `restore` holds a
    /// snapshot per operator, in chain order, when the chain resumes from a checkpoint.
    pub fn open(
        runtime: &WasmRuntime,
        operators: Vec<ChainSpec>,
        tail: Box<dyn Output>,
        restore: Option<&[OperatorSnapshot]>,
    ) -> Result<Self, StreamError> {
        let links = operators.into_iter().map(ChainLink::Wasm).collect();
        let restore: Option<Vec<Vec<OperatorSnapshot>>> =
            restore.map(|s| s.iter().map(|one| vec![one.clone()]).collect());
        Self::open_links(runtime, None, links, tail, restore.as_deref())
    }

    /// Like [`OperatorChain::open`], for chains that mix wasm and native operators. Native
    /// operators keep no checkpointed state; `restore` holds, per wasm operator, the snapshots
    /// to restore it from (several when the job was rescaled).
    pub fn open_links(
        runtime: &WasmRuntime,
        natives: Option<&dyn NativeOperators>,
        operators: Vec<ChainLink>,
        tail: Box<dyn Output>,
        restore: Option<&[Vec<OperatorSnapshot>]>,
    ) -> Result<Self, StreamError> {
        let wasm_count = operators
            .iter()
            .filter(|l| matches!(l, ChainLink::Wasm(_)))
            .count();
        if let Some(snapshots) = restore
            && snapshots.len() != wasm_count
        {
            return Err(StreamError::Output(format!(
                "restoring a chain of {wasm_count} wasm operators from {} snapshots",
                snapshots.len()
            )));
        }
        let names = operators
            .iter()
            .map(|o| match o {
                ChainLink::Wasm(w) => w.spec.operator.clone(),
                ChainLink::Native(n) => n.clone(),
                ChainLink::Watermarks { .. } => "watermarks".into(),
            })
            .collect();
        let mut batched = vec![false; operators.len()];
        let mut next = tail;
        let mut wasm_index = wasm_count;
        for (i, link) in operators.into_iter().enumerate().rev() {
            next = match link {
                ChainLink::Wasm(op) => {
                    wasm_index -= 1;
                    let snapshot = restore.map(|s| s[wasm_index].as_slice());
                    let operator =
                        WasmOperator::open(runtime, op.component, op.spec, next, snapshot)?;
                    batched[i] = operator.uses_batches();
                    Box::new(operator)
                }
                ChainLink::Native(name) => {
                    batched[i] = true;
                    let natives = natives.ok_or_else(|| {
                        StreamError::Output(format!(
                            "the job asks for native operator `{name}`, but this runtime has no \
                             native operators"
                        ))
                    })?;
                    natives.create(&name, next)?
                }
                ChainLink::Watermarks {
                    strategy,
                    cursor,
                    metrics,
                } => {
                    batched[i] = true;
                    Box::new(WatermarkGenerator::new(next, strategy, cursor, metrics))
                }
            };
        }
        Ok(OperatorChain {
            head: next,
            operators: names,
            batched,
        })
    }

    /// Operator names in chain order.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    /// Per operator, whether it runs on the batched path.
    pub fn batched(&self) -> &[bool] {
        &self.batched
    }

    /// Runs a framed batch of input records through the chain, to the tail.
    pub fn process_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        self.head.collect_batch(batch)?;
        self.head.flush()
    }

    /// Runs a framed batch of the second input through the chain's head, a two-input operator.
    pub fn process_second_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        self.head.collect_second_batch(batch)?;
        self.head.flush()
    }

    /// Runs one record through the chain, to the tail.
    pub fn process_record(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.head.collect(record)?;
        self.head.flush()
    }

    /// Processes whatever operators hold pending; the tail sends what is due.
    pub fn flush(&mut self) -> Result<(), StreamError> {
        self.head.flush()
    }

    /// Advances the watermark through the chain, firing due event-time timers on the way.
    pub fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        self.head.emit_watermark(watermark)?;
        self.head.flush()
    }

    /// The task's input went idle or active again.
    pub fn emit_watermark_status(&mut self, idle: bool) -> Result<(), StreamError> {
        self.head.emit_watermark_status(idle)?;
        self.head.flush()
    }

    /// Advances processing time, firing due processing-time timers.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<(), StreamError> {
        self.head.advance_processing_time(now)?;
        self.head.flush()
    }

    /// Snapshots every operator for checkpoint `checkpoint`, in chain order, after processing
    /// everything before the barrier; the tail passes the barrier on.
    pub fn snapshot(&mut self, barrier: &Barrier) -> Result<Vec<OperatorSnapshot>, StreamError> {
        let mut snapshots = Vec::with_capacity(self.operators.len());
        self.head.snapshot(barrier, &mut snapshots)?;
        Ok(snapshots)
    }

    /// Tells every operator and the tail that checkpoint `checkpoint` completed.
    pub fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        self.head.notify_checkpoint_complete(checkpoint)
    }

    /// Ends the input: every operator closes, in chain order, and the tail sends end-of-data.
    pub fn end_input(&mut self) -> Result<(), StreamError> {
        self.head.end_input()
    }

    /// Finishes the chain (ending the input first if that has not happened): the tail ends its
    /// partitions or closes its sink.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.head.finish()
    }
}
