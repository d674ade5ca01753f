//! The resource manager (Flink's ResourceManager): knows the cluster's TaskExecutors and finds
//! a job the slots it needs. The mini-cluster's are in its process; the standalone cluster's
//! register over RPC (`standalone::registry`); both place slots the same way.

use std::ops::Range;
use std::sync::Arc;

use super::gateways::{
    ChannelBuffers, ResourceManagerGateway, SlotLease, SlotOffer, TaskExecutorGateway,
};
use crate::runtime::task_executor::{SlotError, TaskExecutor};

/// A TaskExecutor as the resource manager places slots on it.
pub trait SlotProvider {
    fn free_slots(&self) -> u32;
    fn total_slots(&self) -> u32;
    /// Reserves `slots` slots and `buffers` network buffers; the lease, and the gateway that
    /// deploys into those slots (a remote one names the allocation on every deployment, so a
    /// TaskManager refuses one into slots it no longer holds for the job).
    fn allocate(
        &self,
        slots: u32,
        buffers: usize,
    ) -> Result<(Box<dyn SlotLease>, Arc<dyn TaskExecutorGateway>), SlotError>;
}

impl SlotProvider for Arc<TaskExecutor> {
    fn free_slots(&self) -> u32 {
        TaskExecutor::free_slots(self)
    }
    fn total_slots(&self) -> u32 {
        self.config().slots
    }
    fn allocate(
        &self,
        slots: u32,
        buffers: usize,
    ) -> Result<(Box<dyn SlotLease>, Arc<dyn TaskExecutorGateway>), SlotError> {
        let lease = TaskExecutor::allocate(self, slots, buffers)?;
        Ok((Box::new(lease), self.clone()))
    }
}

/// `slots` slots for a job from `providers`: on one when one has room for all (no edge then
/// crosses the network), else over several, each filled before the next (Flink's default
/// placement). `buffers(slots)` is what the job needs on a TaskExecutor holding `slots`.
pub fn place_slots(
    providers: &[&dyn SlotProvider],
    slots: u32,
    buffers: &dyn Fn(Range<u32>) -> usize,
) -> Result<Vec<SlotOffer>, SlotError> {
    if providers.is_empty() {
        return Err(SlotError::NoTaskExecutors { needed: slots });
    }
    let mut refusal = SlotError::NotEnoughSlots {
        needed: slots,
        free: 0,
        total: 0,
    };
    for p in providers {
        match p.allocate(slots, buffers(0..slots)) {
            Ok((allocation, task_executor)) => {
                return Ok(vec![SlotOffer {
                    allocation,
                    task_executor,
                    slots: 0..slots,
                }]);
            }
            Err(e) => refusal = e,
        }
    }
    let mut offers = Vec::new();
    let mut next = 0;
    let mut free_in_all = 0;
    for p in providers {
        let free = p.free_slots();
        free_in_all += free;
        let take = free.min(slots - next);
        if take == 0 {
            continue;
        }
        let range = next..next + take;
        match p.allocate(take, buffers(range.clone())) {
            Ok((allocation, task_executor)) => {
                offers.push(SlotOffer {
                    allocation,
                    task_executor,
                    slots: range,
                });
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
            total: providers.iter().map(|p| p.total_slots()).sum(),
        };
    }
    Err(refusal)
}

/// The mini-cluster's resource manager, over TaskExecutors in its process.
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
}

impl ResourceManagerGateway for ResourceManager {
    fn channel_buffers(&self) -> ChannelBuffers {
        self.channel_buffers
    }

    /// In one process there are no tenants to keep apart.
    fn request_slots(
        &self,
        slots: u32,
        buffers: &dyn Fn(Range<u32>) -> usize,
        _tenant: Option<&str>,
    ) -> Result<Vec<SlotOffer>, SlotError> {
        let providers: Vec<&dyn SlotProvider> = self
            .task_executors
            .iter()
            .map(|te| te as &dyn SlotProvider)
            .collect();
        place_slots(&providers, slots, buffers)
    }
}
