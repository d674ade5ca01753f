//! Where an operator's records go: the next operator of the chain, or the chain's tail (the
//! record writer of the task, a collecting output in tests). Mirrors Flink's `Output`: records,
//! watermarks and lifecycle calls travel down the chain through the same interface.

use std::sync::{Arc, Mutex, MutexGuard};

use weir_framing::{OwnedRecord, Record};

use crate::metrics::TaskMetrics;
use crate::state::OperatorSnapshot;
use crate::wasm::OperatorFailure;

/// Why a chain stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// An operator failed; the failure names it.
    #[error(transparent)]
    Operator(Box<OperatorFailure>),
    /// The chain's tail could not take records.
    #[error("the chain's output failed: {0}")]
    Output(String),
}

impl From<OperatorFailure> for ChainError {
    fn from(f: OperatorFailure) -> Self {
        ChainError::Operator(Box::new(f))
    }
}

/// The receiving end of an operator: the next operator, or the chain's tail.
pub trait Output: Send {
    /// One record.
    fn collect(&mut self, record: Record<'_>) -> Result<(), ChainError>;

    /// A framed batch of records. The default takes them one by one; batch-aware outputs
    /// override it to pass the buffer on whole.
    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), ChainError> {
        for record in weir_framing::records(batch) {
            let record = record.map_err(|e| ChainError::Output(format!("malformed batch: {e}")))?;
            self.collect(record)?;
        }
        Ok(())
    }

    /// The event-time watermark advanced.
    fn emit_watermark(&mut self, watermark: i64) -> Result<(), ChainError>;

    /// Processing time advanced to `now` (milliseconds since the epoch).
    fn advance_processing_time(&mut self, now: i64) -> Result<(), ChainError> {
        let _ = now;
        Ok(())
    }

    /// Processes whatever is buffered, so nothing emitted so far stays behind.
    fn flush(&mut self) -> Result<(), ChainError> {
        Ok(())
    }

    /// Checkpoint `checkpoint`: adds the snapshots of this output and everything after it, in
    /// chain order, and passes the barrier on (the record writer sends it to the next tasks).
    fn snapshot(
        &mut self,
        checkpoint: u64,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), ChainError> {
        let _ = (checkpoint, into);
        Ok(())
    }

    /// Checkpoint `checkpoint` is complete: transactional sinks commit what it covers.
    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), ChainError> {
        let _ = checkpoint;
        Ok(())
    }

    /// The input has ended: operators close and emit what is left, and the tail tells the
    /// next tasks that no records follow. The chain stays open for barriers: a job with
    /// checkpoints takes its final checkpoint after this and before `finish`. Operators that
    /// pass records on must pass this on too; a tail may ignore it.
    fn end_input(&mut self) -> Result<(), ChainError> {
        Ok(())
    }

    /// The task is done (after `end_input`, and with checkpoints after the final checkpoint):
    /// release resources; the tail ends its partitions. Implementations call `end_input`
    /// first if it has not run.
    fn finish(&mut self) -> Result<(), ChainError> {
        Ok(())
    }
}

/// Drops everything, counting it: the discard sink.
#[derive(Debug, Default)]
pub struct DiscardOutput {
    metrics: Arc<TaskMetrics>,
}

impl DiscardOutput {
    pub fn new(metrics: Arc<TaskMetrics>) -> Self {
        DiscardOutput { metrics }
    }
}

impl Output for DiscardOutput {
    fn collect(&mut self, _: Record<'_>) -> Result<(), ChainError> {
        self.metrics.add_records_out(1);
        Ok(())
    }
    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), ChainError> {
        let n = weir_framing::count_records(batch)
            .map_err(|e| ChainError::Output(format!("malformed batch: {e}")))?;
        self.metrics.add_records_out(n as u64);
        Ok(())
    }
    fn emit_watermark(&mut self, _: i64) -> Result<(), ChainError> {
        Ok(())
    }
}

/// What a [`CollectingOutput`] received.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CollectedOutput {
    pub records: Vec<OwnedRecord>,
    pub watermarks: Vec<i64>,
    pub finished: bool,
}

/// Keeps every record and watermark, readable through a handle while the chain owns the output.
#[derive(Debug, Clone, Default)]
pub struct CollectingOutput {
    inner: Arc<Mutex<CollectedOutput>>,
}

impl CollectingOutput {
    pub fn new() -> Self {
        Self::default()
    }

    /// What has been received so far.
    pub fn lock(&self) -> MutexGuard<'_, CollectedOutput> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the records received so far.
    pub fn take_records(&self) -> Vec<OwnedRecord> {
        std::mem::take(&mut self.lock().records)
    }
}

impl Output for CollectingOutput {
    fn collect(&mut self, record: Record<'_>) -> Result<(), ChainError> {
        self.lock().records.push(record.into());
        Ok(())
    }
    fn emit_watermark(&mut self, watermark: i64) -> Result<(), ChainError> {
        self.lock().watermarks.push(watermark);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), ChainError> {
        self.lock().finished = true;
        Ok(())
    }
}
