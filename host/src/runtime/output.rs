//! Outputs of the runtime: the adapter that makes the network's record writer a chain's tail,
//! and a collecting output for tests.

use std::sync::{Arc, Mutex, MutexGuard};

use weir_framing::{OwnedRecord, Record};

use crate::network::{ChannelEvent, RecordWriter, WriteError};
use crate::state::OperatorSnapshot;
use crate::stream::{Barrier, Output, StreamError};

fn network_failed(e: WriteError) -> StreamError {
    StreamError::Output(e.to_string())
}

/// The tail of a chain whose records go to other tasks: records and batches into the record
/// writer, watermarks and barriers as events on every channel, the end of input as
/// end-of-data, the end of the task as end-of-partition.
pub struct NetworkOutput(pub RecordWriter);

impl Output for NetworkOutput {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.0.write_record(record).map_err(network_failed)
    }

    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        self.0.write_batch(batch).map_err(network_failed)
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        self.0
            .broadcast_event(ChannelEvent::Watermark(watermark))
            .map_err(network_failed)
    }

    fn emit_watermark_status(&mut self, idle: bool) -> Result<(), StreamError> {
        self.0
            .broadcast_event(ChannelEvent::WatermarkStatus { idle })
            .map_err(network_failed)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.0.flush_if_due().map_err(network_failed)
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        _: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        self.0
            .broadcast_event(ChannelEvent::Barrier {
                id: barrier.id,
                location: barrier.location.clone(),
            })
            .map_err(network_failed)
    }

    fn end_input(&mut self) -> Result<(), StreamError> {
        self.0.end_of_data().map_err(network_failed)
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.0.end_of_partition().map_err(network_failed)
    }
}

/// What a [`CollectingOutput`] received.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CollectedOutput {
    pub records: Vec<OwnedRecord>,
    pub watermarks: Vec<i64>,
    /// Watermark statuses, in order: `true` idle, `false` active again.
    pub statuses: Vec<bool>,
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
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.lock().records.push(record.into());
        Ok(())
    }
    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        self.lock().watermarks.push(watermark);
        Ok(())
    }
    fn emit_watermark_status(&mut self, idle: bool) -> Result<(), StreamError> {
        self.lock().statuses.push(idle);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StreamError> {
        self.lock().finished = true;
        Ok(())
    }
}
