//! The resource manager (Flink's ResourceManager): knows the cluster's TaskExecutors and finds
//! a job the slots it needs. The mini-cluster registers its TaskExecutors here as it makes
//! them; the standalone cluster registers each TaskManager here as it starts.

use std::ops::Range;
use std::sync::Arc;

use super::gateways::{ChannelBuffers, ResourceManagerGateway, SlotOffer, TaskExecutorGateway};
use crate::runtime::task_executor::{SlotError, TaskExecutor};

/// See the module docs.
pub struct ResourceManager {
    task_executors: Vec<Arc<TaskExecutor>>,
    channel_buffers: ChannelBuffers,
}

impl ResourceManager {
    /// A resource manager over `task_executors`, whose network settings it reports.
    pub fn new(task_executors: Vec<Arc<TaskExecutor>>) -> Self {
        let most = |f: fn(&TaskExecutor) -> usize| {
            task_executors.iter().map(|te| f(te)).max().unwrap_or(1)
        };
        let channel_buffers = ChannelBuffers {
            per_channel: most(|te| te.config().buffers_per_channel),
            exclusive: most(|te| te.config().network.exclusive_buffers_per_channel),
            floating: most(|te| te.config().network.floating_buffers_per_gate),
        };
        ResourceManager {
            task_executors,
            channel_buffers,
        }
    }

    fn offer(
        te: &Arc<TaskExecutor>,
        allocation: crate::runtime::task_executor::SlotAllocation,
        slots: Range<u32>,
    ) -> SlotOffer {
        let task_executor: Arc<dyn TaskExecutorGateway> = te.clone();
        SlotOffer {
            allocation,
            task_executor,
            slots,
        }
    }
}

impl ResourceManagerGateway for ResourceManager {
    fn channel_buffers(&self) -> ChannelBuffers {
        self.channel_buffers
    }

    fn request_slots(
        &self,
        slots: u32,
        buffers: &dyn Fn(Range<u32>) -> usize,
    ) -> Result<Vec<SlotOffer>, SlotError> {
        let mut refusal = SlotError::NotEnoughSlots {
            needed: slots,
            free: 0,
            total: 0,
        };
        // One TaskExecutor for the whole job, if one has room.
        for te in &self.task_executors {
            match te.allocate(slots, buffers(0..slots)) {
                Ok(allocation) => return Ok(vec![Self::offer(te, allocation, 0..slots)]),
                Err(e) => refusal = e,
            }
        }
        // Else fill one after another.
        let mut offers = Vec::new();
        let mut next = 0;
        let mut free_in_all = 0;
        for te in &self.task_executors {
            let free = te.free_slots();
            free_in_all += free;
            let take = free.min(slots - next);
            if take == 0 {
                continue;
            }
            let range = next..next + take;
            match te.allocate(take, buffers(range.clone())) {
                Ok(allocation) => {
                    offers.push(Self::offer(te, allocation, range));
                    next += take;
                }
                Err(e) => refusal = e,
            }
            if next == slots {
                return Ok(offers);
            }
        }
        if matches!(refusal, SlotError::NotEnoughSlots { .. }) {
            refusal = SlotError::NotEnoughSlots {
                needed: slots,
                free: free_in_all,
                total: self.task_executors.iter().map(|te| te.config().slots).sum(),
            };
        }
        Err(refusal)
    }
}
