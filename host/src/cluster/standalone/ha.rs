//! High availability (seed 004, Flink's HighAvailabilityServices) on etcd: several JobManager
//! processes stand for election, one leads, and the others wait to take over. The leader holds
//! a lease it renews; when it cannot renew it within the lease's time it stops acting at once
//! (its jobs are suspended, not ended, and it writes nothing more), so by the time etcd lets the
//! lease expire and elects another, the old leader is silent. Every write of the leader (the
//! running-job registry, each completed checkpoint) is a transaction that holds only while its
//! leader key exists; every call it makes to a TaskManager carries its fencing token (the key's
//! creation revision, which grows with every election), and a TaskManager follows only the
//! leader etcd names.

mod etcd;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use etcd::{
    CheckpointPointer, Etcd, EtcdError, Leader, LeaderAddresses, LeaderKey, RunningJob,
};

use super::config::HighAvailabilityConfig;
use super::job_store::LeaderStore;
use crate::checkpoint::CompletedCheckpointStore;

/// This process's leadership, while it lasts.
#[derive(Debug)]
pub struct Leadership {
    key: LeaderKey,
    lease: Arc<Lease>,
    revoked: AtomicBool,
}

impl Leadership {
    /// The leadership won by `key` under `lease`.
    pub fn new(key: LeaderKey, lease: Arc<Lease>) -> Arc<Leadership> {
        Arc::new(Leadership {
            key,
            lease,
            revoked: AtomicBool::new(false),
        })
    }

    pub fn token(&self) -> u64 {
        self.key.token
    }

    /// Whether this process may still act as the leader: its lease has not run out and it did
    /// not step down.
    pub fn is_leader(&self) -> bool {
        !self.revoked.load(Ordering::SeqCst) && self.lease.alive()
    }

    pub fn step_down(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    /// Resolves once this leadership was given up (etcd refused a write of it).
    pub async fn refused(&self) {
        while !self.revoked.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The lease a JobManager stands (and leads) under, renewed by [`keep_lease`].
#[derive(Debug)]
pub struct Lease {
    pub id: i64,
    ttl: Duration,
    /// Until when the lease is surely alive: the send time of the latest renewal etcd
    /// answered, plus the time to live it granted, less a margin.
    valid_until: Mutex<Instant>,
}

impl Lease {
    fn alive(&self) -> bool {
        Instant::now() < *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// etcd answered a renewal sent at `sent` with `ttl` seconds.
    fn renewed(&self, sent: Instant, ttl: i64) {
        let granted = Duration::from_secs(ttl.max(0) as u64);
        // etcd counts from when the renewal reached it, which is after `sent`; the margin
        // covers the clocks' drift over the lease.
        let until = sent + granted - granted.min(self.ttl) / 10;
        let mut valid = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        *valid = (*valid).max(until);
    }
}

/// Grants a lease of the configured time to live.
pub async fn grant(etcd: &Etcd, ttl: Duration) -> Result<Arc<Lease>, EtcdError> {
    let asked = Instant::now();
    let id = etcd.grant_lease(ttl).await?;
    let lease = Lease {
        id,
        ttl,
        valid_until: Mutex::new(asked),
    };
    lease.renewed(asked, ttl.as_secs() as i64);
    Ok(Arc::new(lease))
}

/// Renews `lease` until it is lost; why it was lost. Renewals go every quarter of the time to
/// live, so a few can be lost before the lease is.
pub async fn keep_lease(etcd: &Etcd, lease: &Lease) -> String {
    let interval = lease.ttl / 4;
    let watch = async {
        while lease.alive() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let renew = async {
        loop {
            let (mut keeper, mut stream) = match etcd.keep_alive(lease.id).await {
                Ok(opened) => opened,
                Err(_) => {
                    tokio::time::sleep(interval / 2).await;
                    continue;
                }
            };
            loop {
                let sent = Instant::now();
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(interval, stream.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() > 0 => lease.renewed(sent, answer.ttl()),
                    Ok(Ok(Some(_))) => return "etcd says the lease expired".to_string(),
                    // The stream broke or etcd is slow: open another.
                    _ => break,
                }
                tokio::time::sleep_until((sent + interval).into()).await;
            }
        }
    };
    tokio::select! {
        why = renew => why,
        () = watch => format!(
            "the lease could not be renewed within its {:?} (etcd at {} unreachable?)",
            lease.ttl,
            etcd.endpoints()
        ),
    }
}

/// The leader's writes to etcd, from threads outside the runtime (job masters, checkpoint
/// coordinators, uploads), each refused once the leadership is gone.
#[derive(Debug)]
pub struct EtcdLeaderStore {
    pub etcd: Etcd,
    pub leadership: Arc<Leadership>,
    pub runtime: tokio::runtime::Handle,
    /// The storage directory the registry's paths are relative to.
    pub storage: PathBuf,
}

impl EtcdLeaderStore {
    /// Runs the fenced write `call` makes. Its writes are idempotent, so one whose outcome is
    /// unknown (a timeout) is tried again for as long as this JobManager leads: a write that
    /// may have happened must not be taken for one that did not. A refused fence gives the
    /// leadership up.
    fn write<F>(&self, what: &str, call: impl Fn() -> F) -> Result<(), String>
    where
        F: std::future::Future<Output = Result<(), EtcdError>>,
    {
        loop {
            if !self.leadership.is_leader() {
                return Err(format!(
                    "cannot {what}: this JobManager is no longer the leader"
                ));
            }
            match self.runtime.block_on(call()) {
                Ok(()) => return Ok(()),
                Err(EtcdError::NotLeader) => {
                    self.leadership.step_down();
                    return Err(format!("cannot {what}: another JobManager leads"));
                }
                // Nothing was sent: trying again cannot help.
                Err(e @ EtcdError::Corrupt { .. }) => return Err(format!("cannot {what}: {e}")),
                Err(e) => {
                    eprintln!("warning: {what}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl LeaderStore for EtcdLeaderStore {
    fn add_job(&self, id: &str, dir: &Path, tenant: Option<&str>) -> Result<(), String> {
        let job = RunningJob {
            dir: dir.strip_prefix(&self.storage).unwrap_or(dir).to_path_buf(),
            tenant: tenant.map(str::to_string),
        };
        self.write(&format!("register job {id} in etcd"), || {
            self.etcd.add_job(&self.leadership.key, id, &job)
        })
    }

    fn remove_job(&self, id: &str) -> Result<(), String> {
        self.write(&format!("remove job {id} from etcd"), || {
            self.etcd.remove_job(&self.leadership.key, id)
        })
    }

    fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    fn checkpoints(self: Arc<Self>, job: &str) -> Arc<dyn CompletedCheckpointStore> {
        Arc::new(EtcdCheckpoints {
            store: self,
            job: job.to_string(),
        })
    }
}

/// A job's completed checkpoints, recorded in etcd by the leader (Flink's
/// CompletedCheckpointStore on ZooKeeper).
#[derive(Debug)]
struct EtcdCheckpoints {
    store: Arc<EtcdLeaderStore>,
    job: String,
}

impl CompletedCheckpointStore for EtcdCheckpoints {
    fn add(&self, checkpoint: u64, dir: &Path) -> Result<(), String> {
        let pointer = CheckpointPointer {
            id: checkpoint,
            dir: dir.to_path_buf(),
        };
        self.store.write(
            &format!("record checkpoint {checkpoint} of job {}", self.job),
            || {
                self.store
                    .etcd
                    .add_checkpoint(&self.store.leadership.key, &self.job, &pointer)
            },
        )
    }

    fn is_active(&self) -> bool {
        self.store.leadership.is_leader()
    }
}

/// The jobs a new leader recovers: each one's id, record and latest completed checkpoint.
pub async fn jobs_to_recover(
    etcd: &Etcd,
) -> Result<Vec<(String, RunningJob, Option<CheckpointPointer>)>, EtcdError> {
    let mut jobs = Vec::new();
    for (id, job) in etcd.running_jobs().await? {
        let latest = etcd.latest_checkpoint(&id).await?;
        jobs.push((id, job, latest));
    }
    Ok(jobs)
}

/// The current leader of the cluster `config` names, asked once (for the CLI).
pub fn find_leader(config: &HighAvailabilityConfig) -> Result<Leader, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let etcd = Etcd::connect(config).await.map_err(|e| e.to_string())?;
        etcd.leader()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "no JobManager of cluster `{}` leads now (etcd at {})",
                    config.cluster_id,
                    etcd.endpoints()
                )
            })
    })
}
