//! Checkpoints, as in Flink: the coordinator injects barriers at the sources, tasks align them
//! and snapshot their chains, acknowledgements carry the state handles, and a checkpoint is
//! complete once `_metadata` lists every handle. Pure protocol and storage; no wasm.

pub mod coordinator;
pub mod stats;
pub mod storage;

pub use coordinator::{
    Ack, CheckpointConfig, CheckpointFailure, CompletedCheckpoint, CompletedCheckpointStore,
    Coordinator, CoordinatorEvent, TaskCheckpointEvent,
};
pub use stats::{CheckpointStats, CheckpointSummary};
pub use storage::{CheckpointMetadata, RestoreError, RestoredState, SourceState, StateHandle};
