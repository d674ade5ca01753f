//! The operator contract: what every operator and every chain tail implements, and how they
//! fail. It sits below the runtime, the network stack, the wasm layer and the connectors, and
//! names none of them: a wasm operator, a native one, a sink and the network adapter all speak
//! [`Output`] and [`StreamError`], and the runtime drives them without knowing which is which.
//! Operator snapshots are [`crate::state::OperatorSnapshot`], from the state layer below.

use std::path::Path;
use std::sync::Arc;

use weir_framing::Record;

use crate::state::{KeyedStateBackend, OperatorSnapshot, TimeDomain, TimerService};

/// A checkpoint barrier: which checkpoint, and where its state goes. The location travels with
/// the barrier from the coordinator through every task, so no task needs a shared table of
/// where checkpoints are written (it could not share one across processes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barrier {
    pub id: u64,
    /// The checkpoint's directory (`chk-<n>`, or a savepoint's).
    pub location: Arc<Path>,
}

impl Barrier {
    pub fn new(id: u64, location: &Path) -> Self {
        Barrier {
            id,
            location: Arc::from(location),
        }
    }

    /// A barrier whose snapshots the caller keeps rather than writes (tests, benchmarks).
    pub fn in_memory(id: u64) -> Self {
        Barrier::new(id, Path::new(""))
    }
}

/// Who is to blame for a failure: what the restart strategy and the user need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The operator's own code, or its input: a restart replays the same input, so it helps
    /// only if the failure does not repeat.
    User,
    /// Something outside the job: a file system, a network, a sink.
    External,
    /// The runtime itself (an instance that cannot be created, a broken invariant).
    Internal,
}

/// Which operator subtask failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorIdentity {
    /// The operator's node id in the job.
    pub operator: String,
    pub subtask: u32,
}

/// Why a chain stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// An operator failed. `failure` says how, in the words of the layer that runs it (a wasm
    /// operator's is a `wasm::OperatorFailure`, which [`StreamError::failure`] downcasts to);
    /// it is part of the message, not a `source`, so it is printed once.
    #[error("{failure}")]
    Operator {
        identity: OperatorIdentity,
        class: FailureClass,
        failure: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The chain's tail could not take records.
    #[error("the chain's output failed: {0}")]
    Output(String),
}

impl StreamError {
    /// Who is to blame.
    pub fn class(&self) -> FailureClass {
        match self {
            StreamError::Operator { class, .. } => *class,
            StreamError::Output(_) => FailureClass::External,
        }
    }

    /// The operator's own failure, as the type of the layer that ran it.
    pub fn failure<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            StreamError::Operator { failure, .. } => failure.downcast_ref(),
            StreamError::Output(_) => None,
        }
    }
}

/// The receiving end of an operator: the next operator, or the chain's tail.
pub trait Output: Send {
    /// One record.
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError>;

    /// A framed batch of records. The default takes them one by one; batch-aware outputs
    /// override it to pass the buffer on whole.
    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        for record in weir_framing::records(batch) {
            let record =
                record.map_err(|e| StreamError::Output(format!("malformed batch: {e}")))?;
            self.collect(record)?;
        }
        Ok(())
    }

    /// Records of the second input of a two-input operator, which heads its chain. The default
    /// refuses: an output takes one input.
    fn collect_second_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        let _ = batch;
        Err(StreamError::Output(
            "a second input reached an operator that takes one".into(),
        ))
    }

    /// The event-time watermark advanced.
    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError>;

    /// The task went idle (`true`: the next tasks stop waiting for its watermark) or active
    /// again (Flink's `WatermarkStatus`). Operators that pass records on pass this on too.
    fn emit_watermark_status(&mut self, idle: bool) -> Result<(), StreamError> {
        let _ = idle;
        Ok(())
    }

    /// Processing time advanced to `now` (milliseconds since the epoch).
    fn advance_processing_time(&mut self, now: i64) -> Result<(), StreamError> {
        let _ = now;
        Ok(())
    }

    /// Processes whatever is buffered, so nothing emitted so far stays behind.
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    /// A checkpoint barrier: adds the snapshots of this output and everything after it, in
    /// chain order, and passes the barrier on (the record writer sends it to the next tasks).
    fn snapshot(
        &mut self,
        barrier: &Barrier,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        let _ = (barrier, into);
        Ok(())
    }

    /// Checkpoint `checkpoint` is complete: transactional sinks commit what it covers.
    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        let _ = checkpoint;
        Ok(())
    }

    /// The input has ended: operators close and emit what is left, and the tail tells the
    /// next tasks that no records follow. The chain stays open for barriers: a job with
    /// checkpoints takes its final checkpoint after this and before `finish`. Operators that
    /// pass records on must pass this on too; a tail may ignore it.
    fn end_input(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    /// The task is done (after `end_input`, and with checkpoints after the final checkpoint):
    /// release resources; the tail ends its partitions. Implementations call `end_input`
    /// first if it has not run.
    fn finish(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
}

/// What a user function reaches while it is called: its operator subtask's keyed state and
/// timers, its event-time watermark, and where its records go. The stream operator owns it and
/// lends it to the function for each call.
///
/// It moves into a wasm store and back for every call, so its bulky parts are boxed: a move is
/// a copy of a few words.
pub struct FunctionContext {
    pub state: Box<KeyedStateBackend>,
    pub timers: Box<TimerService>,
    /// The operator's event-time watermark; `i64::MIN` before the first.
    pub watermark: i64,
    pub output: Box<dyn Output>,
    /// `close` returned: the input ended and the operators after this one have closed, so a
    /// record emitted now would reach nobody.
    pub closed: bool,
}

impl FunctionContext {
    pub fn new(state: KeyedStateBackend, output: Box<dyn Output>) -> Self {
        FunctionContext {
            state: Box::new(state),
            timers: Box::default(),
            watermark: i64::MIN,
            output,
            closed: false,
        }
    }

    /// A context with nothing in it, to stand in while the real one is lent out.
    pub fn empty() -> Self {
        Self::new(KeyedStateBackend::new(1, 0), Box::new(Nowhere))
    }
}

/// The output of an empty [`FunctionContext`]: nothing may reach it.
struct Nowhere;

impl Output for Nowhere {
    fn collect(&mut self, _: Record<'_>) -> Result<(), StreamError> {
        Err(StreamError::Output(
            "a record was emitted outside a call of its operator".into(),
        ))
    }
    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }
}

/// What an operator does, without the machinery every operator shares (the stream operator
/// owns that). A wasm component implements it, one instance per operator subtask; so can
/// native and host-side operators. Records a call emits go to `ctx.output`.
pub trait UserFunction: Send {
    /// Whether records go in a batch at a time ([`process_batch`](Self::process_batch)) rather
    /// than one by one.
    fn takes_batches(&self) -> bool;
    /// Every record of a framed batch, in order.
    fn process_batch(&mut self, ctx: &mut FunctionContext, batch: &[u8])
    -> Result<(), StreamError>;
    /// One record.
    fn process_record(
        &mut self,
        ctx: &mut FunctionContext,
        record: Record<'_>,
    ) -> Result<(), StreamError>;
    /// Every record of a framed batch of the second input (two-input operators). The default
    /// refuses: most functions take one input.
    fn process_second_batch(
        &mut self,
        ctx: &mut FunctionContext,
        batch: &[u8],
    ) -> Result<(), StreamError> {
        let _ = (ctx, batch);
        Err(StreamError::Output(
            "a second input reached an operator that takes one".into(),
        ))
    }
    /// A timer of `key` is due at `timestamp`.
    fn on_timer(
        &mut self,
        ctx: &mut FunctionContext,
        domain: TimeDomain,
        key: &[u8],
        timestamp: i64,
    ) -> Result<(), StreamError>;
    /// The watermark advanced (due event-time timers have fired).
    fn on_watermark(
        &mut self,
        ctx: &mut FunctionContext,
        watermark: i64,
    ) -> Result<(), StreamError>;
    /// The state the function keeps itself, for a checkpoint; keyed state must be in
    /// `ctx.state` when this returns.
    fn snapshot_state(&mut self, ctx: &mut FunctionContext) -> Result<Vec<u8>, StreamError>;
    /// The input ended: last chance to emit.
    fn close(&mut self, ctx: &mut FunctionContext) -> Result<(), StreamError>;
}
