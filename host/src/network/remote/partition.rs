//! The producer side of remote channels (Flink's ResultSubpartition and
//! ResultPartitionManager): a producer writing to a consumer in another TaskExecutor puts its
//! buffers and events into a subpartition queue here, and the connection that consumer
//! requested it on drains the queue against the consumer's credit. The queue holds only
//! buffers of the producer's own pool, so it is bounded by the producer's per-channel cap: a
//! consumer that grants no credit stops the producer exactly as a full local channel does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::metrics::TaskMetrics;
use crate::network::ChannelItem;

/// A producer subtask's output on one edge (Flink's ResultPartitionID): the job attempt, the
/// edge and the producer subtask. Its subpartitions are numbered by consumer subtask (just 0 on
/// a forward edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionId {
    pub job: u64,
    pub edge: u32,
    pub producer: u32,
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {:x}/edge-{}/producer-{}",
            self.job, self.edge, self.producer
        )
    }
}

struct Queue {
    items: VecDeque<ChannelItem>,
    /// Buffers among `items`: the backlog a consumer is told with every buffer.
    buffers: usize,
    /// The connection serving this subpartition, woken when an empty queue gets an item.
    listener: Option<Arc<Notify>>,
    /// The consumer went away or the job ended: items are dropped, not queued.
    released: bool,
}

/// One consumer channel's queue in a producer's partition.
pub(crate) struct Subpartition {
    pub(crate) id: PartitionId,
    pub(crate) index: u32,
    queue: Mutex<Queue>,
    /// The producer task's metrics: bytes out and credit-starved time are counted here.
    pub(crate) metrics: Arc<TaskMetrics>,
}

/// What a connection may send next.
pub(crate) enum Next {
    /// An item, and the buffers left behind it.
    Item(ChannelItem, u32),
    /// A buffer waits, and the consumer has granted no credit.
    NeedsCredit,
    Empty,
    Released,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subpartition {
    pub(crate) fn push(&self, item: ChannelItem) {
        let mut queue = lock(&self.queue);
        if queue.released {
            return;
        }
        if matches!(item, ChannelItem::Buffer(_)) {
            queue.buffers += 1;
        }
        let wake = queue.items.is_empty();
        queue.items.push_back(item);
        let listener = if wake { queue.listener.clone() } else { None };
        drop(queue);
        if let Some(listener) = listener {
            listener.notify_one();
        }
    }

    /// The next item to send, given whether the consumer has credit for a buffer. Events need
    /// no credit, but never overtake a buffer.
    pub(crate) fn next(&self, has_credit: bool) -> Next {
        let mut queue = lock(&self.queue);
        if queue.released {
            return Next::Released;
        }
        match queue.items.front() {
            None => Next::Empty,
            Some(ChannelItem::Buffer(_)) if !has_credit => Next::NeedsCredit,
            Some(_) => {
                let item = queue.items.pop_front().expect("front exists");
                if matches!(item, ChannelItem::Buffer(_)) {
                    queue.buffers -= 1;
                }
                Next::Item(item, queue.buffers as u32)
            }
        }
    }

    /// Ties the subpartition to the connection that requested it; `false` if another did.
    pub(crate) fn attach(&self, listener: Arc<Notify>) -> bool {
        let mut queue = lock(&self.queue);
        if queue.listener.is_some() || queue.released {
            return false;
        }
        queue.listener = Some(listener);
        true
    }

    /// Drops what is queued and everything pushed from now on, returning the buffers to the
    /// producer's pool so a producer waiting for one goes on (to notice its cancellation).
    pub(crate) fn release(&self) {
        let mut queue = lock(&self.queue);
        queue.released = true;
        queue.buffers = 0;
        let items = std::mem::take(&mut queue.items);
        let listener = queue.listener.take();
        drop(queue);
        drop(items);
        if let Some(listener) = listener {
            listener.notify_one();
        }
    }
}

/// The subpartitions of the partitions produced in this TaskExecutor, by partition and index,
/// until consumed to their end or released with their job.
#[derive(Default)]
pub(crate) struct PartitionRegistry {
    subpartitions: Mutex<HashMap<(PartitionId, u32), Arc<Subpartition>>>,
}

impl PartitionRegistry {
    /// Registers subpartitions `indexes` of `id`.
    pub(crate) fn register(
        &self,
        id: PartitionId,
        indexes: &[u32],
        metrics: &Arc<TaskMetrics>,
    ) -> Vec<Arc<Subpartition>> {
        let mut table = lock(&self.subpartitions);
        indexes
            .iter()
            .map(|&index| {
                let sub = Arc::new(Subpartition {
                    id,
                    index,
                    queue: Mutex::new(Queue {
                        items: VecDeque::new(),
                        buffers: 0,
                        listener: None,
                        released: false,
                    }),
                    metrics: metrics.clone(),
                });
                if let Some(old) = table.insert((id, index), sub.clone()) {
                    old.release();
                }
                sub
            })
            .collect()
    }

    pub(crate) fn get(&self, id: PartitionId, index: u32) -> Option<Arc<Subpartition>> {
        lock(&self.subpartitions).get(&(id, index)).cloned()
    }

    /// Forgets a subpartition its consumer has read to the end.
    pub(crate) fn remove(&self, id: PartitionId, index: u32) {
        lock(&self.subpartitions).remove(&(id, index));
    }

    /// Releases every subpartition of `job`.
    pub(crate) fn release_job(&self, job: u64) {
        let released: Vec<_> = {
            let mut table = lock(&self.subpartitions);
            let keys: Vec<_> = table
                .keys()
                .filter(|(id, _)| id.job == job)
                .copied()
                .collect();
            keys.iter().filter_map(|k| table.remove(k)).collect()
        };
        released.iter().for_each(|s| s.release());
    }

    /// Releases every subpartition (the TaskExecutor is going away).
    pub(crate) fn release_all(&self) {
        let released: Vec<_> = lock(&self.subpartitions).drain().map(|(_, s)| s).collect();
        released.iter().for_each(|s| s.release());
    }

    /// Subpartitions registered now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.subpartitions).len()
    }
}
