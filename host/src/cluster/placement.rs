//! Where a job's subtasks run once its slots are offered: slot `s` (subtask `s` of every
//! vertex, by slot sharing) runs on the TaskExecutor whose offer holds it. An edge between
//! subtasks in one TaskExecutor is a local channel; between two, a remote one, whose consumer
//! requests its subpartition from the producer's data port. Also what a job must reserve on a
//! TaskExecutor: the producers' partition buffers there, and the credit of the remote channels
//! of the consumers there.

use std::ops::Range;

use super::JobFailure;
use super::gateways::{ChannelBuffers, SlotOffer};
use crate::job::{JobGraph, Partitioning, VertexInput};
use crate::network::PartitionId;
use crate::runtime::deployment::RemoteChannelDescriptor;

/// The slots of each TaskExecutor of a job, and their data addresses when the job spans more
/// than one.
pub(super) struct Placement {
    slots: Vec<Range<u32>>,
    addresses: Vec<String>,
}

impl Placement {
    pub(super) fn new(offers: &[SlotOffer]) -> Result<Self, JobFailure> {
        let addresses = if offers.len() > 1 {
            offers
                .iter()
                .enumerate()
                .map(|(index, o)| {
                    o.task_executor
                        .data_address()
                        .map_err(|reason| JobFailure::DataPort { index, reason })
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Placement {
            slots: offers.iter().map(|o| o.slots.clone()).collect(),
            addresses,
        })
    }

    /// The index of the TaskExecutor (offer) that runs slot `slot`.
    pub(super) fn task_executor(&self, slot: u32) -> usize {
        self.slots
            .iter()
            .position(|r| r.contains(&slot))
            .unwrap_or(0)
    }

    /// Whether slots `a` and `b` run in one TaskExecutor.
    pub(super) fn same(&self, a: u32, b: u32) -> bool {
        self.task_executor(a) == self.task_executor(b)
    }

    /// The remote channels of consumer subtask `consumer` whose input edges are `edges`
    /// (`offset[e]`: where edge e's channels start in the gate).
    pub(super) fn remote_inputs(
        &self,
        graph: &JobGraph,
        edges: &[usize],
        offset: &[usize],
        consumer: u32,
        job: u64,
    ) -> Vec<RemoteChannelDescriptor> {
        let mut remote = Vec::new();
        for &e in edges {
            for (channel, producer, subpartition) in input_channels(graph, e, offset[e], consumer) {
                if !self.same(producer, consumer) {
                    remote.push(RemoteChannelDescriptor {
                        channel,
                        producer: self.addresses[self.task_executor(producer)].clone(),
                        partition: PartitionId {
                            job,
                            edge: e as u32,
                            producer,
                        },
                        subpartition,
                    });
                }
            }
        }
        remote
    }
}

/// The channels edge `e` feeds into consumer subtask `consumer`'s gate: (channel index,
/// producer subtask, subpartition of the producer's partition).
fn input_channels(
    graph: &JobGraph,
    e: usize,
    offset: usize,
    consumer: u32,
) -> Vec<(usize, u32, u32)> {
    let edge = &graph.edges[e];
    match edge.partitioning {
        Partitioning::Forward => vec![(offset, consumer, 0)],
        _ => (0..graph.vertices[edge.source].parallelism)
            .map(|p| (offset + p as usize, p, consumer))
            .collect(),
    }
}

/// Network buffers the job needs on a TaskExecutor that holds just `slots` of its slots: each
/// producer subtask there reserves its partitions' buffers, and each consumer subtask there
/// with remote channels (those from producers outside `slots`) their exclusive buffers and
/// its gate's floating ones.
pub(super) fn buffers_needed(
    graph: &JobGraph,
    reserve: ChannelBuffers,
    slots: &Range<u32>,
) -> usize {
    let mut needed = 0;
    for edge in &graph.edges {
        let channels = match edge.partitioning {
            Partitioning::Forward => 1,
            _ => graph.vertices[edge.target].parallelism as usize,
        };
        let producers = (0..graph.vertices[edge.source].parallelism)
            .filter(|s| slots.contains(s))
            .count();
        needed += producers * (channels * reserve.per_channel + 1);
    }
    for vertex in &graph.vertices {
        let VertexInput::Edges(edges) = &vertex.input else {
            continue;
        };
        for consumer in (0..vertex.parallelism).filter(|s| slots.contains(s)) {
            let remote = edges
                .iter()
                .flat_map(|&e| input_channels(graph, e, 0, consumer))
                .filter(|&(_, producer, _)| !slots.contains(&producer))
                .count();
            if remote > 0 {
                // A remote channel owns at least one buffer, whatever the configuration says.
                needed += remote * reserve.exclusive.max(1) + reserve.floating;
            }
        }
    }
    needed
}
