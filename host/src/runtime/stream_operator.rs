//! The stream operator (Flink's `AbstractStreamOperator`): what every operator of a chain does
//! the same way, whatever runs its user function. It owns the function's [`FunctionContext`]
//! (keyed state, timers, watermark, output), restores it by key-group range, gathers records
//! that arrive one at a time into batches for functions that take batches, and keeps the order
//! of events:
//!
//! 1. on a watermark: process pending records, fire due event-time timers (each an `on_timer`
//!    call), call `on_watermark`, then pass the watermark on;
//! 2. on processing time: process pending records, fire due processing-time timers;
//! 3. on a checkpoint: process pending records, take the function's own state, then copy keyed
//!    state and timers, then pass the barrier on;
//! 4. at the end of input: process pending records, `close`, then end the output's input.

use std::sync::Arc;

use weir_framing::Record;

use crate::state::key_groups::{key_group_of, key_group_range};
use crate::state::{KeyedStateBackend, OperatorSnapshot, StateError, TimeDomain};
use crate::stream::{
    Barrier, FailureClass, FunctionContext, OperatorIdentity, Output, StreamError, UserFunction,
};
use crate::wasm::{LoadedComponent, OperatorSpec, WasmFunction, WasmRuntime};

/// An operator subtask's keyed state could not be restored (it is over the state limit).
#[derive(Debug, thiserror::Error)]
#[error("operator `{operator}` (subtask {subtask}) cannot restore its keyed state: {error}")]
pub struct RestoreStateError {
    pub operator: String,
    pub subtask: u32,
    pub error: StateError,
}

/// One operator subtask of a chain. See the module docs.
pub struct StreamOperator<F: UserFunction> {
    function: F,
    ctx: FunctionContext,
    identity: OperatorIdentity,
    parallelism: u32,
    /// Records that arrived one at a time, for a function that takes batches.
    pending: Vec<u8>,
    /// Bytes of pending records that make a batch.
    batch_bytes: usize,
}

/// A wasm operator: the stream operator over a component instance.
pub type WasmOperator = StreamOperator<WasmFunction>;

impl WasmOperator {
    /// Instantiates `component` for `spec` in front of `output`, restored from `restore` (the
    /// snapshots whose key groups overlap this subtask's; the guest's own state only from a
    /// single snapshot of the same parallelism: the job master refuses to rescale an operator
    /// that has any).
    pub fn open(
        runtime: &WasmRuntime,
        component: Arc<LoadedComponent>,
        spec: OperatorSpec,
        output: Box<dyn Output>,
        restore: Option<&[OperatorSnapshot]>,
    ) -> Result<Self, StreamError> {
        let identity = OperatorIdentity {
            operator: spec.id.clone(),
            subtask: spec.subtask_index,
        };
        let state = KeyedStateBackend::new(spec.max_parallelism, spec.limits.max_states)
            .with_max_bytes(spec.limits.max_state_bytes);
        let mut ctx = FunctionContext::new(state, output);
        if let Some(snapshots) = restore {
            restore_keyed(&mut ctx, &spec, snapshots).map_err(|error| StreamError::Operator {
                identity: identity.clone(),
                class: FailureClass::User,
                failure: Box::new(RestoreStateError {
                    operator: spec.id.clone(),
                    subtask: spec.subtask_index,
                    error,
                }),
            })?;
        }
        let guest_state = match restore {
            Some([snapshot]) if snapshot.parallelism == spec.parallelism => {
                Some(snapshot.guest_state.as_slice())
            }
            _ => None,
        };
        let function = WasmFunction::open(runtime, component, &spec, &mut ctx, guest_state)?;
        Ok(StreamOperator {
            function,
            ctx,
            identity,
            parallelism: spec.parallelism,
            pending: Vec::new(),
            batch_bytes: spec.batch_bytes,
        })
    }
}

/// Takes the key groups of this subtask from each snapshot's keyed state and timers.
fn restore_keyed(
    ctx: &mut FunctionContext,
    spec: &OperatorSpec,
    snapshots: &[OperatorSnapshot],
) -> Result<(), StateError> {
    let range = key_group_range(spec.subtask_index, spec.max_parallelism, spec.parallelism);
    let keyed: Vec<_> = snapshots.iter().map(|s| s.keyed.clone()).collect();
    ctx.state.restore(&keyed, range.clone())?;
    for snapshot in snapshots {
        ctx.timers.restore(&snapshot.timers, |key| {
            range.contains(&key_group_of(key, spec.max_parallelism))
        });
    }
    Ok(())
}

impl<F: UserFunction> StreamOperator<F> {
    /// The user function.
    pub fn function(&self) -> &F {
        &self.function
    }

    /// Whether records go to the function a batch at a time.
    pub fn uses_batches(&self) -> bool {
        self.function.takes_batches()
    }

    /// Number of keys in the operator's keyed state.
    pub fn keyed_state_keys(&self) -> usize {
        self.ctx.state.key_count()
    }

    fn flush_pending(&mut self) -> Result<(), StreamError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let result = self.function.process_batch(&mut self.ctx, &pending);
        self.pending = pending;
        self.pending.clear();
        result
    }

    fn fire_timers(&mut self, domain: TimeDomain, time: i64) -> Result<(), StreamError> {
        while let Some((timestamp, key)) = self.ctx.timers.pop_due(domain, time) {
            self.function
                .on_timer(&mut self.ctx, domain, &key, timestamp)?;
        }
        Ok(())
    }
}

impl<F: UserFunction> Output for StreamOperator<F> {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        if !self.function.takes_batches() {
            return self.function.process_record(&mut self.ctx, record);
        }
        record.write_to(&mut self.pending);
        if self.pending.len() >= self.batch_bytes {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn collect_second_batch(&mut self, records: &[u8]) -> Result<(), StreamError> {
        // The first input's records that came before go first.
        self.flush_pending()?;
        self.function.process_second_batch(&mut self.ctx, records)
    }

    fn collect_batch(&mut self, records: &[u8]) -> Result<(), StreamError> {
        if !self.function.takes_batches() {
            for record in weir_framing::records(records) {
                let record =
                    record.map_err(|e| StreamError::Output(format!("malformed batch: {e}")))?;
                self.function.process_record(&mut self.ctx, record)?;
            }
            return Ok(());
        }
        if self.pending.is_empty() {
            return self.function.process_batch(&mut self.ctx, records);
        }
        self.pending.extend_from_slice(records);
        self.flush_pending()
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        self.flush_pending()?;
        if watermark <= self.ctx.watermark {
            return Ok(());
        }
        self.ctx.watermark = watermark;
        self.fire_timers(TimeDomain::EventTime, watermark)?;
        self.function.on_watermark(&mut self.ctx, watermark)?;
        self.ctx.output.emit_watermark(watermark)
    }

    fn emit_watermark_status(&mut self, idle: bool) -> Result<(), StreamError> {
        self.flush_pending()?;
        self.ctx.output.emit_watermark_status(idle)
    }

    fn advance_processing_time(&mut self, now: i64) -> Result<(), StreamError> {
        self.flush_pending()?;
        self.fire_timers(TimeDomain::ProcessingTime, now)?;
        self.ctx.output.advance_processing_time(now)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.flush_pending()?;
        self.ctx.output.flush()
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        self.flush_pending()?;
        let guest_state = self.function.snapshot_state(&mut self.ctx)?;
        into.push(OperatorSnapshot {
            operator: self.identity.operator.clone(),
            subtask: self.identity.subtask,
            parallelism: self.parallelism,
            guest_state,
            keyed: self.ctx.state.snapshot(),
            timers: self.ctx.timers.snapshot(),
        });
        self.ctx.output.snapshot(barrier, into)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        self.ctx.output.notify_checkpoint_complete(checkpoint)
    }

    fn end_input(&mut self) -> Result<(), StreamError> {
        if self.ctx.closed {
            return Ok(());
        }
        self.flush_pending()?;
        self.function.close(&mut self.ctx)?;
        self.ctx.closed = true;
        self.ctx.output.flush()?;
        self.ctx.output.end_input()
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.end_input()?;
        self.ctx.output.finish()
    }
}
