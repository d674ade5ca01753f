//! The standalone JobManager as its REST endpoint sees it: the registered TaskManagers (their
//! usage asked over RPC), the cluster's settings, and uploads into the job store.

use std::sync::Arc;

use serde_json::{Value, json};

use super::job_store::SubmitRefused;
use super::jobmanager::JobManagerState;
use super::tenants::TenantDirectory;
use crate::cluster::MiniCluster;
use crate::cluster::rest::{Caller, ClusterView, Refusal, ResourceUsage, TaskManagerView};

pub(super) struct StandaloneView {
    pub(super) state: Arc<JobManagerState>,
    /// The tenants, when `jobmanager.tenants-file` names them.
    pub(super) tenants: Option<TenantDirectory>,
    /// The metrics scraper's token (`metrics.token`).
    pub(super) metrics_token: Option<super::config::MetricsToken>,
}

impl ClusterView for StandaloneView {
    fn authenticate(&self, token: Option<&str>) -> Option<Caller> {
        match &self.tenants {
            None => Some(Caller::Open),
            Some(tenants) => tenants
                .authenticate(token?)
                .map(|t| Caller::Tenant(Box::new(t))),
        }
    }

    fn scrapes_metrics(&self, token: &str) -> bool {
        self.metrics_token.is_some_and(|m| m.admits(token))
    }

    fn task_managers(&self) -> Vec<TaskManagerView> {
        self.state
            .registry
            .task_managers()
            .into_iter()
            .map(|t| TaskManagerView {
                id: t.resource_id,
                data_address: t.data_address,
                metrics_address: t.metrics_address,
                tenant: t.tenant,
                time_since_last_heartbeat_ms: t.last_heartbeat.elapsed().as_millis() as u64,
                slots_total: t.slots.total,
                slots_free: t.slots.free,
                cpu_cores: t.hardware.cpu_cores,
                network_buffers: t.hardware.network_buffers,
                segment_bytes: t.hardware.segment_bytes,
            })
            .collect()
    }

    fn task_manager_usage(&self, id: &str) -> Option<ResourceUsage> {
        let tm = self
            .state
            .registry
            .task_managers()
            .into_iter()
            .find(|t| t.resource_id == id)?;
        tm.gateway.resource_usage()
    }

    fn config(&self) -> Value {
        let c = &self.state.config;
        json!({
            "heartbeat-interval-ms": c.heartbeat.interval.as_millis() as u64,
            "heartbeat-timeout-ms": c.heartbeat.timeout.as_millis() as u64,
            "slot-request-timeout-ms": c.slot_request_timeout.as_millis() as u64,
            "rpc-address": c.jobmanager_rpc.to_address(),
        })
    }

    fn submit(
        &self,
        id: String,
        body: &[u8],
        cluster: &Arc<MiniCluster>,
        caller: &Caller,
    ) -> Result<String, Refusal> {
        let _one_at_a_time = self
            .state
            .submitting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.state.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Refusal::Unavailable(
                "this JobManager no longer leads the cluster".into(),
            ));
        }
        super::job_store::submit(
            &self.state.job_store,
            id,
            body,
            cluster,
            caller.tenant(),
            self.state.leader_store.as_ref(),
        )
        .map_err(|e| match e {
            SubmitRefused::Invalid(message) => Refusal::BadRequest(message),
            SubmitRefused::Quota(quota) => Refusal::Forbidden(quota.to_string()),
            SubmitRefused::Path(path) => Refusal::Forbidden(path.to_string()),
            SubmitRefused::NotGranted(message) => Refusal::Forbidden(message),
            SubmitRefused::NotLeader(message) => Refusal::Unavailable(message),
        })
    }
}
