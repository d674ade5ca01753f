//! `weir jobmanager` (Flink's StandaloneSessionClusterEntrypoint): one process holding the
//! ResourceManager with its table of TaskManagers, the RPC endpoint they register and send
//! heartbeats at, the blob server, the dispatcher and job masters (the mini-cluster's, with
//! slots from the registered TaskManagers), and the REST endpoint.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;

use super::config::{ClusterConfig, ConfigError};
use super::job_store::LeaderStore;
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
    #[error(
        "`high-availability.type = \"etcd\"`, but this weir was built without high availability \
         (cargo feature `ha`)"
    )]
    NoHighAvailability,
    #[error("high availability: {0}")]
    HighAvailability(String),
    #[error("cannot open {what} at {address}: {source}")]
    Listen {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
}

/// What the JobManager's endpoints share during one leadership term (a JobManager without
/// high availability has one term, for as long as it runs).
pub(crate) struct JobManagerState {
    pub(crate) registry: TaskManagerRegistry,
    pub(crate) secret: ClusterSecret,
    pub(crate) config: ClusterConfig,
    pub(crate) blobs: Arc<BlobServer>,
    pub(crate) attempts: Arc<AttemptTable>,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Where submitted jobs' components are kept.
    pub(crate) job_store: PathBuf,
    /// With high availability: the running-job registry and checkpoint records in etcd,
    /// written only while this term lasts.
    pub(crate) leader_store: Option<Arc<dyn LeaderStore>>,
    /// The term's fencing token (0 without high availability): TaskManagers refuse calls
    /// under another than their leader's.
    pub(crate) token: u64,
    /// The term ended: this JobManager no longer leads.
    pub(crate) ended: AtomicBool,
    /// One submission at a time: a tenant's quota is checked against the jobs that run, so
    /// two uploads must not both pass it before either runs; and the term ends between
    /// submissions, never during one.
    pub(crate) submitting: Mutex<()>,
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
    _store_lock: Option<super::job_store::StoreLock>,
}

/// What every term of a JobManager is built from.
pub(crate) struct TermSettings {
    pub(crate) config: ClusterConfig,
    pub(crate) secret: ClusterSecret,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) tenants_file: Option<PathBuf>,
    pub(crate) metrics_token: Option<super::config::MetricsToken>,
}

/// The services of one leadership term: what the RPC and REST endpoints serve while it lasts.
pub(crate) struct Term {
    pub(crate) state: Arc<JobManagerState>,
    pub(crate) cluster: Arc<MiniCluster>,
    router: axum::Router,
}

impl Term {
    /// Starts the term's ResourceManager, dispatcher and REST routes over `job_store`.
    pub(crate) fn start(
        settings: &TermSettings,
        job_store: PathBuf,
        tenants: Option<super::tenants::TenantDirectory>,
        leader_store: Option<Arc<dyn LeaderStore>>,
        token: u64,
    ) -> Arc<Term> {
        let config = settings.config.clone();
        let state = Arc::new(JobManagerState {
            registry: TaskManagerRegistry::new(config.heartbeat.interval, config.heartbeat.timeout),
            secret: settings.secret.clone(),
            config,
            blobs: Arc::new(BlobServer::default()),
            attempts: Arc::new(AttemptTable::default()),
            runtime: settings.runtime.clone(),
            job_store,
            leader_store,
            token,
            ended: AtomicBool::new(false),
            submitting: Mutex::new(()),
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
        settings.runtime.spawn(watch_heartbeats(state.clone()));
        let view = Arc::new(super::view::StandaloneView {
            state: state.clone(),
            tenants,
            metrics_token: settings.metrics_token,
        });
        let router = crate::cluster::rest::router(cluster.clone(), view);
        Arc::new(Term {
            state,
            cluster,
            router,
        })
    }

    /// Ends the term: its jobs are cancelled without leaving the job store (the next leader
    /// recovers them), and its TaskManagers are let go, so they look for the new leader.
    #[cfg_attr(not(feature = "ha"), allow(dead_code))]
    pub(crate) fn suspend(&self, why: &str) {
        let _no_submission = self
            .state
            .submitting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.state.ended.store(true, Ordering::SeqCst);
        for job in self.cluster.jobs() {
            if matches!(job.status, crate::cluster::JobStatus::Running) {
                eprintln!("Suspending job {}: {why}", job.id);
                self.cluster.cancel_job(&job.id);
            }
        }
        for (id, why) in self.state.registry.remove_all(why) {
            self.state.attempts.fail_task_manager(&id, &why);
        }
    }
}

/// The term the endpoints serve now, if this JobManager leads; and what to say otherwise.
#[derive(Default)]
pub(crate) struct Terms {
    current: Mutex<Option<Arc<Term>>>,
    /// What this JobManager is, for `GET /leadership` and for the REST calls a standby
    /// refuses.
    status: Mutex<LeadershipStatus>,
}

/// Where a JobManager stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct LeadershipStatus {
    /// `leader`, `standby`, or `waiting` (for etcd).
    pub(crate) role: String,
    /// The leader's REST endpoint, when one is known.
    pub(crate) leader_rest: Option<String>,
    /// The term's fencing token, when this JobManager leads.
    pub(crate) token: Option<u64>,
    /// Why it waits, when it does.
    pub(crate) reason: Option<String>,
}

impl Terms {
    pub(crate) fn current(&self) -> Option<Arc<Term>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn begin(&self, term: Arc<Term>, rest: String) {
        self.set_status(LeadershipStatus {
            role: "leader".into(),
            leader_rest: Some(rest),
            token: Some(term.state.token),
            reason: None,
        });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(term);
    }

    /// Ends the current term, if any; the term that ended.
    #[cfg_attr(not(feature = "ha"), allow(dead_code))]
    pub(crate) fn end(&self) -> Option<Arc<Term>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn set_status(&self, status: LeadershipStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    pub(crate) fn status(&self) -> LeadershipStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(crate) fn open_tenants(
    file: Option<&PathBuf>,
) -> Result<Option<super::tenants::TenantDirectory>, JobManagerError> {
    Ok(match file {
        Some(file) => Some(super::tenants::TenantDirectory::open(file)?),
        None => None,
    })
}

impl JobManager {
    /// Starts the endpoints `config` names (port 0: any free port). Without high availability
    /// it leads at once, over its job store on disk; with it, it stands for election and
    /// leads when etcd says so.
    pub fn start(config: ClusterConfig) -> Result<Self, JobManagerError> {
        let secret = config.require_secret()?;
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
        let tenants = open_tenants(config.tenants_file.as_ref())?;
        match &config.tenants_file {
            Some(file) => eprintln!(
                "Tenants from `{}`: every REST call needs a token",
                file.display()
            ),
            None => eprintln!(
                "warning: no `jobmanager.tenants-file`: the REST endpoint serves anyone who \
                 reaches it"
            ),
        }
        let settings = TermSettings {
            secret,
            runtime: runtime.handle().clone(),
            tenants_file: config.tenants_file.clone(),
            metrics_token: config.metrics_token,
            config,
        };
        let terms = Arc::new(Terms::default());
        runtime.spawn(serve_rpc(rpc_listener, terms.clone()));
        runtime.spawn(serve_rest(rest_listener, terms.clone()));
        let store_lock = match settings.config.high_availability.clone() {
            None => {
                let job_store = settings.config.job_store.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("weir-job-store-{}", rpc_address.port()))
                });
                std::fs::create_dir_all(&job_store).map_err(|source| JobManagerError::Listen {
                    what: "its job store",
                    address: job_store.display().to_string(),
                    source,
                })?;
                let store_lock = super::job_store::lock(&job_store)?;
                let term = Term::start(&settings, job_store.clone(), tenants, None, 0);
                let tenants = open_tenants(settings.tenants_file.as_ref())?;
                super::job_store::recover(&job_store, &term.cluster, tenants.as_ref());
                terms.begin(term, rest_address.to_string());
                Some(store_lock)
            }
            Some(ha) => {
                start_high_availability(&runtime, ha, settings, terms, rpc_address, rest_address)?;
                None
            }
        };
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

#[cfg(not(feature = "ha"))]
fn start_high_availability(
    _: &tokio::runtime::Runtime,
    _: super::config::HighAvailabilityConfig,
    _: TermSettings,
    _: Arc<Terms>,
    _: SocketAddr,
    _: SocketAddr,
) -> Result<(), JobManagerError> {
    Err(JobManagerError::NoHighAvailability)
}

#[cfg(feature = "ha")]
fn start_high_availability(
    runtime: &tokio::runtime::Runtime,
    ha: super::config::HighAvailabilityConfig,
    settings: TermSettings,
    terms: Arc<Terms>,
    rpc_address: SocketAddr,
    rest_address: SocketAddr,
) -> Result<(), JobManagerError> {
    let job_store = ha.storage_dir.join(&ha.cluster_id).join("jobs");
    std::fs::create_dir_all(&job_store).map_err(|source| JobManagerError::Listen {
        what: "its job store in the high availability storage directory",
        address: job_store.display().to_string(),
        source,
    })?;
    if let Some((_, file)) = &ha.etcd_user {
        std::fs::metadata(file).map_err(|e| {
            JobManagerError::HighAvailability(format!(
                "cannot read the etcd password from `{}`: {e}",
                file.display()
            ))
        })?;
    }
    let addresses = super::ha::LeaderAddresses {
        rpc: rpc_address.to_string(),
        rest: rest_address.to_string(),
    };
    runtime.spawn(async move {
        let told = AtomicBool::new(false);
        let etcd = super::ha::Etcd::connect_waiting(&ha, |e| {
            if !told.swap(true, Ordering::SeqCst) {
                eprintln!("Waiting for etcd: {e}");
            }
            terms.set_status(LeadershipStatus {
                role: "waiting".into(),
                leader_rest: None,
                token: None,
                reason: Some(e.to_string()),
            });
        })
        .await;
        super::election::lead(etcd, ha, settings, terms, job_store, addresses).await;
    });
    Ok(())
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
        let leading = !state.ended.load(Ordering::SeqCst)
            && state.leader_store.as_ref().is_none_or(|l| l.is_leader());
        if !leading || registration.leader_token != state.token {
            return Err(RegistrationRefused::NotLeader {
                asked: registration.leader_token,
                mine: state.token,
                leading,
            });
        }
        state.registry.check(&registration)?;
        let timeout = state.config.heartbeat.timeout;
        let unreachable = |reason: String| RegistrationRefused::Unreachable {
            rpc_address: registration.rpc_address.clone(),
            reason,
        };
        let mut stream = rpc::connect(&registration.rpc_address, &state.secret, timeout)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        rpc::send_fence(&mut stream, state.token)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
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

/// Serves TaskManagers' RPC; a connection belongs to the term that leads when it is made (a
/// standby closes it at once, and the TaskManager asks etcd for the leader again).
async fn serve_rpc(listener: TcpListener, terms: Arc<Terms>) {
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
        let Some(term) = terms.current() else {
            continue;
        };
        let state = term.state.clone();
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

/// Declares TaskManagers lost that have not sent a heartbeat for the timeout, while the term
/// lasts.
async fn watch_heartbeats(state: Arc<JobManagerState>) {
    let mut tick = tokio::time::interval(state.config.heartbeat.interval / 2);
    while !state.ended.load(Ordering::SeqCst) {
        tick.tick().await;
        for (id, why) in state.registry.expire() {
            state.attempts.fail_task_manager(&id, &why);
        }
    }
}

/// Serves REST: the leader's routes while this JobManager leads; else `GET /leadership` and,
/// for anything else, 503 naming the leader.
async fn serve_rest(listener: TcpListener, terms: Arc<Terms>) {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let leadership = {
        let terms = terms.clone();
        move || {
            let status = terms.status();
            async move { axum::Json(status) }
        }
    };
    let app = axum::Router::new()
        .route("/leadership", axum::routing::get(leadership))
        .fallback(move |request: axum::extract::Request| {
            let terms = terms.clone();
            async move {
                match terms.current() {
                    Some(term) => term.router.clone().oneshot(request).await.into_response(),
                    None => {
                        let status = terms.status();
                        let message = match (&status.leader_rest, &status.reason) {
                            (_, Some(reason)) => {
                                format!("no JobManager leads the cluster now: {reason}")
                            }
                            (Some(rest), None) => format!(
                                "this JobManager is standing by; the leader's REST endpoint is \
                                 at {rest}"
                            ),
                            (None, None) => {
                                "this JobManager is standing by; no leader is elected yet".into()
                            }
                        };
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"errors": [message]})),
                        )
                            .into_response()
                    }
                }
            }
        });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the REST endpoint stopped: {e}");
    }
}
