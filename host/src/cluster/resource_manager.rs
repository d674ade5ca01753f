//! The resource manager (Flink's ResourceManager): knows the cluster's TaskExecutors and finds
//! a job the slots it needs. The mini-cluster has one TaskExecutor; the standalone cluster
//! registers each TaskManager here as it starts.

use std::sync::Arc;

use super::gateways::{ResourceManagerGateway, SlotOffer, TaskExecutorGateway};
use crate::runtime::task_executor::{SlotError, TaskExecutor};

/// See the module docs.
pub struct ResourceManager {
    task_executors: Vec<Arc<TaskExecutor>>,
    buffers_per_channel: usize,
}

impl ResourceManager {
    /// A resource manager over `task_executors`, whose network settings it reports.
    pub fn new(task_executors: Vec<Arc<TaskExecutor>>) -> Self {
        let buffers_per_channel = task_executors
            .iter()
            .map(|te| te.config().buffers_per_channel)
            .min()
            .unwrap_or(1);
        ResourceManager {
            task_executors,
            buffers_per_channel,
        }
    }
}

impl ResourceManagerGateway for ResourceManager {
    fn buffers_per_channel(&self) -> usize {
        self.buffers_per_channel
    }

    /// The first TaskExecutor with room; the refusal of the last one asked otherwise.
    fn request_slots(&self, slots: u32, buffers: usize) -> Result<SlotOffer, SlotError> {
        let mut refusal = SlotError::NotEnoughSlots {
            needed: slots,
            free: 0,
            total: 0,
        };
        for te in &self.task_executors {
            match te.allocate(slots, buffers) {
                Ok(allocation) => {
                    let task_executor: Arc<dyn TaskExecutorGateway> = te.clone();
                    return Ok(SlotOffer {
                        allocation,
                        task_executor,
                    });
                }
                Err(e) => refusal = e,
            }
        }
        Err(refusal)
    }
}
