//! The embedded mini-cluster of `weir run`: a JobMaster's work (wiring a job graph into tasks,
//! deploying them into slots, watching them, cancelling all when one fails) over one
//! TaskExecutor, in one process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::connectors::{FileSink, FileSource, SequenceSource, SourceReader, StdoutSink};
use crate::job::{
    JobGraph, OperatorImpl, Partitioning, SinkSpec, SourceSpec, VertexInput, VertexOutput,
};
use crate::metrics::{TaskMetrics, TaskMetricsSnapshot};
use crate::network::ChannelSelector;
use crate::network::{
    BufferPoolStats, CancelFlag, InputGate, LocalBufferPool, PartitionWriter, RecordWriter,
};
use crate::runtime::task_executor::{
    RunningTask, SlotAllocation, SlotError, TaskExecutor, TaskExecutorConfig,
};
use crate::runtime::{
    ChainError, ChainLink, ChainSpec, DiscardOutput, Mail, OperatorChain, Output, Task,
    TaskFailure, TaskInput,
};
use crate::wasm::{
    Limits, LoadError, LoadedComponent, LogSink, OperatorSpec, StderrLog, WasmRuntime,
};

/// Settings of the mini-cluster.
#[derive(Clone)]
pub struct MiniClusterConfig {
    pub task_executor: TaskExecutorConfig,
    pub limits: Arc<Limits>,
    pub log_sink: Arc<dyn LogSink>,
}

impl Default for MiniClusterConfig {
    fn default() -> Self {
        MiniClusterConfig {
            task_executor: TaskExecutorConfig::default(),
            limits: Arc::new(Limits::default()),
            log_sink: Arc::new(StderrLog),
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
}

/// One process running JobManager and TaskExecutor together.
pub struct MiniCluster {
    task_executor: TaskExecutor,
    limits: Arc<Limits>,
    log_sink: Arc<dyn LogSink>,
    next_job: AtomicU64,
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

/// A submitted job: watch it, cancel it, wait for it.
pub struct JobHandle {
    monitor: JobMonitor,
    id: u64,
    name: String,
    cancel: CancelFlag,
    tasks: Vec<RunningTask>,
    done: Receiver<(usize, Result<(), TaskFailure>)>,
    started: Instant,
    network: Arc<crate::network::NetworkBufferPool>,
    _slots: SlotAllocation,
}

impl MiniCluster {
    /// A mini-cluster on the process's wasm runtime.
    pub fn new(config: MiniClusterConfig, runtime: Arc<WasmRuntime>) -> Self {
        MiniCluster {
            task_executor: TaskExecutor::new(config.task_executor, runtime),
            limits: config.limits,
            log_sink: config.log_sink,
            next_job: AtomicU64::new(1),
        }
    }

    pub fn task_executor(&self) -> &TaskExecutor {
        &self.task_executor
    }

    /// Runs `graph` to completion.
    pub fn run(&self, graph: &JobGraph) -> Result<JobResult, JobFailure> {
        self.submit(graph)?.wait()
    }

    /// Checks resources, loads the components and starts every task of `graph`.
    pub fn submit(&self, graph: &JobGraph) -> Result<JobHandle, JobFailure> {
        let te = &self.task_executor;
        let mut components: HashMap<PathBuf, Arc<LoadedComponent>> = HashMap::new();
        for vertex in &graph.vertices {
            for op in &vertex.operators {
                if let OperatorImpl::Wasm { component, .. } = &op.implementation
                    && !components.contains_key(component)
                {
                    components.insert(component.clone(), te.runtime().load_file(component)?);
                }
            }
        }

        let per_channel = te.config().buffers_per_channel;
        let channels_of_edge = |e: usize| -> usize {
            let edge = &graph.edges[e];
            match edge.partitioning {
                Partitioning::Forward => 1,
                _ => graph.vertices[edge.target].parallelism as usize,
            }
        };
        let buffers_needed: usize = graph
            .edges
            .iter()
            .enumerate()
            .map(|(e, edge)| {
                graph.vertices[edge.source].parallelism as usize
                    * (channels_of_edge(e) * per_channel + 1)
            })
            .sum();
        let slots = te.allocate(graph.slots_needed(), buffers_needed)?;

        // Gates: a consumer has, per input edge, one channel per producer subtask (one for
        // forward); `offset[e]` is where edge e's channels start in the target's gate.
        let mut offset = vec![0usize; graph.edges.len()];
        let mut gates: Vec<Vec<Option<InputGate>>> = Vec::new();
        for vertex in &graph.vertices {
            let mut channels = 0;
            if let VertexInput::Edges(edges) = &vertex.input {
                for &e in edges {
                    offset[e] = channels;
                    channels += match graph.edges[e].partitioning {
                        Partitioning::Forward => 1,
                        _ => graph.vertices[graph.edges[e].source].parallelism as usize,
                    };
                }
            }
            gates.push(
                (0..vertex.parallelism)
                    .map(|_| (channels > 0).then(|| InputGate::new(channels)))
                    .collect(),
            );
        }

        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let cancel = CancelFlag::default();
        te.register_job(id, cancel.clone());
        let (done_tx, done_rx) = mpsc::channel();
        let buffer_timeout = Duration::from_millis(graph.buffer_timeout_ms);
        let mut tasks = Vec::new();
        let mut monitored = Vec::new();
        for (v, vertex) in graph.vertices.iter().enumerate() {
            for s in 0..vertex.parallelism {
                let name = format!("{} ({}/{})", vertex.name, s + 1, vertex.parallelism);
                let metrics = Arc::new(TaskMetrics::default());
                monitored.push((
                    metrics.clone(),
                    matches!(vertex.input, VertexInput::Source(_)),
                    matches!(vertex.output, VertexOutput::Sink(_)),
                ));
                // Outputs to other tasks.
                let mut partitions = Vec::new();
                if let VertexOutput::Edges(edges) = &vertex.output {
                    for &e in edges {
                        let edge = &graph.edges[e];
                        let target = &graph.vertices[edge.target];
                        let senders: Vec<_> = match edge.partitioning {
                            Partitioning::Forward => vec![
                                gates[edge.target][s as usize]
                                    .as_ref()
                                    .expect("forward target has a gate")
                                    .sender(offset[e]),
                            ],
                            _ => (0..target.parallelism as usize)
                                .map(|c| {
                                    gates[edge.target][c]
                                        .as_ref()
                                        .expect("edge target has a gate")
                                        .sender(offset[e] + s as usize)
                                })
                                .collect(),
                        };
                        let selector = match edge.partitioning {
                            Partitioning::Forward => ChannelSelector::Forward,
                            Partitioning::Rebalance => ChannelSelector::Rebalance,
                            Partitioning::Hash => ChannelSelector::KeyGroups {
                                max_parallelism: graph.max_parallelism,
                            },
                            Partitioning::Broadcast => ChannelSelector::Broadcast,
                        };
                        let pool = LocalBufferPool::new(
                            te.network().clone(),
                            senders.len(),
                            senders.len() * per_channel + 1,
                            per_channel,
                        );
                        partitions.push(PartitionWriter::new(
                            format!("`{}` -> `{}`", vertex.name, target.name),
                            selector,
                            senders,
                            pool,
                            cancel.clone(),
                            metrics.clone(),
                        ));
                    }
                }
                let input = match &vertex.input {
                    VertexInput::Source(spec) => TaskSourceSpec::Source(spec.clone()),
                    VertexInput::Edges(_) => {
                        TaskSourceSpec::Gate(gates[v][s as usize].take().expect("gate taken once"))
                    }
                };
                let sink = match &vertex.output {
                    VertexOutput::Sink(spec) => Some(spec.clone()),
                    VertexOutput::Edges(_) => None,
                };
                let links: Vec<LinkSpec> = vertex
                    .operators
                    .iter()
                    .map(|op| match &op.implementation {
                        OperatorImpl::Wasm {
                            component,
                            operator,
                        } => {
                            let mut spec = OperatorSpec::new(operator.clone());
                            spec.subtask_index = s;
                            spec.parallelism = vertex.parallelism;
                            spec.max_parallelism = graph.max_parallelism;
                            spec.config = op.config.clone();
                            spec.limits = self.limits.clone();
                            spec.log_sink = self.log_sink.clone();
                            LinkSpec::Wasm(components[component].clone(), spec)
                        }
                        OperatorImpl::Native(name) => LinkSpec::Native(name.clone()),
                    })
                    .collect();
                let deployment = Deployment {
                    name: name.clone(),
                    subtask: s,
                    parallelism: vertex.parallelism,
                    input,
                    links,
                    sink,
                    partitions,
                    buffer_timeout,
                    runtime: te.runtime().clone(),
                    metrics: metrics.clone(),
                    cancel: cancel.clone(),
                };
                let index = tasks.len();
                let spawned =
                    te.spawn_task(id, index, name, metrics, done_tx.clone(), move |mailbox| {
                        deployment.open(mailbox)
                    });
                match spawned {
                    Ok(task) => tasks.push(task),
                    Err(e) => {
                        cancel.cancel();
                        te.unregister_job(id);
                        return Err(JobFailure::Spawn(e));
                    }
                }
            }
        }
        te.unregister_job(id);
        Ok(JobHandle {
            monitor: JobMonitor {
                started: Instant::now(),
                tasks: monitored,
            },
            id,
            name: graph.name.clone(),
            cancel,
            tasks,
            done: done_rx,
            started: Instant::now(),
            network: te.network().clone(),
            _slots: slots,
        })
    }
}

enum TaskSourceSpec {
    Source(SourceSpec),
    Gate(InputGate),
}

enum LinkSpec {
    Wasm(Arc<LoadedComponent>, OperatorSpec),
    Native(String),
}

/// Everything a task thread needs to open its task.
struct Deployment {
    name: String,
    subtask: u32,
    parallelism: u32,
    input: TaskSourceSpec,
    links: Vec<LinkSpec>,
    sink: Option<SinkSpec>,
    partitions: Vec<PartitionWriter>,
    buffer_timeout: Duration,
    runtime: Arc<WasmRuntime>,
    metrics: Arc<TaskMetrics>,
    cancel: CancelFlag,
}

impl Deployment {
    fn open(self, mailbox: Arc<crate::runtime::Mailbox>) -> Result<Task, TaskFailure> {
        let name = self.name.clone();
        let chain_failed = |error: ChainError| TaskFailure::Chain {
            task: name.clone(),
            error,
        };
        let tail: Box<dyn Output> = match &self.sink {
            Some(SinkSpec::File { path }) => Box::new(
                FileSink::create(path, self.subtask, self.parallelism, self.metrics.clone())
                    .map_err(chain_failed)?,
            ),
            Some(SinkSpec::Stdout) => Box::new(StdoutSink::new(self.metrics.clone())),
            Some(SinkSpec::Discard) => Box::new(DiscardOutput::new(self.metrics.clone())),
            None => Box::new(RecordWriter::new(
                self.partitions,
                self.buffer_timeout,
                self.metrics.clone(),
            )),
        };
        let links = self
            .links
            .into_iter()
            .map(|l| match l {
                LinkSpec::Wasm(component, spec) => ChainLink::Wasm(ChainSpec { component, spec }),
                LinkSpec::Native(n) => ChainLink::Native(n),
            })
            .collect();
        let chain =
            OperatorChain::open_links(&self.runtime, links, tail, None).map_err(chain_failed)?;
        let input = match self.input {
            TaskSourceSpec::Gate(gate) => TaskInput::Gate(gate),
            TaskSourceSpec::Source(spec) => {
                let reader: Box<dyn SourceReader> = match spec {
                    SourceSpec::File { path } => Box::new(
                        FileSource::open(&path, self.subtask, self.parallelism).map_err(
                            |error| TaskFailure::Source {
                                task: self.name.clone(),
                                error,
                            },
                        )?,
                    ),
                    SourceSpec::Sequence { count, text } => Box::new(SequenceSource::new(
                        count,
                        text,
                        self.subtask,
                        self.parallelism,
                    )),
                };
                TaskInput::Source(reader)
            }
        };
        Ok(Task {
            name: self.name,
            input,
            chain,
            metrics: self.metrics,
            cancel: self.cancel,
            mailbox,
            buffer_timeout: self.buffer_timeout,
        })
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

    /// Current metrics of every task.
    pub fn metrics(&self) -> Vec<(String, TaskMetricsSnapshot)> {
        self.tasks
            .iter()
            .map(|t| (t.name.clone(), t.metrics.snapshot()))
            .collect()
    }

    pub fn network(&self) -> BufferPoolStats {
        self.network.stats()
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
        let network = self.network.stats();
        for task in self.tasks {
            let _ = task.thread.join();
        }
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
        })
    }
}
