//! Deploying a job graph: checks resources, loads the components (the blobs the TaskExecutor
//! resolves by hash), plans what each task restores, describes every subtask as a serializable
//! task deployment descriptor (its chain, its gate and the consumers' channels, its state as
//! file handles) and submits it to the TaskExecutor; then starts the checkpoint coordinator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::JobFailure;
use super::gateways::{ResourceManagerGateway, TaskExecutorGateway};
use super::job_master::{
    AttemptSetup, CoordinatorHandle, DeployedTask, InProcessJobMaster, JobHandle, JobMonitor,
    JobRegistration, transactional_dirs,
};
use super::mini_cluster::MiniCluster;
use super::placement::{Placement, buffers_needed};
use super::restore::RestorePlan;
use crate::checkpoint::{CheckpointFailure, Coordinator};
use crate::job::{JobGraph, OperatorImpl, Partitioning, VertexInput, VertexOutput};
use crate::network::PartitionId;
use crate::runtime::deployment::{
    BlobKey, ChannelDescriptor, GateDescriptor, GateId, InputDescriptor, OperatorDescriptor,
    OutputDescriptor, PartitionDescriptor, Selector, TaskDeploymentDescriptor,
};
use crate::runtime::job_log::RegisteredJob;
use crate::runtime::{JobMasterConnection, TaskFailure};
use crate::stream::Barrier;
use crate::wasm::{Capabilities, ExecutionMode};

/// Checks resources, loads the components and the state to restore, and starts every task of
/// `graph` (and, with checkpointing, its coordinator).
pub(super) fn deploy(
    cluster: &MiniCluster,
    graph: &JobGraph,
    setup: &AttemptSetup<'_>,
) -> Result<JobHandle, JobFailure> {
    let limits = Arc::new(super::job_limits(
        &cluster.limits,
        &cluster.limit_maximums,
        &graph.limits,
    )?);
    let rm: &dyn ResourceManagerGateway = cluster.resource_manager.as_ref();
    let reserve = rm.channel_buffers();
    let offers = rm.request_slots(
        graph.slots_needed(),
        &|slots| buffers_needed(graph, reserve, &slots),
        setup.tenant,
    )?;
    let placement = Placement::new(&offers)?;
    let tes: Vec<&Arc<dyn TaskExecutorGateway>> = offers.iter().map(|o| &o.task_executor).collect();
    let mut components: HashMap<PathBuf, BlobKey> = HashMap::new();
    for vertex in &graph.vertices {
        for op in &vertex.operators {
            if let OperatorImpl::Native(name) = &op.implementation
                && cluster.native_operators.is_none()
            {
                return Err(JobFailure::NoNativeOperators {
                    operator: op.id.clone(),
                    native: name.clone(),
                });
            }
            if let OperatorImpl::Wasm { component, .. } = &op.implementation
                && !components.contains_key(component)
            {
                let (name, bytes) = cluster.dispatcher.component(component)?;
                let mut key = None;
                for te in &tes {
                    key = Some(te.put_component(&name, &bytes)?);
                }
                components.insert(component.clone(), key.expect("a job has a TaskExecutor"));
            }
        }
    }

    let plan = match setup.restore {
        Some(restored) => Some(RestorePlan::new(
            graph,
            restored,
            setup.allow_non_restored_state,
        )?),
        None => None,
    };

    // Gates: a consumer has, per input edge, one channel per producer subtask (one for
    // forward); `offset[e]` is where edge e's channels start in the target's gate.
    let mut offset = vec![0usize; graph.edges.len()];
    let mut gate_channels = vec![0usize; graph.vertices.len()];
    for (v, vertex) in graph.vertices.iter().enumerate() {
        if let VertexInput::Edges(edges) = &vertex.input {
            for &e in edges {
                offset[e] = gate_channels[v];
                gate_channels[v] += channels_of(graph, e);
            }
        }
    }

    let id = cluster.dispatcher.new_attempt_id();
    let (coordinator_tx, coordinator_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let master: Arc<dyn JobMasterConnection> = Arc::new(InProcessJobMaster {
        coordinator: setup.checkpoints.map(|_| coordinator_tx.clone()),
        done: done_tx.clone(),
    });
    for te in &tes {
        te.register_job(
            id,
            master.clone(),
            &RegisteredJob {
                checkpointing: setup.checkpoints.is_some(),
                job_id: setup.job_id.map(str::to_string),
                tenant: setup.tenant.map(str::to_string),
            },
        );
    }
    let abort = |e: JobFailure| {
        tes.iter().for_each(|te| te.unregister_job(id));
        e
    };
    let restored_id = setup.restore.map(|r| r.metadata.checkpoint);
    // Checkpoint ids continue above every `chk-<n>` already in the job's directory (earlier
    // runs, failed attempts, skipped corrupt ones) and every part file a transactional sink
    // committed, so an id never names two checkpoints, retention by id keeps the newest, and a
    // part file is never committed twice under one name.
    let first_checkpoint = setup.checkpoints.map(|config| {
        let existing = crate::checkpoint::storage::checkpoint_dirs(&config.dir.join(&graph.name))
            .first()
            .map_or(0, |(n, _)| *n);
        let committed = transactional_dirs(graph)
            .iter()
            .filter_map(|dir| crate::connectors::committed_parts(dir).ok())
            .flatten()
            .map(|(_, epoch)| epoch)
            .max()
            .unwrap_or(0);
        existing.max(committed).max(restored_id.unwrap_or(0)) + 1
    });
    let task_count: usize = graph.vertices.iter().map(|v| v.parallelism as usize).sum();
    let gate = |v: usize, s: u32| GateDescriptor {
        id: GateId {
            job: id,
            vertex: v,
            subtask: s,
        },
        channels: gate_channels[v],
    };
    let mut tasks: Vec<DeployedTask> = Vec::new();
    for (v, vertex) in graph.vertices.iter().enumerate() {
        for s in 0..vertex.parallelism {
            let index = tasks.len();
            let (restore, remaining) = match &plan {
                Some(plan) => plan.for_subtask(graph, v, s),
                None => (None, None),
            };
            let input = match &vertex.input {
                VertexInput::Source(spec) => InputDescriptor::Source {
                    id: vertex.node_ids[0].clone(),
                    spec: spec.clone(),
                    remaining,
                    wait_for_checkpoints: vertex.source_waits_for_checkpoints,
                },
                VertexInput::Edges(edges) => InputDescriptor::Gate {
                    gate: gate(v, s),
                    remote: placement.remote_inputs(graph, edges, &offset, s, id),
                    second_input: edges
                        .iter()
                        .filter(|&&e| graph.edges[e].second)
                        .map(|&e| offset[e]..offset[e] + channels_of(graph, e))
                        .collect(),
                },
            };
            let output = match &vertex.output {
                VertexOutput::Sink(spec) => OutputDescriptor::Sink {
                    spec: spec.clone(),
                    transactional_epoch: first_checkpoint,
                    job_name: graph.name.clone(),
                    id: vertex.node_ids.last().cloned().unwrap_or_default(),
                },
                VertexOutput::Edges(edges) => OutputDescriptor::Partitions(
                    edges
                        .iter()
                        .map(|&e| {
                            let edge = &graph.edges[e];
                            let target = &graph.vertices[edge.target];
                            let partition = PartitionId {
                                job: id,
                                edge: e as u32,
                                producer: s,
                            };
                            let channel = |consumer: u32, index: usize, subpartition: u32| {
                                if placement.same(s, consumer) {
                                    ChannelDescriptor::Local {
                                        gate: gate(edge.target, consumer),
                                        channel: index,
                                    }
                                } else {
                                    ChannelDescriptor::Remote {
                                        partition,
                                        subpartition,
                                    }
                                }
                            };
                            let channels = match edge.partitioning {
                                Partitioning::Forward => vec![channel(s, offset[e], 0)],
                                _ => (0..target.parallelism)
                                    .map(|c| channel(c, offset[e] + s as usize, c))
                                    .collect(),
                            };
                            PartitionDescriptor {
                                edge: format!("`{}` -> `{}`", vertex.name, target.name),
                                selector: match edge.partitioning {
                                    Partitioning::Forward => Selector::Forward,
                                    Partitioning::Rebalance => Selector::Rebalance,
                                    Partitioning::Hash => Selector::KeyGroups,
                                    Partitioning::Broadcast => Selector::Broadcast,
                                },
                                channels,
                            }
                        })
                        .collect(),
                ),
            };
            let chain = vertex
                .operators
                .iter()
                .map(|op| match &op.implementation {
                    OperatorImpl::Wasm {
                        component,
                        operator,
                    } => OperatorDescriptor::Wasm {
                        id: op.id.clone(),
                        operator: operator.clone(),
                        component: components[component].clone(),
                        config: op.config.clone(),
                        limits: (*limits).clone(),
                        capabilities: Capabilities {
                            clocks: graph.grants.clocks,
                            random: graph.grants.random,
                        },
                        mode: ExecutionMode::Batched,
                    },
                    OperatorImpl::Native(name) => OperatorDescriptor::Native { name: name.clone() },
                })
                .collect();
            let tdd = TaskDeploymentDescriptor {
                job: id,
                attempt: setup.attempt,
                index,
                name: format!("{} ({}/{})", vertex.name, s + 1, vertex.parallelism),
                subtask: s,
                parallelism: vertex.parallelism,
                max_parallelism: graph.max_parallelism,
                input,
                chain,
                watermarks: vertex.watermarks,
                output,
                buffer_timeout_ms: graph.buffer_timeout_ms,
                checkpointing: setup.checkpoints.is_some(),
                restore,
            };
            // As a TaskExecutor in another process would get it.
            let tdd = if cluster.descriptors_over_the_wire {
                over_the_wire(&tdd).map_err(abort)?
            } else {
                tdd
            };
            let name = tdd.name.clone();
            let task_executor = placement.task_executor(s);
            tes[task_executor]
                .submit_task(tdd)
                .map_err(|e| abort(JobFailure::Submit(e)))?;
            tasks.push(DeployedTask {
                index,
                name,
                vertex: v,
                subtask: s,
                task_executor,
                source: matches!(vertex.input, VertexInput::Source(_)),
                sink: matches!(vertex.output, VertexOutput::Sink(_)),
            });
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
            completed: Arc::new(Mutex::new(Vec::new())),
            stats: setup.stats.clone(),
            storage_quota: setup.checkpoint_storage,
            store: setup.checkpoint_store.clone(),
        };
        let completed = coordinator.completed.clone();
        // Per TaskExecutor, its source tasks: where barriers start.
        let sources: Vec<(Arc<dyn TaskExecutorGateway>, Vec<usize>)> = tes
            .iter()
            .enumerate()
            .map(|(k, te)| {
                let here = tasks
                    .iter()
                    .filter(|t| t.source && t.task_executor == k)
                    .map(|t| t.index)
                    .collect();
                ((*te).clone(), here)
            })
            .collect();
        let done = done_tx.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint-coordinator".into())
            .spawn(move || {
                coordinator.run(
                    coordinator_rx,
                    |checkpoint, dir| {
                        let barrier = Barrier::new(checkpoint, dir);
                        for (te, here) in &sources {
                            te.trigger_checkpoint(id, here, &barrier);
                        }
                    },
                    |checkpoint, last| {
                        for (te, _) in &sources {
                            te.notify_checkpoint_complete(id, checkpoint, last);
                        }
                    },
                    |reason| {
                        let failure = match reason {
                            CheckpointFailure::FinalCheckpoint(r) => TaskFailure::Checkpoint(r),
                            CheckpointFailure::StorageQuota(r) => TaskFailure::Quota(r),
                        };
                        let _ = done.send((usize::MAX, Err(failure)));
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
        Some((_, Err(e), _)) => return Err(abort(JobFailure::Spawn(e))),
        None => None,
    };
    let registrations = tes
        .iter()
        .map(|te| JobRegistration {
            task_executor: (*te).clone(),
            id,
        })
        .collect();
    let task_executors: Vec<Arc<dyn TaskExecutorGateway>> =
        tes.iter().map(|te| (*te).clone()).collect();
    Ok(JobHandle {
        coordinator,
        registrations,
        monitor: JobMonitor {
            started: Instant::now(),
            job: id,
            task_executors: task_executors.clone(),
            sources: tasks.iter().filter(|t| t.source).map(|t| t.index).collect(),
            sinks: tasks.iter().filter(|t| t.sink).map(|t| t.index).collect(),
        },
        id,
        name: graph.name.clone(),
        tasks,
        done: done_rx,
        started: Instant::now(),
        task_executors,
        _slots: offers.into_iter().map(|o| o.allocation).collect(),
        insight: None,
    })
}

/// A descriptor after the trip through the bytes an RPC would carry.
fn over_the_wire(tdd: &TaskDeploymentDescriptor) -> Result<TaskDeploymentDescriptor, JobFailure> {
    crate::codec::try_encode(tdd)
        .and_then(|bytes| crate::codec::decode(&bytes))
        .map_err(|e| {
            JobFailure::Descriptor(format!(
                "task {} does not survive serialization: {e}",
                tdd.name
            ))
        })
}

/// Channels edge `e` brings into each subtask of its target: one on a forward edge, one per
/// producer subtask otherwise.
fn channels_of(graph: &JobGraph, e: usize) -> usize {
    match graph.edges[e].partitioning {
        Partitioning::Forward => 1,
        _ => graph.vertices[graph.edges[e].source].parallelism as usize,
    }
}
