//! The job master's work for one job: deploying attempts, watching them, cancelling every
//! task when one fails, and restarting by the restart strategy from the latest checkpoint the
//! run completed. A job's life is a few explicit states:
//!
//! 1. `Deploying`: an attempt is submitted (from the checkpoint to restore, if any);
//! 2. `Running`: its tasks run until all finish (the job's result) or one fails; a failure the
//!    strategy does not retry (or state that cannot be read, which a restart could not read
//!    either) is the job's;
//! 3. `Restarting`: the run's latest checkpoint is taken, the strategy's delay waited, and the
//!    next attempt goes back to `Deploying`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::JobFailure;
use super::gateways::{SlotLease, TaskExecutorGateway};
use super::insight::{JobInsight, TaskInsight, TaskStatus};
use super::mini_cluster::MiniCluster;
use crate::checkpoint::storage::{self, RestoredState};
use crate::checkpoint::{CheckpointConfig, CheckpointStats, CompletedCheckpoint, CoordinatorEvent};
use crate::connectors::{committed_parts, create_output_dir, recover_transactional_dir};
use crate::job::{JobGraph, SinkSpec, VertexOutput};
use crate::metrics::TaskMetricsSnapshot;
use crate::network::BufferPoolStats;
use crate::runtime::{JobMasterConnection, TaskFailure};

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
    /// The tenant whose job it is: its slots come from TaskManagers reserved for it, or
    /// shared ones.
    pub tenant: Option<String>,
    /// The dispatcher's id of the job (set when it is started under one).
    pub job_id: Option<String>,
    /// Most bytes the job's retained checkpoints may take (the tenant's quota).
    pub checkpoint_storage: Option<u64>,
    /// Where its completed checkpoints are recorded first (with high availability, etcd).
    pub checkpoint_store: Option<Arc<dyn crate::checkpoint::CompletedCheckpointStore>>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            checkpoints: None,
            restart: RestartStrategy::None,
            restore: None,
            allow_non_restored_state: false,
            tenant: None,
            job_id: None,
            checkpoint_storage: None,
            checkpoint_store: None,
        }
    }
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

/// One attempt's setup.
pub(crate) struct AttemptSetup<'a> {
    pub checkpoints: Option<&'a CheckpointConfig>,
    pub restore: Option<&'a RestoredState>,
    pub allow_non_restored_state: bool,
    pub attempt: u32,
    /// Checkpoints retention must not delete: what this attempt restores from, and what the
    /// job was first restored from (the job does not own it: Flink's NO_CLAIM mode).
    pub protected: Vec<PathBuf>,
    /// The job's checkpoint statistics, which the attempt's coordinator adds to.
    pub stats: Arc<CheckpointStats>,
    /// The tenant whose slots the attempt takes.
    pub tenant: Option<&'a str>,
    /// The dispatcher's id of the job, which names its logs.
    pub job_id: Option<&'a str>,
    /// Most bytes the job's retained checkpoints may take.
    pub checkpoint_storage: Option<u64>,
    pub checkpoint_store: Option<Arc<dyn crate::checkpoint::CompletedCheckpointStore>>,
}

/// A read-only view of a running job's metrics, for a progress display on another thread.
#[derive(Clone)]
pub struct JobMonitor {
    pub(super) started: Instant,
    pub(super) job: u64,
    pub(super) task_executors: Vec<Arc<dyn TaskExecutorGateway>>,
    /// Task indexes of the sources and of the sinks.
    pub(super) sources: Vec<usize>,
    pub(super) sinks: Vec<usize>,
}

impl JobMonitor {
    /// Records read by the sources and written by the sinks so far, and the time since start.
    pub fn progress(&self) -> (u64, u64, Duration) {
        let (mut read, mut written) = (0, 0);
        for te in &self.task_executors {
            for (index, _, m) in te.task_metrics(self.job) {
                if self.sources.contains(&index) {
                    read += m.records_in;
                }
                if self.sinks.contains(&index) {
                    written += m.records_out;
                }
            }
        }
        (read, written, self.started.elapsed())
    }
}

/// A task of a deployed attempt, as its job master knows it.
pub(super) struct DeployedTask {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) vertex: usize,
    pub(super) subtask: u32,
    /// Which of the job's TaskExecutors runs it.
    pub(super) task_executor: usize,
    pub(super) source: bool,
    pub(super) sink: bool,
}

/// The job master's end of its tasks' connection, in one process: checkpoint events go to the
/// coordinator, task ends to the waiting job handle.
pub(super) struct InProcessJobMaster {
    pub(super) coordinator: Option<Sender<CoordinatorEvent>>,
    pub(super) done: Sender<(usize, Result<(), TaskFailure>)>,
}

impl JobMasterConnection for InProcessJobMaster {
    fn checkpoint_event(&self, event: CoordinatorEvent) {
        // The coordinator is gone only once the job is over.
        if let Some(coordinator) = &self.coordinator {
            let _ = coordinator.send(event);
        }
    }

    fn task_ended(&self, index: usize, result: Result<(), TaskFailure>) {
        // The receiver goes away only once the job is over.
        let _ = self.done.send((index, result));
    }
}

pub(super) struct CoordinatorHandle {
    pub(super) events: Sender<CoordinatorEvent>,
    pub(super) thread: JoinHandle<()>,
    pub(super) completed: Arc<Mutex<Vec<CompletedCheckpoint>>>,
}

/// A submitted job attempt: watch it, cancel it, take a savepoint, wait for it.
pub struct JobHandle {
    pub(super) monitor: JobMonitor,
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) tasks: Vec<DeployedTask>,
    pub(super) done: Receiver<(usize, Result<(), TaskFailure>)>,
    pub(super) started: Instant,
    /// The TaskExecutors running the job's tasks, one per slot offer.
    pub(super) task_executors: Vec<Arc<dyn TaskExecutorGateway>>,
    pub(super) coordinator: Option<CoordinatorHandle>,
    pub(super) registrations: Vec<JobRegistration>,
    pub(super) _slots: Vec<Box<dyn SlotLease>>,
    /// Told of each task's end and the attempt's last metrics (a job run by a job master).
    pub(super) insight: Option<Arc<JobInsight>>,
}

/// A job's entry in a TaskExecutor's job table (with its gates, which hold buffers): removed,
/// and what runs of the job cancelled, when the handle goes, waited for or not.
pub(crate) struct JobRegistration {
    pub task_executor: Arc<dyn TaskExecutorGateway>,
    pub id: u64,
}

impl Drop for JobRegistration {
    fn drop(&mut self) {
        self.task_executor.unregister_job(self.id);
    }
}

/// The transactional sink directories of a graph.
pub(super) fn transactional_dirs(graph: &JobGraph) -> Vec<PathBuf> {
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
pub(super) fn preflight(
    graph: &JobGraph,
    options: &JobOptions,
    restoring: bool,
) -> Result<(), JobFailure> {
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

/// Makes every transactional sink's output consistent with `restored` (`None`: a fresh start)
/// before an attempt starts: what completed checkpoints prepared is committed, the rest
/// dropped.
pub(super) fn prepare_sinks(
    graph: &JobGraph,
    restored: Option<&RestoredState>,
) -> Result<(), JobFailure> {
    let checkpoint = restored.map(|r| r.metadata.checkpoint);
    for dir in transactional_dirs(graph) {
        recover_transactional_dir(&dir, checkpoint)
            .map_err(|source| JobFailure::Sink { dir, source })?;
    }
    for vertex in &graph.vertices {
        let sink = || vertex.node_ids.last().cloned().unwrap_or_default();
        let recovered = match &vertex.output {
            VertexOutput::Sink(SinkSpec::Postgres(spec)) => {
                recover_postgres(spec, &graph.name, &sink(), checkpoint)
            }
            VertexOutput::Sink(SinkSpec::Kafka(spec)) => {
                recover_kafka(spec, &graph.name, &sink(), vertex.parallelism, restored)
            }
            VertexOutput::Sink(SinkSpec::Nats(spec)) => {
                recover_nats(spec, &graph.name, &sink(), restored)
            }
            _ => Ok(()),
        };
        recovered.map_err(|message| JobFailure::SinkRecovery {
            sink: sink(),
            message,
        })?;
    }
    Ok(())
}

#[cfg(feature = "kafka")]
fn recover_kafka(
    spec: &crate::connectors::kafka::KafkaSinkSpec,
    job: &str,
    sink: &str,
    parallelism: u32,
    restored: Option<&RestoredState>,
) -> Result<(), String> {
    let restored = match restored {
        Some(r) => Some(crate::connectors::kafka::RestoredSink {
            states: sink_states(r, sink)?,
            note: r.dir.join(format!("{sink}.kafka-committed")),
        }),
        None => None,
    };
    let done = crate::connectors::kafka::recover(spec, job, sink, parallelism, restored)?;
    if done.committed + done.aborted_ids > 0 {
        eprintln!(
            "job `{job}`: sink `{sink}`: committed {} transactions of completed checkpoints; \
             aborted what {} transactional ids held open",
            done.committed, done.aborted_ids
        );
    }
    Ok(())
}

#[cfg(any(feature = "kafka", feature = "nats"))]
/// Each subtask's snapshot of sink `sink` in checkpoint `restored` (the sinks that keep state
/// of their own: a Kafka sink's open transactions, a NATS sink's records written ahead).
fn sink_states(restored: &RestoredState, sink: &str) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut states = Vec::new();
    for h in restored
        .metadata
        .operators
        .iter()
        .filter(|h| h.operator == sink)
    {
        let snapshot = storage::read_state_file(&restored.dir.join(&h.file), h.crc32, 0..0)
            .map_err(|e| format!("cannot read its state in the checkpoint: {e}"))?;
        states.push((h.subtask, snapshot.guest_state));
    }
    Ok(states)
}

#[cfg(feature = "nats")]
fn recover_nats(
    spec: &crate::connectors::nats::NatsSinkSpec,
    job: &str,
    sink: &str,
    restored: Option<&RestoredState>,
) -> Result<(), String> {
    let Some(restored) = restored else {
        return Ok(());
    };
    let stored = crate::connectors::nats::republish(
        spec,
        job,
        sink,
        &restored.dir,
        sink_states(restored, sink)?,
    )?;
    if stored > 0 {
        eprintln!(
            "job `{job}`: sink `{sink}`: published {stored} records of a completed checkpoint \
             that had not reached the stream"
        );
    }
    Ok(())
}

#[cfg(not(feature = "nats"))]
fn recover_nats(
    _: &crate::connectors::nats::NatsSinkSpec,
    _: &str,
    _: &str,
    _: Option<&RestoredState>,
) -> Result<(), String> {
    Err("this weir was built without the `nats` feature".into())
}

#[cfg(not(feature = "kafka"))]
fn recover_kafka(
    _: &crate::connectors::kafka::KafkaSinkSpec,
    _: &str,
    _: &str,
    _: u32,
    _: Option<&RestoredState>,
) -> Result<(), String> {
    Err("this weir was built without the `kafka` feature".into())
}

#[cfg(feature = "postgres")]
fn recover_postgres(
    spec: &crate::connectors::postgres::PostgresSinkSpec,
    job: &str,
    sink: &str,
    restored: Option<u64>,
) -> Result<(), String> {
    let done = crate::connectors::postgres::recover(spec, job, sink, restored).map_err(|e| {
        // The connector's messages name the sink; the failure names it already.
        e.strip_prefix(&format!("sink `{sink}`: "))
            .map(str::to_string)
            .unwrap_or(e)
    })?;
    if done.committed + done.rolled_back > 0 {
        eprintln!(
            "job `{job}`: sink `{sink}`: committed {} and rolled back {} transactions an \
             earlier attempt prepared",
            done.committed, done.rolled_back
        );
    }
    Ok(())
}

#[cfg(not(feature = "postgres"))]
fn recover_postgres(
    _: &crate::connectors::postgres::PostgresSinkSpec,
    _: &str,
    _: &str,
    _: Option<u64>,
) -> Result<(), String> {
    Err("this weir was built without the `postgres` feature".into())
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
        prepare_sinks(graph, Some(restored))?;
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
        for te in &self.task_executors {
            te.cancel_job(self.id);
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

    /// Current metrics of every task, in task order, from the TaskExecutors that run them.
    pub fn metrics(&self) -> Vec<(String, TaskMetricsSnapshot)> {
        let mut by_index = std::collections::BTreeMap::new();
        for te in &self.task_executors {
            for (index, name, m) in te.task_metrics(self.id) {
                by_index.insert(index, (name, m));
            }
        }
        self.tasks
            .iter()
            .map(|t| {
                by_index
                    .remove(&t.index)
                    .unwrap_or_else(|| (t.name.clone(), TaskMetricsSnapshot::default()))
            })
            .collect()
    }

    /// The network buffer pools of the job's TaskExecutors, added up.
    pub fn network(&self) -> BufferPoolStats {
        self.task_executors
            .iter()
            .map(|te| te.network_stats())
            .fold(BufferPoolStats::default(), |a, b| BufferPoolStats {
                segment_size: b.segment_size,
                total: a.total + b.total,
                in_use: a.in_use + b.in_use,
                high_water: a.high_water + b.high_water,
            })
    }

    /// Waits for every task. The first task to fail cancels the others; its failure (not the
    /// cancellations it caused) is the job's.
    pub fn wait(self) -> Result<JobResult, JobFailure> {
        let mut first_failure: Option<TaskFailure> = None;
        let mut cancelled = false;
        for _ in 0..self.tasks.len() {
            let Ok((index, result)) = self.done.recv() else {
                break;
            };
            if let Some(insight) = &self.insight {
                insight.task_ended(index, &result);
            }
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
        if let Some(insight) = &self.insight {
            let by_index = self.tasks.iter().map(|t| t.index);
            insight.attempt_ended(by_index.zip(tasks.iter().map(|(_, m)| *m)).collect());
        }
        let network = self.network();
        // Read once the coordinator has stopped: it tells the tasks that the final checkpoint
        // completed (and they may finish) before it lists that checkpoint.
        let completed = self.completed_list();
        if let Some(c) = self.coordinator {
            let _ = c.events.send(CoordinatorEvent::Stop);
            let _ = c.thread.join();
        }
        let checkpoints = completed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        drop(self.registrations);
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

/// Where a job stands; see the module docs. The end states are the function's return.
enum JobState {
    Deploying {
        attempt: u32,
    },
    Running {
        attempt: u32,
        handle: Box<JobHandle>,
    },
    Restarting {
        attempt: u32,
        delay: Duration,
    },
}

/// Runs `graph` on `cluster` to the end, through the states of the module docs.
/// Cancels a job from outside its job master's thread, whichever attempt runs: the attempt now
/// running is cancelled, and no further attempt starts.
impl std::fmt::Debug for JobControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobControl")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[derive(Default)]
pub struct JobControl {
    cancelled: std::sync::atomic::AtomicBool,
    /// Stopped with a savepoint: the job ends as finished, not cancelled.
    stopped: std::sync::atomic::AtomicBool,
    /// The running attempt.
    current: Mutex<Option<RunningAttempt>>,
    /// What the job looks like from outside.
    pub insight: Arc<JobInsight>,
}

/// Whether a savepoint ends the job, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    No,
    /// The job stops where it is (its pending timers stay in the savepoint).
    Suspend,
    /// The sources end first, and the job finishes.
    Drain,
}

#[derive(Clone)]
struct RunningAttempt {
    id: u64,
    task_executors: Vec<Arc<dyn TaskExecutorGateway>>,
    coordinator: Option<Sender<CoordinatorEvent>>,
}

impl JobControl {
    pub fn cancel(&self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(attempt) = self.current() {
            attempt
                .task_executors
                .iter()
                .for_each(|te| te.cancel_job(attempt.id));
        }
    }

    fn current(&self) -> Option<RunningAttempt> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes a savepoint of the running attempt into `dir` and waits for it.
    pub fn savepoint(&self, dir: &Path) -> Result<PathBuf, String> {
        self.take_savepoint(dir, Stopping::No)
    }

    fn take_savepoint(&self, dir: &Path, stopping: Stopping) -> Result<PathBuf, String> {
        // An attempt being deployed (or restarted) gets a minute to come up.
        let asked = Instant::now();
        let attempt = loop {
            if let Some(attempt) = self.current() {
                break attempt;
            }
            if self.is_cancelled() || asked.elapsed() > Duration::from_secs(60) {
                return Err("the job is not running".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let coordinator = attempt
            .coordinator
            .ok_or("the job runs without checkpointing, so it cannot take a savepoint")?;
        let (reply, answer) = mpsc::channel();
        let dir = dir.to_path_buf();
        let event = match stopping {
            Stopping::No => CoordinatorEvent::Savepoint { dir, reply },
            Stopping::Suspend => CoordinatorEvent::StopWithSavepoint {
                dir,
                reply,
                drain: false,
            },
            Stopping::Drain => CoordinatorEvent::StopWithSavepoint {
                dir,
                reply,
                drain: true,
            },
        };
        coordinator
            .send(event)
            .map_err(|_| "the job's checkpoint coordinator stopped")?;
        if stopping == Stopping::Drain {
            // After the coordinator has the request, so the sources' ends find it waiting.
            attempt
                .task_executors
                .iter()
                .for_each(|te| te.drain_sources(attempt.id));
        }
        let outcome = answer
            .recv()
            .map_err(|_| "the job's checkpoint coordinator stopped".to_string())?;
        if stopping != Stopping::No && outcome.is_err() {
            let _ = coordinator.send(CoordinatorEvent::Resume);
        }
        outcome
    }

    /// Takes a savepoint into `dir`, then stops the job, which ends as finished (Flink's
    /// stop-with-savepoint). With `drain`, the sources end their input first, so every timer
    /// fires and every window closes, and the savepoint is the job's final checkpoint: the
    /// job finishes on it with all its output committed.
    pub fn stop(&self, dir: &Path, drain: bool) -> Result<PathBuf, String> {
        if drain {
            return self.take_savepoint(dir, Stopping::Drain);
        }
        let path = self.take_savepoint(dir, Stopping::Suspend)?;
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel();
        Ok(path)
    }

    /// The running attempt ended: until the next one runs, there is none to act on.
    fn ended(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn running(&self, handle: &JobHandle, attempt: u32) {
        let now = crate::checkpoint::stats::now_ms();
        let tasks = handle
            .tasks
            .iter()
            .map(|t| TaskInsight {
                index: t.index,
                vertex: t.vertex,
                subtask: t.subtask,
                name: t.name.clone(),
                task_manager: handle.task_executors[t.task_executor].resource_id(),
                status: TaskStatus::Running,
                start_time: now,
                end_time: None,
            })
            .collect();
        self.insight
            .attempt_started(handle.id, attempt, handle.task_executors.clone(), tasks);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(RunningAttempt {
            id: handle.id,
            task_executors: handle.task_executors.clone(),
            coordinator: handle.coordinator.as_ref().map(|c| c.events.clone()),
        });
        // A cancel that came while the attempt was being deployed.
        if self.is_cancelled() {
            handle.cancel();
        }
    }
}

pub(super) fn run_job(
    cluster: &MiniCluster,
    graph: &JobGraph,
    options: &JobOptions,
) -> Result<JobResult, JobFailure> {
    run_job_with(cluster, graph, options, &JobControl::default())
}

/// As [`run_job`], cancellable through `control`.
pub(super) fn run_job_with(
    cluster: &MiniCluster,
    graph: &JobGraph,
    options: &JobOptions,
    control: &JobControl,
) -> Result<JobResult, JobFailure> {
    let original = match &options.restore {
        Some(path) => Some(resolve_with_warnings(path)?),
        None => None,
    };
    if let Some(restored) = original.as_ref().filter(|r| r.metadata.final_checkpoint) {
        return finished_in(graph, options, restored, 0);
    }
    let original_dir = original.as_ref().map(|r| r.dir.clone());
    let mut restored = original;
    let mut state = JobState::Deploying { attempt: 0 };
    let insight = &control.insight;
    insight.set_plan(graph);
    loop {
        state = match state {
            JobState::Deploying { attempt } => {
                if let Some(r) = &restored {
                    insight.checkpoints.restored(r.metadata.checkpoint, &r.dir);
                }
                match cluster.submit_attempt(
                    graph,
                    options,
                    restored.as_ref(),
                    attempt,
                    original_dir.as_deref(),
                    &insight.checkpoints,
                ) {
                    Ok(mut handle) => {
                        handle.insight = Some(insight.clone());
                        JobState::Running {
                            attempt,
                            handle: Box::new(handle),
                        }
                    }
                    // Too few slots, a TaskExecutor that did not take its task (lost
                    // meanwhile), a sink's server away while its transactions are settled:
                    // the restart strategy decides, as for a failed task; they may come back.
                    Err(
                        e @ (JobFailure::Slots(_)
                        | JobFailure::Submit(_)
                        | JobFailure::SinkRecovery { .. }),
                    ) if attempt > 0 || options.checkpoints.is_some() => {
                        insight.record_exception(attempt, e.to_string(), None);
                        let Some(delay) = options
                            .checkpoints
                            .as_ref()
                            .and_then(|_| options.restart.delay(attempt))
                        else {
                            return Err(e);
                        };
                        eprintln!(
                            "job `{}` could not deploy ({e}); trying again in {delay:?}",
                            graph.name
                        );
                        JobState::Restarting { attempt, delay }
                    }
                    Err(e) => {
                        insight.record_exception(attempt, e.to_string(), None);
                        return Err(e);
                    }
                }
            }
            JobState::Running { attempt, handle } => {
                let completed = handle.completed_list();
                control.running(&handle, attempt);
                let waited = handle.wait();
                control.ended();
                insight.checkpoints.abandon_in_progress("the attempt ended");
                let failure = match waited {
                    Ok(mut result) => {
                        result.restarts = attempt;
                        return Ok(result);
                    }
                    Err(_) if control.stopped.load(std::sync::atomic::Ordering::SeqCst) => {
                        let mut result = JobResult::nothing_left(&graph.name);
                        result.restarts = attempt;
                        return Ok(result);
                    }
                    Err(_) if control.is_cancelled() => return Err(JobFailure::Cancelled),
                    Err(JobFailure::Task(failure)) => {
                        let task = failure.task_name().map(str::to_string);
                        insight.record_exception(attempt, failure.to_string(), task.as_deref());
                        failure
                    }
                    Err(other) => {
                        insight.record_exception(attempt, other.to_string(), None);
                        return Err(other);
                    }
                };
                let Some(delay) = restart_delay(&failure, options, attempt) else {
                    return Err(JobFailure::Task(failure));
                };
                eprintln!(
                    "job `{}` failed ({failure}); restarting in {delay:?}",
                    graph.name
                );
                // The latest checkpoint this run completed; failing that, what it was restored
                // from (kept: nothing of this run deletes it). An unreadable latest checkpoint
                // fails the job rather than going back further, which would repeat output the
                // transactional sinks already committed.
                let latest = completed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .rfind(|c| !c.savepoint)
                    .map(|c| c.dir.clone());
                if let Some(dir) = latest {
                    let latest = storage::resolve(&dir).map_err(|source| JobFailure::Restart {
                        checkpoint: dir.clone(),
                        source,
                    })?;
                    if latest.metadata.final_checkpoint {
                        // It failed after its final checkpoint (a sink closing, say): running
                        // it again would repeat what `close` emitted.
                        return finished_in(graph, options, &latest, attempt + 1);
                    }
                    restored = Some(latest);
                }
                JobState::Restarting { attempt, delay }
            }
            JobState::Restarting { attempt, delay } => {
                std::thread::sleep(delay);
                // A JobManager that no longer leads restarts nothing: the next leader
                // recovers the job (Flink's SUSPENDED).
                let suspended = options
                    .checkpoint_store
                    .as_ref()
                    .is_some_and(|s| !s.is_active());
                if control.is_cancelled() || suspended {
                    return Err(JobFailure::Cancelled);
                }
                JobState::Deploying {
                    attempt: attempt + 1,
                }
            }
        };
    }
}

/// The delay before the restart after attempt `attempt` failed with `failure`, or `None` when
/// the job fails: without checkpoints there is nothing consistent to restart from, state that
/// cannot be read now would not be readable after a restart from the same checkpoint, and the
/// strategy counts its attempts.
fn restart_delay(failure: &TaskFailure, options: &JobOptions, attempt: u32) -> Option<Duration> {
    if matches!(failure, TaskFailure::Restore { .. } | TaskFailure::Quota(_)) {
        return None;
    }
    options.checkpoints.as_ref()?;
    options.restart.delay(attempt)
}
