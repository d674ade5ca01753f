//! Host-managed keyed state and timers, in the manner of Flink's heap keyed state backend: every
//! key belongs to a key group, the unit in which state moves when a job is rescaled.

pub mod key_groups;
mod keyed;
mod timers;

pub use keyed::{KeyedStateBackend, KeyedStateSnapshot, StateData, StateError, StateKind};
pub use timers::{TimeDomain, TimerService, TimerSnapshot, processing_time_now};

use serde::{Deserialize, Serialize};

/// Everything one operator subtask checkpoints: the host-managed keyed state and timers, and
/// the bytes of the guest's own `snapshot-state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's name in the job.
    pub operator: String,
    /// The subtask that took the snapshot.
    pub subtask: u32,
    /// The parallelism the snapshot was taken at.
    pub parallelism: u32,
    /// What the guest's `snapshot-state` returned.
    pub guest_state: Vec<u8>,
    /// Host-managed keyed state.
    pub keyed: KeyedStateSnapshot,
    /// Pending timers.
    pub timers: TimerSnapshot,
}
