//! How the parts of a cluster talk (Flink's gateways): a job master asks the resource manager
//! for slots, and the TaskExecutor that offers them for everything else. In one process the
//! implementations are the parts themselves; the standalone cluster puts RPC behind the same
//! traits, which is why their arguments are plain data (descriptors, blob keys, ids).

use std::ops::Range;
use std::sync::Arc;

use crate::metrics::TaskMetricsSnapshot;
use crate::network::BufferPoolStats;
use crate::runtime::deployment::{BlobKey, TaskDeploymentDescriptor};
use crate::runtime::job_log::RegisteredJob;
use crate::runtime::task_executor::{SlotAllocation, SlotError, TaskExecutor};
use crate::runtime::{JobMasterConnection, SubmitError};
use crate::stream::Barrier;
use crate::wasm::LoadError;

/// What a job master asks of a TaskExecutor.
pub trait TaskExecutorGateway: Send + Sync {
    /// Makes a component (its file name and bytes, from the dispatcher's blob store) available
    /// to tasks under its blob key; compiled once per TaskExecutor.
    fn put_component(&self, name: &str, bytes: &[u8]) -> Result<BlobKey, LoadError>;
    /// Opens the job's entry before its tasks are submitted: where they report to, whether
    /// the job checkpoints, and whose job it is.
    fn register_job(
        &self,
        job: u64,
        master: Arc<dyn JobMasterConnection>,
        registration: &RegisteredJob,
    );
    /// Deploys one task of a registered job.
    fn submit_task(&self, tdd: TaskDeploymentDescriptor) -> Result<(), SubmitError>;
    /// Starts checkpoint `barrier` at tasks `tasks` (sources) of the job.
    fn trigger_checkpoint(&self, job: u64, tasks: &[usize], barrier: &Barrier);
    /// Checkpoint `id` of the job completed (`last`: its final checkpoint).
    fn notify_checkpoint_complete(&self, job: u64, id: u64, last: bool);
    /// Ends the input of the job's sources here (stop with drain).
    fn drain_sources(&self, job: u64);
    /// The metrics of the job's tasks here: (task index, name, metrics).
    fn task_metrics(&self, job: u64) -> Vec<(usize, String, TaskMetricsSnapshot)>;
    /// Stops every task of the job at its next step or wait.
    fn cancel_job(&self, job: u64);
    /// Forgets the job (its gates, and the buffers they hold).
    fn unregister_job(&self, job: u64);
    /// The network buffer pool's usage.
    fn network_stats(&self) -> BufferPoolStats;
    /// Where other TaskExecutors reach this one's data port (opened on first call).
    fn data_address(&self) -> Result<String, String>;
    /// The TaskExecutor's resource id, as the REST endpoint and metrics name it.
    fn resource_id(&self) -> String;
}

/// Slots and network buffers held for a job on a TaskExecutor: given back when dropped.
pub trait SlotLease: Send {}

impl SlotLease for SlotAllocation {}

/// Slots on a TaskExecutor, and the TaskExecutor to deploy into them.
pub struct SlotOffer {
    pub allocation: Box<dyn SlotLease>,
    pub task_executor: Arc<dyn TaskExecutorGateway>,
    /// Which of the job's slots these are (slot sharing: slot `s` runs subtask `s` of every
    /// vertex).
    pub slots: Range<u32>,
}

/// Network buffers per channel that a job's edges reserve on the cluster's TaskExecutors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBuffers {
    /// Per channel of a producer's partition.
    pub per_channel: usize,
    /// Per remote input channel of a consumer.
    pub exclusive: usize,
    /// Per consumer gate with remote channels.
    pub floating: usize,
}

/// What a job master asks of the resource manager.
pub trait ResourceManagerGateway: Send + Sync {
    /// Network buffers per channel on the cluster's TaskExecutors: what a job's edges reserve.
    fn channel_buffers(&self) -> ChannelBuffers;
    /// `slots` slots for a job: on one TaskExecutor when one has room for all (no edge then
    /// crosses the network), else over several, each filled before the next (Flink's default
    /// placement). `buffers(slots)` is the network buffers the job needs on a TaskExecutor
    /// that holds just `slots` of them. `tenant`: whose job it is (a TaskManager reserved for
    /// a tenant serves no other's).
    fn request_slots(
        &self,
        slots: u32,
        buffers: &dyn Fn(Range<u32>) -> usize,
        tenant: Option<&str>,
    ) -> Result<Vec<SlotOffer>, SlotError>;
}

impl TaskExecutorGateway for TaskExecutor {
    fn put_component(&self, name: &str, bytes: &[u8]) -> Result<BlobKey, LoadError> {
        let loaded = self.runtime().load_bytes(name, bytes)?;
        Ok(BlobKey {
            hash: loaded.hash.clone(),
            name: loaded.name.clone(),
        })
    }

    fn register_job(
        &self,
        job: u64,
        master: Arc<dyn JobMasterConnection>,
        registration: &RegisteredJob,
    ) {
        TaskExecutor::register_job(self, job, master, registration)
    }

    fn submit_task(&self, tdd: TaskDeploymentDescriptor) -> Result<(), SubmitError> {
        TaskExecutor::submit_task(self, tdd)
    }

    fn drain_sources(&self, job: u64) {
        TaskExecutor::drain_sources(self, job)
    }
    fn trigger_checkpoint(&self, job: u64, tasks: &[usize], barrier: &Barrier) {
        TaskExecutor::trigger_checkpoint(self, job, tasks, barrier)
    }

    fn notify_checkpoint_complete(&self, job: u64, id: u64, last: bool) {
        TaskExecutor::notify_checkpoint_complete(self, job, id, last)
    }

    fn task_metrics(&self, job: u64) -> Vec<(usize, String, TaskMetricsSnapshot)> {
        TaskExecutor::task_metrics(self, job)
            .into_iter()
            .map(|(i, name, m)| (i, name, m.snapshot()))
            .collect()
    }

    fn cancel_job(&self, job: u64) {
        TaskExecutor::cancel_job(self, job)
    }

    fn unregister_job(&self, job: u64) {
        TaskExecutor::unregister_job(self, job)
    }

    fn network_stats(&self) -> BufferPoolStats {
        self.network().stats()
    }

    fn data_address(&self) -> Result<String, String> {
        self.network_environment().data_address()
    }

    fn resource_id(&self) -> String {
        self.config().resource_id.clone()
    }
}
