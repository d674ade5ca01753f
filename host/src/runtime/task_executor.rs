//! The TaskExecutor: a slot table, the job table, and the services its tasks share (network
//! buffer pool, wasm runtime with its component cache). It runs each task it is given on a
//! thread of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::job_log::{JobLogFile, RegisteredJob};
use crate::metrics::TaskMetrics;
use crate::network::{
    CancelFlag, GateSenders, InputGate, NetworkBufferPool, NetworkConfig, NetworkEnvironment,
};
use crate::runtime::deployment::{GateDescriptor, GateId};
use crate::runtime::{
    JobConnection, JobMasterConnection, Mail, Mailbox, NativeOperators, Task, TaskFailure,
};
use crate::stream::Barrier;
use crate::wasm::{LogSink, StderrLog, WasmRuntime};

/// Settings of a TaskExecutor.
#[derive(Debug, Clone)]
pub struct TaskExecutorConfig {
    /// Task slots: how many subtasks of each vertex can run at once (slot sharing puts one
    /// subtask of every vertex of a job in one slot).
    pub slots: u32,
    /// Size of one network buffer.
    pub segment_bytes: usize,
    /// Network buffers in all: the memory the network stack may use is their product (taken
    /// from the system as first needed). The default, 16384 of 32 KiB, lets a job with a hash
    /// edge at parallelism 16 reserve its 16 buffers per channel many times over.
    pub network_buffers: usize,
    /// Most buffers queued on one channel before its writer waits. With 4, a fast producer
    /// and a keyed consumer took turns waiting for each other (P2 at parallelism 2: the
    /// consumers idle a third of the time); 16 keeps both busy.
    pub buffers_per_channel: usize,
    /// The network to other TaskExecutors: data port, credits, the cluster secret.
    pub network: NetworkConfig,
    /// The TaskExecutor's name in the cluster (Flink's ResourceID): a TaskManager's resource
    /// id, or `embedded-<n>` in a mini-cluster.
    pub resource_id: String,
}

impl Default for TaskExecutorConfig {
    fn default() -> Self {
        TaskExecutorConfig {
            slots: 4,
            segment_bytes: 32 << 10,
            network_buffers: 16384,
            buffers_per_channel: 16,
            network: NetworkConfig::default(),
            resource_id: "embedded-0".into(),
        }
    }
}

/// The job does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SlotError {
    #[error("the job needs {needed} task slots but the TaskExecutor has {free} free of {total}")]
    NotEnoughSlots { needed: u32, free: u32, total: u32 },
    #[error("the job needs {needed} task slots but no TaskManager is registered")]
    NoTaskExecutors { needed: u32 },
    #[error(
        "the job needs {needed} network buffers but the TaskExecutor has {free} unreserved of \
         {total}; give it more (--network-buffers) or lower the parallelism"
    )]
    NotEnoughBuffers {
        needed: usize,
        free: usize,
        total: usize,
    },
    /// A TaskManager refused the request itself (from a JobManager it does not follow).
    #[error("{reason}")]
    Refused { reason: String },
}

/// Slots and network buffers held by a job; returned when dropped.
pub struct SlotAllocation {
    table: Arc<Mutex<(u32, usize)>>,
    slots: u32,
    buffers: usize,
}

impl Drop for SlotAllocation {
    fn drop(&mut self) {
        let mut free = self.table.lock().unwrap_or_else(|p| p.into_inner());
        free.0 += self.slots;
        free.1 += self.buffers;
    }
}

/// A running task as the job table knows it.
pub struct RunningTask {
    pub name: String,
    pub metrics: Arc<TaskMetrics>,
    pub mailbox: Arc<Mailbox>,
    pub thread: JoinHandle<()>,
}

/// What the TaskExecutor's process gives every task, whichever job it belongs to.
#[derive(Clone)]
pub struct TaskExecutorServices {
    /// Where guests' log lines go, unless `guest_log_dir` gives the job a file of its own.
    pub log_sink: Arc<dyn LogSink>,
    /// The directory under which each job registered with an id gets its `guest.log`
    /// ([`job_log`](super::job_log)).
    pub guest_log_dir: Option<std::path::PathBuf>,
    /// Native operators jobs may name; none by default.
    pub natives: Option<Arc<dyn NativeOperators>>,
}

impl Default for TaskExecutorServices {
    fn default() -> Self {
        TaskExecutorServices {
            log_sink: Arc::new(StderrLog),
            guest_log_dir: None,
            natives: None,
        }
    }
}

/// A job as the TaskExecutor knows it: its connection to its job master, its tasks by index.
pub struct JobEntry {
    connection: JobConnection,
    tasks: BTreeMap<usize, RunningTask>,
    /// Input gates of the job's tasks here, by id: made by whichever comes first, the consumer
    /// task (which takes the gate) or a producer (which takes senders), so tasks can be
    /// deployed in any order; gone with the job.
    gates: HashMap<GateId, (Option<InputGate>, GateSenders)>,
}

/// The job table: running jobs by id. A job removes itself when it ends.
pub type JobTable = Arc<Mutex<BTreeMap<u64, JobEntry>>>;

/// See the module docs.
pub struct TaskExecutor {
    config: TaskExecutorConfig,
    network: Arc<NetworkBufferPool>,
    environment: NetworkEnvironment,
    runtime: Arc<WasmRuntime>,
    services: TaskExecutorServices,
    /// Free slots and unreserved network buffers. Buffers are reserved per job, so jobs
    /// running side by side can never be promised more than the pool holds.
    free: Arc<Mutex<(u32, usize)>>,
    jobs: JobTable,
}

/// Stack of a task thread: wasm runs on it, so it is well above the engine's wasm stack limit.
const TASK_STACK_BYTES: usize = 16 << 20;

impl TaskExecutor {
    pub fn new(config: TaskExecutorConfig, runtime: Arc<WasmRuntime>) -> Self {
        Self::with_services(config, runtime, TaskExecutorServices::default())
    }

    pub fn with_services(
        config: TaskExecutorConfig,
        runtime: Arc<WasmRuntime>,
        services: TaskExecutorServices,
    ) -> Self {
        let network = NetworkBufferPool::new(config.segment_bytes, config.network_buffers);
        TaskExecutor {
            environment: NetworkEnvironment::new(config.network.clone(), network.clone()),
            network,
            free: Arc::new(Mutex::new((config.slots, config.network_buffers))),
            config,
            runtime,
            services,
            jobs: JobTable::default(),
        }
    }

    fn job_table(&self) -> MutexGuard<'_, BTreeMap<u64, JobEntry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection of a registered job, for its tasks.
    pub(crate) fn job_connection(&self, job: u64) -> Option<JobConnection> {
        self.job_table().get(&job).map(|e| e.connection.clone())
    }

    /// Runs `f` on the gate `gate` names, made now if no task of its job asked for it yet;
    /// `None` if the job is not registered here.
    fn with_gate<R>(
        &self,
        gate: &GateDescriptor,
        f: impl FnOnce(&mut (Option<InputGate>, GateSenders)) -> R,
    ) -> Option<R> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = jobs.get_mut(&gate.id.job)?;
        Some(f(entry.gates.entry(gate.id).or_insert_with(|| {
            let input = InputGate::new(gate.channels);
            let senders = input.senders();
            (Some(input), senders)
        })))
    }

    /// The input gate of a consumer task being deployed; `None` if its job is not registered
    /// or the gate was taken already (a second deployment of one subtask).
    pub(crate) fn take_gate(&self, gate: &GateDescriptor) -> Option<InputGate> {
        self.with_gate(gate, |(input, _)| input.take()).flatten()
    }

    /// The senders into a consumer's gate, for a producer being deployed; `None` if the job is
    /// not registered.
    pub(crate) fn gate_senders(&self, gate: &GateDescriptor) -> Option<GateSenders> {
        self.with_gate(gate, |(_, senders)| senders.clone())
    }

    pub fn config(&self) -> &TaskExecutorConfig {
        &self.config
    }

    pub fn network(&self) -> &Arc<NetworkBufferPool> {
        &self.network
    }

    /// The network to other TaskExecutors.
    pub fn network_environment(&self) -> &NetworkEnvironment {
        &self.environment
    }

    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.runtime
    }

    /// Reserves `slots` slots and checks that `buffers` network buffers can be guaranteed.
    pub fn allocate(&self, slots: u32, buffers: usize) -> Result<SlotAllocation, SlotError> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if buffers > free.1 {
            return Err(SlotError::NotEnoughBuffers {
                needed: buffers,
                free: free.1,
                total: self.config.network_buffers,
            });
        }
        if slots > free.0 {
            return Err(SlotError::NotEnoughSlots {
                needed: slots,
                free: free.0,
                total: self.config.slots,
            });
        }
        free.0 -= slots;
        free.1 -= buffers;
        Ok(SlotAllocation {
            table: self.free.clone(),
            slots,
            buffers,
        })
    }

    /// Free slots now.
    pub fn free_slots(&self) -> u32 {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Registers a job before its tasks are submitted: where they report to, whether it
    /// checkpoints, and whose it is (which names its log).
    pub fn register_job(
        &self,
        job: u64,
        master: Arc<dyn JobMasterConnection>,
        registration: &RegisteredJob,
    ) {
        let connection = JobConnection {
            cancel: CancelFlag::default(),
            master,
            checkpointing: registration.checkpointing,
            log_sink: self.job_log_sink(registration),
            natives: self.services.natives.clone(),
        };
        self.job_table().insert(
            job,
            JobEntry {
                connection,
                tasks: BTreeMap::new(),
                gates: HashMap::new(),
            },
        );
    }

    /// The job's own log file if this TaskExecutor keeps them and the job has an id; else the
    /// shared sink (also when the file cannot be opened: the job still runs, and says so).
    fn job_log_sink(&self, registration: &RegisteredJob) -> Arc<dyn LogSink> {
        let (Some(dir), Some(id)) = (&self.services.guest_log_dir, &registration.job_id) else {
            return self.services.log_sink.clone();
        };
        match JobLogFile::open(dir, registration.tenant.as_deref(), id) {
            Ok(file) => Arc::new(file),
            Err(e) => {
                eprintln!(
                    "warning: job {id}'s guest log cannot be opened under {}: {e}; its guests \
                     log here",
                    dir.display()
                );
                self.services.log_sink.clone()
            }
        }
    }

    /// Mails `mail` to tasks `tasks` of `job` (all of them for `None`).
    fn mail(&self, job: u64, tasks: Option<&[usize]>, mail: impl Fn() -> Mail) {
        let table = self.job_table();
        let Some(entry) = table.get(&job) else {
            return;
        };
        match tasks {
            None => entry.tasks.values().for_each(|t| t.mailbox.send(mail())),
            Some(indexes) => indexes
                .iter()
                .filter_map(|i| entry.tasks.get(i))
                .for_each(|t| t.mailbox.send(mail())),
        }
    }

    /// Starts checkpoint `barrier` at tasks `tasks` of `job` (its sources).
    pub fn trigger_checkpoint(&self, job: u64, tasks: &[usize], barrier: &Barrier) {
        self.mail(job, Some(tasks), || {
            Mail::TriggerCheckpoint(barrier.clone())
        });
    }

    /// Tells every task of `job` here that checkpoint `id` completed (`last`: the job's final
    /// one).
    pub fn notify_checkpoint_complete(&self, job: u64, id: u64, last: bool) {
        self.mail(job, None, || Mail::CheckpointComplete { id, last });
    }

    /// Tells the source tasks of `job` here to end their input now (stop with drain).
    pub fn drain_sources(&self, job: u64) {
        self.mail(job, None, || Mail::Drain);
    }

    /// The live metrics of `job`'s tasks here: (task index, name, metrics).
    pub fn task_metrics(&self, job: u64) -> Vec<(usize, String, Arc<TaskMetrics>)> {
        self.job_table().get(&job).map_or_else(Vec::new, |e| {
            e.tasks
                .iter()
                .map(|(&i, t)| (i, t.name.clone(), t.metrics.clone()))
                .collect()
        })
    }

    /// The job table, shared with job handles.
    pub fn jobs(&self) -> JobTable {
        self.jobs.clone()
    }

    /// Jobs running now.
    pub fn running_jobs(&self) -> Vec<u64> {
        self.job_table().keys().copied().collect()
    }

    /// Forgets a job, cancelling what still runs of it: its entry, the gates of its tasks, the
    /// partitions it produced for other TaskExecutors and its channels from them.
    pub fn unregister_job(&self, job: u64) {
        let entry = self.job_table().remove(&job);
        if let Some(entry) = entry {
            entry.connection.cancel.cancel();
            for task in entry.tasks.into_values() {
                task.mailbox.send(Mail::Cancel);
                // A task that reported its end has ended; one still running is detached and
                // stops at its next step.
                if task.thread.is_finished() {
                    let _ = task.thread.join();
                }
            }
        }
        self.environment.release_job(job);
    }

    /// Starts `build` on a new thread: it opens the task (instantiating its operators there) and
    /// runs it; when it ends, its index and result go to the job master. The task joins its
    /// job's entry (a job not registered here keeps no record of it).
    pub(crate) fn spawn_task(
        &self,
        job: u64,
        index: usize,
        name: String,
        metrics: Arc<TaskMetrics>,
        master: Arc<dyn JobMasterConnection>,
        build: impl FnOnce(Arc<Mailbox>) -> Result<Task, TaskFailure> + Send + 'static,
    ) -> std::io::Result<()> {
        let mailbox = Arc::new(Mailbox::default());
        let task_mailbox = mailbox.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .stack_size(TASK_STACK_BYTES)
            .spawn(move || {
                let result = build(task_mailbox).and_then(Task::run);
                master.task_ended(index, result);
            })?;
        if let Some(entry) = self.job_table().get_mut(&job) {
            entry.tasks.insert(
                index,
                RunningTask {
                    name,
                    metrics,
                    mailbox,
                    thread,
                },
            );
        }
        Ok(())
    }

    /// Cancels every task of `job`: each stops at its next step or wait.
    pub fn cancel_job(&self, job: u64) {
        let table = self.job_table();
        if let Some(entry) = table.get(&job) {
            entry.connection.cancel.cancel();
            for task in entry.tasks.values() {
                task.mailbox.send(Mail::Cancel);
            }
        }
    }
}
