//! A write-back cache of value state in the guest's own memory.
//!
//! Each keyed-state import is a component call (~100+ ns); a keyed operator reading and writing
//! its state per record would pay two per record. The cache serves reads it has seen and keeps
//! writes; at the end of every export call the dirty entries go to the host in one
//! `value-write-batch` per state, so host-managed state is exact whenever the host looks at it
//! (checkpoints happen between calls). Clean entries are dropped when the cache grows past its
//! bound; they are only copies.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::host::{HostApi, Level, StateId, StateKind, TimeDomain, WasmHost};

/// Entries kept across calls before the clean ones are dropped.
const MAX_CACHED: usize = 1 << 17;

/// FxHash: keys are short byte strings from the operator's own records, and a guest that
/// feeds itself adversarial keys only slows itself down.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

struct Entry {
    value: Option<Vec<u8>>,
    dirty: bool,
}

/// [`HostApi`] over the component's imports, with value state cached. See the module docs.
#[derive(Default)]
pub struct CachedHost {
    inner: WasmHost,
    /// By state id (ids are small and dense), then by key.
    values: Vec<FxMap<Vec<u8>, Entry>>,
    /// Keys written since the last flush, so a flush touches only them.
    dirty: Vec<(StateId, Vec<u8>)>,
    sets: Vec<u8>,
    clears: Vec<u8>,
}

impl CachedHost {
    /// Sends every dirty entry to the host, one batch per state.
    pub fn flush(&mut self) {
        if !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable_by_key(|(state, _)| *state);
            let mut i = 0;
            while i < dirty.len() {
                let state = dirty[i].0;
                self.sets.clear();
                self.clears.clear();
                while i < dirty.len() && dirty[i].0 == state {
                    let key = &dirty[i].1;
                    if let Some(entry) = self.values[state as usize].get_mut(key.as_slice()) {
                        entry.dirty = false;
                        let out = if entry.value.is_some() {
                            &mut self.sets
                        } else {
                            &mut self.clears
                        };
                        weir_framing::Record {
                            value: entry.value.as_deref().unwrap_or_default(),
                            key: Some(key),
                            timestamp: None,
                        }
                        .write_to(out);
                    }
                    i += 1;
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
        if self.values.iter().map(HashMap::len).sum::<usize>() > MAX_CACHED {
            self.values.iter_mut().for_each(HashMap::clear);
        }
    }

    fn entries(&mut self, state: StateId) -> &mut FxMap<Vec<u8>, Entry> {
        let i = state as usize;
        if self.values.len() <= i {
            self.values.resize_with(i + 1, FxMap::default);
        }
        &mut self.values[i]
    }

    fn write(&mut self, state: StateId, key: &[u8], value: Option<&[u8]>) {
        let entries = self.entries(state);
        let newly_dirty = match entries.get_mut(key) {
            Some(entry) => {
                let newly = !entry.dirty;
                // Reuse the entry's buffer: no allocation per update of a cached key.
                match (&mut entry.value, value) {
                    (Some(old), Some(new)) => {
                        old.clear();
                        old.extend_from_slice(new);
                    }
                    (slot, new) => *slot = new.map(<[u8]>::to_vec),
                }
                entry.dirty = true;
                newly
            }
            None => {
                entries.insert(
                    key.to_vec(),
                    Entry {
                        value: value.map(<[u8]>::to_vec),
                        dirty: true,
                    },
                );
                true
            }
        };
        if newly_dirty {
            self.dirty.push((state, key.to_vec()));
        }
    }
}

impl HostApi for CachedHost {
    fn declare_state(&mut self, name: &str, kind: StateKind) -> StateId {
        self.inner.declare_state(name, kind)
    }
    fn value_get(&mut self, state: StateId, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(entry) = self.entries(state).get(key) {
            return entry.value.clone();
        }
        let value = self.inner.value_get(state, key);
        self.entries(state).insert(
            key.to_vec(),
            Entry {
                value: value.clone(),
                dirty: false,
            },
        );
        value
    }
    fn value_with(&mut self, state: StateId, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) {
        if let Some(entry) = self.entries(state).get(key) {
            return f(entry.value.as_deref());
        }
        let value = self.inner.value_get(state, key);
        f(value.as_deref());
        self.entries(state).insert(
            key.to_vec(),
            Entry {
                value,
                dirty: false,
            },
        );
    }
    fn value_set(&mut self, state: StateId, key: &[u8], value: &[u8]) {
        self.write(state, key, Some(value));
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
}
