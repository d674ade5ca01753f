//! The embedded mini-cluster of `weir run` (Flink's MiniCluster): the resource manager, the
//! job master's work and one TaskExecutor, in one process, talking through the same gateways
//! a standalone cluster puts RPC behind.

mod deploy;
pub(crate) mod dispatcher;
mod gateways;
pub mod insight;
mod job_master;
mod limits;
mod mini_cluster;
mod placement;
mod resource_manager;
pub mod rest;
mod restore;
pub mod standalone;

pub use dispatcher::{Dispatcher, DispatcherGateway, JobMasterGateway, JobRecord, JobStatus};
pub use gateways::{ResourceManagerGateway, SlotOffer, TaskExecutorGateway};
pub use job_master::{JobControl, JobHandle, JobMonitor, JobOptions, JobResult, RestartStrategy};
pub use limits::{LimitMaximums, LimitTooHigh, job_limits};
pub use mini_cluster::{MiniCluster, MiniClusterConfig};
pub use resource_manager::ResourceManager;

use std::path::PathBuf;

use crate::checkpoint::storage::RestoreError;
use crate::runtime::TaskFailure;
use crate::runtime::task_executor::SlotError;
use crate::wasm::LoadError;

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Slots(#[from] SlotError),
    #[error("cannot start a task thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Task(Box<TaskFailure>),
    /// The cause is part of the message, not a `source`, so it is printed once.
    #[error("cannot restore: {0}")]
    Restore(RestoreError),
    #[error("cannot prepare sink `{dir}`")]
    Sink {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// An external sink's transactions could not be settled before a (re)start.
    #[error("cannot recover sink `{sink}`: {message}")]
    SinkRecovery { sink: String, message: String },
    #[error(
        "cannot write checkpoints under `{dir}`; pass a --checkpoint-dir this process can write"
    )]
    CheckpointDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "output directory `{dir}` already holds committed output of an earlier run ({parts}); \
         remove it or write elsewhere, or continue that run with --from-savepoint"
    )]
    OutputExists { dir: PathBuf, parts: String },
    #[error(transparent)]
    Limits(#[from] LimitTooHigh),
    #[error("cannot restart from checkpoint `{checkpoint}`, the latest the job completed")]
    Restart {
        checkpoint: PathBuf,
        source: RestoreError,
    },
    #[error(
        "the job finished in checkpoint `{checkpoint}`: nothing is left to run from it (`run_job` \
         and `weir run` without --savepoint-dir end such a job at once)"
    )]
    Finished { checkpoint: PathBuf },
    #[error(transparent)]
    Submit(#[from] crate::runtime::SubmitError),
    #[error("{0}")]
    Descriptor(String),
    /// A job spread over TaskExecutors needs their data ports.
    #[error("TaskExecutor {index} of the job has no data port: {reason}")]
    DataPort { index: usize, reason: String },
    #[error(
        "operator `{operator}` names native operator `{native}`, but this runtime has no native \
         operators (they exist for weir-bench)"
    )]
    NoNativeOperators { operator: String, native: String },
    #[error("the job was cancelled")]
    Cancelled,
}

impl From<RestoreError> for JobFailure {
    fn from(e: RestoreError) -> Self {
        JobFailure::Restore(e)
    }
}
