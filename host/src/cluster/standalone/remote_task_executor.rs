//! The JobManager's side of a registered TaskManager: the TaskExecutorGateway a job master
//! deploys through, over the TaskManager's RPC service; the blob server its components come
//! from; and the table through which its tasks' upcalls find their job master.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::rpc::{self, TaskManagerRpcClient};
use crate::cluster::gateways::{SlotLease, TaskExecutorGateway};
use crate::cluster::resource_manager::SlotProvider;
use crate::metrics::TaskMetricsSnapshot;
use crate::network::BufferPoolStats;
use crate::runtime::deployment::{BlobKey, TaskDeploymentDescriptor};
use crate::runtime::job_log::RegisteredJob;
use crate::runtime::task_executor::SlotError;
use crate::runtime::{JobMasterConnection, SubmitError, TaskFailure};
use crate::stream::Barrier;
use crate::wasm::{LoadError, content_hash};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Components by content hash (Flink's BlobServer): TaskManagers fetch what a task names.
#[derive(Default)]
pub struct BlobServer {
    blobs: Mutex<HashMap<String, (String, Arc<[u8]>)>>,
}

impl BlobServer {
    pub fn put(&self, name: &str, bytes: &[u8]) -> BlobKey {
        let hash = content_hash(bytes);
        lock(&self.blobs)
            .entry(hash.clone())
            .or_insert_with(|| (name.to_string(), Arc::from(bytes)));
        BlobKey {
            hash,
            name: name.to_string(),
        }
    }

    pub fn get(&self, hash: &str) -> Option<(String, Arc<[u8]>)> {
        lock(&self.blobs).get(hash).cloned()
    }
}

/// The job masters of running attempts, by attempt id, for the upcalls of their tasks (each
/// registered once per TaskManager that runs some of its tasks), which TaskManager runs each
/// task still running (when a TaskManager is lost, its tasks fail), and the slot allocations
/// the attempts hold: an upcall from an allocation that is no longer active (its TaskManager
/// was declared lost, or its slots released) is refused, so a TaskManager that comes back
/// from a hang cannot acknowledge a checkpoint or end a task of the attempt that replaced it.
#[derive(Default)]
pub struct AttemptTable {
    attempts: Mutex<HashMap<u64, (Arc<dyn JobMasterConnection>, usize)>>,
    /// attempt -> task index -> (task name, resource id of its TaskManager)
    running: Mutex<HashMap<u64, HashMap<usize, (String, String)>>>,
    /// active allocation -> (attempt, resource id of its TaskManager)
    allocations: Mutex<HashMap<u64, (u64, String)>>,
}

impl AttemptTable {
    fn activate(&self, allocation: u64, job: u64, resource_id: &str) {
        lock(&self.allocations).insert(allocation, (job, resource_id.to_string()));
    }

    fn deactivate(&self, allocation: u64) {
        lock(&self.allocations).remove(&allocation);
    }

    /// Whether an upcall of attempt `job` from slot allocation `allocation` is to be heard.
    pub fn is_active(&self, job: u64, allocation: u64) -> bool {
        lock(&self.allocations)
            .get(&allocation)
            .is_some_and(|(j, _)| *j == job)
    }

    fn task_started(&self, job: u64, index: usize, name: String, resource_id: &str) {
        lock(&self.running)
            .entry(job)
            .or_default()
            .insert(index, (name, resource_id.to_string()));
    }

    /// Task `index` of `job` reported its end; `false` if it had ended already (its
    /// TaskManager was declared lost first), so the end is not counted twice.
    pub fn task_ended(&self, job: u64, index: usize) -> bool {
        lock(&self.running)
            .get_mut(&job)
            .is_some_and(|tasks| tasks.remove(&index).is_some())
    }

    /// TaskManager `resource_id` is lost: each task it ran fails, as its job master hears.
    pub fn fail_task_manager(&self, resource_id: &str, why: &str) {
        lock(&self.allocations).retain(|_, (_, tm)| tm != resource_id);
        let mut failed = Vec::new();
        for (job, tasks) in lock(&self.running).iter_mut() {
            let lost: Vec<usize> = tasks
                .iter()
                .filter(|(_, (_, tm))| tm == resource_id)
                .map(|(i, _)| *i)
                .collect();
            for index in lost {
                if let Some((name, _)) = tasks.remove(&index) {
                    failed.push((*job, index, name));
                }
            }
        }
        if !failed.is_empty() {
            eprintln!(
                "Failing {} task(s) that ran on TaskManager `{resource_id}`",
                failed.len()
            );
        }
        for (job, index, task) in failed {
            if let Some(master) = self.get(job) {
                master.task_ended(
                    index,
                    Err(TaskFailure::Remote {
                        reason: format!(
                            "task {task} was lost with TaskManager `{resource_id}` ({why})"
                        ),
                        task,
                    }),
                );
            }
        }
    }

    fn add(&self, job: u64, master: Arc<dyn JobMasterConnection>) {
        lock(&self.attempts).entry(job).or_insert((master, 0)).1 += 1;
    }

    fn remove(&self, job: u64) {
        let mut attempts = lock(&self.attempts);
        if let Some(entry) = attempts.get_mut(&job) {
            entry.1 -= 1;
            if entry.1 == 0 {
                attempts.remove(&job);
                lock(&self.running).remove(&job);
                lock(&self.allocations).retain(|_, (j, _)| *j != job);
            }
        }
    }

    pub fn get(&self, job: u64) -> Option<Arc<dyn JobMasterConnection>> {
        lock(&self.attempts).get(&job).map(|(m, _)| m.clone())
    }
}

impl std::fmt::Debug for RemoteTaskExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteTaskExecutor({})", self.resource_id)
    }
}

/// A registered TaskManager, as the JobManager calls it.
pub struct RemoteTaskExecutor {
    pub resource_id: String,
    client: TaskManagerRpcClient,
    runtime: tokio::runtime::Handle,
    blobs: Arc<BlobServer>,
    attempts: Arc<AttemptTable>,
    timeout: Duration,
    /// Slots as of its last heartbeat.
    pub(super) slots: Mutex<(u32, u32)>,
    /// Declared lost: calls fail at once instead of waiting out their deadline.
    lost: std::sync::atomic::AtomicBool,
    /// Told (resource id, why) when the connection to the TaskManager breaks: the JobManager
    /// forgets the registration, so the TaskManager registers again and a new connection is
    /// made.
    on_broken: Option<Box<dyn Fn(&str, &str) + Send + Sync>>,
}

impl RemoteTaskExecutor {
    pub(super) fn new(
        resource_id: String,
        client: TaskManagerRpcClient,
        runtime: tokio::runtime::Handle,
        blobs: Arc<BlobServer>,
        attempts: Arc<AttemptTable>,
        timeout: Duration,
        total_slots: u32,
    ) -> Self {
        RemoteTaskExecutor {
            resource_id,
            client,
            runtime,
            blobs,
            attempts,
            timeout,
            slots: Mutex::new((total_slots, total_slots)),
            lost: std::sync::atomic::AtomicBool::new(false),
            on_broken: None,
        }
    }

    /// Calls `on_broken` when the connection to the TaskManager breaks.
    pub(super) fn with_on_broken(
        mut self,
        on_broken: Box<dyn Fn(&str, &str) + Send + Sync>,
    ) -> Self {
        self.on_broken = Some(on_broken);
        self
    }

    /// A call failed: if the connection itself is gone (not a deadline or a refusal), the
    /// TaskManager is lost to this JobManager until it registers again.
    fn failed(&self, error: &tarpc::client::RpcError) {
        use tarpc::client::RpcError;
        let broken = matches!(
            error,
            RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_)
        );
        if broken
            && !self.lost.swap(true, std::sync::atomic::Ordering::Relaxed)
            && let Some(on_broken) = &self.on_broken
        {
            on_broken(
                &self.resource_id,
                &format!("its RPC connection broke: {error}"),
            );
        }
    }

    pub(super) fn mark_lost(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a call to the TaskManager from a job master's thread; `None` if it failed (the
    /// TaskManager is then lost to the heartbeat, and its tasks' ends tell the job master).
    fn call<'a, T, F>(
        &'a self,
        what: &str,
        call: impl FnOnce(&'a TaskManagerRpcClient) -> F,
    ) -> Option<T>
    where
        F: Future<Output = Result<T, tarpc::client::RpcError>> + 'a,
    {
        if self.is_lost() {
            return None;
        }
        match self.runtime.block_on(call(&self.client)) {
            Ok(value) => Some(value),
            Err(e) => {
                self.failed(&e);
                eprintln!(
                    "warning: TaskManager `{}` did not answer {what}: {e}",
                    self.resource_id
                );
                None
            }
        }
    }

    fn context(&self) -> tarpc::context::Context {
        rpc::deadline(self.timeout)
    }

    /// What the TaskManager uses now; `None` if it did not answer.
    pub fn resource_usage(&self) -> Option<crate::cluster::rest::ResourceUsage> {
        let context = self.context();
        self.call("resource_usage", |c| c.resource_usage(context))
    }
}

/// Slots held on a TaskManager; given back when dropped, before a restart asks for slots
/// again (from a job master's thread it waits for the TaskManager's answer).
struct RemoteAllocation {
    te: Arc<RemoteTaskExecutor>,
    id: u64,
    slots: u32,
}

impl SlotLease for RemoteAllocation {}

impl Drop for RemoteAllocation {
    fn drop(&mut self) {
        let te = &self.te;
        let (client, id, context) = (te.client.clone(), self.id, te.context());
        let release = async move {
            let _ = client.release(context, id).await;
        };
        te.attempts.deactivate(self.id);
        if te.is_lost() {
            // Its slots went with it.
        } else if tokio::runtime::Handle::try_current().is_ok() {
            te.runtime.spawn(release);
        } else {
            te.runtime.block_on(release);
        }
        let mut known = lock(&te.slots);
        known.1 = (known.1 + self.slots).min(known.0);
    }
}

/// A registered TaskManager as the ResourceManager places slots on it.
pub(super) struct RemoteSlots {
    pub(super) te: Arc<RemoteTaskExecutor>,
    pub(super) data_address: String,
}

impl SlotProvider for RemoteSlots {
    /// As of the last heartbeat or release, which may lag a release the TaskManager saw: the
    /// allocation itself is the answer, so a TaskManager that reports none free still gets
    /// asked for what it has in all.
    fn free_slots(&self) -> u32 {
        let (total, free) = *lock(&self.te.slots);
        if free == 0 { total } else { free }
    }
    fn total_slots(&self) -> u32 {
        lock(&self.te.slots).0
    }
    fn allocate(
        &self,
        slots: u32,
        buffers: usize,
    ) -> Result<(Box<dyn SlotLease>, Arc<dyn TaskExecutorGateway>), SlotError> {
        let te = &self.te;
        let context = te.context();
        match te.call("allocate", |c| c.allocate(context, slots, buffers)) {
            Some(Ok(id)) => {
                let mut known = lock(&te.slots);
                known.1 = known.1.saturating_sub(slots);
                let lease = RemoteAllocation {
                    te: te.clone(),
                    id,
                    slots,
                };
                let gateway = AllocatedTaskExecutor {
                    te: te.clone(),
                    data_address: self.data_address.clone(),
                    allocation: id,
                };
                Ok((Box::new(lease), Arc::new(gateway)))
            }
            Some(Err(e)) => Err(e),
            None => Err(SlotError::NotEnoughSlots {
                needed: slots,
                free: 0,
                total: lock(&te.slots).0,
            }),
        }
    }
}

/// A remote TaskExecutor as a job master deploys into one slot allocation on it: every call
/// that opens a job or deploys a task names the allocation.
struct AllocatedTaskExecutor {
    te: Arc<RemoteTaskExecutor>,
    data_address: String,
    allocation: u64,
}

impl TaskExecutorGateway for AllocatedTaskExecutor {
    fn put_component(&self, name: &str, bytes: &[u8]) -> Result<BlobKey, LoadError> {
        Ok(self.te.blobs.put(name, bytes))
    }

    fn register_job(
        &self,
        job: u64,
        master: Arc<dyn JobMasterConnection>,
        registration: &RegisteredJob,
    ) {
        let te = &self.te;
        te.attempts.add(job, master);
        te.attempts.activate(self.allocation, job, &te.resource_id);
        let (context, allocation) = (te.context(), self.allocation);
        if let Some(Err(refusal)) = te.call("register_job", |c| {
            c.register_job(context, job, allocation, registration.clone())
        }) {
            // Its tasks' deployments are refused in turn, which fails the attempt.
            eprintln!(
                "warning: TaskManager `{}` refused job attempt {job}: {refusal}",
                te.resource_id
            );
        }
    }

    fn submit_task(&self, tdd: TaskDeploymentDescriptor) -> Result<(), SubmitError> {
        let te = &self.te;
        let task = tdd.name.clone();
        let (job, index) = (tdd.job, tdd.index);
        if te.is_lost() {
            return Err(SubmitError::Remote {
                task,
                task_manager: te.resource_id.clone(),
                error: "it was declared lost".into(),
            });
        }
        // Counted as running before it can end, so its end is never missed.
        te.attempts
            .task_started(job, index, task.clone(), &te.resource_id);
        // Deployment may compile a component: a longer deadline than a plain call.
        let context = rpc::deadline(te.timeout.max(Duration::from_secs(120)));
        let result = te
            .runtime
            .block_on(te.client.submit_task(context, self.allocation, tdd));
        if !matches!(result, Ok(Ok(()))) {
            te.attempts.task_ended(job, index);
        }
        if let Err(e) = &result {
            te.failed(e);
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(SubmitError::Remote {
                task,
                task_manager: te.resource_id.clone(),
                error,
            }),
            Err(e) => Err(SubmitError::Remote {
                task,
                task_manager: te.resource_id.clone(),
                error: format!("no answer: {e}"),
            }),
        }
    }

    fn trigger_checkpoint(&self, job: u64, tasks: &[usize], barrier: &Barrier) {
        if tasks.is_empty() {
            return;
        }
        let context = self.te.context();
        let (tasks, id, location) = (tasks.to_vec(), barrier.id, barrier.location.to_path_buf());
        self.te.call("trigger_checkpoint", |c| {
            c.trigger_checkpoint(context, job, tasks, id, location)
        });
    }

    fn notify_checkpoint_complete(&self, job: u64, id: u64, last: bool) {
        let context = self.te.context();
        self.te.call("notify_checkpoint_complete", |c| {
            c.notify_checkpoint_complete(context, job, id, last)
        });
    }

    fn task_metrics(&self, job: u64) -> Vec<(usize, String, TaskMetricsSnapshot)> {
        let context = self.te.context();
        self.te
            .call("task_metrics", |c| c.task_metrics(context, job))
            .unwrap_or_default()
    }

    fn drain_sources(&self, job: u64) {
        let context = self.te.context();
        self.te
            .call("drain_sources", |c| c.drain_sources(context, job));
    }

    fn cancel_job(&self, job: u64) {
        let context = self.te.context();
        self.te.call("cancel_job", |c| c.cancel_job(context, job));
    }

    fn unregister_job(&self, job: u64) {
        let context = self.te.context();
        self.te
            .call("unregister_job", |c| c.unregister_job(context, job));
        self.te.attempts.remove(job);
    }

    fn network_stats(&self) -> BufferPoolStats {
        let context = self.te.context();
        self.te
            .call("network_stats", |c| c.network_stats(context))
            .unwrap_or_default()
    }

    fn data_address(&self) -> Result<String, String> {
        Ok(self.data_address.clone())
    }

    fn resource_id(&self) -> String {
        self.te.resource_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Heard(Mutex<Vec<String>>);

    impl JobMasterConnection for Heard {
        fn checkpoint_event(&self, _: crate::checkpoint::CoordinatorEvent) {}
        fn task_ended(&self, index: usize, result: Result<(), TaskFailure>) {
            lock(&self.0).push(format!("{index}: {}", result.is_ok()));
        }
    }

    #[test]
    fn a_lost_task_managers_allocations_stop_being_heard_and_its_tasks_fail_once() {
        let table = AttemptTable::default();
        let master = Arc::new(Heard(Mutex::new(Vec::new())));
        table.add(7, master.clone());
        table.add(7, master.clone());
        table.activate(100, 7, "tm-1");
        table.activate(200, 7, "tm-2");
        table.task_started(7, 0, "a (1/2)".into(), "tm-1");
        table.task_started(7, 1, "a (2/2)".into(), "tm-2");
        assert!(table.is_active(7, 100) && table.is_active(7, 200));
        assert!(!table.is_active(8, 100), "another attempt's allocation");

        table.fail_task_manager("tm-2", "no heartbeat");
        assert!(table.is_active(7, 100));
        assert!(
            !table.is_active(7, 200),
            "the lost one's allocation is fenced off"
        );
        assert_eq!(*lock(&master.0), vec!["1: false".to_string()]);
        assert!(!table.task_ended(7, 1), "its task's own end comes too late");
        assert!(table.task_ended(7, 0));

        table.deactivate(100);
        assert!(!table.is_active(7, 100), "released");
        table.activate(300, 7, "tm-3");
        table.remove(7);
        assert!(
            table.is_active(7, 300),
            "one registration of the attempt is left"
        );
        table.remove(7);
        assert!(!table.is_active(7, 300), "gone with the attempt");
        assert!(table.get(7).is_none());
    }

    #[test]
    fn a_broken_connection_reports_the_task_manager_lost_once_and_fails_later_calls_at_once() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (client_side, server_side) = tarpc::transport::channel::unbounded();
        let client = {
            let _entered = runtime.enter();
            TaskManagerRpcClient::new(tarpc::client::Config::default(), client_side).spawn()
        };
        // The TaskManager's end goes away.
        drop(server_side);
        let reports = Arc::new(Mutex::new(Vec::new()));
        let heard = reports.clone();
        let te = Arc::new(
            RemoteTaskExecutor::new(
                "tm-9".into(),
                client,
                runtime.handle().clone(),
                Arc::new(BlobServer::default()),
                Arc::new(AttemptTable::default()),
                Duration::from_secs(5),
                2,
            )
            .with_on_broken(Box::new(move |id, why| {
                heard.lock().unwrap().push(format!("{id}: {why}"));
            })),
        );
        let te = AllocatedTaskExecutor {
            te,
            data_address: String::new(),
            allocation: 1,
        };
        te.cancel_job(1);
        let started = std::time::Instant::now();
        te.cancel_job(2);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lost one is not waited for"
        );
        let reports = reports.lock().unwrap().clone();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(
            reports[0].starts_with("tm-9: its RPC connection broke"),
            "{reports:?}"
        );
    }
}
