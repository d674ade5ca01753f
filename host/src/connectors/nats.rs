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

/// Records a sink subtask wrote between the checkpoint before `checkpoint` and it, in run
/// `run` (a random number each sink instance draws, so two runs of a job of one name never
/// share message ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub checkpoint: u64,
    pub run: u64,
    /// Shared, not copied, when published (and again when republished).
    pub records: Vec<bytes::Bytes>,
}

/// The epochs a sink subtask keeps in a checkpoint, as
/// `[checkpoint u64][run u64][count u32]([length u32][bytes])*` runs.
pub fn encode_epochs(epochs: &[Epoch]) -> Vec<u8> {
    let mut out = Vec::new();
    for epoch in epochs {
        out.extend_from_slice(&epoch.checkpoint.to_le_bytes());
        out.extend_from_slice(&epoch.run.to_le_bytes());
        out.extend_from_slice(&(epoch.records.len() as u32).to_le_bytes());
        for r in &epoch.records {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
        }
    }
    out
}

/// Reads [`encode_epochs`]'s bytes back; `None` if they are not such.
pub fn decode_epochs(mut bytes: &[u8]) -> Option<Vec<Epoch>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let checkpoint = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let run = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let mut records = Vec::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
            records.push(bytes::Bytes::copy_from_slice(take(&mut bytes, len)?));
        }
        out.push(Epoch {
            checkpoint,
            run,
            records,
        });
    }
    Some(out)
}

/// The file in a checkpoint's directory that says subtask `subtask` of sink `sink` published
/// every record that checkpoint holds of it: a restore from it publishes nothing again (the
/// stream's duplicate window may have passed).
pub fn published_note(sink: &str, subtask: u32) -> String {
    format!("{sink}-{subtask}.nats-published")
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
            Epoch {
                checkpoint: 3,
                run: 7,
                records: vec![bytes::Bytes::from_static(b"a"), bytes::Bytes::new()],
            },
            Epoch {
                checkpoint: 4,
                run: 7,
                records: vec![bytes::Bytes::from_static(b"bcd")],
            },
        ];
        let bytes = encode_epochs(&epochs);
        assert_eq!(decode_epochs(&bytes), Some(epochs));
        assert_eq!(decode_epochs(&bytes[..bytes.len() - 1]), None);
    }
}
