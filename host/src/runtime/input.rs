//! The input side of a consumer task (Flink's StreamTaskNetworkInput): takes buffers and events
//! from the gate, reassembles records that span buffers, hands whole runs of complete records
//! to the chain without copying them, and combines the channels' watermarks.

use super::chain::OperatorChain;
use super::output::ChainError;
use crate::network::{ChannelEvent, ChannelItem};

/// Largest record a channel may carry; a longer length prefix means a corrupt stream.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// What the input has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputStatus {
    More,
    /// Every channel has ended.
    Ended,
}

/// Per-channel reassembly and watermark state of a task's gate.
pub struct InputProcessor {
    spill: Vec<Vec<u8>>,
    watermarks: Vec<i64>,
    ended: Vec<bool>,
    open_channels: usize,
    watermark: i64,
}

impl InputProcessor {
    pub fn new(channels: usize) -> Self {
        InputProcessor {
            spill: vec![Vec::new(); channels],
            watermarks: vec![i64::MIN; channels],
            ended: vec![false; channels],
            open_channels: channels,
            watermark: i64::MIN,
        }
    }

    /// Processes one item of channel `channel`; returns the records it completed and what is
    /// left.
    pub fn process(
        &mut self,
        channel: usize,
        item: ChannelItem,
        chain: &mut OperatorChain,
    ) -> Result<(u64, InputStatus), ChainError> {
        match item {
            ChannelItem::Buffer(buffer) => Ok((
                self.on_buffer(channel, buffer.bytes(), chain)?,
                InputStatus::More,
            )),
            ChannelItem::Event(ChannelEvent::Watermark(w)) => {
                self.watermarks[channel] = self.watermarks[channel].max(w);
                self.advance_watermark(chain)?;
                Ok((0, InputStatus::More))
            }
            ChannelItem::Event(ChannelEvent::EndOfPartition) => {
                if !self.spill[channel].is_empty() {
                    return Err(ChainError::Output(format!(
                        "input channel {channel} ended inside a record ({} bytes of it arrived)",
                        self.spill[channel].len()
                    )));
                }
                if !self.ended[channel] {
                    self.ended[channel] = true;
                    self.open_channels -= 1;
                }
                self.advance_watermark(chain)?;
                let status = if self.open_channels == 0 {
                    InputStatus::Ended
                } else {
                    InputStatus::More
                };
                Ok((0, status))
            }
        }
    }

    /// The combined watermark is the least of the open channels'; it only moves forward.
    fn advance_watermark(&mut self, chain: &mut OperatorChain) -> Result<(), ChainError> {
        let combined = (0..self.watermarks.len())
            .filter(|&c| !self.ended[c])
            .map(|c| self.watermarks[c])
            .min()
            .unwrap_or(i64::MAX);
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
    ) -> Result<u64, ChainError> {
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
            chain.process_batch(spill)?;
            spill.clear();
            records += 1;
        }
        let (complete, n) = complete_prefix(bytes)?;
        if complete > 0 {
            chain.process_batch(&bytes[..complete])?;
            records += n;
        }
        self.spill[channel].extend_from_slice(&bytes[complete..]);
        Ok(records)
    }
}

fn record_len(prefix: &[u8]) -> Result<usize, ChainError> {
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(ChainError::Output(format!(
            "an input record claims {len} bytes, over the limit of {MAX_RECORD_BYTES}: the stream is corrupt"
        )));
    }
    Ok(len)
}

/// Length in bytes, and number, of the complete records at the start of `bytes`.
fn complete_prefix(bytes: &[u8]) -> Result<(usize, u64), ChainError> {
    let (mut pos, mut n) = (0, 0);
    while bytes.len() - pos >= 4 {
        let end = pos + 4 + record_len(&bytes[pos..])?;
        if end > bytes.len() {
            break;
        }
        pos = end;
        n += 1;
    }
    Ok((pos, n))
}
