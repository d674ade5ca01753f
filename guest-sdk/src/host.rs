//! What an operator may ask of the host: keyed state, timers, clocks and logging.
//!
//! Operators reach the host only through [`HostApi`], never through the raw imports, so the same
//! operator runs inside a wasm component (over the imports, behind the SDK's cache of value
//! state) and in the native [`testing::Harness`](crate::testing::Harness).

use crate::bindings::weir::stream::{keyed_state, logging, timers, types};
use crate::operator::OperatorError;

/// Handle of a declared keyed state.
pub type StateId = u32;

/// The shape of a keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map per key.
    Map,
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark passes the timer.
    EventTime,
    /// Fires when the host's wall clock passes the timer.
    ProcessingTime,
}

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the operator handled.
    Warn,
    /// A failure.
    Error,
}

/// The host services an operator uses. Keys are raw key bytes: the typed handles in
/// [`state`](crate::state) encode them.
///
/// ```
/// use weir_sdk::host::{HostApi, StateKind};
/// use weir_sdk::testing::TestHost;
/// let mut host = TestHost::default();
/// let id = host.declare_state("count", StateKind::Value);
/// host.value_set(id, b"k", b"1");
/// assert_eq!(host.value_get(id, b"k"), Some(b"1".to_vec()));
/// ```
pub trait HostApi {
    /// Declares (or finds again) a keyed state by name.
    fn declare_state(&mut self, name: &str, kind: StateKind) -> StateId;
    /// The value of `key`, if any.
    fn value_get(&mut self, state: StateId, key: &[u8]) -> Option<Vec<u8>>;
    /// Calls `f` with the value of `key` without copying it where the host can lend it (the
    /// guest-side cache does); the typed handles read through this.
    fn value_with(&mut self, state: StateId, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) {
        let value = self.value_get(state, key);
        f(value.as_deref())
    }
    /// Sets the value of `key`.
    fn value_set(&mut self, state: StateId, key: &[u8], value: &[u8]);
    /// Sets the value of `key` to what `encode` writes into the (empty) buffer it is given;
    /// nothing changes if it fails. Lets the typed handles encode straight into where the value
    /// is kept (the guest-side cache's slot) instead of into a temporary.
    fn value_set_with(
        &mut self,
        state: StateId,
        key: &[u8],
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        let mut value = Vec::new();
        encode(&mut value)?;
        self.value_set(state, key, &value);
        Ok(())
    }
    /// Removes the value of `key`.
    fn value_clear(&mut self, state: StateId, key: &[u8]);
    /// The value under `map_key` in the map of `key`, if any.
    fn map_get(&mut self, state: StateId, key: &[u8], map_key: &[u8]) -> Option<Vec<u8>>;
    /// Inserts or replaces an entry in the map of `key`.
    fn map_put(&mut self, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]);
    /// Removes an entry from the map of `key`.
    fn map_remove(&mut self, state: StateId, key: &[u8], map_key: &[u8]);
    /// Every entry of the map of `key`, ordered by map key bytes.
    fn map_entries(&mut self, state: StateId, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Removes the whole map of `key`.
    fn map_clear(&mut self, state: StateId, key: &[u8]);
    /// Registers a timer for `key`.
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64);
    /// Deletes a timer for `key`.
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64);
    /// The current event-time watermark (`i64::MIN` before the first).
    fn current_watermark(&mut self) -> i64;
    /// The host's processing time in milliseconds since the Unix epoch.
    fn current_processing_time(&mut self) -> i64;
    /// Writes a message to the task's log.
    fn log(&mut self, level: Level, message: &str);
    /// Hands framed records produced so far in the current call to the host ahead of the
    /// call's result, and says whether it took them; a host that cannot (the default, as the
    /// test harness) leaves them in the call's output. Keeps a call that fans out to many
    /// records from holding them all in guest memory.
    fn emit_batch(&mut self, records: &[u8]) -> bool {
        let _ = records;
        false
    }
}

/// [`HostApi`] over the component's imports. Crate-private: value state written through the
/// SDK waits in its cache until a checkpoint, so a direct read of the imports could miss it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WasmHost;

fn wit_domain(domain: TimeDomain) -> types::TimeDomain {
    match domain {
        TimeDomain::EventTime => types::TimeDomain::EventTime,
        TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
    }
}

impl HostApi for WasmHost {
    fn declare_state(&mut self, name: &str, kind: StateKind) -> StateId {
        let kind = match kind {
            StateKind::Value => keyed_state::StateKind::Value,
            StateKind::Map => keyed_state::StateKind::Map,
        };
        keyed_state::declare(name, kind)
    }
    fn value_get(&mut self, state: StateId, key: &[u8]) -> Option<Vec<u8>> {
        keyed_state::value_get(state, key)
    }
    fn value_set(&mut self, state: StateId, key: &[u8], value: &[u8]) {
        keyed_state::value_set(state, key, value)
    }
    fn value_clear(&mut self, state: StateId, key: &[u8]) {
        keyed_state::value_clear(state, key)
    }
    fn map_get(&mut self, state: StateId, key: &[u8], map_key: &[u8]) -> Option<Vec<u8>> {
        keyed_state::map_get(state, key, map_key)
    }
    fn map_put(&mut self, state: StateId, key: &[u8], map_key: &[u8], value: &[u8]) {
        keyed_state::map_put(state, key, map_key, value)
    }
    fn map_remove(&mut self, state: StateId, key: &[u8], map_key: &[u8]) {
        keyed_state::map_remove(state, key, map_key)
    }
    fn map_entries(&mut self, state: StateId, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        keyed_state::map_entries(state, key)
    }
    fn map_clear(&mut self, state: StateId, key: &[u8]) {
        keyed_state::map_clear(state, key)
    }
    fn register_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        timers::register(wit_domain(domain), key, timestamp)
    }
    fn delete_timer(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        timers::delete(wit_domain(domain), key, timestamp)
    }
    fn current_watermark(&mut self) -> i64 {
        timers::current_watermark()
    }
    fn current_processing_time(&mut self) -> i64 {
        timers::current_processing_time()
    }
    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => logging::Level::Trace,
            Level::Debug => logging::Level::Debug,
            Level::Info => logging::Level::Info,
            Level::Warn => logging::Level::Warn,
            Level::Error => logging::Level::Error,
        };
        logging::log(level, message)
    }
    fn emit_batch(&mut self, records: &[u8]) -> bool {
        crate::bindings::weir::stream::output::emit_batch(records);
        true
    }
}

pub(crate) fn from_wit_domain(domain: types::TimeDomain) -> TimeDomain {
    match domain {
        types::TimeDomain::EventTime => TimeDomain::EventTime,
        types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
    }
}
