//! The index of the guest-side state cache: hash -> slot number, open addressing with linear
//! probing over one flat array of `u64` entries.
//!
//! Each entry packs the upper 32 bits of the hash (a tag that rejects most non-matching entries
//! without touching the slot) with the slot number plus one (zero marks an empty entry). The
//! table is kept at most half full, so a lookup usually reads one entry; this compiles to a far
//! shorter loop in wasm than a general-purpose map.

/// Hash -> slot number.
#[derive(Default)]
pub(crate) struct SlotIndex {
    entries: Vec<u64>,
    len: usize,
}

const MIN_CAPACITY: usize = 64;

#[inline(always)]
fn tag(hash: u64) -> u64 {
    hash & !0xffff_ffff
}

/// Where the probe for `hash` starts: low bits folded with high ones, as multiplicative hashes
/// mix their high bits best.
#[inline(always)]
fn home(hash: u64, mask: usize) -> usize {
    (hash ^ (hash >> 32)) as usize & mask
}

impl SlotIndex {
    /// The slot whose hash is `hash` and for which `matches` holds.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let mut at = home(hash, mask);
        loop {
            let entry = self.entries[at];
            if entry == 0 {
                return None;
            }
            if entry & !0xffff_ffff == tag(hash) {
                let slot = (entry as u32).wrapping_sub(1);
                if matches(slot) {
                    return Some(slot);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `slot` under `hash`; it must not be present. `hash_of` gives the hash of any slot
    /// already indexed, for growing.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32, hash_of: impl Fn(u32) -> u64) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow(hash_of);
        }
        self.place(hash, slot);
        self.len += 1;
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }

    fn place(&mut self, hash: u64, slot: u32) {
        let mask = self.entries.len() - 1;
        let mut at = home(hash, mask);
        while self.entries[at] != 0 {
            at = (at + 1) & mask;
        }
        self.entries[at] = tag(hash) | u64::from(slot.wrapping_add(1));
    }

    fn grow(&mut self, hash_of: impl Fn(u32) -> u64) {
        let capacity = (self.entries.len() * 2).max(MIN_CAPACITY);
        let old = std::mem::replace(&mut self.entries, vec![0; capacity]);
        for entry in old.into_iter().filter(|&e| e != 0) {
            let slot = (entry as u32).wrapping_sub(1);
            self.place(hash_of(slot), slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_slot_through_growth_and_colliding_hashes() {
        // Hashes that share probe chains and tags.
        let hash_of = |slot: u32| (u64::from(slot % 7) << 40) | u64::from(slot % 3);
        let mut index = SlotIndex::default();
        for slot in 0..1000 {
            assert_eq!(index.find(hash_of(slot), |s| s == slot), None);
            index.insert(hash_of(slot), slot, hash_of);
        }
        for slot in 0..1000 {
            assert_eq!(index.find(hash_of(slot), |s| s == slot), Some(slot));
        }
        assert_eq!(index.find(hash_of(5), |s| s == 5000), None);
        index.clear();
        assert_eq!(index.find(hash_of(5), |s| s == 5), None);
    }
}
