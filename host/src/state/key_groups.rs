//! Keys to key groups to subtasks, as Flink's `KeyGroupRangeAssignment` does.
//!
//! A key's group depends only on its bytes and the job's fixed max parallelism, so the mapping
//! survives rescaling: a subtask owns a contiguous range of key groups, and restoring at another
//! parallelism hands each new subtask the groups of its range.

use std::ops::Range;

/// Key groups of a job unless it sets its own (Flink's default for small jobs).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// A stable 32-bit hash of key bytes: the bytes as little-endian 64-bit words (the last one
/// zero-padded), each mixed into the state with a multiply and a rotation, the length folded
/// in, then murmur3's 64-bit finalizer to spread the bits. A word at a time, so the usual key
/// (an 8-byte number) costs two multiplies before the finalizer instead of one per byte: the
/// partitioner of every hash edge computes this for each record. Stable across runs, platforms
/// and versions: changing it would move every key's state.
#[inline]
pub fn key_hash(key: &[u8]) -> u32 {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    const MULTIPLIER: u64 = 0xff51_afd7_ed55_8ccd;
    let mix = |h: u64, word: u64| (h ^ word).wrapping_mul(MULTIPLIER).rotate_left(29);
    let mut h = SEED ^ key.len() as u64;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        h = mix(h, u64::from_le_bytes(bytes));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut bytes = [0u8; 8];
        bytes[..tail.len()].copy_from_slice(tail);
        h = mix(h, u64::from_le_bytes(bytes));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// The key group of `key` under `max_parallelism` key groups.
#[inline]
pub fn key_group_of(key: &[u8], max_parallelism: u32) -> u32 {
    let hash = key_hash(key);
    if max_parallelism.is_power_of_two() {
        // The same result without a division (the default, 128, is a power of two).
        hash & (max_parallelism - 1)
    } else {
        hash % max_parallelism
    }
}

/// The subtask that owns `key_group` at `parallelism` (Flink's
/// `computeOperatorIndexForKeyGroup`).
pub fn subtask_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// The key groups `subtask` owns at `parallelism` (Flink's
/// `computeKeyGroupRangeForOperatorIndex`): the inverse of [`subtask_for_key_group`].
pub fn key_group_range(subtask: u32, max_parallelism: u32, parallelism: u32) -> Range<u32> {
    let (max, par) = (u64::from(max_parallelism), u64::from(parallelism));
    let start = (u64::from(subtask) * max).div_ceil(par);
    let end = ((u64::from(subtask) + 1) * max).div_ceil(par);
    start as u32..end as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_the_key_groups_and_agree_with_the_owner_function() {
        for max in [1, 7, 128, 1000] {
            for par in 1..=max.min(17) {
                let mut next = 0;
                for subtask in 0..par {
                    let range = key_group_range(subtask, max, par);
                    assert_eq!(range.start, next, "max {max} par {par}");
                    for kg in range.clone() {
                        assert_eq!(subtask_for_key_group(kg, max, par), subtask);
                    }
                    next = range.end;
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn key_hash_is_stable() {
        // Pinned values: a change here moves every key's state to another key group.
        let pinned = [key_hash(b""), key_hash(b"hello"), key_hash(b"owl")];
        assert_eq!(pinned, [2_762_682_090, 2_444_559_570, 2_151_243_900]);
    }

    #[test]
    fn numeric_keys_spread_over_key_groups_and_padding_does_not_collide() {
        let mut counts = [0u32; 128];
        for i in 0..12_800u64 {
            counts[key_group_of(&i.to_le_bytes(), 128) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert!(
            min.unwrap_or(0) > 50 && max.unwrap_or(u32::MAX) < 160,
            "{min:?}..{max:?}"
        );
        // A short key and the same key zero-padded are different keys.
        assert_ne!(key_hash(b"ab"), key_hash(b"ab\0"));
        assert_ne!(key_hash(b""), key_hash(&[0; 8]));
    }

    #[test]
    fn short_keys_spread_over_key_groups() {
        let mut counts = [0u32; 128];
        for i in 0..12_800u32 {
            counts[key_group_of(i.to_string().as_bytes(), 128) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().copied(), counts.iter().max().copied());
        assert!(
            min.unwrap_or(0) > 50 && max.unwrap_or(u32::MAX) < 160,
            "{min:?}..{max:?}"
        );
    }
}
