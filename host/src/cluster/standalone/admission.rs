//! Whether a tenant may run a job, by its quota: checked when the job is submitted, against
//! what the tenant's running jobs hold then. A job's own limits may not exceed the tenant's;
//! limits the job leaves unset take the tenant's, so the quota bounds every job.

use std::time::Duration;

use super::tenants::{Quota, Tenant};
use crate::cluster::insight::JobPlan;
use crate::cluster::{JobStatus, MiniCluster};
use crate::job::{JobGraph, OperatorImpl};

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

/// The least linear memory a guest instance can start in (a Rust guest's stack and data).
const MIN_GUEST_MEMORY: u64 = 1 << 20;

/// What a tenant's running jobs hold, against which a new job's ask is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub running_jobs: u64,
    /// Slots: each job's widest vertex (slot sharing puts one subtask of each vertex in a slot).
    pub slots: u64,
    /// Linear memory its guests may grow to: per-instance limit times instances.
    pub memory_bytes: u64,
}

impl Held {
    /// What `tenant`'s running jobs on `cluster` hold now.
    pub fn by(tenant: &str, cluster: &MiniCluster) -> Held {
        let default_memory = cluster.limits.max_memory_bytes as u64;
        let plans: Vec<_> = cluster
            .jobs()
            .into_iter()
            .filter(|r| r.status == JobStatus::Running && r.owner.as_deref() == Some(tenant))
            .map(|r| cluster.job_insight(&r.id))
            .collect();
        let mut held = Held {
            running_jobs: plans.len() as u64,
            ..Held::default()
        };
        for plan in plans.iter().flatten().filter_map(|i| i.plan()) {
            held.slots += u64::from(
                plan.vertices
                    .iter()
                    .map(|v| v.parallelism)
                    .max()
                    .unwrap_or(0),
            );
            held.memory_bytes += plan_memory(plan, default_memory);
        }
        held
    }
}

fn plan_memory(plan: &JobPlan, default_memory: u64) -> u64 {
    plan.guest_instances
        .saturating_mul(plan.memory_per_instance.unwrap_or(default_memory))
}

/// Operator instances of `graph` that run a guest: each has a linear memory of its own.
pub fn guest_instances(graph: &JobGraph) -> u64 {
    graph
        .vertices
        .iter()
        .map(|v| {
            let guests = v
                .operators
                .iter()
                .filter(|op| matches!(op.implementation, OperatorImpl::Wasm { .. }))
                .count() as u64;
            guests * u64::from(v.parallelism)
        })
        .sum()
}

/// Checks `graph` (checkpointing every `checkpoint_interval`, if it does) against `tenant`'s
/// quota and what its running jobs on `cluster` hold, and bounds the job's limits by the quota.
pub fn admit(
    tenant: &Tenant,
    graph: &mut JobGraph,
    checkpoint_interval: Option<Duration>,
    cluster: &MiniCluster,
) -> Result<(), QuotaExceeded> {
    let held = Held::by(&tenant.name, cluster);
    admit_against(
        tenant,
        graph,
        checkpoint_interval,
        &held,
        cluster.limits.max_memory_bytes as u64,
    )
}

/// [`admit`], against `held`; `default_memory`: an instance's memory limit when neither the job
/// nor the quota sets one.
pub fn admit_against(
    tenant: &Tenant,
    graph: &mut JobGraph,
    checkpoint_interval: Option<Duration>,
    held: &Held,
    default_memory: u64,
) -> Result<(), QuotaExceeded> {
    let quota = &tenant.quota;
    let per_job = |quota: &'static str, asked: String, limit: String| QuotaExceeded::PerJob {
        tenant: tenant.name.clone(),
        quota,
        asked,
        limit,
    };
    let over_held = |quota: &'static str, asked: u64, held: u64, limit: u64| QuotaExceeded::Held {
        tenant: tenant.name.clone(),
        quota,
        asked,
        held,
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
    if let Some(limit) = quota.running_jobs
        && held.running_jobs + 1 > u64::from(limit)
    {
        return Err(over_held(
            "running-jobs",
            1,
            held.running_jobs,
            limit.into(),
        ));
    }
    if let Some(limit) = quota.slots
        && held.slots + u64::from(widest) > u64::from(limit)
    {
        return Err(over_held("slots", widest.into(), held.slots, limit.into()));
    }
    if let (Some(limit), Some(interval)) = (quota.min_checkpoint_interval, checkpoint_interval)
        && interval < limit
    {
        return Err(QuotaExceeded::PerJob {
            tenant: tenant.name.clone(),
            quota: "min-checkpoint-interval",
            asked: format!("a checkpoint every {interval:?}"),
            limit: format!("one every {limit:?} at most"),
        });
    }
    // Capabilities are the tenant's to have, never the job's to ask for.
    graph.grants = tenant.grants;
    bound_limits(tenant, quota, graph, held, default_memory)
}

/// The job's call deadline, memory, keyed state and log limits within the quota; those it
/// leaves unset take the most the quota allows.
fn bound_limits(
    tenant: &Tenant,
    quota: &Quota,
    graph: &mut JobGraph,
    held: &Held,
    default_memory: u64,
) -> Result<(), QuotaExceeded> {
    let per_job = |quota: &'static str, asked: String, limit: String| QuotaExceeded::PerJob {
        tenant: tenant.name.clone(),
        quota,
        asked,
        limit,
    };
    let instances = guest_instances(graph);
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
    if let Some(limit) = quota.memory_per_operator {
        match limits.memory_bytes {
            Some(bytes) if bytes > limit => {
                return Err(per_job(
                    "memory-per-operator",
                    format!("{bytes} bytes"),
                    format!("{limit} bytes"),
                ));
            }
            Some(_) => {}
            None => limits.memory_bytes = Some(limit),
        }
    }
    if let Some(total) = quota.memory {
        // Unset, an instance gets the default, or its share of what the quota leaves.
        let free = total.saturating_sub(held.memory_bytes);
        let per_instance = *limits
            .memory_bytes
            .get_or_insert(default_memory.min(free / instances.max(1)));
        let asked = per_instance.saturating_mul(instances);
        // A share too small to run in is no share: the job is over the quota.
        if held.memory_bytes.saturating_add(asked) > total
            || (instances > 0 && per_instance < MIN_GUEST_MEMORY)
        {
            return Err(QuotaExceeded::Held {
                tenant: tenant.name.clone(),
                quota: "memory",
                asked,
                held: held.memory_bytes,
                limit: total,
            });
        }
    }
    if let Some(total) = quota.keyed_state_per_job {
        // Each guest instance keeps keyed state of its own under the job's per-operator limit:
        // an equal share each keeps the job's state together within the quota wherever its
        // subtasks run.
        let share = total / instances.max(1);
        match limits.state_bytes {
            Some(bytes) if bytes.saturating_mul(instances) > total => {
                return Err(per_job(
                    "keyed-state-per-job",
                    format!("{bytes} bytes in each of {instances} operator instances"),
                    format!("{total} bytes"),
                ));
            }
            Some(_) => {}
            None => limits.state_bytes = Some(share),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::job::parse_manifest;

    /// A word count: source at 1, tokenize and key-by at 3 (one chain: 6 guest instances),
    /// count at 3 (3), sink at 1; guests run in 6 subtasks.
    fn wordcount() -> JobGraph {
        // The manifest checks that the component exists; nothing here loads it.
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("wc.wasm");
        std::fs::write(&component, b"").unwrap();
        parse_manifest(
            "name = \"wc\"\nparallelism = 3\n\
             [[source]]\nid = \"lines\"\nkind = \"sequence\"\ncount = 3\nparallelism = 1\n\
             [[operator]]\nid = \"tokenize\"\ncomponent = \"${wc}\"\ninput = \"lines\"\nedge = \"rebalance\"\n\
             [[operator]]\nid = \"key-by-word\"\ncomponent = \"${wc}\"\ninput = \"tokenize\"\n\
             [[operator]]\nid = \"count\"\ncomponent = \"${wc}\"\ninput = \"key-by-word\"\nedge = \"hash\"\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"count\"\nedge = \"rebalance\"\nparallelism = 1\n",
            &BTreeMap::from([("wc".to_string(), component.display().to_string())]),
        )
        .unwrap()
        .job_graph(None)
        .unwrap()
    }

    fn tenant(quota: Quota) -> Tenant {
        let text = "[[tenant]]\nname = \"bob\"\ntokens = []\n";
        let mut tenant = super::super::tenants::parse(text, std::path::Path::new("t.toml"))
            .unwrap()
            .remove(0);
        tenant.quota = quota;
        tenant
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn guest_instances_are_counted_per_chained_operator() {
        assert_eq!(guest_instances(&wordcount()), 9);
    }

    #[test]
    fn a_jobs_keyed_state_quota_is_shared_by_its_operator_instances_and_cannot_be_raised() {
        let bob = tenant(Quota {
            keyed_state_per_job: Some(90 * MIB),
            ..Quota::default()
        });
        let mut graph = wordcount();
        admit_against(&bob, &mut graph, None, &Held::default(), 512 * MIB).unwrap();
        assert_eq!(graph.limits.state_bytes, Some(10 * MIB));

        let mut asks_more = wordcount();
        asks_more.limits.state_bytes = Some(11 * MIB);
        let err = admit_against(&bob, &mut asks_more, None, &Held::default(), 512 * MIB)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tenant `bob` is over its `keyed-state-per-job` quota: the job asks for 11534336 \
             bytes in each of 9 operator instances, the quota is 94371840 bytes"
        );
        let mut asks_less = wordcount();
        asks_less.limits.state_bytes = Some(MIB);
        admit_against(&bob, &mut asks_less, None, &Held::default(), 512 * MIB).unwrap();
        assert_eq!(asks_less.limits.state_bytes, Some(MIB));
    }

    #[test]
    fn memory_counts_every_guest_instance_against_what_running_jobs_hold() {
        let bob = tenant(Quota {
            memory: Some(1024 * MIB),
            ..Quota::default()
        });
        // Unset: the default per instance (64 MiB x 9 fits).
        let mut graph = wordcount();
        admit_against(&bob, &mut graph, None, &Held::default(), 64 * MIB).unwrap();
        assert_eq!(graph.limits.memory_bytes, Some(64 * MIB));
        // Held in full: not even the least an instance needs is left.
        let full = Held {
            memory_bytes: 1024 * MIB,
            ..Held::default()
        };
        assert!(admit_against(&bob, &mut wordcount(), None, &full, 64 * MIB).is_err());
        // Unset with little left: a share of what is left.
        let held = Held {
            memory_bytes: 1024 * MIB - 90 * MIB,
            ..Held::default()
        };
        let mut graph = wordcount();
        admit_against(&bob, &mut graph, None, &held, 64 * MIB).unwrap();
        assert_eq!(graph.limits.memory_bytes, Some(10 * MIB));
        // Asked for explicitly, over what is left: refused with the numbers.
        let mut graph = wordcount();
        graph.limits.memory_bytes = Some(11 * MIB);
        let err = admit_against(&bob, &mut graph, None, &held, 64 * MIB)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "tenant `bob` is over its `memory` quota: the job asks for {}, its running jobs \
                 hold {}, the quota is {}",
                99 * MIB,
                934 * MIB,
                1024 * MIB
            )
        );
    }

    #[test]
    fn checkpoints_more_often_than_the_quota_allows_are_refused() {
        let bob = tenant(Quota {
            min_checkpoint_interval: Some(Duration::from_secs(10)),
            ..Quota::default()
        });
        let admit = |interval| {
            admit_against(&bob, &mut wordcount(), interval, &Held::default(), MIB)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            admit(Some(Duration::from_millis(100))),
            Err(
                "tenant `bob` is over its `min-checkpoint-interval` quota: the job asks for a \
                 checkpoint every 100ms, the quota is one every 10s at most"
                    .into()
            )
        );
        assert_eq!(admit(Some(Duration::from_secs(10))), Ok(()));
        assert_eq!(admit(None), Ok(()));
    }
}
