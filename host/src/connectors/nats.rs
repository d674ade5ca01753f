//! NATS JetStream: a source whose messages are acknowledged when the checkpoint that covers
//! them completes, and a sink that publishes with de-duplication ids.
//!
//! The source reads through a durable pull consumer that all its subtasks share (JetStream
//! hands each message to one of them). A message is acknowledged only once a checkpoint taken
//! after it was emitted completes, so a failure before that makes the server deliver it again
//! (after the consumer's `ack_wait`). The stream sequences emitted but not yet acknowledged at
//! a checkpoint are its position: after a restore from it every subtask skips (and
//! acknowledges) those if they come again, since the restored state already holds them. So
//! each message counts once, whichever subtask it reaches.
//!
//! The sink is Flink's write-ahead sink made idempotent by the server: the records between two
//! checkpoints go into the checkpoint and are published when it completes, each with a
//! `Nats-Msg-Id` made of the job, sink, subtask, checkpoint and index; a restore publishes a
//! completed checkpoint's records again under the same ids, and the stream drops the ones it
//! already has (within its duplicate window).

#[cfg(feature = "nats")]
mod connection;
#[cfg(feature = "nats")]
mod sink;
#[cfg(feature = "nats")]
mod source;

pub use crate::job::connectors::{NatsSinkSpec, NatsSourceSpec, nats_message_id};
#[cfg(feature = "nats")]
pub use sink::{NatsSink, republish};
#[cfg(feature = "nats")]
pub use source::NatsSource;

/// Stream sequences as `[start, end)` ranges, the form a source position takes.
pub fn ranges_of(sequences: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut sorted: Vec<u64> = sequences.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some((_, end)) if *end == s => *end = s + 1,
            _ => out.push((s, s + 1)),
        }
    }
    out
}

/// The records a sink subtask keeps in a checkpoint: per checkpoint not yet published, its
/// records, as `[checkpoint u64][count u32]([length u32][bytes])*` runs.
pub fn encode_epochs(epochs: &[(u64, Vec<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (checkpoint, records) in epochs {
        out.extend_from_slice(&checkpoint.to_le_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for r in records {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
        }
    }
    out
}

/// Reads [`encode_epochs`]'s bytes back; `None` if they are not such.
pub fn decode_epochs(mut bytes: &[u8]) -> Option<Vec<(u64, Vec<Vec<u8>>)>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let checkpoint = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let mut records = Vec::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
            records.push(take(&mut bytes, len)?.to_vec());
        }
        out.push((checkpoint, records));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_become_ranges() {
        assert_eq!(ranges_of([5, 1, 2, 3, 9, 10, 2]), [(1, 4), (5, 6), (9, 11)]);
        assert_eq!(ranges_of([]), []);
    }

    #[test]
    fn epochs_round_trip_and_torn_bytes_are_refused() {
        let epochs = vec![
            (3, vec![b"a".to_vec(), Vec::new()]),
            (4, vec![b"bcd".to_vec()]),
        ];
        let bytes = encode_epochs(&epochs);
        assert_eq!(decode_epochs(&bytes), Some(epochs));
        assert_eq!(decode_epochs(&bytes[..bytes.len() - 1]), None);
    }
}
