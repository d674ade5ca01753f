//! A JobManager with high availability: it stands for election, leads a term when etcd elects
//! it (recovering every job of the running-job registry), steps down the moment its lease can
//! no longer be trusted (suspending its jobs), and stands again.

use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::HighAvailabilityConfig;
use super::ha::{self, Etcd, EtcdLeaderStore, LeaderAddresses, Leadership};
use super::job_store::{LeaderStore, RegisteredJob, recover_registered};
use super::jobmanager::{LeadershipStatus, Term, TermSettings, Terms, open_tenants};

fn waiting(reason: String) -> LeadershipStatus {
    LeadershipStatus {
        role: "waiting".into(),
        leader_rest: None,
        token: None,
        reason: Some(reason),
    }
}

fn standby(leader_rest: Option<String>) -> LeadershipStatus {
    LeadershipStatus {
        role: "standby".into(),
        leader_rest,
        token: None,
        reason: None,
    }
}

/// Stands, leads and steps down, for as long as the process runs.
pub(super) async fn lead(
    etcd: Etcd,
    config: HighAvailabilityConfig,
    settings: TermSettings,
    terms: Arc<Terms>,
    job_store: PathBuf,
    addresses: LeaderAddresses,
) {
    let mut backoff = Duration::from_millis(100);
    // Whether etcd's refusal was logged already: said once until it answers (grants) or
    // elects (campaigns) again.
    let mut told = false;
    let mut refused = false;
    terms.set_status(waiting(format!(
        "connecting to etcd at {}",
        etcd.endpoints()
    )));
    loop {
        let lease = match ha::grant(&etcd, config.lease_ttl).await {
            Ok(lease) => lease,
            Err(e) => {
                if !told {
                    eprintln!("Waiting for etcd: {e}");
                    told = true;
                }
                terms.set_status(waiting(e.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let known = etcd.leader().await.ok().flatten();
        terms.set_status(standby(known.map(|l| l.addresses.rest)));
        told = false;
        if !refused {
            eprintln!(
                "Standing by for the leadership of cluster `{}` (lease {:x}, {:?})",
                config.cluster_id, lease.id, config.lease_ttl
            );
        }
        // Renewed on a task of its own, so nothing the term does (recovering many jobs, say)
        // holds a renewal back.
        let mut keeper = tokio::spawn({
            let (etcd, lease) = (etcd.clone(), lease.clone());
            async move { ha::keep_lease(&etcd, &lease).await }
        });
        // The standby's status names the leader of the moment.
        let naming = tokio::spawn({
            let (etcd, terms) = (etcd.clone(), terms.clone());
            async move {
                loop {
                    let leader = etcd.leader().await.ok().flatten();
                    terms.set_status(standby(leader.map(|l| l.addresses.rest)));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        let won = tokio::select! {
            why = &mut keeper => Err(format!(
                "lost the lease while standing by: {}",
                why.unwrap_or_else(|e| e.to_string())
            )),
            key = etcd.campaign(lease.id, &addresses) => {
                key.map_err(|e| format!("the campaign failed: {e}"))
            }
        };
        naming.abort();
        let key = match won {
            Ok(key) => key,
            Err(why) => {
                keeper.abort();
                // Said once until it stands again (etcd refusing this user, say, refuses it
                // every time).
                if !refused {
                    eprintln!("Waiting for etcd: {why}; standing again");
                    refused = true;
                }
                terms.set_status(waiting(why));
                etcd.revoke_lease(lease.id).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        refused = false;
        backoff = Duration::from_millis(100);
        let leadership = Leadership::new(key, lease.clone());
        let token = leadership.token();
        let (term, begun) = lead_term(
            &etcd,
            &settings,
            &terms,
            &job_store,
            &addresses,
            &leadership,
        )
        .await;
        let why = match begun {
            Ok(()) => tokio::select! {
                why = &mut keeper => why.unwrap_or_else(|e| e.to_string()),
                () = leadership.refused() => {
                    "etcd refused a write: another JobManager leads".to_string()
                }
            },
            Err(why) => why,
        };
        keeper.abort();
        leadership.step_down();
        if term.is_some() {
            eprintln!("Revoked leadership (fencing token {token}): {why}");
        } else {
            eprintln!("Stepping down before leading (fencing token {token}): {why}");
        }
        let began = term.is_some();
        if let Some(term) = term {
            terms.end();
            terms.set_status(waiting(format!("the last leader stepped down: {why}")));
            let suspended = why.clone();
            let _ = tokio::task::spawn_blocking(move || term.suspend(&suspended)).await;
        }
        terms.set_status(waiting(why));
        // Lets a standby take over now rather than when the lease runs out (if etcd answers).
        etcd.revoke_lease(lease.id).await;
        if !began {
            // What failed may fail again (an unreadable record, tenants file): not in a loop.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Begins a term under `leadership`: recovers the running-job registry's jobs and serves. The
/// term, once begun (to be ended whatever happens next), and whether it began well.
async fn lead_term(
    etcd: &Etcd,
    settings: &TermSettings,
    terms: &Arc<Terms>,
    job_store: &std::path::Path,
    addresses: &LeaderAddresses,
    leadership: &Arc<Leadership>,
) -> (Option<Arc<Term>>, Result<(), String>) {
    let token = leadership.token();
    eprintln!("Granted leadership with fencing token {token}");
    let prepared = async {
        let jobs = ha::jobs_to_recover(etcd)
            .await
            .map_err(|e| format!("cannot read the running-job registry: {e}"))?;
        let tenants = open_tenants(settings.tenants_file.as_ref()).map_err(|e| e.to_string())?;
        let recovery_tenants =
            open_tenants(settings.tenants_file.as_ref()).map_err(|e| e.to_string())?;
        Ok::<_, String>((jobs, tenants, recovery_tenants))
    };
    let (jobs, tenants, recovery_tenants) = match prepared.await {
        Ok(prepared) => prepared,
        Err(why) => return (None, Err(why)),
    };
    if !leadership.is_leader() {
        return (None, Err("the lease ran out while the term began".into()));
    }
    let store: Arc<dyn LeaderStore> = Arc::new(EtcdLeaderStore {
        etcd: etcd.clone(),
        leadership: leadership.clone(),
        runtime: settings.runtime.clone(),
        storage: job_store.to_path_buf(),
    });
    let term = Term::start(
        settings,
        job_store.to_path_buf(),
        tenants,
        Some(store.clone()),
        token,
    );
    terms.begin(term.clone(), addresses.rest.clone());
    let registered: Vec<RegisteredJob> = jobs
        .into_iter()
        .filter_map(|(id, job, latest)| {
            let plain = job
                .dir
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                eprintln!(
                    "warning: not recovering job {id}: its registry entry names `{}`, outside \
                     the storage directory",
                    job.dir.display()
                );
                return None;
            }
            Some(RegisteredJob {
                id,
                dir: job_store.join(&job.dir),
                tenant: job.tenant,
                checkpoint: latest.map(|p| p.dir),
            })
        })
        .collect();
    let cluster = term.cluster.clone();
    let recovered = tokio::task::spawn_blocking(move || {
        recover_registered(registered, &cluster, recovery_tenants.as_ref(), &store)
    })
    .await
    .map_err(|e| format!("recovery failed: {e}"));
    (Some(term), recovered)
}
