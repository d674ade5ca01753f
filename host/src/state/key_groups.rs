//! Keys to key groups to subtasks, as Flink's `KeyGroupRangeAssignment` does.
//!
//! A key's group depends only on its bytes and the job's fixed max parallelism, so the mapping
//! survives rescaling: a subtask owns a contiguous range of key groups, and restoring at another
//! parallelism hands each new subtask the groups of its range.

use std::ops::Range;

/// Key groups of a job unless it sets its own (Flink's default for small jobs).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// A stable 32-bit hash of key bytes: FNV-1a over the bytes, then murmur3's finalizer to spread
/// the bits (FNV alone clusters short keys in the low bits that the modulo keeps). Stable across
/// runs, platforms and versions: changing it would move every key's state.
#[inline]
pub fn key_hash(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut x = (h ^ (h >> 32)) as u32;
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    x
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
        assert_eq!(pinned, [3_323_002_737, 2_790_968_998, 3_310_102_806]);
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
