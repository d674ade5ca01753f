//! Unit-test operators natively, without wasm: [`Harness`] drives an operator the way the host
//! does, over an in-memory [`TestHost`].

use std::collections::{BTreeMap, BTreeSet};

use weir_framing::{BatchWriter, OwnedRecord, Record};

use crate::codec::Codec;
use crate::host::{HostApi, Level, StateId, StateKind, TimeDomain};
use crate::operator::{
    BatchFailure, BatchHost, Context, OpenContext, Operator, OperatorError, OperatorInfo,
};

type MapEntries = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`HostApi`]: keyed state in ordered maps, timers in an ordered set, logs kept.
#[derive(Debug, Clone)]
pub struct TestHost {
    states: Vec<(String, StateKind)>,
    values: BTreeMap<(StateId, Vec<u8>), Vec<u8>>,
    maps: BTreeMap<(StateId, Vec<u8>), MapEntries>,
    timers: BTreeSet<(TimeDomain, i64, Vec<u8>)>,
    watermark: i64,
    processing_time: i64,
    /// Every message the operator logged, in order.
    pub logs: Vec<(Level, String)>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost {
            states: Vec::new(),
            values: BTreeMap::new(),
            maps: BTreeMap::new(),
            timers: BTreeSet::new(),
            watermark: i64::MIN,
            processing_time: 0,
            logs: Vec::new(),
        }
    }
}

impl TestHost {
    fn state_id(&self, name: &str) -> Option<StateId> {
        self.states
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| i as StateId)
    }

    /// The raw value of value state `name` for `key`.
    pub fn value_of(&self, name: &str, key: &[u8]) -> Option<&[u8]> {
        let id = self.state_id(name)?;
        self.values.get(&(id, key.to_vec())).map(Vec::as_slice)
    }

    /// Timers registered and not yet fired, as (domain, timestamp, key).
    pub fn pending_timers(&self) -> impl Iterator<Item = &(TimeDomain, i64, Vec<u8>)> {
        self.timers.iter()
    }

    fn pop_due_timer(&mut self, domain: TimeDomain, time: i64) -> Option<(i64, Vec<u8>)> {
        let first = self
            .timers
            .range((domain, i64::MIN, Vec::new())..)
            .next()
            .filter(|(d, ts, _)| *d == domain && *ts <= time)
            .cloned()?;
        self.timers.remove(&first);
        Some((first.1, first.2))
    }
}

impl HostApi for TestHost {
    fn declare_state(&mut self, name: &str, kind: StateKind) -> StateId {
        if let Some(id) = self.state_id(name) {
            let declared = self.states[id as usize].1;
            assert_eq!(
                declared, kind,
                "state `{name}` declared again with another kind"
            );
            return id;
        }
        self.states.push((name.to_string(), kind));
        (self.states.len() - 1) as StateId
    }
    fn value_get(&mut self, state: StateId, key: &[u8]) -> Option<Vec<u8>> {
        self.values.get(&(state, key.to_vec())).cloned()
    }
    fn value_set(&mut self, state: StateId, key: &[u8], value: &[u8]) {
        self.values.insert((state, key.to_vec()), value.to_vec());
    }
    fn value_clear(&mut self, state: StateId, key: &[u8]) {
        self.values.remove(&(state, key.to_vec()));
    }
    fn map_get(&mut self, state: StateId, key: &[u8], map_key: &[u8]) -> Option<Vec<u8>> {
        self.maps.get(&(state, key.to_vec()))?.get(map_key).cloned()
    }
    fn map_put(&mut self, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]) {
        self.maps
            .entry((state, key.to_vec()))
            .or_default()
            .insert(map_key.to_vec(), value.to_vec());
    }
    fn map_remove(&mut self, state: StateId, key: &[u8], map_key: &[u8]) {
        if let Some(map) = self.maps.get_mut(&(state, key.to_vec())) {
            map.remove(map_key);
        }
    }
    fn map_entries(&mut self, state: StateId, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.maps
            .get(&(state, key.to_vec()))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    fn map_clear(&mut self, state: StateId, key: &[u8]) {
        self.maps.remove(&(state, key.to_vec()));
    }
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.timers.insert((domain, timestamp, key.to_vec()));
    }
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.timers.remove(&(domain, timestamp, key.to_vec()));
    }
    fn current_watermark(&mut self) -> i64 {
        self.watermark
    }
    fn current_processing_time(&mut self) -> i64 {
        self.processing_time
    }
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

/// Drives one operator as the host would: open, records, watermarks and timers, snapshots,
/// close; collects what it emits.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let mut h = Harness::open(map(|s: String| s.to_uppercase()).input(Text).output(Text), OperatorInfo::new("up")).unwrap();
/// h.push(b"owl").unwrap();
/// assert_eq!(h.take_values(&Text).unwrap(), vec!["OWL"]);
/// ```
/// What [`Harness::snapshot`] took: to open a new harness from with [`Harness::restore`].
#[derive(Debug, Clone)]
pub struct HarnessSnapshot {
    own: Vec<u8>,
    host: TestHost,
}

pub struct Harness<O> {
    operator: O,
    host: TestHost,
    out: BatchWriter,
}

impl<O: Operator> Harness<O> {
    /// Opens `operator` as the instance described by `info`.
    pub fn open(mut operator: O, info: OperatorInfo) -> Result<Self, OperatorError> {
        let mut host = TestHost::default();
        operator.open(&mut OpenContext::new(&info, &mut host))?;
        Ok(Harness {
            operator,
            host,
            out: BatchWriter::new(),
        })
    }

    /// Processes a record.
    pub fn push_record(&mut self, record: Record<'_>) -> Result<(), OperatorError> {
        let mut ctx = Context::new(&mut self.host, &mut self.out, record.key, record.timestamp);
        self.operator.process(record, &mut ctx)
    }

    /// Processes a framed batch the way a component does (through
    /// [`Operator::process_batch`]), stopping at the first failing record.
    pub fn push_batch(&mut self, batch: &[u8]) -> Result<(), BatchFailure> {
        self.operator
            .process_batch(batch, &mut BatchHost::new(&mut self.host), &mut self.out)
    }

    /// Processes an unkeyed record without timestamp.
    pub fn push(&mut self, value: &[u8]) -> Result<(), OperatorError> {
        self.push_record(Record::value(value))
    }

    /// Processes a keyed record without timestamp.
    pub fn push_keyed(&mut self, key: &[u8], value: &[u8]) -> Result<(), OperatorError> {
        self.push_record(Record {
            value,
            key: Some(key),
            timestamp: None,
        })
    }

    /// Processes a record of the second input (two-input operators).
    pub fn push_second_record(&mut self, record: Record<'_>) -> Result<(), OperatorError> {
        let mut ctx = Context::new(&mut self.host, &mut self.out, record.key, record.timestamp);
        self.operator.process_second(record, &mut ctx)
    }

    /// Processes a keyed record of the second input without timestamp.
    pub fn push_keyed_second(&mut self, key: &[u8], value: &[u8]) -> Result<(), OperatorError> {
        self.push_second_record(Record {
            value,
            key: Some(key),
            timestamp: None,
        })
    }

    /// Encodes `key` and `value` with their codecs and processes them as a keyed record.
    ///
    /// ```
    /// use weir_sdk::prelude::*;
    /// use weir_sdk::testing::Harness;
    /// let sum = reduce(|a: u64, b: u64| a + b).codec(Fixed);
    /// let mut h = Harness::open(sum, OperatorInfo::new("sum")).unwrap();
    /// h.push_keyed_value(&Text, &"owl".to_string(), &Fixed, &2u64).unwrap();
    /// h.push_keyed_value(&Text, &"owl".to_string(), &Fixed, &3u64).unwrap();
    /// assert_eq!(h.take_values::<u64>(&Fixed).unwrap(), vec![2, 5]);
    /// ```
    pub fn push_keyed_value<K, V>(
        &mut self,
        key_codec: &impl Codec<K>,
        key: &K,
        value_codec: &impl Codec<V>,
        value: &V,
    ) -> Result<(), OperatorError> {
        let (mut k, mut v) = (Vec::new(), Vec::new());
        key_codec.encode(key, &mut k)?;
        value_codec.encode(value, &mut v)?;
        self.push_keyed(&k, &v)
    }

    /// Everything a checkpoint takes of this instance: its own state and the keyed state and
    /// timers the host keeps for it.
    pub fn snapshot(&mut self) -> Result<HarnessSnapshot, OperatorError> {
        // The SDK's operators flush what they cache before their snapshot returns.
        let own = self.operator.snapshot_state()?;
        Ok(HarnessSnapshot {
            own,
            host: self.host.clone(),
        })
    }

    /// Opens `operator` restored from `snapshot`, as a recovery does: keyed state and timers
    /// first (the operator finds them as it declares its states), then its own state.
    ///
    /// ```
    /// use weir_sdk::prelude::*;
    /// use weir_sdk::testing::Harness;
    /// let sum = || reduce(|a: u64, b: u64| a + b).codec(Fixed);
    /// let mut h = Harness::open(sum(), OperatorInfo::new("sum")).unwrap();
    /// h.push_keyed_value(&Text, &"owl".to_string(), &Fixed, &2u64).unwrap();
    /// let snapshot = h.snapshot().unwrap();
    /// let mut restored = Harness::restore(sum(), OperatorInfo::new("sum"), snapshot).unwrap();
    /// restored.push_keyed_value(&Text, &"owl".to_string(), &Fixed, &3u64).unwrap();
    /// assert_eq!(restored.take_values::<u64>(&Fixed).unwrap(), vec![5]);
    /// ```
    pub fn restore(
        mut operator: O,
        info: OperatorInfo,
        snapshot: HarnessSnapshot,
    ) -> Result<Self, OperatorError> {
        let mut host = snapshot.host;
        host.logs.clear();
        operator.open(&mut OpenContext::new(&info, &mut host))?;
        operator.restore_state(&snapshot.own)?;
        Ok(Harness {
            operator,
            host,
            out: BatchWriter::new(),
        })
    }

    /// Encodes `value` with `codec` and processes it as an unkeyed record.
    pub fn push_value<T>(&mut self, codec: &impl Codec<T>, value: &T) -> Result<(), OperatorError> {
        let mut bytes = Vec::new();
        codec.encode(value, &mut bytes)?;
        self.push(&bytes)
    }

    /// Advances the watermark: fires due event-time timers in time order, then `on_watermark`.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<(), OperatorError> {
        self.host.watermark = watermark;
        self.fire_timers(TimeDomain::EventTime, watermark)?;
        let mut ctx = Context::new(&mut self.host, &mut self.out, None, Some(watermark));
        self.operator.on_watermark(watermark, &mut ctx)
    }

    /// Advances processing time and fires due processing-time timers.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<(), OperatorError> {
        self.host.processing_time = now;
        self.fire_timers(TimeDomain::ProcessingTime, now)
    }

    fn fire_timers(&mut self, domain: TimeDomain, time: i64) -> Result<(), OperatorError> {
        while let Some((ts, key)) = self.host.pop_due_timer(domain, time) {
            let mut ctx = Context::new(&mut self.host, &mut self.out, Some(&key), Some(ts));
            self.operator.on_timer(domain, &mut ctx)?;
        }
        Ok(())
    }

    /// The operator's own state, as a checkpoint would take it.
    pub fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        self.operator.snapshot_state()
    }

    /// Restores the operator's own state.
    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        self.operator.restore_state(state)
    }

    /// Ends the input.
    pub fn close(&mut self) -> Result<(), OperatorError> {
        let mut ctx = Context::new(&mut self.host, &mut self.out, None, None);
        self.operator.close(&mut ctx)
    }

    /// Everything emitted since the last take.
    pub fn take_output(&mut self) -> Vec<OwnedRecord> {
        let records = weir_framing::records(self.out.as_bytes())
            .map(|r| OwnedRecord::from(r.expect("the SDK writes valid framing")))
            .collect();
        self.out.clear();
        records
    }

    /// The values emitted since the last take, decoded with `codec`.
    pub fn take_values<T>(&mut self, codec: &impl Codec<T>) -> Result<Vec<T>, OperatorError> {
        self.take_output()
            .iter()
            .map(|r| codec.decode(&r.value))
            .collect()
    }

    /// The in-memory host, to inspect state, timers and logs.
    pub fn host(&self) -> &TestHost {
        &self.host
    }
}
