//! The dispatcher (Flink's Dispatcher): where jobs are submitted. It gives each attempt its id,
//! keeps the job store (the record of every job it ran and how it ended, for a client, later
//! the REST endpoint, to list) and the component blobs jobs name (Flink's BlobServer). Clients reach it through [`DispatcherGateway`]; a running
//! attempt is reached through [`JobMasterGateway`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::JobFailure;
use super::insight::JobInsight;
use super::job_master::{JobControl, JobHandle, JobOptions, JobResult};
use crate::checkpoint::CompletedCheckpoint;
use crate::job::JobGraph;
use crate::metrics::TaskMetricsSnapshot;
use crate::wasm::{LoadError, read_component};

/// How a job stands in the job store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Finished { restarts: u32 },
    Failed { reason: String },
    Cancelled,
}

/// A job in the job store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The dispatcher's number for the job (in submission order).
    pub number: u64,
    /// The job's id: 32 hex digits, as Flink's JobID.
    pub id: String,
    pub name: String,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    pub status: JobStatus,
    /// The tenant that submitted it (`None` with no tenants configured).
    pub owner: Option<String>,
}

/// What a client asks of the dispatcher.
pub trait DispatcherGateway: Send + Sync {
    /// Runs `graph` to the end as `options` say, restarts included, and records how it ended.
    fn run_job(&self, graph: &JobGraph, options: &JobOptions) -> Result<JobResult, JobFailure>;
    /// Every job submitted so far, oldest first.
    fn jobs(&self) -> Vec<JobRecord>;
}

/// What the dispatcher and clients ask of a running attempt's job master.
pub trait JobMasterGateway: Send {
    /// The attempt's id on its TaskExecutor.
    fn attempt_id(&self) -> u64;
    /// Stops every task of the attempt.
    fn cancel(&self);
    /// Takes a savepoint into `dir` and waits until it is complete.
    fn trigger_savepoint(&self, dir: &Path) -> Result<PathBuf, String>;
    /// Checkpoints completed so far.
    fn completed_checkpoints(&self) -> Vec<CompletedCheckpoint>;
    /// Current metrics of every task.
    fn task_metrics(&self) -> Vec<(String, TaskMetricsSnapshot)>;
}

impl JobMasterGateway for JobHandle {
    fn attempt_id(&self) -> u64 {
        self.id()
    }
    fn cancel(&self) {
        JobHandle::cancel(self)
    }
    fn trigger_savepoint(&self, dir: &Path) -> Result<PathBuf, String> {
        self.savepoint(dir)
    }
    fn completed_checkpoints(&self) -> Vec<CompletedCheckpoint> {
        JobHandle::completed_checkpoints(self)
    }
    fn task_metrics(&self) -> Vec<(String, TaskMetricsSnapshot)> {
        self.metrics()
    }
}

/// Attempt ids, the job store and the component blobs; see the module docs.
/// A fresh job id: 128 random bits as 32 hex digits.
pub(crate) fn new_job_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy: unique within the process is what an id must be.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n =
            NEXT.fetch_add(1, Ordering::Relaxed) as u128 | (u128::from(std::process::id()) << 64);
        bytes = n.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Default)]
pub struct Dispatcher {
    next_attempt: AtomicU64,
    attempt_base: std::sync::OnceLock<u64>,
    store: Mutex<BTreeMap<u64, JobRecord>>,
    next_job: AtomicU64,
    /// Component files as submitted jobs name them: their file name and bytes, read once. A
    /// TaskExecutor gets the bytes, never the path, as one in another process must.
    blobs: Mutex<BTreeMap<PathBuf, (String, Arc<[u8]>)>>,
    /// How to cancel each job started to run on its own thread, by id, while it runs.
    controls: Mutex<BTreeMap<String, Arc<JobControl>>>,
    /// What each job started on its own thread looks like, by id, kept after it ends (Flink's
    /// archived execution graphs).
    insights: Mutex<BTreeMap<String, Arc<JobInsight>>>,
}

impl Dispatcher {
    /// Forgets the components read from under `dir` (a job's upload, gone with the job).
    pub(super) fn forget_components_under(&self, dir: &Path) {
        self.blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|path, _| !path.starts_with(dir));
    }

    /// The component at `path`: its file name and bytes.
    pub(super) fn component(&self, path: &Path) -> Result<(String, Arc<[u8]>), LoadError> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(blob) = blobs.get(path) {
            return Ok(blob.clone());
        }
        let (name, bytes) = read_component(path)?;
        let blob = (name, Arc::from(bytes));
        blobs.insert(path.to_path_buf(), blob.clone());
        Ok(blob)
    }

    /// A fresh id for an attempt: unique in this process, so TaskExecutors key attempts by it.
    /// A fresh attempt id. Ids start at a random point, so the attempts of a JobManager that
    /// restarted never meet an older one's on a TaskManager or a data connection.
    pub(super) fn new_attempt_id(&self) -> u64 {
        let base = *self.attempt_base.get_or_init(|| {
            let mut bytes = [0u8; 4];
            let _ = getrandom::fill(&mut bytes);
            u64::from(u32::from_le_bytes(bytes)) << 24
        });
        base + self.next_attempt.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a job as running; returns its number.
    pub(super) fn record_start(&self, name: &str) -> u64 {
        self.record_start_as(&new_job_id(), name, None)
    }

    /// Records a job as running under id `id` (a recovered job keeps its id); its number.
    pub(super) fn record_start_as(&self, id: &str, name: &str, owner: Option<&str>) -> u64 {
        let number = self.next_job.fetch_add(1, Ordering::Relaxed) + 1;
        self.store.lock().unwrap_or_else(|p| p.into_inner()).insert(
            number,
            JobRecord {
                number,
                id: id.to_string(),
                name: name.to_string(),
                start_time_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                status: JobStatus::Running,
                owner: owner.map(str::to_string),
            },
        );
        number
    }

    /// Records how job `number` ended.
    /// Keeps how to cancel running job `id`.
    pub(super) fn set_control(&self, id: &str, control: Arc<JobControl>) {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), control);
    }

    pub(super) fn set_insight(&self, id: &str, insight: Arc<JobInsight>) {
        self.insights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), insight);
    }

    pub(super) fn insight(&self, id: &str) -> Option<Arc<JobInsight>> {
        self.insights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub(super) fn control(&self, id: &str) -> Option<Arc<JobControl>> {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Forgets how to cancel job `id`: it ended.
    pub(super) fn take_control(&self, id: &str) {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(super) fn record_end(&self, number: u64, outcome: &Result<JobResult, JobFailure>) {
        let status = match outcome {
            Ok(result) => JobStatus::Finished {
                restarts: result.restarts,
            },
            Err(JobFailure::Cancelled) => JobStatus::Cancelled,
            Err(e) => JobStatus::Failed {
                reason: e.to_string(),
            },
        };
        if let Some(record) = self
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&number)
        {
            record.status = status;
        }
    }

    /// The job store, oldest first.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
