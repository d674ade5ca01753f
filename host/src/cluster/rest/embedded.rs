//! The embedded mini-cluster of `weir run --web-port` as the REST endpoint sees it: its
//! TaskExecutors in this process, and no uploads (a job comes from the command line).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Caller, ClusterView, Refusal, ResourceUsage, TaskManagerView};
use crate::cluster::MiniCluster;

pub struct EmbeddedView {
    pub cluster: Arc<MiniCluster>,
}

impl ClusterView for EmbeddedView {
    fn task_managers(&self) -> Vec<TaskManagerView> {
        self.cluster
            .task_executors()
            .iter()
            .map(|te| {
                let config = te.config();
                TaskManagerView {
                    id: config.resource_id.clone(),
                    data_address: "(in process)".into(),
                    metrics_address: None,
                    tenant: None,
                    time_since_last_heartbeat_ms: 0,
                    slots_total: config.slots,
                    slots_free: te.free_slots(),
                    cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                    network_buffers: config.network_buffers,
                    segment_bytes: config.segment_bytes,
                }
            })
            .collect()
    }

    fn task_manager_usage(&self, id: &str) -> Option<ResourceUsage> {
        let te = self
            .cluster
            .task_executors()
            .iter()
            .find(|te| te.config().resource_id == id)?;
        Some(ResourceUsage {
            network: te.network().stats(),
            rss_bytes: crate::metrics::prometheus::resident_memory_bytes(),
        })
    }

    fn config(&self) -> Value {
        json!({ "cluster": "embedded mini-cluster (weir run)" })
    }

    fn submit(
        &self,
        _: String,
        _: &[u8],
        _: &Arc<MiniCluster>,
        _: &Caller,
    ) -> Result<String, Refusal> {
        Err(Refusal::BadRequest(
            "the embedded mini-cluster of `weir run` takes no uploads; submit to a JobManager \
             (`weir jobmanager`)"
                .into(),
        ))
    }
}
