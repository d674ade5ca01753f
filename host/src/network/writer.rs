//! The record writer: the tail of a chain whose records go to other tasks. One
//! [`PartitionWriter`] per outgoing edge picks channels (forward, round robin, key group,
//! all) and copies records into the channel's current buffer; a full buffer is sent at once, a
//! partly filled one on flush, on a watermark, at the end, and when the buffer timeout passes.
//! Records span buffers when they do not fit. A broadcast record is written once into a buffer
//! that every channel shares.
//!
//! Records of edges that pick a channel per record (rebalance, key groups), and records
//! written one at a time, first collect in a staging batch per channel of at most about one
//! buffer, so records of one shape stay in blocks on their way to the consumer (see
//! `weir_framing::BatchWriter`); a full staging batch moves into buffers in one copy. Whole
//! batches on forward and broadcast edges go into buffers as they are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_framing::{BatchWriter, Item, Record};

use super::CancelFlag;
use super::buffer::{Buffer, LocalBufferPool};
use super::gate::{ChannelEvent, ChannelItem, ChannelSender};
use crate::metrics::TaskMetrics;
use crate::state::key_groups::{key_group_of, subtask_for_key_group};

/// Why the network could not take records.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The job was cancelled while the writer waited for a buffer.
    #[error("the job was cancelled")]
    Cancelled,
    /// A record without a key reached a key-group edge.
    #[error("a record without a key reached the hash edge {edge}; key the records first (key_by)")]
    MissingKey { edge: String },
    /// A batch handed to the writer is not in the record framing.
    #[error("malformed batch: {0}")]
    Malformed(weir_framing::FramingError),
}

/// How a partition writer picks channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelSelector {
    /// The one channel to the consumer subtask with the producer's index.
    Forward,
    /// Round robin, record by record.
    Rebalance,
    /// Key bytes -> key group -> consumer subtask.
    KeyGroups { max_parallelism: u32 },
    /// Every channel, through one shared buffer.
    Broadcast,
}

/// Writes the records of one edge into its channels.
pub struct PartitionWriter {
    edge: String,
    selector: ChannelSelector,
    channels: Vec<ChannelSender>,
    pool: Arc<LocalBufferPool>,
    /// Per channel (one shared slot for broadcast): the buffer being filled.
    current: Vec<Option<Buffer>>,
    next_channel: usize,
    /// For key-group edges: the channel of every key group, so routing a record costs a hash
    /// and a lookup instead of two divisions.
    channel_of_group: Vec<u32>,
    /// Per channel (one for forward and broadcast): records not yet in a buffer.
    staged: Vec<BatchWriter>,
    cancel: CancelFlag,
    metrics: Arc<TaskMetrics>,
}

impl PartitionWriter {
    /// `edge` names the edge in errors; `channels` are the consumer subtasks' senders in
    /// subtask order (just one for forward).
    pub fn new(
        edge: String,
        selector: ChannelSelector,
        channels: Vec<ChannelSender>,
        pool: Arc<LocalBufferPool>,
        cancel: CancelFlag,
        metrics: Arc<TaskMetrics>,
    ) -> Self {
        let slots = if selector == ChannelSelector::Broadcast {
            1
        } else {
            channels.len()
        };
        let channel_of_group = match selector {
            ChannelSelector::KeyGroups { max_parallelism } => (0..max_parallelism)
                .map(|group| subtask_for_key_group(group, max_parallelism, channels.len() as u32))
                .collect(),
            _ => Vec::new(),
        };
        PartitionWriter {
            edge,
            selector,
            channel_of_group,
            current: (0..slots).map(|_| None).collect(),
            channels,
            pool,
            next_channel: 0,
            staged: (0..slots).map(|_| BatchWriter::new()).collect(),
            cancel,
            metrics,
        }
    }

    fn select(&mut self, record: &Record<'_>) -> Result<usize, WriteError> {
        Ok(match self.selector {
            ChannelSelector::Forward | ChannelSelector::Broadcast => 0,
            ChannelSelector::Rebalance => {
                let c = self.next_channel;
                self.next_channel = (c + 1) % self.channels.len();
                c
            }
            ChannelSelector::KeyGroups { max_parallelism } => {
                let key = record.key.ok_or_else(|| self.missing_key())?;
                if self.channels.len() == 1 {
                    // Every key group belongs to the one consumer: no hash needed.
                    return Ok(0);
                }
                let group = key_group_of(key, max_parallelism);
                self.channel_of_group[group as usize] as usize
            }
        })
    }

    #[cold]
    fn missing_key(&self) -> WriteError {
        WriteError::MissingKey {
            edge: self.edge.clone(),
        }
    }

    /// Copies framed bytes into the buffers of slot `slot`, sending each buffer that fills.
    fn write_bytes(&mut self, slot: usize, mut bytes: &[u8]) -> Result<(), WriteError> {
        let segment = self.pool.segment_size();
        while !bytes.is_empty() {
            if self.current[slot].is_none() {
                let channel = (self.selector != ChannelSelector::Broadcast).then_some(slot);
                let (buffer, waited) = self
                    .pool
                    .request(channel, &self.cancel)
                    .map_err(|_| WriteError::Cancelled)?;
                if !waited.is_zero() {
                    self.metrics.add_backpressured(waited);
                }
                self.current[slot] = Some(buffer);
            }
            let buffer = self.current[slot].as_mut().expect("just filled");
            let data = buffer.data_mut();
            let n = (segment - data.len()).min(bytes.len());
            data.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if data.len() >= segment {
                self.send_slot(slot);
            }
        }
        Ok(())
    }

    fn send_slot(&mut self, slot: usize) {
        let Some(buffer) = self.current[slot].take() else {
            return;
        };
        if buffer.is_empty() {
            return;
        }
        let buffer = Arc::new(buffer);
        if self.selector == ChannelSelector::Broadcast {
            for channel in &self.channels {
                channel.send(ChannelItem::Buffer(buffer.clone()));
            }
        } else {
            self.channels[slot].send(ChannelItem::Buffer(buffer));
        }
    }

    fn picks_per_record(&self) -> bool {
        matches!(
            self.selector,
            ChannelSelector::Rebalance | ChannelSelector::KeyGroups { .. }
        )
    }

    fn write_record(&mut self, record: Record<'_>) -> Result<(), WriteError> {
        let slot = self.select(&record)?;
        self.stage(slot, record)
    }

    /// Adds a record to channel `slot`'s staging batch, moving the batch into buffers once it
    /// holds a buffer's worth.
    #[inline]
    fn stage(&mut self, slot: usize, record: Record<'_>) -> Result<(), WriteError> {
        self.staged[slot].push(record);
        if self.staged[slot].len() >= self.pool.segment_size() {
            self.unstage(slot)?;
        }
        Ok(())
    }

    fn unstage(&mut self, slot: usize) -> Result<(), WriteError> {
        if self.staged[slot].is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged[slot]);
        let result = self.write_bytes(slot, staged.as_bytes());
        self.staged[slot] = staged;
        self.staged[slot].clear();
        result
    }

    fn write_batch(&mut self, batch: &[u8]) -> Result<u64, WriteError> {
        if !self.picks_per_record() {
            let n = weir_framing::count_records(batch).map_err(WriteError::Malformed)?;
            // After single records written before it.
            self.unstage(0)?;
            self.write_bytes(0, batch)?;
            return Ok(n as u64);
        }
        if self.channels.len() == 1 {
            // One consumer: every record goes to it, as the batch is; only keys are checked.
            let (n, keyed) =
                weir_framing::count_keyed_records(batch).map_err(WriteError::Malformed)?;
            if matches!(self.selector, ChannelSelector::KeyGroups { .. }) && keyed < n {
                return Err(self.missing_key());
            }
            self.unstage(0)?;
            self.write_bytes(0, batch)?;
            return Ok(n as u64);
        }
        let mut items = weir_framing::items(batch);
        let mut n = 0;
        for item in &mut items {
            match item {
                Item::Record(record, _) => {
                    let slot = self.select(&record)?;
                    self.stage(slot, record)?;
                    n += 1;
                }
                // Entries go to their channels' staging blocks as they are.
                Item::Block(block) => {
                    let key_at = block.value_offset() - block.key_len().unwrap_or(0);
                    for entry in block.entries().chunks_exact(block.stride()) {
                        let slot = match self.selector {
                            ChannelSelector::KeyGroups { max_parallelism }
                                if block.key_len().is_some() =>
                            {
                                let key = &entry[key_at..block.value_offset()];
                                self.channel_of_group[key_group_of(key, max_parallelism) as usize]
                                    as usize
                            }
                            _ => self.select(&block.record(entry))?,
                        };
                        self.staged[slot].push_entry(&block, entry);
                        if self.staged[slot].len() >= self.pool.segment_size() {
                            self.unstage(slot)?;
                        }
                    }
                    n += block.len() as u64;
                }
            }
        }
        match items.fault() {
            None => Ok(n),
            Some(e) => Err(WriteError::Malformed(e.clone())),
        }
    }

    /// Sends every record written so far.
    fn flush(&mut self) -> Result<(), WriteError> {
        for slot in 0..self.staged.len() {
            self.unstage(slot)?;
        }
        for slot in 0..self.current.len() {
            self.send_slot(slot);
        }
        Ok(())
    }

    fn broadcast_event(&mut self, event: ChannelEvent) -> Result<(), WriteError> {
        self.flush()?;
        for channel in &self.channels {
            channel.send(ChannelItem::Event(event.clone()));
        }
        Ok(())
    }
}

/// The tail of a chain that feeds other tasks: one partition writer per outgoing edge.
pub struct RecordWriter {
    partitions: Vec<PartitionWriter>,
    buffer_timeout: Duration,
    oldest_unflushed: Option<Instant>,
    since_time_check: u32,
    metrics: Arc<TaskMetrics>,
    /// End-of-data went out.
    data_ended: bool,
}

impl RecordWriter {
    pub fn new(
        partitions: Vec<PartitionWriter>,
        buffer_timeout: Duration,
        metrics: Arc<TaskMetrics>,
    ) -> Self {
        RecordWriter {
            partitions,
            buffer_timeout,
            oldest_unflushed: None,
            since_time_check: 0,
            metrics,
            data_ended: false,
        }
    }

    /// Starts the buffer timeout, or sends partly filled buffers once the oldest unsent record
    /// waited it.
    fn send_if_due(&mut self) -> Result<(), WriteError> {
        let now = Instant::now();
        match self.oldest_unflushed {
            None => self.oldest_unflushed = Some(now),
            Some(t) if now.duration_since(t) >= self.buffer_timeout => {
                self.flush_all()?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Sends every partly filled buffer now.
    pub fn flush_all(&mut self) -> Result<(), WriteError> {
        for p in &mut self.partitions {
            p.flush()?;
        }
        self.oldest_unflushed = None;
        Ok(())
    }
}

impl RecordWriter {
    /// Writes one record to every outgoing edge.
    pub fn write_record(&mut self, record: Record<'_>) -> Result<(), WriteError> {
        for p in &mut self.partitions {
            p.write_record(record)?;
        }
        self.metrics.add_records_out(1);
        // Start the buffer timeout with the first unsent record, so records that trickle in
        // one at a time still leave within it.
        if self.oldest_unflushed.is_none() {
            self.oldest_unflushed = Some(Instant::now());
        }
        self.since_time_check += 1;
        if self.since_time_check >= 256 {
            self.since_time_check = 0;
            self.send_if_due()?;
        }
        Ok(())
    }

    /// Writes a framed batch to every outgoing edge.
    pub fn write_batch(&mut self, batch: &[u8]) -> Result<(), WriteError> {
        let mut n = 0;
        for p in &mut self.partitions {
            n = p.write_batch(batch)?;
        }
        self.metrics.add_records_out(n);
        self.send_if_due()
    }

    /// Sends an event on every channel of every edge, after the records written before it.
    pub fn broadcast_event(&mut self, event: ChannelEvent) -> Result<(), WriteError> {
        for p in &mut self.partitions {
            p.broadcast_event(event.clone())?;
        }
        self.oldest_unflushed = None;
        Ok(())
    }

    /// Sends partly filled buffers if the oldest record in them has waited the buffer timeout.
    /// (A chain's flush means "processed what was there", not "send now": buffers go out when
    /// full or when the timeout passes, so small input batches still fill whole buffers.)
    pub fn flush_if_due(&mut self) -> Result<(), WriteError> {
        if self.oldest_unflushed.is_some() {
            self.send_if_due()?;
        }
        Ok(())
    }

    /// Tells every consumer that no records follow (once); barriers still may.
    pub fn end_of_data(&mut self) -> Result<(), WriteError> {
        if !self.data_ended {
            self.data_ended = true;
            self.broadcast_event(ChannelEvent::EndOfData)?;
        }
        Ok(())
    }

    /// Ends every channel, after end-of-data if it has not gone out.
    pub fn end_of_partition(&mut self) -> Result<(), WriteError> {
        self.end_of_data()?;
        self.broadcast_event(ChannelEvent::EndOfPartition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{InputGate, NetworkBufferPool};
    use weir_framing::{BatchWriter, OwnedRecord};

    fn writer(selector: ChannelSelector, gate: &InputGate) -> PartitionWriter {
        let channels = gate.channels();
        let network = NetworkBufferPool::new(1024, 1024);
        let pool = LocalBufferPool::new(network, channels, 1024, 1024);
        PartitionWriter::new(
            "test".into(),
            selector,
            (0..channels).map(|c| gate.sender(c)).collect(),
            pool,
            CancelFlag::default(),
            Arc::new(TaskMetrics::default()),
        )
    }

    /// Writes `batch` through a writer with `selector` into `channels` channels of 1 KiB
    /// segments (so blocks span segments), and returns what each channel received, parsed,
    /// and the bytes sent in all.
    fn route(
        selector: ChannelSelector,
        channels: usize,
        batch: &[u8],
    ) -> (Vec<Vec<OwnedRecord>>, usize) {
        let gate = InputGate::new(channels);
        let mut writer = writer(selector, &gate);
        let n = writer.write_batch(batch).expect("write");
        assert_eq!(n as usize, weir_framing::count_records(batch).unwrap());
        writer.flush().expect("flush");
        let mut bytes = vec![Vec::new(); channels];
        while let Some((channel, item)) = gate.poll(Duration::ZERO) {
            if let ChannelItem::Buffer(buffer) = item {
                bytes[channel].extend_from_slice(buffer.bytes());
            }
        }
        let received = bytes
            .iter()
            .map(|b| {
                weir_framing::records(b)
                    .map(|r| OwnedRecord::from(r.expect("valid channel stream")))
                    .collect()
            })
            .collect();
        (received, bytes.iter().map(Vec::len).sum())
    }

    fn keyed_blocks(n: u64) -> (Vec<u8>, Vec<OwnedRecord>) {
        let mut writer = BatchWriter::new();
        let mut records = Vec::new();
        for x in 0..n {
            let record = OwnedRecord {
                value: x.to_le_bytes().to_vec(),
                key: Some((x % 7).to_le_bytes().to_vec()),
                timestamp: Some(x as i64),
            };
            writer.push(record.as_record());
            records.push(record);
        }
        (writer.into_vec(), records)
    }

    #[test]
    fn blocks_cross_forward_channels_whole_and_stay_blocks_per_key_group_channel() {
        let (batch, records) = keyed_blocks(1000);
        assert!(batch.len() < records.len() * records[0].as_record().framed_len());
        let (forward, sent) = route(ChannelSelector::Forward, 1, &batch);
        assert_eq!(forward, vec![records.clone()]);
        assert_eq!(sent, batch.len());
        let max_parallelism = 128;
        let (received, sent) = route(ChannelSelector::KeyGroups { max_parallelism }, 3, &batch);
        for (channel, got) in received.iter().enumerate() {
            let expected: Vec<_> = records
                .iter()
                .filter(|r| {
                    let group = key_group_of(r.key.as_deref().unwrap(), max_parallelism);
                    subtask_for_key_group(group, max_parallelism, 3) as usize == channel
                })
                .cloned()
                .collect();
            assert_eq!(got, &expected, "channel {channel}");
        }
        // Each channel's records still travel in blocks: fewer bytes than framed one by one.
        let framed: usize = records.iter().map(|r| r.as_record().framed_len()).sum();
        assert!(
            sent < framed * 3 / 4,
            "{sent} bytes sent for {framed} framed"
        );
    }

    #[test]
    fn a_key_group_edge_refuses_a_record_without_a_key_at_any_parallelism() {
        let (mut batch, _) = keyed_blocks(10);
        Record::value(b"no key").write_to(&mut batch);
        for channels in [1, 3] {
            let gate = InputGate::new(channels);
            let mut writer = writer(
                ChannelSelector::KeyGroups {
                    max_parallelism: 128,
                },
                &gate,
            );
            let err = writer.write_batch(&batch).expect_err("unkeyed record");
            assert!(err.to_string().contains("without a key"), "{err}");
        }
        // One consumer takes a keyed batch whole.
        let (batch, records) = keyed_blocks(100);
        let (received, sent) = route(
            ChannelSelector::KeyGroups {
                max_parallelism: 128,
            },
            1,
            &batch,
        );
        assert_eq!((received, sent), (vec![records], batch.len()));
    }
}
