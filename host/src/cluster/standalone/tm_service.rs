//! A TaskManager's RPC service (the TaskExecutorGateway across processes), and its tasks' line
//! back to their job master: checkpoint events and task ends go up the TaskManager's
//! connection to the JobManager, in the order the tasks sent them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::rpc::{self, JobManagerRpcClient, TaskEnd, TaskManagerRpc};
use crate::checkpoint::{CoordinatorEvent, TaskCheckpointEvent};
use crate::metrics::TaskMetricsSnapshot;
use crate::network::{BufferPoolStats, ClusterSecret};
use crate::runtime::deployment::{OperatorDescriptor, TaskDeploymentDescriptor};
use crate::runtime::job_log::RegisteredJob;
use crate::runtime::task_executor::{SlotAllocation, SlotError, TaskExecutor};
use crate::runtime::{JobMasterConnection, TaskFailure};
use crate::stream::Barrier;

/// The TaskManager's current connection to the JobManager (none between registrations).
pub(super) type JobManagerLink = Arc<Mutex<Option<JobManagerRpcClient>>>;

fn current(link: &JobManagerLink) -> Option<JobManagerRpcClient> {
    lock(link).clone()
}

/// What a task tells its job master.
enum Upcall {
    Checkpoint(Fence, TaskCheckpointEvent),
    Ended(Fence, usize, TaskEnd),
}

/// A job attempt and the slot allocation its tasks here run in: what the JobManager checks
/// an upcall against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fence {
    job: u64,
    allocation: u64,
}

/// Sends upcalls in order, waiting for a connection to the JobManager when there is none.
async fn forward_upcalls(
    mut upcalls: tokio::sync::mpsc::UnboundedReceiver<Upcall>,
    link: JobManagerLink,
    te: Arc<TaskExecutor>,
    timeout: std::time::Duration,
) {
    while let Some(upcall) = upcalls.recv().await {
        let Fence { job, allocation } = match &upcall {
            Upcall::Checkpoint(fence, _) | Upcall::Ended(fence, _, _) => *fence,
        };
        loop {
            // A job this TaskManager gave up (its registration ended) is another JobManager's
            // business now, or nobody's: its tasks' news must not reach the next one.
            if te.job_connection(job).is_none() {
                break;
            }
            let Some(client) = current(&link) else {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            };
            let sent = match &upcall {
                Upcall::Checkpoint(_, event) => {
                    client
                        .task_checkpoint_event(
                            rpc::deadline(timeout),
                            job,
                            allocation,
                            event.clone(),
                        )
                        .await
                }
                Upcall::Ended(_, index, end) => {
                    client
                        .task_ended(rpc::deadline(timeout), job, allocation, *index, end.clone())
                        .await
                }
            };
            match sent {
                Ok(()) => break,
                Err(e) => {
                    eprintln!("warning: cannot tell the JobManager about a task ({e}); retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The job master of an attempt, as the TaskManager's tasks reach it.
struct RemoteJobMaster {
    fence: Fence,
    upcalls: UnboundedSender<Upcall>,
}

impl JobMasterConnection for RemoteJobMaster {
    fn checkpoint_event(&self, event: CoordinatorEvent) {
        if let Some(event) = TaskCheckpointEvent::of(event) {
            let _ = self.upcalls.send(Upcall::Checkpoint(self.fence, event));
        }
    }

    fn task_ended(&self, index: usize, result: Result<(), TaskFailure>) {
        let end = match result {
            Ok(()) => TaskEnd::Finished,
            Err(TaskFailure::Cancelled { task }) => TaskEnd::Cancelled { task },
            Err(failure) => TaskEnd::Failed {
                task: failure.task_name().unwrap_or("checkpoint").to_string(),
                reason: failure.to_string(),
            },
        };
        let _ = self.upcalls.send(Upcall::Ended(self.fence, index, end));
    }
}

/// The service of one JobManager connection.
#[derive(Clone)]
struct Service {
    te: Arc<TaskExecutor>,
    link: JobManagerLink,
    upcalls: UnboundedSender<Upcall>,
    /// The slot allocations this connection holds.
    allocations: Arc<Mutex<HashMap<u64, SlotAllocation>>>,
    /// Which allocation each registered job attempt runs in (all connections').
    jobs: Arc<Mutex<HashMap<u64, u64>>>,
    next_allocation: Arc<AtomicU64>,
    timeout: std::time::Duration,
    /// The fencing token of the JobManager that opened this connection.
    fence: u64,
    /// The fencing token of the leader this TaskManager follows now.
    leader: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh allocation id: random where the system gives randomness (so a TaskManager's ids
/// differ from another's and from its own earlier process's), else counted.
fn new_allocation_id(counter: &AtomicU64) -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes) | 1,
        Err(_) => counter.fetch_add(1, Ordering::Relaxed),
    }
}

impl Service {
    /// Whether a call of this connection's JobManager is to be heard: only the leader this
    /// TaskManager follows is (a deposed leader's calls are refused). Calls that only give
    /// something up (release, cancel, unregister) are heard from whoever holds it
    /// ([`gives_up`](Self::gives_up)).
    fn fenced_in(&self, what: &str) -> Result<(), String> {
        let leader = self.leader.load(Ordering::SeqCst);
        if self.fence == leader {
            return Ok(());
        }
        eprintln!(
            "Refused {what} from the JobManager with fencing token {}: this TaskManager follows {}",
            self.fence,
            if leader == u64::MAX {
                "no leader now".to_string()
            } else {
                format!("the leader with fencing token {leader}")
            }
        );
        Err(format!(
            "refused: the JobManager with fencing token {} is not the leader this TaskManager \
             follows",
            self.fence
        ))
    }

    /// Whether this connection may give job attempt `job` up: the leader may, and so may the
    /// JobManager whose allocation the attempt runs in (a deposed one giving up its own).
    fn gives_up(&self, job: u64, what: &str) -> bool {
        let own = lock(&self.jobs)
            .get(&job)
            .is_some_and(|allocation| self.holds(*allocation));
        own || self.fenced_in(what).is_ok()
    }

    fn holds(&self, allocation: u64) -> bool {
        lock(&self.allocations).contains_key(&allocation)
    }

    /// Allocation `allocation` is gone (released, or its connection closed): what still runs
    /// in it is cancelled, since its JobManager has given up those slots.
    fn drop_allocation(&self, allocation: u64) {
        lock(&self.allocations).remove(&allocation);
        let jobs: Vec<u64> = {
            let mut bound = lock(&self.jobs);
            let jobs = bound
                .iter()
                .filter(|(_, a)| **a == allocation)
                .map(|(j, _)| *j)
                .collect::<Vec<_>>();
            jobs.iter().for_each(|j| {
                bound.remove(j);
            });
            jobs
        };
        for job in jobs {
            if self.te.job_connection(job).is_some() {
                eprintln!("Cancelling job attempt {job}: its slot allocation was given up");
                self.te.unregister_job(job);
            }
        }
    }

    /// Loads the components `tdd` names that this TaskManager has not compiled yet.
    async fn fetch_components(&self, tdd: &TaskDeploymentDescriptor) -> Result<(), String> {
        for op in &tdd.chain {
            let OperatorDescriptor::Wasm { component, .. } = op else {
                continue;
            };
            if self.te.runtime().loaded(&component.hash).is_some() {
                continue;
            }
            let client = current(&self.link).ok_or("no connection to the JobManager")?;
            let (name, bytes) = client
                .fetch_blob(rpc::deadline(self.timeout), component.hash.clone())
                .await
                .map_err(|e| format!("cannot fetch component `{}`: {e}", component.name))??;
            let runtime = self.te.runtime().clone();
            tokio::task::spawn_blocking(move || runtime.load_bytes(&name, &bytes).map(|_| ()))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl TaskManagerRpc for Service {
    async fn allocate(
        self,
        _: tarpc::context::Context,
        slots: u32,
        buffers: usize,
    ) -> Result<u64, SlotError> {
        self.fenced_in("a slot request")
            .map_err(|reason| SlotError::Refused { reason })?;
        let allocation = self.te.allocate(slots, buffers)?;
        let id = new_allocation_id(&self.next_allocation);
        lock(&self.allocations).insert(id, allocation);
        Ok(id)
    }

    async fn release(self, _: tarpc::context::Context, allocation: u64) {
        self.drop_allocation(allocation);
    }

    async fn register_job(
        self,
        _: tarpc::context::Context,
        job: u64,
        allocation: u64,
        registration: RegisteredJob,
    ) -> Result<(), String> {
        self.fenced_in("a job registration")?;
        if !self.holds(allocation) {
            return Err(format!(
                "job attempt {job} refused: slot allocation {allocation} is not active here"
            ));
        }
        lock(&self.jobs).insert(job, allocation);
        let master = Arc::new(RemoteJobMaster {
            fence: Fence { job, allocation },
            upcalls: self.upcalls.clone(),
        });
        self.te.register_job(job, master, &registration);
        Ok(())
    }

    async fn submit_task(
        self,
        _: tarpc::context::Context,
        allocation: u64,
        tdd: TaskDeploymentDescriptor,
    ) -> Result<(), String> {
        self.fenced_in("a task deployment")?;
        let bound = lock(&self.jobs).get(&tdd.job) == Some(&allocation);
        if !bound || !self.holds(allocation) {
            eprintln!(
                "Refused task {} of job attempt {}: slot allocation {allocation} is not active",
                tdd.name, tdd.job
            );
            return Err(format!(
                "slot allocation {allocation} of job attempt {} is not active on this \
                 TaskManager (released, or its JobManager connection is gone)",
                tdd.job
            ));
        }
        eprintln!("Received task {} of job attempt {}", tdd.name, tdd.job);
        self.fetch_components(&tdd).await?;
        let te = self.te.clone();
        tokio::task::spawn_blocking(move || te.submit_task(tdd).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn trigger_checkpoint(
        self,
        _: tarpc::context::Context,
        job: u64,
        tasks: Vec<usize>,
        checkpoint: u64,
        location: std::path::PathBuf,
    ) {
        if self.fenced_in("a checkpoint trigger").is_err() {
            return;
        }
        let barrier = Barrier::new(checkpoint, Path::new(&location));
        self.te.trigger_checkpoint(job, &tasks, &barrier);
    }

    async fn notify_checkpoint_complete(
        self,
        _: tarpc::context::Context,
        job: u64,
        checkpoint: u64,
        last: bool,
    ) {
        if self.fenced_in("a checkpoint completion").is_err() {
            return;
        }
        self.te.notify_checkpoint_complete(job, checkpoint, last);
    }

    async fn drain_sources(self, _: tarpc::context::Context, job: u64) {
        if self.fenced_in("a drain").is_err() {
            return;
        }
        self.te.drain_sources(job);
    }

    async fn cancel_job(self, _: tarpc::context::Context, job: u64) {
        if !self.gives_up(job, "a cancel") {
            return;
        }
        self.te.cancel_job(job);
    }

    async fn unregister_job(self, _: tarpc::context::Context, job: u64) {
        if !self.gives_up(job, "a job's unregistration") {
            return;
        }
        lock(&self.jobs).remove(&job);
        self.te.unregister_job(job);
    }

    async fn task_metrics(
        self,
        _: tarpc::context::Context,
        job: u64,
    ) -> Vec<(usize, String, TaskMetricsSnapshot)> {
        self.te
            .task_metrics(job)
            .into_iter()
            .map(|(i, name, m)| (i, name, m.snapshot()))
            .collect()
    }

    async fn network_stats(self, _: tarpc::context::Context) -> BufferPoolStats {
        self.te.network().stats()
    }

    async fn resource_usage(
        self,
        _: tarpc::context::Context,
    ) -> crate::cluster::rest::ResourceUsage {
        crate::cluster::rest::ResourceUsage {
            network: self.te.network().stats(),
            rss_bytes: crate::metrics::prometheus::resident_memory_bytes(),
        }
    }
}

/// Serves the TaskManager's RPC port; starts the forwarder of its tasks' upcalls.
pub(super) async fn serve(
    listener: TcpListener,
    te: Arc<TaskExecutor>,
    link: JobManagerLink,
    leader: Arc<AtomicU64>,
    secret: ClusterSecret,
    timeout: std::time::Duration,
) {
    let (upcalls, receiver) = unbounded_channel();
    tokio::spawn(forward_upcalls(receiver, link.clone(), te.clone(), timeout));
    let service = Service {
        te,
        link,
        upcalls,
        allocations: Arc::new(Mutex::new(HashMap::new())),
        jobs: Arc::new(Mutex::new(HashMap::new())),
        next_allocation: Arc::new(AtomicU64::new(1)),
        timeout,
        fence: 0,
        leader,
    };
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("warning: the TaskManager's RPC port cannot accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Allocations belong to the connection that made them: when the JobManager that held
        // them goes away, its slots come back and what ran in them stops.
        let mut service = Service {
            allocations: Arc::new(Mutex::new(HashMap::new())),
            ..service.clone()
        };
        let secret = secret.clone();
        tokio::spawn(async move {
            if let Err(reason) = rpc::accept(&mut stream, &secret, timeout).await {
                eprintln!("warning: refused an RPC connection from {peer}: {reason}");
                return;
            }
            match rpc::read_fence(&mut stream, timeout).await {
                Ok(fence) => service.fence = fence,
                Err(reason) => {
                    eprintln!("warning: refused an RPC connection from {peer}: {reason}");
                    return;
                }
            }
            let serving = BaseChannel::with_defaults(rpc::transport(stream))
                .execute(service.clone().serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                });
            // Once this TaskManager follows another leader, the connection of the one before
            // closes, and with it go the slots it held and what runs in them (its JobManager
            // may be hung, not dead, and never close it itself).
            let deposed = async {
                loop {
                    let leader = service.leader.load(Ordering::SeqCst);
                    if leader != service.fence && leader != u64::MAX {
                        eprintln!(
                            "Closing the connection of the JobManager with fencing token {}: \
                             the leader now has {leader}",
                            service.fence
                        );
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            tokio::select! {
                () = serving => {}
                () = deposed => {}
            }
            let held: Vec<u64> = lock(&service.allocations).keys().copied().collect();
            held.into_iter().for_each(|a| service.drop_allocation(a));
        });
    }
}
