//! `weir jobmanager` (Flink's StandaloneSessionClusterEntrypoint): one process holding the
//! ResourceManager with its table of TaskManagers, the RPC endpoint they register and send
//! heartbeats at, the blob server, the dispatcher and job masters (the mini-cluster's, with
//! slots from the registered TaskManagers), and the REST endpoint.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;

use super::config::{ClusterConfig, ConfigError};
use super::registry::TaskManagerRegistry;
use super::remote_task_executor::{AttemptTable, BlobServer, RemoteSlots, RemoteTaskExecutor};
use super::rpc::{
    self, JobManagerRpc, RegistrationAccepted, RegistrationRefused, SlotReport, TaskEnd,
    TaskManagerRegistration, TaskManagerRpcClient, UnknownRegistration,
};
use crate::checkpoint::TaskCheckpointEvent;
use crate::cluster::gateways::{ChannelBuffers, ResourceManagerGateway, SlotOffer};
use crate::cluster::resource_manager::{SlotProvider, place_slots};
use crate::cluster::{MiniCluster, MiniClusterConfig};
use crate::network::ClusterSecret;
use crate::runtime::TaskFailure;
use crate::runtime::task_executor::{SlotError, TaskExecutorConfig};

/// Why the JobManager could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobManagerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the JobManager's threads: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    JobStore(#[from] super::job_store::JobStoreError),
    #[error(transparent)]
    Tenants(#[from] super::tenants::TenantsError),
    #[error("cannot open {what} at {address}: {source}")]
    Listen {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
}

/// What the JobManager's endpoints share.
pub(crate) struct JobManagerState {
    pub(crate) registry: TaskManagerRegistry,
    pub(crate) secret: ClusterSecret,
    pub(crate) config: ClusterConfig,
    pub(crate) blobs: Arc<BlobServer>,
    pub(crate) attempts: Arc<AttemptTable>,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Where submitted jobs' components are kept.
    pub(crate) job_store: PathBuf,
}

/// The ResourceManager over the registered TaskManagers.
struct StandaloneResourceManager {
    state: Arc<JobManagerState>,
    channel_buffers: ChannelBuffers,
}

impl ResourceManagerGateway for StandaloneResourceManager {
    fn channel_buffers(&self) -> ChannelBuffers {
        self.channel_buffers
    }

    fn request_slots(
        &self,
        slots: u32,
        buffers: &dyn Fn(Range<u32>) -> usize,
        tenant: Option<&str>,
    ) -> Result<Vec<SlotOffer>, SlotError> {
        self.request_slots_waiting(slots, buffers, tenant)
    }
}

impl StandaloneResourceManager {
    /// The TaskManagers reserved for `tenant` first, then the shared ones; one reserved for
    /// another tenant never (so a tenant's tasks get its TaskManagers' CPUs to themselves).
    fn request_slots_now(
        &self,
        slots: u32,
        buffers: &dyn Fn(Range<u32>) -> usize,
        tenant: Option<&str>,
    ) -> Result<Vec<SlotOffer>, SlotError> {
        let mut usable: Vec<_> = self
            .state
            .registry
            .task_managers()
            .into_iter()
            .filter(|tm| tm.tenant.is_none() || tm.tenant.as_deref() == tenant)
            .collect();
        // Stable: reserved ones first, each group in the registry's order.
        usable.sort_by_key(|tm| tm.tenant.is_none());
        let providers: Vec<RemoteSlots> = usable
            .into_iter()
            .map(|tm| RemoteSlots {
                te: tm.gateway,
                data_address: tm.data_address,
            })
            .collect();
        let refs: Vec<&dyn SlotProvider> =
            providers.iter().map(|p| p as &dyn SlotProvider).collect();
        place_slots(&refs, slots, buffers)
    }
}

impl StandaloneResourceManager {
    /// Waits for slots up to the slot request timeout: TaskManagers may register, and jobs
    /// give theirs back, meanwhile.
    fn request_slots_waiting(
        &self,
        slots: u32,
        buffers: &dyn Fn(Range<u32>) -> usize,
        tenant: Option<&str>,
    ) -> Result<Vec<SlotOffer>, SlotError> {
        let asked = std::time::Instant::now();
        let timeout = self.state.config.slot_request_timeout;
        let mut told = false;
        loop {
            match self.request_slots_now(slots, buffers, tenant) {
                Ok(offers) => return Ok(offers),
                Err(e) if asked.elapsed() >= timeout => return Err(e),
                Err(e) => {
                    if !told {
                        eprintln!("Waiting up to {timeout:?} for slots: {e}");
                        told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}

/// A running JobManager: its endpoints' addresses, and the runtime serving them.
pub struct JobManager {
    pub rpc_address: SocketAddr,
    pub rest_address: SocketAddr,
    runtime: tokio::runtime::Runtime,
    _store_lock: super::job_store::StoreLock,
}

impl JobManager {
    /// Starts the endpoints `config` names (port 0: any free port).
    pub fn start(config: ClusterConfig) -> Result<Self, JobManagerError> {
        let secret = config.require_secret()?;
        let metrics_token = config.metrics_token;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-jobmanager")
            .enable_all()
            .build()
            .map_err(JobManagerError::Runtime)?;
        let listen = |what, endpoint: &super::config::Endpoint| {
            let address = endpoint.to_address();
            runtime
                .block_on(TcpListener::bind(&address))
                .map_err(|source| JobManagerError::Listen {
                    what,
                    address,
                    source,
                })
        };
        let rpc_listener = listen("TaskManagers (RPC)", &config.jobmanager_rpc)?;
        let rest_listener = listen("REST", &config.rest)?;
        let local = |l: &TcpListener, what| {
            l.local_addr().map_err(|source| JobManagerError::Listen {
                what,
                address: "?".into(),
                source,
            })
        };
        let rpc_address = local(&rpc_listener, "TaskManagers (RPC)")?;
        let rest_address = local(&rest_listener, "REST")?;
        let tenants = match &config.tenants_file {
            Some(file) => {
                let tenants = super::tenants::TenantDirectory::open(file)?;
                eprintln!(
                    "Tenants from `{}`: every REST call needs a token",
                    file.display()
                );
                Some(tenants)
            }
            None => {
                eprintln!(
                    "warning: no `jobmanager.tenants-file`: the REST endpoint serves anyone who \
                     reaches it"
                );
                None
            }
        };
        let job_store = config.job_store.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("weir-job-store-{}", rpc_address.port()))
        });
        std::fs::create_dir_all(&job_store).map_err(|source| JobManagerError::Listen {
            what: "its job store",
            address: job_store.display().to_string(),
            source,
        })?;
        let store_lock = super::job_store::lock(&job_store)?;
        let state = Arc::new(JobManagerState {
            registry: TaskManagerRegistry::new(config.heartbeat.interval, config.heartbeat.timeout),
            secret,
            config,
            blobs: Arc::new(BlobServer::default()),
            attempts: Arc::new(AttemptTable::default()),
            runtime: runtime.handle().clone(),
            job_store: job_store.clone(),
        });
        let defaults = TaskExecutorConfig::default();
        let resource_manager = Arc::new(StandaloneResourceManager {
            state: state.clone(),
            channel_buffers: ChannelBuffers {
                per_channel: defaults.buffers_per_channel,
                exclusive: defaults.network.exclusive_buffers_per_channel,
                floating: defaults.network.floating_buffers_per_gate,
            },
        });
        let cluster = Arc::new(MiniCluster::with_resource_manager(
            MiniClusterConfig::default(),
            resource_manager,
        ));
        runtime.spawn(serve_rpc(rpc_listener, state.clone()));
        runtime.spawn(watch_heartbeats(state.clone()));
        super::job_store::recover(&job_store, &cluster, tenants.as_ref());
        let view = Arc::new(super::view::StandaloneView {
            state,
            tenants,
            submitting: Default::default(),
            metrics_token,
        });
        runtime.spawn(crate::cluster::rest::serve(rest_listener, cluster, view));
        Ok(JobManager {
            rpc_address,
            rest_address,
            runtime,
            _store_lock: store_lock,
        })
    }

    /// Serves until the process ends.
    pub fn run_forever(self) -> ! {
        self.runtime.block_on(futures::future::pending::<()>());
        unreachable!("a pending future never completes")
    }
}

/// The RPC service of one connection: which connection a registration came on is how a closed
/// connection finds the TaskManagers it loses.
#[derive(Clone)]
struct RpcServer {
    state: Arc<JobManagerState>,
    connection: u64,
}

impl RpcServer {
    /// Whether an upcall of attempt `job` from slot allocation `allocation` is to be heard;
    /// one from an allocation given up (its TaskManager was declared lost) is logged and
    /// dropped.
    fn fenced_in(&self, job: u64, allocation: u64, what: &str) -> bool {
        let active = self.state.attempts.is_active(job, allocation);
        if !active {
            eprintln!(
                "Refused {what} of job attempt {job}: slot allocation {allocation} is not active"
            );
        }
        active
    }
}

impl JobManagerRpc for RpcServer {
    async fn register_task_manager(
        self,
        _: tarpc::context::Context,
        registration: TaskManagerRegistration,
    ) -> Result<RegistrationAccepted, RegistrationRefused> {
        let state = &self.state;
        state.registry.check(&registration)?;
        let timeout = state.config.heartbeat.timeout;
        let stream = rpc::connect(&registration.rpc_address, &state.secret, timeout)
            .await
            .map_err(|e| RegistrationRefused::Unreachable {
                rpc_address: registration.rpc_address.clone(),
                reason: e.to_string(),
            })?;
        let client =
            TaskManagerRpcClient::new(tarpc::client::Config::default(), rpc::transport(stream))
                .spawn();
        let gateway = Arc::new(
            RemoteTaskExecutor::new(
                registration.resource_id.clone(),
                client,
                state.runtime.clone(),
                state.blobs.clone(),
                state.attempts.clone(),
                timeout,
                registration.slots,
            )
            .with_on_broken({
                let state = Arc::downgrade(&self.state);
                Box::new(move |id, why| {
                    if let Some(state) = state.upgrade() {
                        eprintln!("TaskManager `{id}` is lost: {why}");
                        state.registry.forget_lost(id);
                        state.attempts.fail_task_manager(id, why);
                    }
                })
            }),
        );
        let (accepted, replaced) =
            state
                .registry
                .register(registration, self.connection, gateway)?;
        if let Some(old) = replaced {
            state
                .attempts
                .fail_task_manager(&old.resource_id, "it registered again");
        }
        Ok(accepted)
    }

    async fn fetch_blob(
        self,
        _: tarpc::context::Context,
        hash: String,
    ) -> Result<(String, Vec<u8>), String> {
        self.state
            .blobs
            .get(&hash)
            .map(|(name, bytes)| (name, bytes.to_vec()))
            .ok_or_else(|| format!("the blob server has no component {hash}"))
    }

    async fn task_checkpoint_event(
        self,
        _: tarpc::context::Context,
        job: u64,
        allocation: u64,
        event: TaskCheckpointEvent,
    ) {
        if !self.fenced_in(job, allocation, "a checkpoint event") {
            return;
        }
        if let Some(master) = self.state.attempts.get(job) {
            master.checkpoint_event(event.into());
        }
    }

    async fn task_ended(
        self,
        _: tarpc::context::Context,
        job: u64,
        allocation: u64,
        index: usize,
        end: TaskEnd,
    ) {
        if !self.fenced_in(job, allocation, "a task's end") {
            return;
        }
        // A task of a TaskManager declared lost has ended already, as far as its job knows.
        if !self.state.attempts.task_ended(job, index) {
            return;
        }
        if let Some(master) = self.state.attempts.get(job) {
            let result = match end {
                TaskEnd::Finished => Ok(()),
                TaskEnd::Cancelled { task } => Err(TaskFailure::Cancelled { task }),
                TaskEnd::Failed { task, reason } => Err(TaskFailure::Remote { task, reason }),
            };
            master.task_ended(index, result);
        }
    }

    async fn heartbeat(
        self,
        _: tarpc::context::Context,
        resource_id: String,
        registration: u64,
        slots: SlotReport,
    ) -> Result<(), UnknownRegistration> {
        self.state
            .registry
            .heartbeat(&resource_id, registration, slots)
    }
}

async fn serve_rpc(listener: TcpListener, state: Arc<JobManagerState>) {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("warning: the RPC endpoint cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let timeout = state.config.heartbeat.timeout;
            if let Err(reason) = rpc::accept(&mut stream, &state.secret, timeout).await {
                eprintln!("warning: refused an RPC connection from {peer}: {reason}");
                return;
            }
            let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            let server = RpcServer {
                state: state.clone(),
                connection,
            };
            BaseChannel::with_defaults(rpc::transport(stream))
                .execute(server.serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                })
                .await;
            for (id, why) in state.registry.connection_closed(connection) {
                state.attempts.fail_task_manager(&id, &why);
            }
        });
    }
}

/// Declares TaskManagers lost that have not sent a heartbeat for the timeout.
async fn watch_heartbeats(state: Arc<JobManagerState>) {
    let mut tick = tokio::time::interval(state.config.heartbeat.interval / 2);
    loop {
        tick.tick().await;
        for (id, why) in state.registry.expire() {
            state.attempts.fail_task_manager(&id, &why);
        }
    }
}
