//! The input side of a consumer task (Flink's StreamTaskNetworkInput): takes buffers and events
//! from the gate, reassembles records that span buffers, hands whole runs of complete records
//! to the chain without copying them, and combines the channels' watermarks.

use super::chain::OperatorChain;
use crate::stream::{Barrier, StreamError};
use std::collections::VecDeque;
use std::time::Duration;

use crate::network::{ChannelEvent, ChannelItem, InputGate};

/// Largest record a channel may carry; a longer length prefix means a corrupt stream.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// What the input has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputStatus {
    More,
    /// The barrier has arrived on every open channel: the task snapshots its checkpoint now.
    Aligned(Barrier),
    /// Every channel has sent end-of-data: the task ends its chain's input now, then asks
    /// [`InputProcessor::status`] what else the same item completed.
    EndOfData,
    /// Every channel has ended.
    Ended,
}

/// Per-channel reassembly, watermark and barrier-alignment state of a task's gate.
///
/// Alignment (exactly-once): once barrier n arrives on a channel, that channel's later items
/// are held back until barrier n has arrived on every open channel; then the task snapshots
/// and the held items are processed, in their channels' order, before anything new.
pub struct InputProcessor {
    spill: Vec<Vec<u8>>,
    /// Channels of the second input of a two-input head.
    second: Vec<bool>,
    watermarks: Vec<i64>,
    /// Channels whose producer said it is idle: their watermarks do not count.
    idle: Vec<bool>,
    /// Every open channel is idle, and the chain was told so.
    all_idle: bool,
    ended: Vec<bool>,
    open_channels: usize,
    /// Channels that sent end-of-data (or ended).
    data_ended: Vec<bool>,
    /// End-of-data of every channel was reported.
    data_end_reported: bool,
    watermark: i64,
    aligning: Option<Barrier>,
    /// When the first barrier of the alignment in progress arrived.
    aligning_since: Option<std::time::Instant>,
    /// How long the last completed alignment held input back (Flink's alignment duration).
    last_alignment: Duration,
    barrier_seen: Vec<bool>,
    held: Vec<VecDeque<ChannelItem>>,
    released: VecDeque<(usize, ChannelItem)>,
}

impl InputProcessor {
    pub fn new(channels: usize) -> Self {
        InputProcessor {
            spill: vec![Vec::new(); channels],
            second: vec![false; channels],
            watermarks: vec![i64::MIN; channels],
            idle: vec![false; channels],
            all_idle: false,
            ended: vec![false; channels],
            open_channels: channels,
            data_ended: vec![false; channels],
            data_end_reported: false,
            watermark: i64::MIN,
            aligning: None,
            aligning_since: None,
            last_alignment: Duration::ZERO,
            barrier_seen: vec![false; channels],
            held: (0..channels).map(|_| VecDeque::new()).collect(),
            released: VecDeque::new(),
        }
    }

    /// Channels `channels` carry the chain head's second input.
    pub fn with_second_input(mut self, channels: &[std::ops::Range<usize>]) -> Self {
        for range in channels {
            for c in range.clone() {
                if let Some(second) = self.second.get_mut(c) {
                    *second = true;
                }
            }
        }
        self
    }

    /// The next item to process: items held back during an alignment that has completed come
    /// before new ones from the gate.
    pub fn next_item(
        &mut self,
        gate: &InputGate,
        timeout: Duration,
    ) -> Option<(usize, ChannelItem)> {
        if let Some(item) = self.released.pop_front() {
            return Some(item);
        }
        gate.poll(timeout)
    }

    /// How long the last completed alignment held input back.
    pub fn last_alignment(&self) -> Duration {
        self.last_alignment
    }

    fn check_aligned(&mut self) -> Option<Barrier> {
        self.aligning.as_ref()?;
        let all = (0..self.ended.len()).all(|c| self.ended[c] || self.barrier_seen[c]);
        if !all {
            return None;
        }
        let barrier = self.aligning.take()?;
        self.last_alignment = self
            .aligning_since
            .take()
            .map_or(Duration::ZERO, |since| since.elapsed());
        self.barrier_seen.iter_mut().for_each(|b| *b = false);
        for (channel, held) in self.held.iter_mut().enumerate() {
            self.released
                .extend(held.drain(..).map(|item| (channel, item)));
        }
        Some(barrier)
    }

    fn on_barrier(&mut self, channel: usize, barrier: Barrier) -> InputStatus {
        match &self.aligning {
            Some(current) if barrier.id < current.id => return InputStatus::More,
            Some(current) if barrier.id > current.id => {
                // A newer checkpoint overtook one that was abandoned: release and start over.
                self.barrier_seen.iter_mut().for_each(|b| *b = false);
                for (c, held) in self.held.iter_mut().enumerate() {
                    self.released.extend(held.drain(..).map(|item| (c, item)));
                }
                self.aligning = Some(barrier);
                self.aligning_since = Some(std::time::Instant::now());
            }
            Some(_) => {}
            None => {
                self.aligning = Some(barrier);
                self.aligning_since = Some(std::time::Instant::now());
            }
        }
        self.barrier_seen[channel] = true;
        match self.check_aligned() {
            Some(barrier) => InputStatus::Aligned(barrier),
            None => InputStatus::More,
        }
    }

    /// Processes one item of channel `channel`; returns the records it completed and what is
    /// left.
    pub fn process(
        &mut self,
        channel: usize,
        item: ChannelItem,
        chain: &mut OperatorChain,
    ) -> Result<(u64, InputStatus), StreamError> {
        if self.aligning.is_some() && self.barrier_seen[channel] {
            self.held[channel].push_back(item);
            return Ok((0, InputStatus::More));
        }
        match item {
            ChannelItem::Event(ChannelEvent::Barrier { id, location }) => {
                Ok((0, self.on_barrier(channel, Barrier { id, location })))
            }
            ChannelItem::Buffer(buffer) => Ok((
                self.on_buffer(channel, buffer.bytes(), chain)?,
                InputStatus::More,
            )),
            ChannelItem::Event(ChannelEvent::Watermark(w)) => {
                self.watermarks[channel] = self.watermarks[channel].max(w);
                self.advance_watermark(chain)?;
                Ok((0, InputStatus::More))
            }
            ChannelItem::Event(ChannelEvent::WatermarkStatus { idle }) => {
                self.idle[channel] = idle;
                self.advance_watermark(chain)?;
                Ok((0, InputStatus::More))
            }
            ChannelItem::Event(ChannelEvent::EndOfData) => {
                self.end_data(channel, chain)?;
                Ok((0, self.status()))
            }
            // The task fails on a broken channel before processing reaches it.
            ChannelItem::Failed(reason) => Err(StreamError::Output(reason)),
            ChannelItem::Event(ChannelEvent::EndOfPartition) => {
                self.end_data(channel, chain)?;
                if !self.ended[channel] {
                    self.ended[channel] = true;
                    self.open_channels -= 1;
                }
                Ok((0, self.status()))
            }
        }
    }

    /// What the input has reached, most urgent first: the end of data (which the task must
    /// act on before any snapshot that follows it), an alignment, the end of every channel.
    pub fn status(&mut self) -> InputStatus {
        if !self.data_end_reported && self.data_ended.iter().all(|&e| e) {
            self.data_end_reported = true;
            return InputStatus::EndOfData;
        }
        if let Some(barrier) = self.check_aligned() {
            return InputStatus::Aligned(barrier);
        }
        if self.open_channels == 0 && self.released.is_empty() {
            InputStatus::Ended
        } else {
            InputStatus::More
        }
    }

    fn end_data(&mut self, channel: usize, chain: &mut OperatorChain) -> Result<(), StreamError> {
        if !self.spill[channel].is_empty() {
            return Err(StreamError::Output(format!(
                "input channel {channel} ended inside a record ({} bytes of it arrived)",
                self.spill[channel].len()
            )));
        }
        self.data_ended[channel] = true;
        self.advance_watermark(chain)
    }

    /// The watermark the operators have reached (`i64::MIN` before the first).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The combined watermark is the least of the open, active channels'; it only moves
    /// forward. When every open channel is idle the task is idle too, and says so downstream
    /// (Flink's `StatusWatermarkValve`); a channel that comes back counts again, but cannot
    /// move the watermark back.
    fn advance_watermark(&mut self, chain: &mut OperatorChain) -> Result<(), StreamError> {
        let open = (0..self.watermarks.len()).filter(|&c| !self.data_ended[c]);
        let mut any_open = false;
        let mut least_active: Option<i64> = None;
        for c in open {
            any_open = true;
            if !self.idle[c] {
                let w = self.watermarks[c];
                least_active = Some(least_active.map_or(w, |l| l.min(w)));
            }
        }
        if any_open && least_active.is_none() {
            if !self.all_idle {
                self.all_idle = true;
                chain.emit_watermark_status(true)?;
            }
            return Ok(());
        }
        if self.all_idle {
            self.all_idle = false;
            chain.emit_watermark_status(false)?;
        }
        let combined = least_active.unwrap_or(i64::MAX);
        if combined > self.watermark {
            self.watermark = combined;
            chain.emit_watermark(combined)?;
        }
        Ok(())
    }

    fn on_buffer(
        &mut self,
        channel: usize,
        mut bytes: &[u8],
        chain: &mut OperatorChain,
    ) -> Result<u64, StreamError> {
        let mut records = 0;
        let spill = &mut self.spill[channel];
        if !spill.is_empty() {
            // Complete the record that began in an earlier buffer.
            if spill.len() < 4 {
                let take = (4 - spill.len()).min(bytes.len());
                spill.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if spill.len() < 4 {
                    return Ok(0);
                }
            }
            let total = 4 + record_len(spill)?;
            let take = (total - spill.len()).min(bytes.len());
            spill.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if spill.len() < total {
                return Ok(0);
            }
            if self.second[channel] {
                chain.process_second_batch(spill)?;
            } else {
                chain.process_batch(spill)?;
            }
            records += count(spill)?;
            spill.clear();
        }
        let complete = complete_prefix(bytes)?;
        if complete > 0 {
            if self.second[channel] {
                chain.process_second_batch(&bytes[..complete])?;
            } else {
                chain.process_batch(&bytes[..complete])?;
            }
            records += count(&bytes[..complete])?;
        }
        self.spill[channel].extend_from_slice(&bytes[complete..]);
        Ok(records)
    }
}

fn record_len(prefix: &[u8]) -> Result<usize, StreamError> {
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(StreamError::Output(format!(
            "an input record claims {len} bytes, over the limit of {MAX_RECORD_BYTES}: the stream is corrupt"
        )));
    }
    Ok(len)
}

/// Length in bytes of the complete records (and blocks) at the start of `bytes`.
fn complete_prefix(bytes: &[u8]) -> Result<usize, StreamError> {
    let mut pos = 0;
    while bytes.len() - pos >= 4 {
        let end = pos + 4 + record_len(&bytes[pos..])?;
        if end > bytes.len() {
            break;
        }
        pos = end;
    }
    Ok(pos)
}

/// Records in complete framed bytes, block entries included.
fn count(bytes: &[u8]) -> Result<u64, StreamError> {
    weir_framing::count_records(bytes)
        .map(|n| n as u64)
        .map_err(|e| StreamError::Output(format!("malformed input: {e}")))
}
