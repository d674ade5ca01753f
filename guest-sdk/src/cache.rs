//! A write-back cache of value state in the guest's own memory.
//!
//! Each keyed-state import is a component call (~100+ ns); a keyed operator reading and writing
//! its state per record would pay two per record. The cache serves reads it has seen and keeps
//! writes until the host needs them: the export glue flushes it (one `value-write-batch` per
//! state) before the operator's snapshot, at `close`, and when the cache outgrows its bound.
//! The host reads keyed state only when it snapshots it, right after `snapshot-state`, so its
//! copy is exact whenever it looks. A failure loses only the unflushed writes of this instance,
//! and recovery restores the last checkpoint, which the flush before it made complete.
//!
//! Between checkpoints a running aggregate thus costs one hash lookup per record (a get, then a
//! set of the same key, finds the remembered slot), and slots hold short keys and values
//! inline, so a lookup touches one slot rather than three allocations.

use crate::host::{HostApi, Level, StateId, StateKind, TimeDomain, WasmHost};
use crate::operator::OperatorError;
use crate::slot_index::SlotIndex;

/// Entries kept before the cache is flushed and emptied; bounds its memory (which counts
/// against the instance's memory limit) for operators with many keys.
const MAX_CACHED: usize = 1 << 17;

/// FxHash over the state id and key: keys are short byte strings from the operator's own
/// records, and a guest that feeds itself adversarial keys only slows itself down.
#[inline]
fn hash_key(state: StateId, key: &[u8]) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mix = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(SEED);
    let mut h = mix(u64::from(state), key.len() as u64);
    if let Ok(word) = <&[u8; 8]>::try_from(key) {
        // The usual key, a number: no loop.
        return mix(h, u64::from_le_bytes(*word));
    }
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let word: [u8; 8] = chunk.try_into().unwrap_or_default();
        h = mix(h, u64::from_le_bytes(word));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        for (w, b) in word.iter_mut().zip(tail) {
            *w = *b;
        }
        h = mix(h, u64::from_le_bytes(word));
    }
    h
}

/// Key equality without a `memcmp` call (a call out of guest code in wasm) for 8-byte keys.
#[inline]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    match (<&[u8; 8]>::try_from(a), <&[u8; 8]>::try_from(b)) {
        (Ok(a), Ok(b)) => u64::from_ne_bytes(*a) == u64::from_ne_bytes(*b),
        _ => a == b,
    }
}

/// Key and value bytes, kept in the slot itself when short: a lookup then touches one slot
/// instead of following pointers to separate allocations for key and value.
enum Bytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Vec<u8>),
}

/// Longest key or value kept inline.
const INLINE: usize = 16;

impl Bytes {
    #[inline]
    fn new(from: &[u8]) -> Self {
        let mut bytes = Bytes::Inline {
            len: 0,
            bytes: [0; INLINE],
        };
        bytes.set(from);
        bytes
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Bytes::Heap(v) => v,
        }
    }

    #[inline]
    fn set(&mut self, from: &[u8]) {
        if from.len() <= INLINE {
            let mut inline = [0u8; INLINE];
            weir_framing::copy_small(&mut inline, from);
            *self = Bytes::Inline {
                len: from.len() as u8,
                bytes: inline,
            };
        } else if let Bytes::Heap(v) = self {
            v.clear();
            v.extend_from_slice(from);
        } else {
            *self = Bytes::Heap(from.to_vec());
        }
    }
}

struct Slot {
    hash: u64,
    state: StateId,
    dirty: bool,
    /// False once a write went straight to the host: `value` is then not the host's value and
    /// the next read fetches it.
    known: bool,
    key: Bytes,
    value: Option<Bytes>,
}

/// Writes of longer keys or values skip the cache and go to the host at once. The host checks
/// its size limits (far above these) when a value reaches it; through the cache an oversized
/// value would only be refused at the next checkpoint, by then far from the call that wrote it.
/// It also keeps big values out of guest memory.
const MAX_CACHED_KEY: usize = 1 << 10;
const MAX_CACHED_VALUE: usize = 64 << 10;

/// [`HostApi`] over the component's imports, with value state cached. See the module docs.
#[derive(Default)]
pub struct CachedHost {
    inner: WasmHost,
    /// In first-access order: keys that arrive in a repeating order (most streams) walk this
    /// sequentially, which the memory system rewards; the index itself stays small.
    slots: Vec<Slot>,
    /// Slot indices by hash of (state, key).
    index: SlotIndex,
    /// The slot of the most recent access: a get-then-set of one key looks up once.
    last: Option<u32>,
    /// Slots written since the last flush, so a flush touches only them.
    dirty: Vec<u32>,
    /// The buffer writes encode into.
    spare: Vec<u8>,
    sets: Vec<u8>,
    clears: Vec<u8>,
}

impl CachedHost {
    /// Sends every dirty entry to the host, one batch per state.
    pub fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable_by_key(|&i| (self.slots[i as usize].state, i));
        let mut at = 0;
        while at < dirty.len() {
            let state = self.slots[dirty[at] as usize].state;
            self.sets.clear();
            self.clears.clear();
            while at < dirty.len() && self.slots[dirty[at] as usize].state == state {
                let slot = &mut self.slots[dirty[at] as usize];
                if !slot.dirty {
                    // Written straight to the host since it turned dirty.
                    at += 1;
                    continue;
                }
                slot.dirty = false;
                let out = if slot.value.is_some() {
                    &mut self.sets
                } else {
                    &mut self.clears
                };
                weir_framing::Record {
                    value: slot.value.as_ref().map_or(&[][..], Bytes::as_slice),
                    key: Some(slot.key.as_slice()),
                    timestamp: None,
                }
                .write_to(out);
                at += 1;
            }
            crate::bindings::weir::stream::keyed_state::value_write_batch(
                state,
                &self.sets,
                &self.clears,
            );
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Keeps the cache within its bound: past it, flushes and starts empty.
    pub fn trim(&mut self) {
        if self.slots.len() > MAX_CACHED {
            self.flush();
            self.slots.clear();
            self.index.clear();
            self.last = None;
        }
    }

    /// The slot of (`state`, `key`), or the hash to insert it under. The check of the last
    /// slot is inlined into every access (a set after a get of the same key ends there); the
    /// index lookup is not, to keep the callers small.
    #[inline(always)]
    fn find(&mut self, state: StateId, key: &[u8]) -> Result<u32, u64> {
        if let Some(i) = self.last
            && let Some(slot) = self.slots.get(i as usize)
            && slot.state == state
            && key_eq(slot.key.as_slice(), key)
        {
            return Ok(i);
        }
        self.find_indexed(state, key)
    }

    #[inline]
    fn find_indexed(&mut self, state: StateId, key: &[u8]) -> Result<u32, u64> {
        let hash = hash_key(state, key);
        let slots = &self.slots;
        match self.index.find(hash, |i| {
            let slot = &slots[i as usize];
            slot.hash == hash && slot.state == state && key_eq(slot.key.as_slice(), key)
        }) {
            Some(i) => {
                self.last = Some(i);
                Ok(i)
            }
            None => Err(hash),
        }
    }

    fn insert(
        &mut self,
        hash: u64,
        state: StateId,
        key: &[u8],
        value: Option<&[u8]>,
        dirty: bool,
    ) -> u32 {
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            hash,
            state,
            dirty,
            known: true,
            key: Bytes::new(key),
            value: value.map(Bytes::new),
        });
        let slots = &self.slots;
        self.index.insert(hash, i, |j| slots[j as usize].hash);
        if dirty {
            self.dirty.push(i);
        }
        self.last = Some(i);
        i
    }

    /// The slot of `key`, read from the host on a miss.
    #[inline]
    fn slot(&mut self, state: StateId, key: &[u8]) -> &Slot {
        let i = self.slot_index(state, key);
        &self.slots[i as usize]
    }

    /// The number of `key`'s slot, read from the host on a miss: with [`CachedHost::value_at`]
    /// and [`CachedHost::write_at`], a read-modify-write of one key in one lookup.
    #[inline(always)]
    pub(crate) fn slot_index(&mut self, state: StateId, key: &[u8]) -> u32 {
        match self.find(state, key) {
            Ok(i) if self.slots[i as usize].known => i,
            found => self.read_from_host(state, key, found),
        }
    }

    /// A key the cache does not know yet (`found` is the result of `find`), or whose value
    /// went straight to the host: read from the host into its slot.
    #[cold]
    #[inline(never)]
    fn read_from_host(&mut self, state: StateId, key: &[u8], found: Result<u32, u64>) -> u32 {
        let value = self.inner.value_get(state, key);
        match found {
            Ok(i) => {
                let slot = &mut self.slots[i as usize];
                slot.value = value.as_deref().map(Bytes::new);
                slot.known = true;
                i
            }
            Err(hash) => self.insert(hash, state, key, value.as_deref(), false),
        }
    }

    /// The value in slot `i` (from [`CachedHost::slot_index`]).
    #[inline]
    pub(crate) fn value_at(&self, i: u32) -> Option<&[u8]> {
        self.slots[i as usize].value.as_ref().map(Bytes::as_slice)
    }

    /// Sets the value of slot `i`, which [`CachedHost::slot_index`] gave for (`state`, `key`).
    #[inline]
    pub(crate) fn write_at(&mut self, i: u32, state: StateId, key: &[u8], value: &[u8]) {
        if key.len() > MAX_CACHED_KEY || value.len() > MAX_CACHED_VALUE {
            return self.write_through(state, key, Some(value));
        }
        self.store(i, Some(value));
        self.last = Some(i);
    }

    /// Replaces the value in slot `i` and marks it for the next flush.
    #[inline(always)]
    fn store(&mut self, i: u32, value: Option<&[u8]>) {
        let slot = &mut self.slots[i as usize];
        slot.known = true;
        match (&mut slot.value, value) {
            (Some(old), Some(new)) => old.set(new),
            (old, new) => *old = new.map(Bytes::new),
        }
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(i);
        }
    }

    /// The value of `key`, borrowed: the typed handles' read path inside a component.
    #[inline]
    pub(crate) fn value_ref(&mut self, state: StateId, key: &[u8]) -> Option<&[u8]> {
        self.slot(state, key).value.as_ref().map(Bytes::as_slice)
    }

    /// Sets `key` to what `encode` writes; the typed handles' write path inside a component.
    #[inline]
    pub(crate) fn set_with(
        &mut self,
        state: StateId,
        key: &[u8],
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        // Encode into the spare buffer first, so a failed encode leaves the cache as it was.
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        let result = encode(&mut buf);
        if result.is_ok() {
            self.write(state, key, Some(&buf));
        }
        self.spare = buf;
        result
    }

    /// Writes `value` (`None` clears) for `key`; a miss needs no read from the host.
    #[inline]
    pub(crate) fn write(&mut self, state: StateId, key: &[u8], value: Option<&[u8]>) {
        if key.len() > MAX_CACHED_KEY || value.is_some_and(|v| v.len() > MAX_CACHED_VALUE) {
            return self.write_through(state, key, value);
        }
        match self.find(state, key) {
            Ok(i) => self.store(i, value),
            Err(hash) => {
                self.insert(hash, state, key, value, true);
            }
        }
    }

    /// Sends a write to the host now and forgets what the cache knew of the key.
    #[cold]
    fn write_through(&mut self, state: StateId, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(value) => self.inner.value_set(state, key, value),
            None => self.inner.value_clear(state, key),
        }
        if let Ok(i) = self.find(state, key) {
            let slot = &mut self.slots[i as usize];
            slot.dirty = false;
            slot.known = false;
            slot.value = None;
        }
    }
}

impl HostApi for CachedHost {
    fn declare_state(&mut self, name: &str, kind: StateKind) -> StateId {
        self.inner.declare_state(name, kind)
    }
    fn value_get(&mut self, state: StateId, key: &[u8]) -> Option<Vec<u8>> {
        self.slot(state, key)
            .value
            .as_ref()
            .map(|v| v.as_slice().to_vec())
    }
    fn value_with(&mut self, state: StateId, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) {
        f(self.slot(state, key).value.as_ref().map(Bytes::as_slice))
    }
    fn value_set(&mut self, state: StateId, key: &[u8], value: &[u8]) {
        self.write(state, key, Some(value));
    }
    fn value_set_with(
        &mut self,
        state: StateId,
        key: &[u8],
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        self.set_with(state, key, encode)
    }
    fn value_clear(&mut self, state: StateId, key: &[u8]) {
        self.write(state, key, None);
    }
    fn map_get(&mut self, state: StateId, key: &[u8], map_key: &[u8]) -> Option<Vec<u8>> {
        self.inner.map_get(state, key, map_key)
    }
    fn map_put(&mut self, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.inner.map_put(state, key, map_key, value)
    }
    fn map_remove(&mut self, state: StateId, key: &[u8], map_key: &[u8]) {
        self.inner.map_remove(state, key, map_key)
    }
    fn map_entries(&mut self, state: StateId, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.inner.map_entries(state, key)
    }
    fn map_clear(&mut self, state: StateId, key: &[u8]) {
        self.inner.map_clear(state, key)
    }
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.inner.register_timer(domain, key, timestamp)
    }
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.inner.delete_timer(domain, key, timestamp)
    }
    fn current_watermark(&mut self) -> i64 {
        self.inner.current_watermark()
    }
    fn current_processing_time(&mut self) -> i64 {
        self.inner.current_processing_time()
    }
    fn log(&mut self, level: Level, message: &str) {
        self.inner.log(level, message)
    }
    fn emit_batch(&mut self, records: &[u8]) -> bool {
        self.inner.emit_batch(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_states_separate_them() {
        assert_eq!(hash_key(1, b"abcdefghij"), hash_key(1, b"abcdefghij"));
        assert_ne!(hash_key(1, b"abcdefgh"), hash_key(2, b"abcdefgh"));
        assert_ne!(hash_key(1, b"a"), hash_key(1, b"a\0"));
        assert!(key_eq(b"12345678", b"12345678"));
        assert!(!key_eq(b"12345678", b"12345679"));
        assert!(!key_eq(b"1234567", b"12345678"));
    }
}
