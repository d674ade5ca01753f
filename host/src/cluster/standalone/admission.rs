//! Whether a tenant may run a job, by its quota: checked when the job is submitted, against
//! what the tenant's running jobs hold then. A job's own limits may not exceed the tenant's;
//! limits the job leaves unset take the tenant's, so the quota bounds every job.

use super::tenants::Tenant;
use crate::cluster::{JobStatus, MiniCluster};
use crate::job::JobGraph;

/// Why a tenant's job is refused: the quota, and the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error(
        "tenant `{tenant}` is over its `{quota}` quota: the job asks for {asked}, its \
         running jobs hold {held}, the quota is {limit}"
    )]
    Held {
        tenant: String,
        quota: &'static str,
        asked: u64,
        held: u64,
        limit: u64,
    },
    #[error(
        "tenant `{tenant}` is over its `{quota}` quota: the job asks for {asked}, the quota is \
         {limit}"
    )]
    PerJob {
        tenant: String,
        quota: &'static str,
        asked: String,
        limit: String,
    },
}

/// Checks `graph` against `tenant`'s quota and what its running jobs on `cluster` hold, and
/// bounds the job's limits by the quota.
pub fn admit(
    tenant: &Tenant,
    graph: &mut JobGraph,
    cluster: &MiniCluster,
) -> Result<(), QuotaExceeded> {
    let quota = &tenant.quota;
    let per_job = |quota: &'static str, asked: String, limit: String| QuotaExceeded::PerJob {
        tenant: tenant.name.clone(),
        quota,
        asked,
        limit,
    };
    let widest = graph.slots_needed();
    if let Some(limit) = quota.parallelism
        && widest > limit
    {
        return Err(per_job(
            "parallelism",
            format!("parallelism {widest}"),
            limit.to_string(),
        ));
    }
    let running: Vec<String> = cluster
        .jobs()
        .into_iter()
        .filter(|r| r.status == JobStatus::Running && r.owner.as_deref() == Some(&tenant.name))
        .map(|r| r.id)
        .collect();
    let held = |quota: &'static str, asked: u64, held: u64, limit: u64| QuotaExceeded::Held {
        tenant: tenant.name.clone(),
        quota,
        asked,
        held,
        limit,
    };
    if let Some(limit) = quota.running_jobs
        && running.len() as u64 + 1 > u64::from(limit)
    {
        return Err(held("running-jobs", 1, running.len() as u64, limit.into()));
    }
    if let Some(limit) = quota.slots {
        let in_use: u64 = running
            .iter()
            .filter_map(|id| cluster.job_insight(id))
            .filter_map(|i| {
                i.plan()
                    .map(|p| p.vertices.iter().map(|v| v.parallelism).max().unwrap_or(0))
            })
            .map(u64::from)
            .sum();
        if in_use + u64::from(widest) > u64::from(limit) {
            return Err(held("slots", widest.into(), in_use, limit.into()));
        }
    }
    // Capabilities are the tenant's to have, never the job's to ask for.
    graph.grants = tenant.grants;
    let limits = &mut graph.limits;
    if let Some(limit) = quota.log_per_operator {
        limits.log_bytes = Some(limits.log_bytes.map_or(limit, |asked| asked.min(limit)));
    }
    if let Some(limit) = quota.call_deadline {
        match limits.call_deadline {
            Some(asked) if asked > limit => {
                return Err(per_job(
                    "call-deadline",
                    format!("{asked:?}"),
                    format!("{limit:?}"),
                ));
            }
            Some(_) => {}
            None => limits.call_deadline = Some(limit),
        }
    }
    for (name, asked, limit) in [
        (
            "memory-per-operator",
            &mut limits.memory_bytes,
            quota.memory_per_operator,
        ),
        (
            "state-per-subtask",
            &mut limits.state_bytes,
            quota.state_per_subtask,
        ),
    ] {
        let Some(limit) = limit else { continue };
        match *asked {
            Some(bytes) if bytes > limit => {
                return Err(per_job(
                    name,
                    format!("{bytes} bytes"),
                    format!("{limit} bytes"),
                ));
            }
            Some(_) => {}
            None => *asked = Some(limit),
        }
    }
    Ok(())
}
