//! Kafka: a source that reads a topic's partitions, split across subtasks, with its offsets in
//! checkpoints; a sink that writes a topic at least once or, with transactions, exactly once.
//!
//! The source is librdkafka's consumer with partitions assigned by weir (no consumer group):
//! subtask i of p takes the partitions whose number is i modulo p, starting from the offsets a
//! checkpoint holds (never the broker's committed offsets), so a restore reads exactly what the
//! checkpoint had not. A partition's offsets are a range of one space, partition p's at
//! `p << 48`, so they checkpoint and re-deal on rescaling as the file source's byte ranges do.
//! Records carry the Kafka record's timestamp as their event time.
//!
//! The exactly-once sink is a two-phase commit over checkpoints, with Kafka transactions
//! ([`sink`]); its open transactions are part of the checkpoint, so a restore commits a
//! transaction whose checkpoint completed even when the process that prepared it died before
//! committing it.

pub use crate::job::connectors::{Delivery, KafkaSinkSpec, KafkaSourceSpec, StartFrom};

#[cfg(feature = "kafka")]
mod sink;
#[cfg(feature = "kafka")]
mod source;
#[cfg(feature = "kafka")]
pub mod wire;

#[cfg(feature = "kafka")]
pub use sink::{KafkaSink, PreparedTransaction, Recovered, RestoredSink, SinkState, recover};
#[cfg(feature = "kafka")]
pub use source::KafkaSource;

/// Bits of a position that hold the offset; the partition is above them.
pub const OFFSET_BITS: u32 = 48;
/// The largest offset a position can hold (2^48 - 1: years of a million records a second).
pub const MAX_OFFSET: u64 = (1 << OFFSET_BITS) - 1;

/// Partition `partition`'s offset `offset` as a point of the source's position space.
pub fn position(partition: i32, offset: u64) -> u64 {
    (u64::from(partition as u32) << OFFSET_BITS) | offset.min(MAX_OFFSET)
}

/// (partition, offset) of a point of the position space.
pub fn partition_offset(point: u64) -> (i32, u64) {
    ((point >> OFFSET_BITS) as i32, point & MAX_OFFSET)
}

/// The transactional id of slot `slot` of subtask `subtask` of sink `sink` of job `job`
/// (`weir/<job>/<sink>/<subtask>/<slot>`). A subtask writes each checkpoint's records under a
/// free slot and frees it after the commit, so the ids are few and the same across restarts.
pub fn transactional_id(job: &str, sink: &str, subtask: u32, slot: u32) -> String {
    // `/` separates the parts, so no part may hold one.
    let part = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    format!("weir/{}/{}/{subtask}/{slot}", part(job), part(sink))
}

/// Kafka's default partitioner for keyed records (the Java client's `murmur2`, made
/// positive), so keys land where other Kafka clients put them.
pub fn partition_for_key(key: &[u8], partitions: u32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) as i32 % partitions.max(1) as i32
}

fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_keep_partition_and_offset_apart_and_in_order() {
        let p = position(3, 17);
        assert_eq!(partition_offset(p), (3, 17));
        assert!(position(3, MAX_OFFSET) < position(4, 0));
        assert_eq!(partition_offset(position(0, u64::MAX)), (0, MAX_OFFSET));
    }

    #[test]
    fn keys_go_where_the_java_client_puts_them() {
        // Values of `Utils.murmur2` in Kafka's own tests.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        for partitions in [1, 3, 12] {
            let p = partition_for_key(b"foobar", partitions);
            assert!((0..partitions as i32).contains(&p));
        }
    }
}
