//! The mini-cluster: a resource manager over its TaskExecutors (one by default; several, each
//! with its own buffer pool and data port, talking over loopback TCP), and the job master's
//! work for the jobs submitted to it, in one process.

use std::path::Path;
use std::sync::Arc;

use super::JobFailure;
use super::deploy;
use super::dispatcher::{Dispatcher, DispatcherGateway, JobRecord};
use super::gateways::ResourceManagerGateway;
use super::insight::JobInsight;
use super::job_master::{
    AttemptSetup, JobControl, JobHandle, JobOptions, JobResult, preflight, prepare_sinks,
};
use super::limits::LimitMaximums;
use super::resource_manager::ResourceManager;
use crate::checkpoint::CheckpointStats;
use crate::checkpoint::storage::RestoredState;
use crate::job::JobGraph;
use crate::runtime::NativeOperators;
use crate::runtime::task_executor::{TaskExecutor, TaskExecutorConfig, TaskExecutorServices};
use crate::wasm::{Limits, LogSink, StderrLog, WasmRuntime};

/// Settings of the mini-cluster.
#[derive(Clone)]
pub struct MiniClusterConfig {
    pub task_executor: TaskExecutorConfig,
    /// TaskExecutors to start, each with `task_executor`'s settings (and so one cluster
    /// secret).
    pub task_executors: usize,
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
            task_executors: 1,
            limits: Arc::new(Limits::default()),
            limit_maximums: LimitMaximums::default(),
            native_operators: None,
            descriptors_over_the_wire: true,
            log_sink: Arc::new(StderrLog),
        }
    }
}

/// One process running JobManager and TaskExecutor together.
pub struct MiniCluster {
    pub(super) task_executors: Vec<Arc<TaskExecutor>>,
    pub(super) resource_manager: Arc<dyn ResourceManagerGateway>,
    pub(super) limits: Arc<Limits>,
    pub(super) limit_maximums: LimitMaximums,
    pub(super) native_operators: Option<Arc<dyn NativeOperators>>,
    pub(super) descriptors_over_the_wire: bool,
    pub(super) dispatcher: Dispatcher,
}

impl MiniCluster {
    /// A mini-cluster on the process's wasm runtime.
    pub fn new(config: MiniClusterConfig, runtime: Arc<WasmRuntime>) -> Self {
        let task_executors: Vec<_> = (0..config.task_executors.max(1))
            .map(|n| {
                Arc::new(TaskExecutor::with_services(
                    TaskExecutorConfig {
                        resource_id: format!("embedded-{n}"),
                        ..config.task_executor.clone()
                    },
                    runtime.clone(),
                    TaskExecutorServices {
                        log_sink: config.log_sink.clone(),
                        guest_log_dir: None,
                        natives: config.native_operators.clone(),
                    },
                ))
            })
            .collect();
        MiniCluster {
            resource_manager: Arc::new(ResourceManager::new(task_executors.clone())),
            task_executors,
            limits: config.limits,
            limit_maximums: config.limit_maximums,
            native_operators: config.native_operators,
            descriptors_over_the_wire: config.descriptors_over_the_wire,
            dispatcher: Dispatcher::default(),
        }
    }

    /// The JobManager's half of a cluster whose TaskExecutors are elsewhere: jobs get their
    /// slots from `resource_manager` (the standalone cluster's, over RPC).
    pub fn with_resource_manager(
        config: MiniClusterConfig,
        resource_manager: Arc<dyn ResourceManagerGateway>,
    ) -> Self {
        MiniCluster {
            resource_manager,
            task_executors: Vec::new(),
            limits: config.limits,
            limit_maximums: config.limit_maximums,
            native_operators: config.native_operators,
            descriptors_over_the_wire: true,
            dispatcher: Dispatcher::default(),
        }
    }

    /// The first TaskExecutor (the only one unless configured otherwise); a mini-cluster made
    /// `with_resource_manager` has none in its process.
    pub fn task_executor(&self) -> &TaskExecutor {
        &self.task_executors[0]
    }

    pub fn task_executors(&self) -> &[Arc<TaskExecutor>] {
        &self.task_executors
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
                stats: Default::default(),
                tenant: None,
                job_id: None,
                checkpoint_storage: None,
                checkpoint_store: None,
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
        self.submit_attempt(graph, options, restore, attempt, None, &Default::default())
    }

    /// As [`submit_with`](Self::submit_with); `original` is the checkpoint the job was first
    /// restored from, which no attempt may delete.
    pub(super) fn submit_attempt(
        &self,
        graph: &JobGraph,
        options: &JobOptions,
        restore: Option<&RestoredState>,
        attempt: u32,
        original: Option<&Path>,
        stats: &Arc<CheckpointStats>,
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
            prepare_sinks(graph, restore)?;
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
                stats: stats.clone(),
                tenant: options.tenant.as_deref(),
                job_id: options.job_id.as_deref(),
                checkpoint_storage: options.checkpoint_storage,
                checkpoint_store: options.checkpoint_store.clone(),
            },
        )
    }

    /// Runs `graph` to completion with checkpoints, restore and restarts as `options` say (see
    /// [`job_master`](super::job_master) for the job's states).
    pub fn run_job(&self, graph: &JobGraph, options: &JobOptions) -> Result<JobResult, JobFailure> {
        DispatcherGateway::run_job(self, graph, options)
    }

    /// The dispatcher's job store.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.dispatcher.jobs()
    }
}

impl MiniCluster {
    /// Starts `graph` on a thread of its own, as `run_job` runs it; the job's id, by which the
    /// job store knows it. `ended` is given how it ended.
    pub fn start_job(
        self: &Arc<Self>,
        graph: JobGraph,
        options: JobOptions,
        ended: Box<dyn FnOnce(Result<JobResult, JobFailure>) + Send>,
    ) -> std::io::Result<String> {
        let id = super::dispatcher::new_job_id();
        self.start_job_as(id, graph, options, None, ended)
    }

    /// As [`start_job`](Self::start_job), under id `id` (a recovered job keeps its id);
    /// `owner` is the tenant that submitted it; `ended` is given how it ended, once the job
    /// store has recorded it.
    pub fn start_job_as(
        self: &Arc<Self>,
        id: String,
        graph: JobGraph,
        mut options: JobOptions,
        owner: Option<&str>,
        ended: Box<dyn FnOnce(Result<JobResult, JobFailure>) + Send>,
    ) -> std::io::Result<String> {
        options.job_id = Some(id.clone());
        let number = self.dispatcher.record_start_as(&id, &graph.name, owner);
        let control = Arc::new(JobControl::default());
        self.dispatcher.set_control(&id, control.clone());
        // Before the job's thread starts, so its plan is there as soon as its id is known.
        control.insight.set_plan(&graph);
        self.dispatcher.set_insight(&id, control.insight.clone());
        let cluster = self.clone();
        let thread_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("job {id}"))
            .spawn(move || {
                // A job master that panics (a graph no check caught) fails its job, never
                // leaves it running for ever.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    super::job_master::run_job_with(&cluster, &graph, &options, &control)
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    Err(JobFailure::Descriptor(format!(
                        "the job master failed: {what}"
                    )))
                });
                cluster.dispatcher.record_end(number, &outcome);
                cluster.dispatcher.take_control(&thread_id);
                ended(outcome);
            });
        if let Err(e) = spawned {
            self.dispatcher.take_control(&id);
            self.dispatcher.record_end(
                number,
                &Err(JobFailure::Spawn(std::io::Error::other(e.to_string()))),
            );
            return Err(e);
        }
        Ok(id)
    }

    /// Forgets the component files read from under `dir`, which are gone.
    pub fn forget_components_under(&self, dir: &Path) {
        self.dispatcher.forget_components_under(dir);
    }

    /// What job `id`, started with [`start_job`](Self::start_job), looks like from outside,
    /// while it runs and after it ended.
    pub fn job_insight(&self, id: &str) -> Option<Arc<JobInsight>> {
        self.dispatcher.insight(id)
    }

    /// How to cancel, savepoint or stop job `id`, started with [`start_job`](Self::start_job),
    /// while it runs.
    pub fn job_control(&self, id: &str) -> Option<Arc<JobControl>> {
        self.dispatcher.control(id)
    }

    /// Cancels job `id`, started with [`start_job`](Self::start_job); `false` if no such job
    /// is running.
    pub fn cancel_job(&self, id: &str) -> bool {
        match self.dispatcher.control(id) {
            Some(control) => {
                control.cancel();
                true
            }
            None => false,
        }
    }
}

/// The mini-cluster is its own dispatcher's gateway: in one process there is nothing between.
impl DispatcherGateway for MiniCluster {
    fn run_job(&self, graph: &JobGraph, options: &JobOptions) -> Result<JobResult, JobFailure> {
        let number = self.dispatcher.record_start(&graph.name);
        let outcome = super::job_master::run_job(self, graph, options);
        self.dispatcher.record_end(number, &outcome);
        outcome
    }

    fn jobs(&self) -> Vec<JobRecord> {
        self.dispatcher.jobs()
    }
}
