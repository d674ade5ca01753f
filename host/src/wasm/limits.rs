//! Every size and time a guest controls, bounded in one place.

use std::time::Duration;

/// Limits on one operator instance. Each field names the threat it guards against.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest linear memory (per memory) an instance may grow to. Guards the host's RAM against
    /// a guest that allocates without bound; a guest that asks for more fails with a
    /// memory-cap error instead of taking the process down.
    pub max_memory_bytes: usize,
    /// Largest table an instance may grow to. Tables are host memory too.
    pub max_table_elements: usize,
    /// Longest a single call into the guest may run. Guards the task thread against a guest that
    /// never returns; enforced by epoch interruption, so it is accurate to one epoch tick.
    pub call_deadline: Duration,
    /// Bytes an instance may write to stdout, stderr and the log import together. Guards the
    /// task log (and the disk behind it) against a guest that prints without end.
    pub max_log_bytes: usize,
    /// Largest value or key of one emitted record. Guards network buffers and downstream guests.
    pub max_record_bytes: usize,
    /// Largest output buffer one batched call may return.
    pub max_batch_output_bytes: usize,
    /// Largest key of keyed state.
    pub max_state_key_bytes: usize,
    /// Largest value (or map entry) of keyed state.
    pub max_state_value_bytes: usize,
    /// Bytes of keyed state an instance may hold in the host (keys, values and an estimate of
    /// each entry's overhead). Guards the host's RAM against an operator that keeps state
    /// without bound: it fails with a state error naming itself long before the machine runs
    /// out of memory.
    pub max_state_bytes: usize,
    /// Most timers an instance may have pending. Timers live in host memory.
    pub max_timers: usize,
    /// Most states an instance may declare.
    pub max_states: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_bytes: 512 << 20,
            max_table_elements: 100_000,
            call_deadline: Duration::from_secs(30),
            max_log_bytes: 1 << 20,
            max_record_bytes: 16 << 20,
            max_batch_output_bytes: 256 << 20,
            max_state_key_bytes: 64 << 10,
            max_state_value_bytes: 16 << 20,
            max_state_bytes: 1 << 30,
            max_timers: 10_000_000,
            max_states: 1_000,
        }
    }
}
