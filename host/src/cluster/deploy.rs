//! Wiring a job graph into tasks: gates and result partitions, buffer pools, the state each
//! task restores, and the checkpoint coordinator; then starting the tasks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::restore::RestorePlan;
use super::{AttemptSetup, CoordinatorHandle, JobFailure, JobHandle, JobMonitor, MiniCluster};
use crate::checkpoint::{CheckpointTargets, Coordinator};
use crate::connectors::{
    DiscardSink, FileSink, FileSource, SequenceSource, SourceReader, StdoutSink,
    TransactionalFileSink,
};
use crate::job::{
    JobGraph, OperatorImpl, Partitioning, SinkSpec, SourceSpec, VertexInput, VertexOutput,
};
use crate::metrics::TaskMetrics;
use crate::network::{
    CancelFlag, ChannelSelector, InputGate, LocalBufferPool, PartitionWriter, RecordWriter,
};
use crate::runtime::task_executor::RunningTask;
use crate::runtime::{
    ChainLink, ChainSpec, Mail, Mailbox, NativeOperators, NetworkOutput, OperatorChain, Task,
    TaskCheckpointing, TaskFailure, TaskInput,
};
use crate::state::OperatorSnapshot;
use crate::stream::{Output, StreamError};
use crate::wasm::{LoadedComponent, OperatorSpec, WasmRuntime};

struct SpawnedTask {
    task: RunningTask,
    source: bool,
}

/// Checks resources, loads the components and the state to restore, and starts every task of
/// `graph` (and, with checkpointing, its coordinator).
pub(super) fn deploy(
    cluster: &MiniCluster,
    graph: &JobGraph,
    setup: &AttemptSetup<'_>,
) -> Result<JobHandle, JobFailure> {
    let te = &cluster.task_executor;
    let limits = Arc::new(super::job_limits(
        &cluster.limits,
        &cluster.limit_maximums,
        &graph.limits,
    )?);
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
    let plan = match setup.restore {
        Some(restored) => Some(RestorePlan::new(
            graph,
            restored,
            setup.allow_non_restored_state,
        )?),
        None => None,
    };
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

    let id = cluster.next_job.fetch_add(1, Ordering::Relaxed);
    let cancel = CancelFlag::default();
    te.register_job(id, cancel.clone());
    let restored_id = setup.restore.map(|r| r.metadata.checkpoint);
    // Checkpoint ids continue above every `chk-<n>` already in the job's directory (earlier
    // runs, failed attempts, skipped corrupt ones) and every part file a transactional sink
    // committed, so an id never names two checkpoints, retention by id keeps the newest, and a
    // part file is never committed twice under one name.
    let first_checkpoint = setup.checkpoints.map(|config| {
        let existing = crate::checkpoint::storage::checkpoint_dirs(&config.dir.join(&graph.name))
            .first()
            .map_or(0, |(n, _)| *n);
        let committed = super::transactional_dirs(graph)
            .iter()
            .filter_map(|dir| crate::connectors::committed_parts(dir).ok())
            .flatten()
            .map(|(_, epoch)| epoch)
            .max()
            .unwrap_or(0);
        existing.max(committed).max(restored_id.unwrap_or(0)) + 1
    });
    let (coordinator_tx, coordinator_rx) = mpsc::channel();
    let targets = CheckpointTargets::default();
    let task_count: usize = graph.vertices.iter().map(|v| v.parallelism as usize).sum();
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
                        spec.id = op.id.clone();
                        spec.attempt = setup.attempt;
                        spec.limits = limits.clone();
                        spec.log_sink = cluster.log_sink.clone();
                        spec.cancel = Some(cancel.shared());
                        LinkSpec::Wasm(components[component].clone(), spec)
                    }
                    OperatorImpl::Native(name) => LinkSpec::Native(name.clone()),
                })
                .collect();
            let index = tasks.len();
            let (restore, source_ranges) = match &plan {
                Some(plan) => plan.for_subtask(graph, v, s)?,
                None => (None, None),
            };
            let source_id = match &vertex.input {
                VertexInput::Source(_) => Some(vertex.node_ids[0].clone()),
                VertexInput::Edges(_) => None,
            };
            let checkpointing = setup.checkpoints.map(|_| TaskCheckpointing {
                index,
                subtask: s,
                source: source_id,
                coordinator: coordinator_tx.clone(),
                targets: targets.clone(),
            });
            let deployment = Deployment {
                restore,
                source_ranges,
                transactional_epoch: first_checkpoint,
                checkpointing,
                name: name.clone(),
                subtask: s,
                parallelism: vertex.parallelism,
                input,
                links,
                sink,
                partitions,
                buffer_timeout,
                wait_for_checkpoints: vertex.source_waits_for_checkpoints,
                natives: cluster.native_operators.clone(),
                runtime: te.runtime().clone(),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
            };
            let spawned =
                te.spawn_task(id, index, name, metrics, done_tx.clone(), move |mailbox| {
                    deployment.open(mailbox)
                });
            match spawned {
                Ok(task) => tasks.push(SpawnedTask {
                    task,
                    source: matches!(vertex.input, VertexInput::Source(_)),
                }),
                Err(e) => {
                    cancel.cancel();
                    te.unregister_job(id);
                    return Err(JobFailure::Spawn(e));
                }
            }
        }
    }
    let coordinator = setup.checkpoints.map(|config| {
        let coordinator = Coordinator {
            config: config.clone(),
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            tasks: task_count,
            sources: tasks.iter().filter(|t| t.source).count(),
            protected: setup.protected.clone(),
            next_id: first_checkpoint.unwrap_or(1),
            targets: targets.clone(),
            completed: Arc::new(Mutex::new(Vec::new())),
        };
        let completed = coordinator.completed.clone();
        let sources: Vec<Arc<Mailbox>> = tasks
            .iter()
            .filter(|t| t.source)
            .map(|t| t.task.mailbox.clone())
            .collect();
        let all: Vec<Arc<Mailbox>> = tasks.iter().map(|t| t.task.mailbox.clone()).collect();
        let done = done_tx.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint-coordinator".into())
            .spawn(move || {
                coordinator.run(
                    coordinator_rx,
                    |n| {
                        sources
                            .iter()
                            .for_each(|m| m.send(Mail::TriggerCheckpoint(n)))
                    },
                    |id, last| {
                        all.iter()
                            .for_each(|m| m.send(Mail::CheckpointComplete { id, last }))
                    },
                    |reason| {
                        let _ = done.send((usize::MAX, Err(TaskFailure::Checkpoint(reason))));
                    },
                )
            });
        (coordinator_tx.clone(), thread, completed)
    });
    let coordinator = match coordinator {
        Some((tx, Ok(thread), completed)) => Some(CoordinatorHandle {
            events: tx,
            thread,
            completed,
        }),
        Some((_, Err(e), _)) => {
            cancel.cancel();
            return Err(JobFailure::Spawn(e));
        }
        None => None,
    };
    Ok(JobHandle {
        coordinator,
        jobs: te.jobs(),
        monitor: JobMonitor {
            started: Instant::now(),
            tasks: monitored,
        },
        id,
        name: graph.name.clone(),
        cancel,
        tasks: tasks.into_iter().map(|t| t.task).collect(),
        done: done_rx,
        started: Instant::now(),
        network: te.network().clone(),
        _slots: slots,
    })
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
    /// Per wasm operator of the chain, the snapshots to restore it from.
    restore: Option<Vec<Vec<OperatorSnapshot>>>,
    /// For a source, the ranges left to read.
    source_ranges: Option<Vec<(u64, u64)>>,
    /// With checkpointing, file sinks are transactional and start at this epoch.
    transactional_epoch: Option<u64>,
    checkpointing: Option<TaskCheckpointing>,
    name: String,
    subtask: u32,
    parallelism: u32,
    input: TaskSourceSpec,
    links: Vec<LinkSpec>,
    sink: Option<SinkSpec>,
    partitions: Vec<PartitionWriter>,
    buffer_timeout: Duration,
    wait_for_checkpoints: Option<u64>,
    natives: Option<Arc<dyn NativeOperators>>,
    runtime: Arc<WasmRuntime>,
    metrics: Arc<TaskMetrics>,
    cancel: CancelFlag,
}

impl Deployment {
    fn open(self, mailbox: Arc<crate::runtime::Mailbox>) -> Result<Task, TaskFailure> {
        let name = self.name.clone();
        let cancel = self.cancel.clone();
        // A cancel that stops a guest's `open` or `restore-state` is the job's cancellation,
        // not the guest's failure.
        let chain_failed = |error: StreamError| {
            if cancel.is_cancelled() {
                TaskFailure::Cancelled { task: name.clone() }
            } else {
                TaskFailure::Chain {
                    task: name.clone(),
                    error,
                }
            }
        };
        let tail: Box<dyn Output> = match &self.sink {
            Some(SinkSpec::File { path }) => match self.transactional_epoch {
                Some(epoch) => Box::new(
                    TransactionalFileSink::create(path, self.subtask, epoch, self.metrics.clone())
                        .map_err(chain_failed)?,
                ),
                None => Box::new(
                    FileSink::create(path, self.subtask, self.parallelism, self.metrics.clone())
                        .map_err(chain_failed)?,
                ),
            },
            Some(SinkSpec::Stdout) => Box::new(StdoutSink::new(self.metrics.clone())),
            Some(SinkSpec::Discard) => Box::new(DiscardSink::new(self.metrics.clone())),
            None => Box::new(NetworkOutput(RecordWriter::new(
                self.partitions,
                self.buffer_timeout,
                self.metrics.clone(),
            ))),
        };
        let links = self
            .links
            .into_iter()
            .map(|l| match l {
                LinkSpec::Wasm(component, spec) => ChainLink::Wasm(ChainSpec { component, spec }),
                LinkSpec::Native(n) => ChainLink::Native(n),
            })
            .collect();
        let chain = OperatorChain::open_links(
            &self.runtime,
            self.natives.as_deref(),
            links,
            tail,
            self.restore.as_deref(),
        )
        .map_err(chain_failed)?;
        let input = match self.input {
            TaskSourceSpec::Gate(gate) => TaskInput::Gate(gate),
            TaskSourceSpec::Source(spec) => {
                let reader: Box<dyn SourceReader> = match spec {
                    SourceSpec::File { path } => {
                        let opened = match self.source_ranges {
                            Some(ranges) => FileSource::open_ranges(&path, ranges),
                            None => FileSource::open(&path, self.subtask, self.parallelism),
                        };
                        Box::new(opened.map_err(|error| TaskFailure::Source {
                            task: self.name.clone(),
                            error,
                        })?)
                    }
                    SourceSpec::Sequence { count, text } => Box::new(match self.source_ranges {
                        Some(ranges) => SequenceSource::from_ranges(ranges, text),
                        None => SequenceSource::new(count, text, self.subtask, self.parallelism),
                    }),
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
            checkpointing: self.checkpointing,
            ending: Default::default(),
            wait_for_checkpoints: self.wait_for_checkpoints,
        })
    }
}
