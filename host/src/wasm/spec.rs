//! What a wasm operator subtask is and how it runs.

use std::sync::Arc;

use super::engine::Capabilities;
use super::limits::Limits;
use super::stdio::{LogSink, StderrLog};

/// How the host calls a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ExecutionMode {
    /// The batched fast path when the component exports it, per record otherwise.
    #[default]
    Batched,
    /// One call per record, even when the component exports the batched path.
    PerRecord,
}

/// What an operator subtask is and how it runs.
#[derive(Clone)]
pub struct OperatorSpec {
    /// The operator name the component exports.
    pub operator: String,
    /// The operator's node id in the job, which names its state in checkpoints.
    pub id: String,
    pub subtask_index: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub attempt: u32,
    pub config: Vec<(String, String)>,
    pub limits: Arc<Limits>,
    pub capabilities: Capabilities,
    pub mode: ExecutionMode,
    /// Bytes of records gathered before a batched call when records arrive one at a time.
    pub batch_bytes: usize,
    pub log_sink: Arc<dyn LogSink>,
    /// The job's cancel flag: once set, a call in progress stops within an epoch tick, so a
    /// failed sibling or a cancelled job never waits for this guest's deadline.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Where the instance's linear memory size is added (its task's gauge, for metrics).
    pub memory_gauge: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Seeds the instance's randomness when it is not granted real randomness: fixed by the
    /// job, the operator and the subtask, the same in every attempt.
    pub random_seed: u64,
}

impl OperatorSpec {
    /// Subtask 0 of 1 with default limits.
    pub fn new(operator: impl Into<String>) -> Self {
        let operator = operator.into();
        OperatorSpec {
            id: operator.clone(),
            operator,
            subtask_index: 0,
            parallelism: 1,
            max_parallelism: crate::state::key_groups::DEFAULT_MAX_PARALLELISM,
            attempt: 0,
            config: Vec::new(),
            limits: Arc::new(Limits::default()),
            capabilities: Capabilities::default(),
            mode: ExecutionMode::Batched,
            batch_bytes: 32 << 10,
            log_sink: Arc::new(StderrLog),
            cancel: None,
            memory_gauge: None,
            random_seed: 0,
        }
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }
}
