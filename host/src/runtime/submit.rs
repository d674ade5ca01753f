//! `TaskExecutor::submit_task`: a task deployment descriptor becomes a running task. On the
//! caller's thread the TaskExecutor resolves what the descriptor names (the component blobs,
//! the input gate, the consumers' channels, buffer pools); on the task's own thread the task
//! opens (sinks and sources, the chain's operators, their restored state) and runs.

use std::sync::Arc;
use std::time::Duration;

use super::chain::{ChainLink, ChainSpec, NativeOperators, OperatorChain};
use super::deployment::{
    ChannelDescriptor, InputDescriptor, OperatorDescriptor, OutputDescriptor, PartitionDescriptor,
    RemoteChannelDescriptor, Selector, StateFileHandle, TaskDeploymentDescriptor,
};
use super::external::{ExternalSink, open_external_sink, open_external_source};
use super::output::NetworkOutput;
use super::task::{Mailbox, Task, TaskCheckpointing, TaskFailure, TaskInput};
use super::task_executor::TaskExecutor;
use super::watermarks::SplitCursor;
use crate::checkpoint::storage::read_state_file;
use crate::checkpoint::{CoordinatorEvent, RestoreError};
use crate::connectors::nexmark::{self, NexmarkSource};
use crate::connectors::{
    DiscardSink, FileSink, FileSource, SequenceSource, SourceReader, StdoutSink,
    TransactionalFileSink,
};
use crate::job::{SinkSpec, SourceSpec};
use crate::metrics::TaskMetrics;
use crate::network::{
    CancelFlag, ChannelSelector, ChannelSender, InputGate, LocalBufferPool, PartitionWriter,
    RecordWriter, RemoteChannelSpec, RemoteGateBuffers,
};
use crate::state::OperatorSnapshot;
use crate::stream::{Output, StreamError};
use crate::wasm::{LoadedComponent, LogSink, OperatorSpec, WasmRuntime};

/// How the tasks of a job reach their job master (the part of Flink's JobMasterGateway a
/// TaskExecutor calls): in one process a pair of channels, across processes RPC.
pub trait JobMasterConnection: Send + Sync {
    /// A task's checkpoint event: acknowledgement, refusal, end of input, finished.
    fn checkpoint_event(&self, event: CoordinatorEvent);
    /// Task `index` ended, and how.
    fn task_ended(&self, index: usize, result: Result<(), TaskFailure>);
}

/// What the tasks of one job share on a TaskExecutor, and their line to the job master: what a
/// descriptor cannot carry. The TaskExecutor makes it when the job is registered.
#[derive(Clone)]
pub struct JobConnection {
    pub cancel: CancelFlag,
    pub master: Arc<dyn JobMasterConnection>,
    /// Whether the job checkpoints.
    pub checkpointing: bool,
    pub log_sink: Arc<dyn LogSink>,
    pub natives: Option<Arc<dyn NativeOperators>>,
}

/// A descriptor the TaskExecutor cannot deploy.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The descriptor names a component this TaskExecutor was never given.
    #[error(
        "task {task} needs component `{name}` (blob {hash}), which this TaskExecutor does not have"
    )]
    UnknownBlob {
        task: String,
        name: String,
        hash: String,
    },
    /// The task's job is not registered here, or its gate was taken by an earlier deployment.
    #[error(
        "task {task} names a gate this TaskExecutor cannot give it (its job is not registered, or the gate is taken)"
    )]
    NoGate { task: String },
    #[error("task {task} has a channel {channel} past its consumer's {channels} channels")]
    BadChannel {
        task: String,
        channel: usize,
        channels: usize,
    },
    #[error("task {task} cannot reach other TaskExecutors: {error}")]
    Network { task: String, error: String },
    #[error("task {task} names remote partitions of more than one partition on one edge")]
    MixedPartitions { task: String },
    /// A TaskExecutor in another process refused or did not answer.
    #[error("TaskManager `{task_manager}` cannot deploy task {task}: {error}")]
    Remote {
        task: String,
        task_manager: String,
        error: String,
    },
    #[error(
        "task {task} belongs to a job this TaskExecutor does not know (not registered, or over)"
    )]
    UnknownJob { task: String },
    #[error("cannot start the thread of task {task}: {error}")]
    Spawn { task: String, error: std::io::Error },
}

/// What the task thread opens.
enum Link {
    Wasm(Arc<LoadedComponent>, OperatorSpec),
    Native(String),
}

impl TaskExecutor {
    /// Deploys the task `tdd` describes, of a job registered here, and starts it on a thread
    /// of its own.
    pub fn submit_task(&self, tdd: TaskDeploymentDescriptor) -> Result<(), SubmitError> {
        let job = &self
            .job_connection(tdd.job)
            .ok_or_else(|| SubmitError::UnknownJob {
                task: tdd.name.clone(),
            })?;
        let metrics = Arc::new(TaskMetrics::default());
        let mut links = Vec::with_capacity(tdd.chain.len());
        for op in &tdd.chain {
            links.push(match op {
                OperatorDescriptor::Wasm {
                    id,
                    operator,
                    component,
                    config,
                    limits,
                    capabilities,
                    mode,
                } => {
                    let loaded = self.runtime().loaded(&component.hash).ok_or_else(|| {
                        SubmitError::UnknownBlob {
                            task: tdd.name.clone(),
                            name: component.name.clone(),
                            hash: component.hash.clone(),
                        }
                    })?;
                    let mut spec = OperatorSpec::new(operator.clone());
                    spec.id = id.clone();
                    spec.subtask_index = tdd.subtask;
                    spec.parallelism = tdd.parallelism;
                    spec.max_parallelism = tdd.max_parallelism;
                    spec.attempt = tdd.attempt;
                    spec.config = config.clone();
                    spec.limits = Arc::new(limits.clone());
                    spec.capabilities = *capabilities;
                    spec.mode = *mode;
                    spec.log_sink = job.log_sink.clone();
                    spec.cancel = Some(job.cancel.shared());
                    spec.memory_gauge = Some(metrics.guest_memory_gauge());
                    spec.random_seed = random_seed(tdd.job, id, tdd.subtask);
                    Link::Wasm(loaded, spec)
                }
                OperatorDescriptor::Native { name } => Link::Native(name.clone()),
            });
        }
        let gate = match &tdd.input {
            InputDescriptor::Gate { gate, remote, .. } => {
                let input = self.take_gate(gate).ok_or_else(|| SubmitError::NoGate {
                    task: tdd.name.clone(),
                })?;
                self.open_remote_channels(&tdd, &input, remote, &metrics)?;
                Some(input)
            }
            InputDescriptor::Source { .. } => None,
        };
        let partitions = match &tdd.output {
            OutputDescriptor::Partitions(partitions) => {
                let per_channel = self.config().buffers_per_channel;
                let mut writers = Vec::with_capacity(partitions.len());
                for p in partitions {
                    let senders = self.partition_senders(&tdd, p, &metrics)?;
                    let selector = match p.selector {
                        Selector::Forward => ChannelSelector::Forward,
                        Selector::Rebalance => ChannelSelector::Rebalance,
                        Selector::KeyGroups => ChannelSelector::KeyGroups {
                            max_parallelism: tdd.max_parallelism,
                        },
                        Selector::Broadcast => ChannelSelector::Broadcast,
                    };
                    let pool = LocalBufferPool::new(
                        self.network().clone(),
                        senders.len(),
                        senders.len() * per_channel + 1,
                        per_channel,
                    );
                    writers.push(PartitionWriter::new(
                        p.edge.clone(),
                        selector,
                        senders,
                        pool,
                        job.cancel.clone(),
                        metrics.clone(),
                    ));
                }
                writers
            }
            OutputDescriptor::Sink { .. } => Vec::new(),
        };
        let opening = Opening {
            runtime: self.runtime().clone(),
            job: job.clone(),
            metrics: metrics.clone(),
            links,
            gate,
            partitions,
            tdd,
        };
        let (name, index) = (opening.tdd.name.clone(), opening.tdd.index);
        self.spawn_task(
            opening.tdd.job,
            index,
            name.clone(),
            metrics,
            job.master.clone(),
            move |mailbox| opening.open(mailbox),
        )
        .map_err(|error| SubmitError::Spawn { task: name, error })
    }
}

impl TaskExecutor {
    /// The senders of a producer's partition, in consumer order: into gates here, or into
    /// subpartitions registered for consumers in other TaskExecutors to request.
    fn partition_senders(
        &self,
        tdd: &TaskDeploymentDescriptor,
        partition: &PartitionDescriptor,
        metrics: &Arc<TaskMetrics>,
    ) -> Result<Vec<ChannelSender>, SubmitError> {
        let mut senders = Vec::with_capacity(partition.channels.len());
        let mut remote = Vec::new();
        let mut remote_id = None;
        for (at, c) in partition.channels.iter().enumerate() {
            match *c {
                ChannelDescriptor::Local { gate, channel } => {
                    let gate_senders =
                        self.gate_senders(&gate)
                            .ok_or_else(|| SubmitError::NoGate {
                                task: tdd.name.clone(),
                            })?;
                    senders.push(gate_senders.sender(channel).ok_or_else(|| {
                        SubmitError::BadChannel {
                            task: tdd.name.clone(),
                            channel,
                            channels: gate.channels,
                        }
                    })?);
                }
                ChannelDescriptor::Remote {
                    partition: id,
                    subpartition,
                } => {
                    if remote_id.is_some_and(|known| known != id) {
                        return Err(SubmitError::MixedPartitions {
                            task: tdd.name.clone(),
                        });
                    }
                    remote_id = Some(id);
                    remote.push((at, subpartition));
                }
            }
        }
        if let Some(id) = remote_id {
            let indexes: Vec<u32> = remote.iter().map(|&(_, s)| s).collect();
            let registered = self
                .network_environment()
                .register_partition(id, &indexes, metrics);
            for ((at, _), sender) in remote.into_iter().zip(registered) {
                senders.insert(at, sender);
            }
        }
        Ok(senders)
    }

    /// Requests the subpartitions of a consumer's remote channels from their producers'
    /// TaskExecutors; what arrives goes into `gate`.
    fn open_remote_channels(
        &self,
        tdd: &TaskDeploymentDescriptor,
        gate: &InputGate,
        remote: &[RemoteChannelDescriptor],
        metrics: &Arc<TaskMetrics>,
    ) -> Result<(), SubmitError> {
        if remote.is_empty() {
            return Ok(());
        }
        let network = self.network_environment();
        let config = network.config();
        let buffers = RemoteGateBuffers::new(
            remote.len(),
            config.exclusive_buffers_per_channel,
            config.floating_buffers_per_gate,
        );
        let senders = gate.senders();
        for r in remote {
            let sender = senders
                .sender(r.channel)
                .ok_or_else(|| SubmitError::BadChannel {
                    task: tdd.name.clone(),
                    channel: r.channel,
                    channels: gate.channels(),
                })?;
            let spec = RemoteChannelSpec {
                peer: r.producer.clone(),
                partition: r.partition,
                subpartition: r.subpartition,
                channel: r.channel,
                task: tdd.name.clone(),
            };
            network
                .open_remote_channel(spec, tdd.job, sender, buffers.clone(), metrics.clone())
                .map_err(|error| SubmitError::Network {
                    task: tdd.name.clone(),
                    error,
                })?;
        }
        Ok(())
    }
}

/// Everything a task thread needs to open its task.
struct Opening {
    runtime: Arc<WasmRuntime>,
    job: JobConnection,
    metrics: Arc<TaskMetrics>,
    links: Vec<Link>,
    gate: Option<InputGate>,
    partitions: Vec<PartitionWriter>,
    tdd: TaskDeploymentDescriptor,
}

impl Opening {
    fn open(self, mailbox: Arc<Mailbox>) -> Result<Task, TaskFailure> {
        let Opening {
            runtime,
            job,
            metrics,
            links,
            gate,
            partitions,
            tdd,
        } = self;
        let name = tdd.name.clone();
        let cancel = job.cancel.clone();
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
        let buffer_timeout = Duration::from_millis(tdd.buffer_timeout_ms);
        let tail: Box<dyn Output> = match &tdd.output {
            OutputDescriptor::Sink {
                spec,
                transactional_epoch,
                job_name,
                id,
            } => match spec {
                SinkSpec::File { path } => match transactional_epoch {
                    Some(epoch) => Box::new(
                        TransactionalFileSink::create(path, tdd.subtask, *epoch, metrics.clone())
                            .map_err(chain_failed)?,
                    ),
                    None => Box::new(
                        FileSink::create(path, tdd.subtask, tdd.parallelism, metrics.clone())
                            .map_err(chain_failed)?,
                    ),
                },
                SinkSpec::Stdout => Box::new(StdoutSink::new(metrics.clone())),
                SinkSpec::Discard => Box::new(DiscardSink::new(metrics.clone())),
                external => {
                    let sink = ExternalSink {
                        job_name,
                        id,
                        subtask: tdd.subtask,
                        parallelism: tdd.parallelism,
                        epoch: *transactional_epoch,
                    };
                    open_external_sink(external, &sink, &metrics).map_err(chain_failed)?
                }
            },
            OutputDescriptor::Partitions(_) => Box::new(NetworkOutput(RecordWriter::new(
                partitions,
                buffer_timeout,
                metrics.clone(),
            ))),
        };
        let restore = match &tdd.restore {
            Some(per_operator) => {
                Some(
                    read_restore(per_operator).map_err(|error| TaskFailure::Restore {
                        task: name.clone(),
                        error,
                    })?,
                )
            }
            None => None,
        };
        let mut links: Vec<ChainLink> = links
            .into_iter()
            .map(|l| match l {
                Link::Wasm(component, spec) => ChainLink::Wasm(ChainSpec { component, spec }),
                Link::Native(n) => ChainLink::Native(n),
            })
            .collect();
        // A source task's generator follows its splits; elsewhere it has one clock.
        let split_cursor = (tdd.watermarks.is_some()
            && matches!(tdd.input, InputDescriptor::Source { .. }))
        .then(SplitCursor::default);
        if let Some(w) = tdd.watermarks {
            links.insert(
                w.after.min(links.len()),
                ChainLink::Watermarks {
                    strategy: w.strategy,
                    cursor: split_cursor.clone(),
                    metrics: metrics.clone(),
                },
            );
        }
        let chain = OperatorChain::open_links(
            &runtime,
            job.natives.as_deref(),
            links,
            tail,
            restore.as_deref(),
        )
        .map_err(chain_failed)?;
        let checkpointing = job.checkpointing && tdd.checkpointing;
        let (input, source, wait_for_checkpoints) = match (tdd.input, gate) {
            (InputDescriptor::Gate { second_input, .. }, Some(gate)) => {
                (TaskInput::Gate(gate, second_input), None, None)
            }
            (
                InputDescriptor::Source {
                    id,
                    spec,
                    remaining,
                    wait_for_checkpoints,
                },
                _,
            ) => {
                let reader =
                    open_source(spec, remaining, tdd.subtask, tdd.parallelism, checkpointing)
                        .map_err(|error| TaskFailure::Source {
                            task: name.clone(),
                            error,
                        })?;
                (TaskInput::Source(reader), Some(id), wait_for_checkpoints)
            }
            (InputDescriptor::Gate { .. }, None) => {
                return Err(chain_failed(StreamError::Output(
                    "a gate task was deployed without its gate".into(),
                )));
            }
        };
        let checkpointing = (job.checkpointing && tdd.checkpointing).then(|| TaskCheckpointing {
            index: tdd.index,
            subtask: tdd.subtask,
            source,
            master: job.master.clone(),
        });
        Ok(Task {
            name: tdd.name,
            input,
            chain,
            metrics,
            cancel: job.cancel,
            mailbox,
            buffer_timeout,
            checkpointing,
            ending: Default::default(),
            wait_for_checkpoints,
            split_cursor,
        })
    }
}

fn open_source(
    spec: SourceSpec,
    remaining: Option<Vec<(u64, u64)>>,
    subtask: u32,
    parallelism: u32,
    checkpointing: bool,
) -> Result<Box<dyn SourceReader>, crate::connectors::SourceError> {
    Ok(match spec {
        SourceSpec::File { path } => Box::new(match remaining {
            Some(ranges) => FileSource::open_ranges(&path, ranges)?,
            None => FileSource::open(&path, subtask, parallelism)?,
        }),
        SourceSpec::Sequence {
            count,
            text,
            timestamps,
        } => Box::new(
            match remaining {
                Some(ranges) => SequenceSource::from_ranges(ranges, text),
                None => SequenceSource::new(count, text, subtask, parallelism),
            }
            .with_timestamps(timestamps),
        ),
        external @ (SourceSpec::Kafka(_) | SourceSpec::Nats(_)) => {
            open_external_source(&external, remaining, subtask, parallelism, checkpointing)?
        }
        SourceSpec::Nexmark { count, base_time } => {
            let base_time = base_time.unwrap_or(nexmark::DEFAULT_BASE_TIME);
            Box::new(match remaining {
                Some(ranges) => NexmarkSource::from_ranges(ranges, base_time),
                None => NexmarkSource::new(count, base_time, subtask, parallelism),
            })
        }
    })
}

/// Reads the state files of every wasm operator of a chain, each restricted to its key groups.
fn read_restore(
    per_operator: &[Vec<StateFileHandle>],
) -> Result<Vec<Vec<OperatorSnapshot>>, RestoreError> {
    per_operator
        .iter()
        .map(|handles| {
            handles
                .iter()
                .map(|h| read_state_file(&h.path, h.crc32, h.key_groups.clone()))
                .collect()
        })
        .collect()
}

/// The seed of a subtask's randomness: the same for every attempt of the job's subtask, and
/// different between jobs, operators and subtasks.
fn random_seed(job: u64, operator: &str, subtask: u32) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{job:016x}/{operator}/{subtask}"));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}
