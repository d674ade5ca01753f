//! The JobManager's job store (Flink's JobGraphStore, on local disk): each submitted job, while
//! it runs, as `<store>/<job id>/` (a tenant's as `<store>/tenants/<tenant>/<job id>/`) holding
//! its submission and its components. A JobManager that starts finds the jobs a previous one
//! left running there and runs them again, under the same ids and owners, from their latest
//! complete checkpoint. With high availability the store is in the cluster's storage directory,
//! shared by the JobManagers, and etcd's running-job registry ([`LeaderStore`]) says which of its
//! jobs run and from which checkpoint a new leader recovers each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::admission::{QuotaExceeded, admit};
use super::confine::{OutsideGranted, confine_connectors, confine_submission};
use super::submission::JobSubmission;
use super::tenants::{Tenant, TenantDirectory};
use crate::checkpoint::CompletedCheckpointStore;
use crate::cluster::{JobOptions, MiniCluster, RestartStrategy};
use crate::job::JobGraph;

const SUBMISSION: &str = "submission.bin";
/// Where tenants' jobs are kept: `<store>/tenants/<tenant>/<job id>/` (a tenant's name is
/// checked to be a plain name when the tenants file is read).
const TENANTS: &str = "tenants";
const LOCK: &str = ".jobmanager.lock";
/// Marks an upload whose registration in etcd failed: it may be registered all the same (the
/// outcome was unknown), so its directory stays for the next leader, which forgets both.
const REFUSED: &str = ".refused";

/// Where a JobManager with high availability records the jobs it runs beside their files
/// (etcd), each write refused unless it still leads.
pub(crate) trait LeaderStore: Send + Sync + std::fmt::Debug {
    /// Registers running job `id`, kept in `dir`, of `tenant`.
    fn add_job(&self, id: &str, dir: &Path, tenant: Option<&str>) -> Result<(), String>;
    /// Job `id` ended: no leader recovers it.
    fn remove_job(&self, id: &str) -> Result<(), String>;
    fn is_leader(&self) -> bool;
    /// Where job `job`'s completed checkpoints are recorded.
    fn checkpoints(self: Arc<Self>, job: &str) -> Arc<dyn CompletedCheckpointStore>;
}

/// A job store can serve one JobManager: two would each run the jobs it holds.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error(
        "job store `{store}` is in use by the JobManager with pid {pid}; give this one its own \
         (`jobmanager.job-store`)"
    )]
    InUse { store: PathBuf, pid: u32 },
    #[error("cannot lock job store `{store}`: {source}")]
    Lock {
        store: PathBuf,
        source: std::io::Error,
    },
}

/// This process's hold on a job store; released when dropped.
pub(super) struct StoreLock(PathBuf);

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes `store` for this process: refused while another live process holds it; a lock left
/// by a process that died (killed, say) is taken over.
pub(super) fn lock(store: &Path) -> Result<StoreLock, JobStoreError> {
    let path = store.join(LOCK);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                use std::io::Write;
                let _ = write!(file, "{}", std::process::id());
                return Ok(StoreLock(path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder: Option<u32> = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                match holder {
                    Some(pid) if pid != std::process::id() && alive(pid) => {
                        return Err(JobStoreError::InUse {
                            store: store.to_path_buf(),
                            pid,
                        });
                    }
                    // Its holder is gone (or it is unreadable): take it over.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(source) => {
                return Err(JobStoreError::Lock {
                    store: store.to_path_buf(),
                    source,
                });
            }
        }
    }
    Err(JobStoreError::Lock {
        store: store.to_path_buf(),
        source: std::io::Error::other("another process keeps taking it"),
    })
}

/// Whether process `pid` runs (on Linux, by its /proc entry; elsewhere, assumed).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Why an upload was not run.
#[derive(Debug, thiserror::Error)]
pub enum SubmitRefused {
    /// Not a job, or one that cannot be kept or started.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error(transparent)]
    Path(#[from] OutsideGranted),
    /// A connector or secret the tenant was not granted.
    #[error("{0}")]
    NotGranted(String),
    /// This JobManager lost its leadership (or etcd) meanwhile.
    #[error("{0}")]
    NotLeader(String),
}

impl From<String> for SubmitRefused {
    fn from(message: String) -> Self {
        SubmitRefused::Invalid(message)
    }
}

/// Keeps `submission` (the bytes as uploaded) under `<store>/<id>/` (a tenant's under
/// `<store>/tenants/<tenant>/<id>/`) and starts its job for `owner` (within its quota); the
/// directory goes when the job ends.
pub(super) fn submit(
    store: &Path,
    id: String,
    bytes: &[u8],
    cluster: &Arc<MiniCluster>,
    owner: Option<&Tenant>,
    leader: Option<&Arc<dyn LeaderStore>>,
) -> Result<String, SubmitRefused> {
    let mut submission = JobSubmission::decode(bytes).map_err(|e| e.to_string())?;
    admit_upload(&mut submission, owner, cluster)?;
    let bytes = &submission.encode().map_err(|e| e.to_string())?;
    let dir = match owner {
        Some(tenant) => store.join(TENANTS).join(&tenant.name).join(&id),
        None => store.join(&id),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let (graph, options) = match submission.store(&dir) {
        Ok(stored) => stored,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.to_string().into());
        }
    };
    // Written last and atomically: a directory without it is an upload that never finished.
    let temp = dir.join(format!("{SUBMISSION}.partial"));
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, dir.join(SUBMISSION)))
        .map_err(|e| format!("cannot keep the job in `{}`: {e}", dir.display()))?;
    // Registered once its files are whole: a new leader finds everything it needs.
    if let Some(leader) = leader
        && let Err(e) = leader.add_job(&id, &dir, owner.map(|t| t.name.as_str()))
    {
        let _ = std::fs::write(dir.join(REFUSED), b"");
        return Err(SubmitRefused::NotLeader(e));
    }
    Ok(start(dir, id, graph, options, owner, cluster, leader)?)
}

/// What an upload must pass before it runs, on submission and again on recovery: its graph
/// checked as a manifest's is (the body is the sender's, not the CLI's), and a tenant's paths,
/// quotas and grants.
fn admit_upload(
    submission: &mut JobSubmission,
    owner: Option<&Tenant>,
    cluster: &MiniCluster,
) -> Result<(), SubmitRefused> {
    submission.graph.check().map_err(|e| e.to_string())?;
    if let Some(tenant) = owner.filter(|t| !t.admin) {
        confine_connectors(tenant, submission)?;
        confine_submission(tenant, submission)?;
        let interval = submission
            .checkpoints
            .as_ref()
            .map(|(_, ms)| Duration::from_millis(*ms));
        admit(tenant, &mut submission.graph, interval, cluster)?;
    }
    Ok(())
}

fn start(
    dir: PathBuf,
    id: String,
    graph: JobGraph,
    options: JobOptions,
    tenant: Option<&Tenant>,
    cluster: &Arc<MiniCluster>,
    leader: Option<&Arc<dyn LeaderStore>>,
) -> Result<String, String> {
    let mut options = options;
    if let Some(tenant) = tenant {
        options.restart = backing_off(options.restart);
        options.tenant = Some(tenant.name.clone());
        options.checkpoint_storage = tenant.quota.checkpoint_storage;
    }
    if let Some(leader) = leader {
        options.checkpoint_store = Some(leader.clone().checkpoints(&id));
    }
    let tenant = tenant.map(|t| t.name.as_str());
    let owner = cluster.clone();
    let leader = leader.cloned();
    let job = id.clone();
    cluster
        .start_job_as(
            id,
            graph,
            options,
            tenant,
            Box::new(move |_| {
                owner.forget_components_under(&dir);
                // A job that ends under a leader leaves the store; one suspended because its
                // JobManager stopped leading stays, for the next leader to recover.
                let ended = match &leader {
                    None => true,
                    Some(leader) if !leader.is_leader() => false,
                    Some(leader) => match leader.remove_job(&job) {
                        Ok(()) => true,
                        Err(e) => {
                            eprintln!("warning: job {job} stays in the job store: {e}");
                            false
                        }
                    },
                };
                if ended {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }),
        )
        .map_err(|e| format!("cannot start the job: {e}"))
}

/// A tenant's job restarts with exponential backoff (from at least a second, doubling up to a
/// minute), so a job that fails at once, over and over, cannot keep the cluster's CPUs busy
/// restarting it.
fn backing_off(strategy: RestartStrategy) -> RestartStrategy {
    match strategy {
        RestartStrategy::None => RestartStrategy::None,
        RestartStrategy::FixedDelay { attempts, delay }
        | RestartStrategy::ExponentialDelay {
            attempts,
            initial: delay,
            ..
        } => RestartStrategy::ExponentialDelay {
            attempts,
            initial: delay.max(Duration::from_secs(1)),
            max: Duration::from_secs(60),
        },
    }
}

/// Runs again every job the store holds (a previous JobManager's, which never ended): from its
/// latest complete checkpoint if it took one, else from the start. A tenant's job runs again
/// under its tenant's current quota; one whose tenant left the tenants file does not.
pub(super) fn recover(store: &Path, cluster: &Arc<MiniCluster>, tenants: Option<&TenantDirectory>) {
    recover_under(store, None, cluster);
    let Ok(owners) = std::fs::read_dir(store.join(TENANTS)) else {
        return;
    };
    for owner in owners.flatten() {
        let name = owner.file_name().to_string_lossy().into_owned();
        match tenants.and_then(|t| t.get(&name)) {
            Some(tenant) => recover_under(&owner.path(), Some(&tenant), cluster),
            None => eprintln!(
                "warning: not recovering the jobs of tenant `{name}`: it is not in the tenants \
                 file"
            ),
        }
    }
}

/// Runs again the jobs kept in `dir`, as `owner`'s.
fn recover_under(dir: &Path, owner: Option<&Tenant>, cluster: &Arc<MiniCluster>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        if !dir.is_dir() || id == TENANTS {
            continue;
        }
        if !dir.join(SUBMISSION).exists() {
            // An upload that never finished, or not ours.
            if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            continue;
        }
        recover_one(dir, id, owner, Restore::NewestInDirectory, cluster, None);
    }
}

/// Where a recovered job restarts from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "ha"), allow(dead_code))]
pub(crate) enum Restore {
    /// The newest complete checkpoint in its checkpoint directory (one JobManager).
    NewestInDirectory,
    /// The checkpoint the running-job registry recorded as its latest (`None`: it completed
    /// none, so from the start).
    Recorded(Option<PathBuf>),
}

/// A job of the running-job registry a new leader recovers.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "ha"), allow(dead_code))]
pub(crate) struct RegisteredJob {
    pub id: String,
    pub dir: PathBuf,
    pub tenant: Option<String>,
    pub checkpoint: Option<PathBuf>,
}

/// Runs again the jobs of the running-job registry (a new leader's recovery), each from the
/// checkpoint recorded as its latest.
#[cfg_attr(not(feature = "ha"), allow(dead_code))]
pub(crate) fn recover_registered(
    jobs: Vec<RegisteredJob>,
    cluster: &Arc<MiniCluster>,
    tenants: Option<&TenantDirectory>,
    leader: &Arc<dyn LeaderStore>,
) {
    for job in jobs {
        let owner = match job.tenant.as_deref() {
            None => None,
            Some(name) => match tenants.and_then(|t| t.get(name)) {
                Some(tenant) => Some(tenant),
                None => {
                    eprintln!(
                        "warning: not recovering job {} of tenant `{name}`: it is not in the \
                         tenants file",
                        job.id
                    );
                    continue;
                }
            },
        };
        recover_one(
            job.dir,
            job.id,
            owner.as_ref(),
            Restore::Recorded(job.checkpoint),
            cluster,
            Some(leader),
        );
    }
}

/// Runs again job `id` kept in `dir`, as `owner`'s, from `restore`.
fn recover_one(
    dir: PathBuf,
    id: String,
    owner: Option<&Tenant>,
    restore: Restore,
    cluster: &Arc<MiniCluster>,
    leader: Option<&Arc<dyn LeaderStore>>,
) {
    if let Some(leader) = leader
        && dir.join(REFUSED).try_exists().unwrap_or(false)
    {
        // Its submission was refused after its registration may have gone through.
        eprintln!("Forgetting job {id}: its submission was refused");
        if leader.remove_job(&id).is_ok() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return;
    }
    let recovered = std::fs::read(dir.join(SUBMISSION))
        .map_err(|e| e.to_string())
        .and_then(|bytes| JobSubmission::decode(&bytes).map_err(|e| e.to_string()))
        .and_then(|mut s| {
            admit_upload(&mut s, owner, cluster).map_err(|e| e.to_string())?;
            s.store(&dir).map_err(|e| e.to_string())
        });
    let (graph, mut options) = match recovered {
        Ok(job) => job,
        Err(e) => {
            eprintln!(
                "warning: cannot recover job {id} from `{}`: {e}",
                dir.display()
            );
            return;
        }
    };
    match restore {
        // No checkpoint recorded yet: from where the submission said (a savepoint, or the start).
        Restore::Recorded(checkpoint) => {
            if checkpoint.is_some() {
                options.restore = checkpoint;
            }
        }
        Restore::NewestInDirectory => {
            if let Some(config) = &options.checkpoints {
                let job_dir = config.dir.join(&graph.name);
                let complete = crate::checkpoint::storage::checkpoint_dirs(&job_dir)
                    .iter()
                    .any(|(_, d)| d.join("_metadata").exists());
                if complete {
                    options.restore = Some(job_dir);
                }
            }
        }
    }
    match start(dir, id.clone(), graph, options, owner, cluster, leader) {
        Ok(_) => eprintln!("Recovered JobGraph {id}"),
        Err(e) => eprintln!("warning: cannot recover job {id}: {e}"),
    }
}
