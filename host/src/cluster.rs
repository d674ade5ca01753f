//! The embedded mini-cluster of `weir run`: a JobMaster's work over one TaskExecutor, in one
//! process. Deploying a job graph into slots (`deploy`), restoring state into it (`restore`),
//! watching the tasks and cancelling all when one fails, and restarting a failed job from its
//! latest complete checkpoint by the restart strategy.

mod deploy;
mod gateways;
mod limits;
mod resource_manager;
mod restore;

pub use gateways::{ResourceManagerGateway, SlotOffer, TaskExecutorGateway};
pub use limits::{LimitMaximums, LimitTooHigh, job_limits};
pub use resource_manager::ResourceManager;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::storage::{self, RestoreError, RestoredState};
use crate::checkpoint::{CheckpointConfig, CompletedCheckpoint, CoordinatorEvent};
use crate::connectors::{committed_parts, create_output_dir, recover_transactional_dir};
use crate::job::{JobGraph, SinkSpec, VertexOutput};
use crate::metrics::{TaskMetrics, TaskMetricsSnapshot};
use crate::network::{BufferPoolStats, CancelFlag};
use crate::runtime::task_executor::{
    RunningTask, SlotAllocation, SlotError, TaskExecutor, TaskExecutorConfig,
};
use crate::runtime::{Mail, NativeOperators, TaskFailure};
use crate::wasm::{Limits, LoadError, LogSink, StderrLog, WasmRuntime};

/// Settings of the mini-cluster.
#[derive(Clone)]
pub struct MiniClusterConfig {
    pub task_executor: TaskExecutorConfig,
    /// Limits of a job that sets none of its own.
    pub limits: Arc<Limits>,
    /// The most a job may set.
    pub limit_maximums: LimitMaximums,
    /// Native operators jobs may name (`native = "..."`); none by default.
    pub native_operators: Option<Arc<dyn NativeOperators>>,
    /// Task deployment descriptors go through their serialized form on their way to the
    /// TaskExecutor, as they would to one in another process (on by default: every job then
    /// proves its descriptors travel).
    pub descriptors_over_the_wire: bool,
    pub log_sink: Arc<dyn LogSink>,
}

impl Default for MiniClusterConfig {
    fn default() -> Self {
        MiniClusterConfig {
            task_executor: TaskExecutorConfig::default(),
            limits: Arc::new(Limits::default()),
            limit_maximums: LimitMaximums::default(),
            native_operators: None,
            descriptors_over_the_wire: true,
            log_sink: Arc::new(StderrLog),
        }
    }
}

/// What happens when a task fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartStrategy {
    /// The job fails with the task.
    None,
    /// Restart after `delay`, at most `attempts` times.
    FixedDelay { attempts: u32, delay: Duration },
    /// Restart after `initial`, doubling each time up to `max`, at most `attempts` times.
    ExponentialDelay {
        attempts: u32,
        initial: Duration,
        max: Duration,
    },
}

impl RestartStrategy {
    /// The delay before restart number `restart` (0-based), or `None` when out of attempts.
    pub fn delay(&self, restart: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (restart < attempts).then_some(delay)
            }
            RestartStrategy::ExponentialDelay {
                attempts,
                initial,
                max,
            } => (restart < attempts)
                .then(|| initial.saturating_mul(1u32 << restart.min(20)).min(max)),
        }
    }
}

/// How a job runs beyond its graph.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub checkpoints: Option<CheckpointConfig>,
    pub restart: RestartStrategy,
    /// A savepoint, a `chk-<n>` directory, or a job's checkpoint directory (its newest complete
    /// checkpoint) to start from.
    pub restore: Option<PathBuf>,
    /// Start even if the savepoint holds state of operators the job no longer has.
    pub allow_non_restored_state: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            checkpoints: None,
            restart: RestartStrategy::None,
            restore: None,
            allow_non_restored_state: false,
        }
    }
}

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
    #[error(
        "operator `{operator}` names native operator `{native}`, but this runtime has no native \
         operators (they exist for weir-bench)"
    )]
    NoNativeOperators { operator: String, native: String },
    #[error("the job was cancelled")]
    Cancelled,
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub duration: Duration,
    pub tasks: Vec<(String, TaskMetricsSnapshot)>,
    pub network: BufferPoolStats,
    /// Checkpoints completed during the last attempt.
    pub checkpoints: Vec<CompletedCheckpoint>,
    /// Restarts it took.
    pub restarts: u32,
}

/// One process running JobManager and TaskExecutor together.
pub struct MiniCluster {
    task_executor: Arc<TaskExecutor>,
    resource_manager: ResourceManager,
    limits: Arc<Limits>,
    limit_maximums: LimitMaximums,
    native_operators: Option<Arc<dyn NativeOperators>>,
    descriptors_over_the_wire: bool,
    log_sink: Arc<dyn LogSink>,
    next_job: AtomicU64,
}

/// One attempt's setup.
pub(crate) struct AttemptSetup<'a> {
    pub checkpoints: Option<&'a CheckpointConfig>,
    pub restore: Option<&'a RestoredState>,
    pub allow_non_restored_state: bool,
    pub attempt: u32,
    /// Checkpoints retention must not delete: what this attempt restores from, and what the
    /// job was first restored from (the job does not own it: Flink's NO_CLAIM mode).
    pub protected: Vec<PathBuf>,
}

/// A read-only view of a running job's metrics, for a progress display on another thread.
#[derive(Clone)]
pub struct JobMonitor {
    started: Instant,
    /// (metrics, reads a source, writes a sink)
    tasks: Vec<(Arc<TaskMetrics>, bool, bool)>,
}

impl JobMonitor {
    /// Records read by the sources and written by the sinks so far, and the time since start.
    pub fn progress(&self) -> (u64, u64, Duration) {
        let (mut read, mut written) = (0, 0);
        for (m, source, sink) in &self.tasks {
            let s = m.snapshot();
            if *source {
                read += s.records_in;
            }
            if *sink {
                written += s.records_out;
            }
        }
        (read, written, self.started.elapsed())
    }
}

struct CoordinatorHandle {
    events: Sender<CoordinatorEvent>,
    thread: JoinHandle<()>,
    completed: Arc<Mutex<Vec<CompletedCheckpoint>>>,
}

/// A submitted job attempt: watch it, cancel it, take a savepoint, wait for it.
pub struct JobHandle {
    monitor: JobMonitor,
    id: u64,
    name: String,
    cancel: CancelFlag,
    tasks: Vec<RunningTask>,
    done: Receiver<(usize, Result<(), TaskFailure>)>,
    started: Instant,
    task_executor: Arc<dyn TaskExecutorGateway>,
    coordinator: Option<CoordinatorHandle>,
    registration: JobRegistration,
    _slots: SlotAllocation,
}

/// A job's entry in the TaskExecutor's job table (with its gates, which hold buffers): removed,
/// and the job cancelled, when the handle goes, waited for or not.
pub(crate) struct JobRegistration {
    pub task_executor: Arc<dyn TaskExecutorGateway>,
    pub id: u64,
    pub cancel: CancelFlag,
}

impl Drop for JobRegistration {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task_executor.unregister_job(self.id);
    }
}

/// The transactional sink directories of a graph.
fn transactional_dirs(graph: &JobGraph) -> Vec<PathBuf> {
    graph
        .vertices
        .iter()
        .filter_map(|v| match &v.output {
            VertexOutput::Sink(SinkSpec::File { path }) => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// What can be known before a job starts about why it could not end well: the checkpoint
/// directory must take files, and a fresh (not restored) checkpointed run must not meet
/// committed output of an earlier run, which it could neither keep nor replace.
fn preflight(graph: &JobGraph, options: &JobOptions, restoring: bool) -> Result<(), JobFailure> {
    let Some(config) = &options.checkpoints else {
        return Ok(());
    };
    let dir = config.dir.join(&graph.name);
    probe_writable(&dir).map_err(|source| JobFailure::CheckpointDir {
        dir: dir.clone(),
        source,
    })?;
    if restoring || options.restore.is_some() {
        return Ok(());
    }
    for dir in transactional_dirs(graph) {
        let parts = committed_parts(&dir).map_err(|source| JobFailure::Sink {
            dir: dir.clone(),
            source,
        })?;
        if !parts.is_empty() {
            let mut names: Vec<&str> = parts.iter().take(3).map(|(n, _)| n.as_str()).collect();
            if parts.len() > 3 {
                names.push("...");
            }
            return Err(JobFailure::OutputExists {
                dir,
                parts: names.join(", "),
            });
        }
    }
    Ok(())
}

/// Creates `dir` and writes, syncs and removes a file in it.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    create_output_dir(dir)?;
    let probe = dir.join(format!(".weir-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}

fn prepare_sinks(graph: &JobGraph, restored: Option<u64>) -> Result<(), JobFailure> {
    for dir in transactional_dirs(graph) {
        recover_transactional_dir(&dir, restored)
            .map_err(|source| JobFailure::Sink { dir, source })?;
    }
    Ok(())
}

impl MiniCluster {
    /// A mini-cluster on the process's wasm runtime.
    pub fn new(config: MiniClusterConfig, runtime: Arc<WasmRuntime>) -> Self {
        let task_executor = Arc::new(TaskExecutor::new(config.task_executor, runtime));
        MiniCluster {
            resource_manager: ResourceManager::new(vec![task_executor.clone()]),
            task_executor,
            limits: config.limits,
            limit_maximums: config.limit_maximums,
            native_operators: config.native_operators,
            descriptors_over_the_wire: config.descriptors_over_the_wire,
            log_sink: config.log_sink,
            next_job: AtomicU64::new(1),
        }
    }

    pub fn task_executor(&self) -> &TaskExecutor {
        &self.task_executor
    }

    /// Runs `graph` to completion, without checkpoints.
    pub fn run(&self, graph: &JobGraph) -> Result<JobResult, JobFailure> {
        self.submit(graph)?.wait()
    }

    /// Starts `graph` without checkpoints or restore.
    pub fn submit(&self, graph: &JobGraph) -> Result<JobHandle, JobFailure> {
        deploy::deploy(
            self,
            graph,
            &AttemptSetup {
                checkpoints: None,
                restore: None,
                allow_non_restored_state: false,
                attempt: 0,
                protected: Vec::new(),
            },
        )
    }

    /// Starts one attempt of `graph` with checkpoints and restore as `options` say; transactional
    /// sinks are made consistent with the restored checkpoint first.
    pub fn submit_with(
        &self,
        graph: &JobGraph,
        options: &JobOptions,
        restore: Option<&RestoredState>,
        attempt: u32,
    ) -> Result<JobHandle, JobFailure> {
        self.submit_attempt(graph, options, restore, attempt, None)
    }

    /// As [`submit_with`](Self::submit_with); `original` is the checkpoint the job was first
    /// restored from, which no attempt may delete.
    fn submit_attempt(
        &self,
        graph: &JobGraph,
        options: &JobOptions,
        restore: Option<&RestoredState>,
        attempt: u32,
        original: Option<&Path>,
    ) -> Result<JobHandle, JobFailure> {
        if let Some(restored) = restore.filter(|r| r.metadata.final_checkpoint) {
            return Err(JobFailure::Finished {
                checkpoint: restored.dir.clone(),
            });
        }
        if attempt == 0 {
            preflight(graph, options, restore.is_some())?;
        }
        if options.checkpoints.is_some() {
            prepare_sinks(graph, restore.map(|r| r.metadata.checkpoint))?;
        }
        deploy::deploy(
            self,
            graph,
            &AttemptSetup {
                checkpoints: options.checkpoints.as_ref(),
                restore,
                allow_non_restored_state: options.allow_non_restored_state,
                attempt,
                protected: restore
                    .map(|r| r.dir.clone())
                    .into_iter()
                    .chain(original.map(Path::to_path_buf))
                    .collect(),
            },
        )
    }

    /// Runs `graph` to completion with checkpoints, restore and restarts as `options` say. A
    /// failed attempt is restarted from the job's latest complete checkpoint (or what it was
    /// restored from) while the restart strategy allows.
    pub fn run_job(&self, graph: &JobGraph, options: &JobOptions) -> Result<JobResult, JobFailure> {
        let original = match &options.restore {
            Some(path) => Some(resolve_with_warnings(path)?),
            None => None,
        };
        if let Some(restored) = original.as_ref().filter(|r| r.metadata.final_checkpoint) {
            return finished_in(graph, options, restored, 0);
        }
        let original_dir = original.as_ref().map(|r| r.dir.clone());
        let mut restored = original;
        let mut restarts = 0;
        loop {
            let handle = self.submit_attempt(
                graph,
                options,
                restored.as_ref(),
                restarts,
                original_dir.as_deref(),
            )?;
            let completed = handle.completed_list();
            let outcome = handle.wait();
            match outcome {
                Ok(mut result) => {
                    result.restarts = restarts;
                    return Ok(result);
                }
                Err(JobFailure::Task(failure)) => {
                    // State that cannot be read now will not be readable after a restart from
                    // the same checkpoint.
                    if matches!(*failure, TaskFailure::Restore { .. }) {
                        return Err(JobFailure::Task(failure));
                    }
                    // Without checkpoints there is nothing consistent to restart from.
                    let delay = options
                        .checkpoints
                        .as_ref()
                        .and_then(|_| options.restart.delay(restarts));
                    let Some(delay) = delay else {
                        return Err(JobFailure::Task(failure));
                    };
                    eprintln!(
                        "job `{}` failed ({failure}); restarting in {delay:?}",
                        graph.name
                    );
                    std::thread::sleep(delay);
                    restarts += 1;
                    // The latest checkpoint this run completed; failing that, what it was
                    // restored from (kept: nothing of this run deletes it). An unreadable
                    // latest checkpoint fails the job rather than going back further, which
                    // would repeat output the transactional sinks already committed.
                    let latest = completed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .rfind(|c| !c.savepoint)
                        .map(|c| c.dir.clone());
                    if let Some(dir) = latest {
                        let state =
                            storage::resolve(&dir).map_err(|source| JobFailure::Restart {
                                checkpoint: dir.clone(),
                                source,
                            })?;
                        if state.metadata.final_checkpoint {
                            // It failed after its final checkpoint (a sink closing, say):
                            // running it again would repeat what `close` emitted.
                            return finished_in(graph, options, &state, restarts);
                        }
                        restored = Some(state);
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// The end of a job whose final checkpoint is `restored`: nothing is left to run, and its
/// output is complete once the sinks are made consistent with that checkpoint.
fn finished_in(
    graph: &JobGraph,
    options: &JobOptions,
    restored: &RestoredState,
    restarts: u32,
) -> Result<JobResult, JobFailure> {
    if options.checkpoints.is_some() {
        prepare_sinks(graph, Some(restored.metadata.checkpoint))?;
    }
    eprintln!(
        "job `{}` had finished in `{}`; nothing left to run",
        graph.name,
        restored.dir.display()
    );
    let mut result = JobResult::nothing_left(&graph.name);
    result.restarts = restarts;
    Ok(result)
}

fn resolve_with_warnings(path: &Path) -> Result<RestoredState, JobFailure> {
    let restored = storage::resolve(path)?;
    for warning in &restored.skipped {
        eprintln!("warning: {warning}");
    }
    Ok(restored)
}

impl From<RestoreError> for JobFailure {
    fn from(e: RestoreError) -> Self {
        JobFailure::Restore(e)
    }
}

impl JobResult {
    /// The result of a job restored from its final checkpoint.
    fn nothing_left(name: &str) -> Self {
        JobResult {
            name: name.to_string(),
            duration: Duration::ZERO,
            tasks: Vec::new(),
            network: BufferPoolStats::default(),
            checkpoints: Vec::new(),
            restarts: 0,
        }
    }
}

impl JobHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A view of the job's progress that outlives `wait`'s borrow.
    pub fn monitor(&self) -> JobMonitor {
        self.monitor.clone()
    }

    /// Stops every task of the job.
    pub fn cancel(&self) {
        self.cancel.cancel();
        for task in &self.tasks {
            task.mailbox.send(Mail::Cancel);
        }
    }

    /// Takes a savepoint into `dir` and waits until it is complete.
    pub fn savepoint(&self, dir: &Path) -> Result<PathBuf, String> {
        let coordinator = self
            .coordinator
            .as_ref()
            .ok_or("the job runs without checkpointing")?;
        let (reply, answer) = mpsc::channel();
        coordinator
            .events
            .send(CoordinatorEvent::Savepoint {
                dir: dir.to_path_buf(),
                reply,
            })
            .map_err(|_| "the checkpoint coordinator stopped")?;
        answer
            .recv()
            .map_err(|_| "the checkpoint coordinator stopped".to_string())?
    }

    /// The coordinator's list of completed checkpoints, which outlives `wait`.
    fn completed_list(&self) -> Arc<Mutex<Vec<CompletedCheckpoint>>> {
        self.coordinator
            .as_ref()
            .map(|c| c.completed.clone())
            .unwrap_or_default()
    }

    /// Checkpoints completed so far.
    pub fn completed_checkpoints(&self) -> Vec<CompletedCheckpoint> {
        self.coordinator
            .as_ref()
            .map(|c| {
                c.completed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Current metrics of every task.
    pub fn metrics(&self) -> Vec<(String, TaskMetricsSnapshot)> {
        self.tasks
            .iter()
            .map(|t| (t.name.clone(), t.metrics.snapshot()))
            .collect()
    }

    pub fn network(&self) -> BufferPoolStats {
        self.task_executor.network_stats()
    }

    /// Waits for every task. The first task to fail cancels the others; its failure (not the
    /// cancellations it caused) is the job's.
    pub fn wait(self) -> Result<JobResult, JobFailure> {
        let mut first_failure: Option<TaskFailure> = None;
        let mut cancelled = false;
        for _ in 0..self.tasks.len() {
            let Ok((_, result)) = self.done.recv() else {
                break;
            };
            match result {
                Ok(()) => {}
                Err(TaskFailure::Cancelled { .. }) => cancelled = true,
                Err(failure) => {
                    if first_failure.is_none() {
                        first_failure = Some(failure);
                        self.cancel();
                    }
                }
            }
        }
        let duration = self.started.elapsed();
        let tasks = self.metrics();
        let network = self.task_executor.network_stats();
        let checkpoints = self.completed_checkpoints();
        if let Some(c) = self.coordinator {
            let _ = c.events.send(CoordinatorEvent::Stop);
            let _ = c.thread.join();
        }
        for task in self.tasks {
            let _ = task.thread.join();
        }
        drop(self.registration);
        if let Some(failure) = first_failure {
            return Err(JobFailure::Task(Box::new(failure)));
        }
        if cancelled {
            return Err(JobFailure::Cancelled);
        }
        Ok(JobResult {
            name: self.name,
            duration,
            tasks,
            network,
            checkpoints,
            restarts: 0,
        })
    }
}
