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
use crate::runtime::task_executor::{SlotAllocation, SlotError, TaskExecutor};
use crate::runtime::{JobMasterConnection, TaskFailure};
use crate::stream::Barrier;

/// The TaskManager's current connection to the JobManager (none between registrations).
pub(super) type JobManagerLink = Arc<Mutex<Option<JobManagerRpcClient>>>;

fn current(link: &JobManagerLink) -> Option<JobManagerRpcClient> {
    link.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What a task tells its job master.
enum Upcall {
    Checkpoint(u64, TaskCheckpointEvent),
    Ended(u64, usize, TaskEnd),
}

/// Sends upcalls in order, waiting for a connection to the JobManager when there is none.
async fn forward_upcalls(
    mut upcalls: tokio::sync::mpsc::UnboundedReceiver<Upcall>,
    link: JobManagerLink,
    te: Arc<TaskExecutor>,
    timeout: std::time::Duration,
) {
    while let Some(upcall) = upcalls.recv().await {
        let job = match &upcall {
            Upcall::Checkpoint(job, _) | Upcall::Ended(job, _, _) => *job,
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
                Upcall::Checkpoint(job, event) => {
                    client
                        .task_checkpoint_event(rpc::deadline(timeout), *job, event.clone())
                        .await
                }
                Upcall::Ended(job, index, end) => {
                    client
                        .task_ended(rpc::deadline(timeout), *job, *index, end.clone())
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

/// The job master of attempt `job`, as the TaskManager's tasks reach it.
struct RemoteJobMaster {
    job: u64,
    upcalls: UnboundedSender<Upcall>,
}

impl JobMasterConnection for RemoteJobMaster {
    fn checkpoint_event(&self, event: CoordinatorEvent) {
        if let Some(event) = TaskCheckpointEvent::of(event) {
            let _ = self.upcalls.send(Upcall::Checkpoint(self.job, event));
        }
    }

    fn task_ended(&self, index: usize, result: Result<(), TaskFailure>) {
        let end = match result {
            Ok(()) => TaskEnd::Finished,
            Err(TaskFailure::Cancelled { task }) => TaskEnd::Cancelled { task },
            Err(failure) => TaskEnd::Failed {
                task: task_name(&failure),
                reason: failure.to_string(),
            },
        };
        let _ = self.upcalls.send(Upcall::Ended(self.job, index, end));
    }
}

fn task_name(failure: &TaskFailure) -> String {
    match failure {
        TaskFailure::Chain { task, .. }
        | TaskFailure::Source { task, .. }
        | TaskFailure::Cancelled { task }
        | TaskFailure::Restore { task, .. }
        | TaskFailure::Input { task, .. }
        | TaskFailure::Remote { task, .. } => task.clone(),
        TaskFailure::Checkpoint(_) => "checkpoint".into(),
    }
}

/// The service of one JobManager connection.
#[derive(Clone)]
struct Service {
    te: Arc<TaskExecutor>,
    link: JobManagerLink,
    upcalls: UnboundedSender<Upcall>,
    allocations: Arc<Mutex<HashMap<u64, SlotAllocation>>>,
    next_allocation: Arc<AtomicU64>,
    timeout: std::time::Duration,
}

impl Service {
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
        let allocation = self.te.allocate(slots, buffers)?;
        let id = self.next_allocation.fetch_add(1, Ordering::Relaxed);
        self.allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, allocation);
        Ok(id)
    }

    async fn release(self, _: tarpc::context::Context, allocation: u64) {
        self.allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&allocation);
    }

    async fn register_job(self, _: tarpc::context::Context, job: u64, checkpointing: bool) {
        let master = Arc::new(RemoteJobMaster {
            job,
            upcalls: self.upcalls.clone(),
        });
        self.te.register_job(job, master, checkpointing);
    }

    async fn submit_task(
        self,
        _: tarpc::context::Context,
        tdd: TaskDeploymentDescriptor,
    ) -> Result<(), String> {
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
        self.te.notify_checkpoint_complete(job, checkpoint, last);
    }

    async fn cancel_job(self, _: tarpc::context::Context, job: u64) {
        self.te.cancel_job(job);
    }

    async fn unregister_job(self, _: tarpc::context::Context, job: u64) {
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
}

/// Serves the TaskManager's RPC port; starts the forwarder of its tasks' upcalls.
pub(super) async fn serve(
    listener: TcpListener,
    te: Arc<TaskExecutor>,
    link: JobManagerLink,
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
        next_allocation: Arc::new(AtomicU64::new(1)),
        timeout,
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
        // them goes away, its slots come back.
        let service = Service {
            allocations: Arc::new(Mutex::new(HashMap::new())),
            ..service.clone()
        };
        let secret = secret.clone();
        tokio::spawn(async move {
            if let Err(reason) = rpc::accept(&mut stream, &secret, timeout).await {
                eprintln!("warning: refused an RPC connection from {peer}: {reason}");
                return;
            }
            BaseChannel::with_defaults(rpc::transport(stream))
                .execute(service.serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                })
                .await;
        });
    }
}
