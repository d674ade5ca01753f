//! Deployment as plain data (Flink's TaskDeploymentDescriptor): everything a TaskExecutor needs
//! to turn one subtask of a job into a running task by itself, as a value that serializes, so
//! that the job master can send it to a TaskExecutor in another process.
//!
//! What cannot travel stays out: the connection to the job master (checkpoint coordinator,
//! completion), the cancel flag and the log sink are the TaskExecutor's own, per job; a
//! component travels by its content hash (the blob key) and is fetched once per TaskExecutor;
//! state to restore travels as the handles of its files, read by the task as it opens.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::job::{SinkSpec, SourceSpec};
use crate::network::PartitionId;
use crate::wasm::{Capabilities, ExecutionMode, Limits};

/// One subtask of a job, as a TaskExecutor deploys it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDeploymentDescriptor {
    pub job: u64,
    /// Restarts of the job so far; operators see it.
    pub attempt: u32,
    /// The task's index in the job: the coordinator counts acknowledgements by it.
    pub index: usize,
    /// `vertex (subtask/parallelism)`, for logs and errors.
    pub name: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub input: InputDescriptor,
    /// The chained operators, head first.
    pub chain: Vec<OperatorDescriptor>,
    /// Where in the chain watermarks are generated, and how.
    pub watermarks: Option<crate::job::VertexWatermarks>,
    pub output: OutputDescriptor,
    /// Longest a partly filled network buffer waits.
    pub buffer_timeout_ms: u64,
    /// Whether the task takes part in checkpoints.
    pub checkpointing: bool,
    /// Per wasm operator of the chain, the state files to restore it from (several when the
    /// job was rescaled), or `None` for a fresh start.
    pub restore: Option<Vec<Vec<StateFileHandle>>>,
}

/// Where a task's records come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputDescriptor {
    /// A source: its node id, what it reads, and for a restored job the ranges left to read.
    Source {
        id: String,
        spec: SourceSpec,
        remaining: Option<Vec<(u64, u64)>>,
        /// After the first batch, wait for this many completed checkpoints.
        wait_for_checkpoints: Option<u64>,
    },
    /// The task's input gate, and its channels fed from other TaskExecutors (the rest are
    /// fed by producers in this one).
    Gate {
        gate: GateDescriptor,
        remote: Vec<RemoteChannelDescriptor>,
        /// Channels that carry the second input of the chain's head (a two-input operator).
        #[serde(default)]
        second_input: Vec<std::ops::Range<usize>>,
    },
}

/// A channel of a gate whose producer runs in another TaskExecutor: the consumer's
/// TaskExecutor requests the subpartition from the producer's data port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteChannelDescriptor {
    /// The channel's index in the gate.
    pub channel: usize,
    /// The producer's TaskExecutor data address.
    pub producer: String,
    pub partition: PartitionId,
    pub subpartition: u32,
}

/// Identifies a consumer subtask's input gate within a TaskExecutor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GateId {
    pub job: u64,
    pub vertex: usize,
    pub subtask: u32,
}

/// An input gate and its number of channels (one per producer subtask of each input edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDescriptor {
    pub id: GateId,
    pub channels: usize,
}

/// Where a task's records go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputDescriptor {
    /// A sink; with checkpoints a file sink is transactional, starting at `epoch`.
    Sink {
        spec: SinkSpec,
        transactional_epoch: Option<u64>,
        /// The job's name and the sink's node id: what names an external sink's transactions
        /// across attempts (the job's numeric id changes with each submission).
        job_name: String,
        id: String,
    },
    /// One partition per outgoing edge.
    Partitions(Vec<PartitionDescriptor>),
}

/// How an edge picks its channel for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    Forward,
    Rebalance,
    KeyGroups,
    Broadcast,
}

/// The result partition of one outgoing edge: the consumers' channels it writes to, in
/// consumer subtask order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDescriptor {
    /// `producer -> consumer`, for errors.
    pub edge: String,
    pub selector: Selector,
    pub channels: Vec<ChannelDescriptor>,
}

/// One channel of a producer's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelDescriptor {
    /// The consumer runs in this TaskExecutor: its gate, and the channel's index in it.
    Local {
        gate: GateDescriptor,
        channel: usize,
    },
    /// The consumer runs in another TaskExecutor and will request subpartition `subpartition`
    /// of `partition` from this one.
    Remote {
        partition: PartitionId,
        subpartition: u32,
    },
}

/// One operator of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorDescriptor {
    /// An operator of a wasm component.
    Wasm {
        /// The node id, which names its state in checkpoints.
        id: String,
        /// The operator name the component exports.
        operator: String,
        component: BlobKey,
        config: Vec<(String, String)>,
        limits: Limits,
        capabilities: Capabilities,
        mode: ExecutionMode,
    },
    /// A native operator of the TaskExecutor's process.
    Native { name: String },
}

/// A component by content: the hex SHA-256 of its bytes, and its file name for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobKey {
    pub hash: String,
    pub name: String,
}

/// A state file of a checkpoint and the key groups of it this subtask takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileHandle {
    pub path: PathBuf,
    pub crc32: u32,
    pub key_groups: Range<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_survives_its_serialized_form() {
        let gate = |vertex, subtask| GateDescriptor {
            id: GateId {
                job: 7,
                vertex,
                subtask,
            },
            channels: 2,
        };
        let tdd = TaskDeploymentDescriptor {
            job: 7,
            attempt: 1,
            index: 3,
            name: "count (2/2)".into(),
            subtask: 1,
            parallelism: 2,
            max_parallelism: 128,
            watermarks: Some(crate::job::VertexWatermarks {
                after: 1,
                strategy: crate::job::WatermarkStrategy {
                    out_of_orderness_ms: 4_000,
                    idle_timeout_ms: Some(60_000),
                },
            }),
            input: InputDescriptor::Gate {
                gate: gate(1, 1),
                remote: vec![RemoteChannelDescriptor {
                    channel: 0,
                    producer: "127.0.0.1:6121".into(),
                    partition: PartitionId {
                        job: 7,
                        edge: 0,
                        producer: 0,
                    },
                    subpartition: 1,
                }],
                second_input: vec![2..4, 6..7],
            },
            chain: vec![
                OperatorDescriptor::Wasm {
                    id: "count".into(),
                    operator: "count".into(),
                    component: BlobKey {
                        hash: "ab12".into(),
                        name: "wordcount.wasm".into(),
                    },
                    config: vec![("factor".into(), "3".into())],
                    limits: Limits::default(),
                    capabilities: Capabilities {
                        clocks: true,
                        random: false,
                    },
                    mode: ExecutionMode::PerRecord,
                },
                OperatorDescriptor::Native {
                    name: "even".into(),
                },
            ],
            output: OutputDescriptor::Partitions(vec![PartitionDescriptor {
                edge: "`count` -> `counts`".into(),
                selector: Selector::KeyGroups,
                channels: vec![
                    ChannelDescriptor::Local {
                        gate: gate(2, 0),
                        channel: 1,
                    },
                    ChannelDescriptor::Remote {
                        partition: PartitionId {
                            job: 7,
                            edge: 1,
                            producer: 1,
                        },
                        subpartition: 1,
                    },
                ],
            }]),
            buffer_timeout_ms: 100,
            checkpointing: true,
            restore: Some(vec![vec![StateFileHandle {
                path: PathBuf::from("chk/chk-4/count-1.state"),
                crc32: 99,
                key_groups: 64..128,
            }]]),
        };
        let bytes = crate::codec::encode(&tdd);
        let back: TaskDeploymentDescriptor = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, tdd);

        let source = TaskDeploymentDescriptor {
            input: InputDescriptor::Source {
                id: "lines".into(),
                spec: SourceSpec::File {
                    path: PathBuf::from("in.txt"),
                },
                remaining: Some(vec![(10, 20)]),
                wait_for_checkpoints: Some(2),
            },
            output: OutputDescriptor::Sink {
                spec: SinkSpec::File {
                    path: PathBuf::from("out"),
                },
                transactional_epoch: Some(5),
                job_name: "wc".into(),
                id: "out".into(),
            },
            ..tdd
        };
        let back: TaskDeploymentDescriptor =
            crate::codec::decode(&crate::codec::encode(&source)).unwrap();
        assert_eq!(back, source);
    }
}
