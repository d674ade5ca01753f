//! The keyed state of one operator subtask: value and map states by name, each a hash map from
//! key bytes to values.
//!
//! State is not split by key group while it is written: that would cost a hash per access on
//! the hot path. A snapshot groups it instead, so a restore at another parallelism can take just
//! the key groups of its range.

use std::collections::BTreeMap;
use std::ops::Range;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::key_groups::key_group_of;

/// The shape of a keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map per key.
    Map,
}

/// A misuse of keyed state by the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state `{name}` is declared as {declared:?} and cannot be redeclared as {requested:?}")]
    KindMismatch {
        name: String,
        declared: StateKind,
        requested: StateKind,
    },
    #[error("state handle {0} was never declared")]
    UnknownHandle(u32),
    #[error("state handle {handle} names a {actual:?} state, used as {expected:?}")]
    WrongKind {
        handle: u32,
        actual: StateKind,
        expected: StateKind,
    },
    #[error("more than {0} states declared")]
    TooManyStates(usize),
    /// The operator subtask holds as much keyed state as its limit allows.
    #[error(
        "keyed state would grow to {bytes} bytes, over the limit of {limit} bytes per operator \
         subtask (the job's `state_limit` or --state-limit, or its share of its tenant's \
         `keyed-state-per-job` quota)"
    )]
    LimitExceeded { bytes: usize, limit: usize },
}

/// What one entry costs beyond its key and value bytes: the hash slot or tree node and the
/// headers of the allocations behind it. An estimate; it makes many tiny entries count.
const ENTRY_OVERHEAD: usize = 48;

fn entry_bytes(key: usize, value: usize) -> usize {
    key + value + ENTRY_OVERHEAD
}

type ValueTable = FxHashMap<Box<[u8]>, Vec<u8>>;
type MapTable = FxHashMap<Box<[u8]>, BTreeMap<Vec<u8>, Vec<u8>>>;

enum Table {
    Value(ValueTable),
    Map(MapTable),
}

impl Table {
    fn kind(&self) -> StateKind {
        match self {
            Table::Value(_) => StateKind::Value,
            Table::Map(_) => StateKind::Map,
        }
    }
}

struct NamedState {
    name: String,
    table: Table,
}

/// Keyed state of one operator subtask.
pub struct KeyedStateBackend {
    states: Vec<NamedState>,
    max_parallelism: u32,
    max_states: usize,
    /// State restored before the operator declared it, by name.
    restored: FxHashMap<String, StateData>,
    budget: Budget,
}

/// The bytes a backend holds against its limit.
struct Budget {
    /// Estimated bytes held, restored state included.
    bytes: usize,
    /// The most `bytes` may reach: guards the host's memory against an operator that keeps
    /// state without bound.
    max: usize,
}

impl Budget {
    /// Admits a change of `added` bytes in and `removed` bytes out, or refuses it whole.
    fn admit(&mut self, added: usize, removed: usize) -> Result<(), StateError> {
        let bytes = self.bytes.saturating_sub(removed).saturating_add(added);
        if added > removed && bytes > self.max {
            return Err(StateError::LimitExceeded {
                bytes,
                limit: self.max,
            });
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// One state's entries in a snapshot, grouped by key group so a restore can take a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateData {
    /// key group -> (key, value), sorted.
    Value(BTreeMap<u32, Vec<(Vec<u8>, Vec<u8>)>>),
    /// key group -> (key, map entries), sorted.
    Map(BTreeMap<u32, Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>>),
}

/// A copy of an operator subtask's keyed state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateSnapshot {
    /// The job's number of key groups.
    pub max_parallelism: u32,
    /// Every state by name.
    pub states: BTreeMap<String, StateData>,
}

impl KeyedStateBackend {
    pub fn new(max_parallelism: u32, max_states: usize) -> Self {
        KeyedStateBackend {
            states: Vec::new(),
            max_parallelism,
            max_states,
            restored: FxHashMap::default(),
            budget: Budget {
                bytes: 0,
                max: usize::MAX,
            },
        }
    }

    /// Bounds the bytes of state held (see [`StateError::LimitExceeded`]).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.budget.max = max_bytes;
        self
    }

    /// Estimated bytes of state held.
    pub fn bytes(&self) -> usize {
        self.budget.bytes
    }

    /// Declares a state, or returns the handle of the one already declared under `name`.
    pub fn declare(&mut self, name: &str, kind: StateKind) -> Result<u32, StateError> {
        if let Some(i) = self.states.iter().position(|s| s.name == name) {
            let declared = self.states[i].table.kind();
            if declared != kind {
                return Err(StateError::KindMismatch {
                    name: name.to_string(),
                    declared,
                    requested: kind,
                });
            }
            return Ok(i as u32);
        }
        if self.states.len() >= self.max_states {
            return Err(StateError::TooManyStates(self.max_states));
        }
        let mut table = match kind {
            StateKind::Value => Table::Value(ValueTable::default()),
            StateKind::Map => Table::Map(MapTable::default()),
        };
        if let Some(data) = self.restored.remove(name) {
            let bytes = data_bytes(&data);
            if !load(&mut table, data) {
                // Restored under another kind: dropped, so its bytes no longer count.
                self.budget.bytes = self.budget.bytes.saturating_sub(bytes);
            }
        }
        self.states.push(NamedState {
            name: name.to_string(),
            table,
        });
        Ok((self.states.len() - 1) as u32)
    }

    fn values(&mut self, handle: u32) -> Result<&mut ValueTable, StateError> {
        value_table(&mut self.states, handle)
    }

    fn maps(&mut self, handle: u32) -> Result<&mut MapTable, StateError> {
        map_table(&mut self.states, handle)
    }

    pub fn value_get(&mut self, handle: u32, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        Ok(self.values(handle)?.get(key).map(Vec::as_slice))
    }

    pub fn value_set(&mut self, handle: u32, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let table = value_table(&mut self.states, handle)?;
        match table.get_mut(key) {
            Some(existing) => {
                self.budget.admit(value.len(), existing.len())?;
                existing.clear();
                existing.extend_from_slice(value);
            }
            None => {
                self.budget.admit(entry_bytes(key.len(), value.len()), 0)?;
                table.insert(key.into(), value.to_vec());
            }
        }
        Ok(())
    }

    pub fn value_clear(&mut self, handle: u32, key: &[u8]) -> Result<(), StateError> {
        if let Some(old) = self.values(handle)?.remove(key) {
            self.budget.admit(0, entry_bytes(key.len(), old.len()))?;
        }
        Ok(())
    }

    pub fn map_get(
        &mut self,
        handle: u32,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<&[u8]>, StateError> {
        Ok(self
            .maps(handle)?
            .get(key)
            .and_then(|m| m.get(map_key))
            .map(Vec::as_slice))
    }

    pub fn map_put(
        &mut self,
        handle: u32,
        key: &[u8],
        map_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let table = map_table(&mut self.states, handle)?;
        match table.get_mut(key) {
            Some(map) => match map.get_mut(map_key) {
                Some(old) => {
                    self.budget.admit(value.len(), old.len())?;
                    old.clear();
                    old.extend_from_slice(value);
                }
                None => {
                    self.budget
                        .admit(entry_bytes(map_key.len(), value.len()), 0)?;
                    map.insert(map_key.to_vec(), value.to_vec());
                }
            },
            None => {
                let added = entry_bytes(key.len(), 0) + entry_bytes(map_key.len(), value.len());
                self.budget.admit(added, 0)?;
                table
                    .entry(key.into())
                    .or_default()
                    .insert(map_key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }

    pub fn map_remove(
        &mut self,
        handle: u32,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<(), StateError> {
        let table = self.maps(handle)?;
        let mut removed = 0;
        if let Some(map) = table.get_mut(key) {
            if let Some(old) = map.remove(map_key) {
                removed += entry_bytes(map_key.len(), old.len());
            }
            if map.is_empty() {
                table.remove(key);
                removed += entry_bytes(key.len(), 0);
            }
        }
        self.budget.admit(0, removed)
    }

    pub fn map_entries(
        &mut self,
        handle: u32,
        key: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        Ok(self
            .maps(handle)?
            .get(key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    pub fn map_clear(&mut self, handle: u32, key: &[u8]) -> Result<(), StateError> {
        if let Some(map) = self.maps(handle)?.remove(key) {
            let entries: usize = map.iter().map(|(k, v)| entry_bytes(k.len(), v.len())).sum();
            self.budget.admit(0, entries + entry_bytes(key.len(), 0))?;
        }
        Ok(())
    }

    /// Number of keys with a value or a non-empty map, over all states.
    pub fn key_count(&self) -> usize {
        self.states
            .iter()
            .map(|s| match &s.table {
                Table::Value(t) => t.len(),
                Table::Map(t) => t.len(),
            })
            .sum()
    }

    /// A copy of all state, grouped by key group. States restored but not (yet) declared by the
    /// operator are carried along, so a checkpoint taken before the operator touches them loses
    /// nothing.
    pub fn snapshot(&self) -> KeyedStateSnapshot {
        let max = self.max_parallelism;
        let mut states = BTreeMap::new();
        for s in &self.states {
            let data = match &s.table {
                Table::Value(t) => {
                    let mut groups: BTreeMap<u32, Vec<_>> = BTreeMap::new();
                    for (k, v) in t {
                        groups
                            .entry(key_group_of(k, max))
                            .or_default()
                            .push((k.to_vec(), v.clone()));
                    }
                    groups.values_mut().for_each(|g| g.sort());
                    StateData::Value(groups)
                }
                Table::Map(t) => {
                    let mut groups: BTreeMap<u32, Vec<_>> = BTreeMap::new();
                    for (k, m) in t {
                        let entries = m.iter().map(|(mk, v)| (mk.clone(), v.clone())).collect();
                        groups
                            .entry(key_group_of(k, max))
                            .or_default()
                            .push((k.to_vec(), entries));
                    }
                    groups.values_mut().for_each(|g| g.sort());
                    StateData::Map(groups)
                }
            };
            states.insert(s.name.clone(), data);
        }
        for (name, data) in &self.restored {
            states.insert(name.clone(), data.clone());
        }
        KeyedStateSnapshot {
            max_parallelism: max,
            states,
        }
    }

    /// Takes the key groups in `key_groups` from each snapshot (several when scaling in); a state
    /// reappears when the operator declares it. Refuses state over the byte limit, so a job
    /// restored under a lower limit fails as it opens, not at some later write.
    pub fn restore(
        &mut self,
        snapshots: &[KeyedStateSnapshot],
        key_groups: Range<u32>,
    ) -> Result<(), StateError> {
        for snapshot in snapshots {
            for (name, data) in &snapshot.states {
                let part = restrict(data, &key_groups);
                match self.restored.get_mut(name) {
                    Some(existing) => merge(existing, part),
                    None => {
                        self.restored.insert(name.clone(), part);
                    }
                }
            }
        }
        // Counted once merged: a part dropped for a kind conflict holds no memory.
        let restored: usize = self.restored.values().map(data_bytes).sum();
        self.budget.admit(restored, 0)
    }
}

fn restrict(data: &StateData, range: &Range<u32>) -> StateData {
    match data {
        StateData::Value(g) => StateData::Value(
            g.range(range.clone())
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        ),
        StateData::Map(g) => StateData::Map(
            g.range(range.clone())
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        ),
    }
}

// Free functions over the states alone, so a write can hold a table and the budget at once.
fn table(states: &mut [NamedState], handle: u32) -> Result<&mut Table, StateError> {
    states
        .get_mut(handle as usize)
        .map(|s| &mut s.table)
        .ok_or(StateError::UnknownHandle(handle))
}

fn value_table(states: &mut [NamedState], handle: u32) -> Result<&mut ValueTable, StateError> {
    match table(states, handle)? {
        Table::Value(t) => Ok(t),
        Table::Map(_) => Err(StateError::WrongKind {
            handle,
            actual: StateKind::Map,
            expected: StateKind::Value,
        }),
    }
}

fn map_table(states: &mut [NamedState], handle: u32) -> Result<&mut MapTable, StateError> {
    match table(states, handle)? {
        Table::Map(t) => Ok(t),
        Table::Value(_) => Err(StateError::WrongKind {
            handle,
            actual: StateKind::Value,
            expected: StateKind::Map,
        }),
    }
}

/// The estimate of [`KeyedStateBackend::bytes`] for restored entries.
fn data_bytes(data: &StateData) -> usize {
    match data {
        StateData::Value(groups) => groups
            .values()
            .flatten()
            .map(|(k, v)| entry_bytes(k.len(), v.len()))
            .sum(),
        StateData::Map(groups) => groups
            .values()
            .flatten()
            .map(|(k, entries)| {
                entry_bytes(k.len(), 0)
                    + entries
                        .iter()
                        .map(|(mk, v)| entry_bytes(mk.len(), v.len()))
                        .sum::<usize>()
            })
            .sum(),
    }
}

fn merge(into: &mut StateData, from: StateData) {
    match (into, from) {
        (StateData::Value(a), StateData::Value(b)) => a.extend(b),
        (StateData::Map(a), StateData::Map(b)) => a.extend(b),
        // Kind conflicts surface when the operator declares the state; keep the first.
        _ => {}
    }
}

/// Loads restored entries into a declared state's table; false if the kinds differ and the
/// entries were dropped (`declare` checks the kinds of live states).
fn load(table: &mut Table, data: StateData) -> bool {
    match (table, data) {
        (Table::Value(t), StateData::Value(groups)) => {
            for (k, v) in groups.into_values().flatten() {
                t.insert(k.into(), v);
            }
            true
        }
        (Table::Map(t), StateData::Map(groups)) => {
            for (k, entries) in groups.into_values().flatten() {
                t.insert(k.into(), entries.into_iter().collect());
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::key_groups::key_group_range;

    #[test]
    fn values_are_scoped_per_key_and_state() {
        let mut b = KeyedStateBackend::new(128, 10);
        let count = b.declare("count", StateKind::Value).unwrap();
        let other = b.declare("other", StateKind::Value).unwrap();
        b.value_set(count, b"a", b"1").unwrap();
        b.value_set(other, b"a", b"x").unwrap();
        assert_eq!(b.value_get(count, b"a").unwrap(), Some(&b"1"[..]));
        assert_eq!(b.value_get(count, b"b").unwrap(), None);
        assert_eq!(b.value_get(other, b"a").unwrap(), Some(&b"x"[..]));
        assert_eq!(b.declare("count", StateKind::Value).unwrap(), count);
    }

    #[test]
    fn redeclaring_with_another_kind_is_an_error() {
        let mut b = KeyedStateBackend::new(128, 10);
        b.declare("s", StateKind::Value).unwrap();
        assert!(matches!(
            b.declare("s", StateKind::Map),
            Err(StateError::KindMismatch { .. })
        ));
        assert!(matches!(
            b.map_get(0, b"k", b"m"),
            Err(StateError::WrongKind { .. })
        ));
        assert_eq!(b.value_get(7, b"k"), Err(StateError::UnknownHandle(7)));
    }

    #[test]
    fn snapshot_split_by_key_group_ranges_restores_every_key_exactly_once() {
        let mut b = KeyedStateBackend::new(128, 10);
        let v = b.declare("v", StateKind::Value).unwrap();
        let m = b.declare("m", StateKind::Map).unwrap();
        for i in 0..500u32 {
            let key = i.to_le_bytes();
            b.value_set(v, &key, &i.to_be_bytes()).unwrap();
            b.map_put(m, &key, b"x", &key).unwrap();
        }
        let snap = b.snapshot();
        let mut total = 0;
        for subtask in 0..3 {
            let mut r = KeyedStateBackend::new(128, 10);
            r.restore(
                std::slice::from_ref(&snap),
                key_group_range(subtask, 128, 3),
            )
            .unwrap();
            let v = r.declare("v", StateKind::Value).unwrap();
            let m = r.declare("m", StateKind::Map).unwrap();
            for i in 0..500u32 {
                let key = i.to_le_bytes();
                let owned = key_group_range(subtask, 128, 3).contains(&key_group_of(&key, 128));
                let expected = i.to_be_bytes();
                assert_eq!(
                    r.value_get(v, &key).unwrap(),
                    owned.then_some(&expected[..])
                );
                assert_eq!(r.map_get(m, &key, b"x").unwrap().is_some(), owned);
            }
            total += r.key_count();
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn state_over_its_byte_limit_is_refused_and_freed_bytes_count_again() {
        let mut b = KeyedStateBackend::new(128, 10).with_max_bytes(10_000);
        let v = b.declare("v", StateKind::Value).unwrap();
        let m = b.declare("m", StateKind::Map).unwrap();
        b.value_set(v, b"a", &[0; 4_000]).unwrap();
        b.map_put(m, b"a", b"x", &[0; 4_000]).unwrap();
        let err = b.value_set(v, b"b", &[0; 4_000]).unwrap_err();
        assert!(
            matches!(err, StateError::LimitExceeded { limit: 10_000, bytes } if bytes > 10_000),
            "{err}"
        );
        assert_eq!(
            b.value_get(v, b"b").unwrap(),
            None,
            "a refused write leaves no trace"
        );
        // Replacing a value with a smaller one, clearing and removing give bytes back.
        b.value_set(v, b"a", &[0; 10]).unwrap();
        b.value_set(v, b"b", &[0; 3_000]).unwrap();
        b.map_remove(m, b"a", b"x").unwrap();
        b.value_clear(v, b"a").unwrap();
        b.value_clear(v, b"b").unwrap();
        assert_eq!(b.bytes(), 0);
        b.map_put(m, b"k", b"1", &[0; 4_000]).unwrap();
        b.map_put(m, b"k", b"2", &[0; 4_000]).unwrap();
        b.map_clear(m, b"k").unwrap();
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn restored_state_counts_once_declared_and_not_when_dropped_for_its_kind() {
        let mut b = KeyedStateBackend::new(128, 10);
        let v = b.declare("v", StateKind::Value).unwrap();
        let m = b.declare("m", StateKind::Value).unwrap();
        b.value_set(v, b"a", &[0; 1_000]).unwrap();
        b.value_set(m, b"a", &[0; 1_000]).unwrap();
        let snapshot = b.snapshot();
        let held = b.bytes();

        let mut r = KeyedStateBackend::new(128, 10);
        r.restore(std::slice::from_ref(&snapshot), 0..128).unwrap();
        assert_eq!(r.bytes(), held);
        r.declare("v", StateKind::Value).unwrap();
        assert_eq!(r.bytes(), held);
        // `m` was a value state; declared as a map its entries are dropped.
        r.declare("m", StateKind::Map).unwrap();
        assert_eq!(r.bytes(), held / 2);

        // Under a lower limit the restore itself fails.
        let mut small = KeyedStateBackend::new(128, 10).with_max_bytes(held - 1);
        assert!(matches!(
            small.restore(std::slice::from_ref(&snapshot), 0..128),
            Err(StateError::LimitExceeded { .. })
        ));
    }
}
