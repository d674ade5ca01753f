//! `weir taskmanager` (Flink's TaskManagerRunner): starts its services in the order of a
//! TaskManager's start-up (RPC service, heartbeat services, blob cache, network environment with
//! its data port, slot and job tables, local state directory), registers at the JobManager's
//! ResourceManager, and keeps its registration alive with heartbeats, registering again when
//! the JobManager forgets it or the connection breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::config::{ClusterConfig, ConfigError, MetricsToken};
use super::rpc::{
    self, ConnectError, Hardware, JobManagerRpcClient, RegistrationRefused, SlotReport,
    TaskManagerRegistration,
};
use super::tm_service::{self, JobManagerLink};
use crate::network::{ClusterSecret, NetworkConfig};
use crate::runtime::task_executor::{TaskExecutor, TaskExecutorConfig, TaskExecutorServices};
use crate::wasm::{RuntimeConfig, WasmRuntime};

/// How to start a TaskManager.
#[derive(Debug, Clone)]
pub struct TaskManagerOptions {
    pub config: ClusterConfig,
    /// The JobManager's RPC address (default: the configuration's).
    pub jobmanager: Option<String>,
    /// Slots (default: the configuration's).
    pub slots: Option<u32>,
    /// The resource id (default: the data address and a random suffix).
    pub resource_id: Option<String>,
    /// Where compiled components are cached (the blob cache).
    pub cache_dir: Option<PathBuf>,
    /// The tenant it is reserved for (default: the configuration's).
    pub tenant: Option<String>,
    /// The CPUs it runs on (default: the configuration's).
    pub cpus: Option<Vec<usize>>,
    /// Overrides `taskmanager.log-dir`.
    pub log_dir: Option<PathBuf>,
}

/// Why a TaskManager stopped.
#[derive(Debug, thiserror::Error)]
pub enum TaskManagerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the TaskManager's {service}: {reason}")]
    Start {
        service: &'static str,
        reason: String,
    },
    #[error("the ResourceManager refused the registration: {0}")]
    Refused(RegistrationRefused),
    #[error(
        "the JobManager at {address} does not share this TaskManager's cluster secret: {source}"
    )]
    Secret {
        address: String,
        source: ConnectError,
    },
    #[error("could not register at the JobManager at {address} within {timeout:?}: {last}")]
    RegistrationTimeout {
        address: String,
        timeout: Duration,
        last: String,
    },
}

/// A started TaskManager, before it registers.
pub struct TaskManager {
    resource_id: String,
    secret: ClusterSecret,
    config: ClusterConfig,
    task_executor: Arc<TaskExecutor>,
    data_address: String,
    rpc_address: String,
    metrics_address: String,
    /// Random per process (see `TaskManagerRegistration::instance`).
    instance: u64,
    /// How it finds the JobManager to register at.
    retrieval: LeaderRetrieval,
    /// The fencing token of the leader it follows now: its RPC service refuses calls of any
    /// other.
    leader_token: Arc<AtomicU64>,
    link: JobManagerLink,
    runtime: tokio::runtime::Runtime,
    _state_dir: StateDir,
}

/// The TaskManager's local state directory, removed when it stops.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_failed(service: &'static str) -> impl Fn(String) -> TaskManagerError {
    move |reason| TaskManagerError::Start { service, reason }
}

impl TaskManager {
    /// Starts the services; logs each as it comes up.
    pub fn start(options: TaskManagerOptions) -> Result<Self, TaskManagerError> {
        let mut config = options.config;
        let secret = config.require_secret()?;
        if options.tenant.is_some() {
            config.taskmanager.tenant = options.tenant;
        }
        if options.cpus.is_some() {
            config.taskmanager.cpus = options.cpus;
        }
        if options.log_dir.is_some() {
            config.taskmanager.log_dir = options.log_dir;
        }
        // Before any thread starts: every thread the process makes inherits the set.
        if let Some(cpus) = &config.taskmanager.cpus {
            pin_to(cpus).map_err(start_failed("CPU affinity"))?;
            eprintln!("Running on CPUs {cpus:?}");
        }
        if let Some(tenant) = &config.taskmanager.tenant {
            eprintln!("Reserved for tenant `{tenant}`");
        }
        eprintln!("Starting RPC service");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-taskmanager-rpc")
            .enable_all()
            .build()
            .map_err(|e| start_failed("RPC service")(e.to_string()))?;
        eprintln!(
            "Starting heartbeat services (every {:?}, timeout {:?})",
            config.heartbeat.interval, config.heartbeat.timeout
        );
        eprintln!("Starting blob cache");
        let wasm = WasmRuntime::new(RuntimeConfig {
            cache_dir: options.cache_dir,
            ..RuntimeConfig::default()
        })
        .map_err(|e| start_failed("blob cache")(e.to_string()))?;
        eprintln!("Starting network environment");
        let tm = &config.taskmanager;
        let te_config = TaskExecutorConfig {
            slots: options.slots.unwrap_or(tm.slots),
            network_buffers: tm.network_buffers,
            network: NetworkConfig {
                bind: format!("{}:{}", tm.bind_address, tm.data_port),
                secret: secret.clone(),
                ..NetworkConfig::default()
            },
            ..TaskExecutorConfig::default()
        };
        if let Some(dir) = &tm.log_dir {
            eprintln!("Guests log under {}", dir.display());
        }
        let task_executor = Arc::new(TaskExecutor::with_services(
            te_config,
            Arc::new(wasm),
            TaskExecutorServices {
                guest_log_dir: tm.log_dir.clone(),
                ..TaskExecutorServices::default()
            },
        ));
        let data_bound = task_executor
            .network_environment()
            .data_address()
            .map_err(start_failed("network environment"))?;
        let retrieval = LeaderRetrieval::new(options.jobmanager, &config, &runtime)?;
        // Where the route to the JobManager goes (for a wildcard bind): with high availability
        // the JobManagers are not known yet, but etcd is.
        let jobmanager = retrieval.route_probe();
        let advertised = |bound: &str| {
            advertised_address(tm.host.as_deref(), bound, &jobmanager)
                .map_err(start_failed("network environment"))
        };
        let data_address = advertised(&data_bound)?;
        eprintln!("Data port listening on {data_bound}, reached at {data_address}");
        eprintln!(
            "Starting slot table ({} slots) and job table",
            task_executor.config().slots
        );
        let resource_id = options.resource_id.unwrap_or_else(|| {
            let mut suffix = [0u8; 3];
            let _ = getrandom::fill(&mut suffix);
            let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
            format!("{data_address}-{hex}")
        });
        let state_dir = std::env::temp_dir().join(format!(
            "weir-taskmanager-{}",
            resource_id.replace([':', '/'], "_")
        ));
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| start_failed("local state directory")(e.to_string()))?;
        eprintln!("Local state directory: {}", state_dir.display());
        // The TaskManager's own RPC service, which job masters deploy through.
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(format!(
                "{}:0",
                tm.bind_address
            )))
            .map_err(|e| start_failed("RPC service")(e.to_string()))?;
        let rpc_bound = listener
            .local_addr()
            .map_err(|e| start_failed("RPC service")(e.to_string()))?
            .to_string();
        let rpc_address = advertised(&rpc_bound)?;
        let link = JobManagerLink::default();
        let leader_token = Arc::new(AtomicU64::new(u64::MAX));
        runtime.spawn(tm_service::serve(
            listener,
            task_executor.clone(),
            link.clone(),
            leader_token.clone(),
            secret.clone(),
            config.heartbeat.timeout,
        ));
        eprintln!("RPC service listening on {rpc_address}");
        let metrics_listener = runtime
            .block_on(tokio::net::TcpListener::bind(format!(
                "{}:{}",
                tm.bind_address, tm.metrics_port
            )))
            .map_err(|e| start_failed("metrics endpoint")(e.to_string()))?;
        let metrics_address = advertised(
            &metrics_listener
                .local_addr()
                .map_err(|e| start_failed("metrics endpoint")(e.to_string()))?
                .to_string(),
        )?;
        runtime.spawn(serve_metrics(
            metrics_listener,
            task_executor.clone(),
            resource_id.clone(),
            config.metrics_token,
        ));
        eprintln!("Metrics endpoint listening on http://{metrics_address}/metrics");
        let mut instance = [0u8; 8];
        let _ = getrandom::fill(&mut instance);
        Ok(TaskManager {
            instance: u64::from_le_bytes(instance),
            rpc_address,
            metrics_address,
            link,
            retrieval,
            leader_token,
            resource_id,
            secret,
            task_executor,
            data_address,
            runtime,
            config,
            _state_dir: StateDir(state_dir),
        })
    }

    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    /// Registers and keeps the registration alive until a fatal error.
    pub fn run(self) -> Result<(), TaskManagerError> {
        self.runtime.block_on(self.stay_registered())
    }

    fn registration(&self, leader_token: u64) -> TaskManagerRegistration {
        let config = self.task_executor.config();
        TaskManagerRegistration {
            resource_id: self.resource_id.clone(),
            data_address: self.data_address.clone(),
            slots: config.slots,
            hardware: Hardware {
                cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                network_buffers: config.network_buffers,
                segment_bytes: config.segment_bytes,
            },
            rpc_address: self.rpc_address.clone(),
            metrics_address: Some(self.metrics_address.clone()),
            tenant: self.config.taskmanager.tenant.clone(),
            instance: self.instance,
            leader_token,
        }
    }

    fn slot_report(&self) -> SlotReport {
        SlotReport {
            total: self.task_executor.config().slots,
            free: self.task_executor.free_slots(),
        }
    }

    async fn stay_registered(&self) -> Result<(), TaskManagerError> {
        let heartbeat = self.config.heartbeat;
        let timeout = self.config.taskmanager.registration_timeout;
        let mut since = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = match self.retrieval.leader().await {
                Ok((address, token)) => self.connect_and_register(&address, token).await,
                Err(reason) => Err(Retry(reason)),
            };
            let last = match attempt {
                Ok((client, registration, address, token)) => {
                    eprintln!(
                        "Successful registration at the ResourceManager at {address} under registration {registration}{}",
                        if token > 0 {
                            format!(" (leader with fencing token {token})")
                        } else {
                            String::new()
                        }
                    );
                    *self.link.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
                    let reason = self.send_heartbeats(&client, registration, token).await;
                    *self.link.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.leader_token.store(u64::MAX, Ordering::SeqCst);
                    // The JobManager has declared this TaskManager lost (or cannot hear it):
                    // its tasks run elsewhere now, so none of them may go on here.
                    for job in self.task_executor.running_jobs() {
                        eprintln!(
                            "Cancelling job attempt {job}: its JobManager lost this TaskManager"
                        );
                        self.task_executor.unregister_job(job);
                    }
                    eprintln!("Registration {registration} ended: {reason}; registering again");
                    since = Instant::now();
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Err(Fatal(e)) => return Err(e),
                Err(Retry(reason)) => reason,
            };
            if since.elapsed() >= timeout {
                return Err(TaskManagerError::RegistrationTimeout {
                    address: self.retrieval.describe(),
                    timeout,
                    last,
                });
            }
            eprintln!(
                "Could not register at {}: {last}; retrying in {backoff:?}",
                self.retrieval.describe()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(heartbeat.interval.max(Duration::from_millis(500)));
        }
    }

    /// Registers at the JobManager at `address`, the leader with fencing token `token`.
    async fn connect_and_register(
        &self,
        address: &str,
        token: u64,
    ) -> Result<(JobManagerRpcClient, u64, String, u64), Attempt> {
        let timeout = self.config.heartbeat.timeout;
        let stream = match rpc::connect(address, &self.secret, timeout).await {
            Ok(stream) => stream,
            Err(
                e @ ConnectError::Handshake {
                    source: crate::network::handshake::HandshakeError::BadProof,
                    ..
                },
            ) => {
                return Err(Fatal(TaskManagerError::Secret {
                    address: address.to_string(),
                    source: e,
                }));
            }
            Err(e) => return Err(Retry(e.to_string())),
        };
        let client =
            JobManagerRpcClient::new(tarpc::client::Config::default(), rpc::transport(stream))
                .spawn();
        // Before the JobManager connects back: the calls of the leader being registered at
        // are heard.
        self.leader_token.store(token, Ordering::SeqCst);
        match client
            .register_task_manager(rpc::deadline(timeout), self.registration(token))
            .await
        {
            Ok(Ok(accepted)) => Ok((client, accepted.registration, address.to_string(), token)),
            // A leader that changed meanwhile: ask etcd again.
            Ok(Err(refused @ RegistrationRefused::NotLeader { .. })) => {
                Err(Retry(refused.to_string()))
            }
            Ok(Err(refused)) => Err(Fatal(TaskManagerError::Refused(refused))),
            Err(e) => Err(Retry(format!("registration call failed: {e}"))),
        }
    }

    /// Sends heartbeats until one fails or another leader is elected; why it stopped.
    async fn send_heartbeats(
        &self,
        client: &JobManagerRpcClient,
        registration: u64,
        token: u64,
    ) -> String {
        let heartbeat = self.config.heartbeat;
        let beating = async {
            let mut tick = tokio::time::interval(heartbeat.interval);
            loop {
                tick.tick().await;
                match client
                    .heartbeat(
                        rpc::deadline(heartbeat.timeout),
                        self.resource_id.clone(),
                        registration,
                        self.slot_report(),
                    )
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(unknown)) => return unknown.to_string(),
                    Err(e) => return format!("the JobManager did not answer a heartbeat: {e}"),
                }
            }
        };
        // Beside the heartbeats, so a slow etcd never holds one back: a leader that etcd no
        // longer names is left at once, even while it still answers (it may be hung, or cut
        // off from etcd and about to step down).
        let watching = async {
            let mut tick = tokio::time::interval(heartbeat.interval);
            loop {
                tick.tick().await;
                if let Some(other) = self.retrieval.changed_from(token).await {
                    return format!("another JobManager leads now (fencing token {other})");
                }
            }
        };
        tokio::select! {
            why = beating => why,
            why = watching => why,
        }
    }
}

/// How a TaskManager finds the JobManager to register at (Flink's leader retrieval).
enum LeaderRetrieval {
    /// One JobManager at a fixed address (`--jobmanager` or `jobmanager.rpc`).
    Fixed(String),
    /// Whichever JobManager etcd names the leader.
    #[cfg(feature = "ha")]
    Etcd(Box<super::ha::Etcd>),
}

impl LeaderRetrieval {
    fn new(
        explicit: Option<String>,
        config: &ClusterConfig,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Self, TaskManagerError> {
        match (explicit, &config.high_availability) {
            (Some(address), _) => Ok(LeaderRetrieval::Fixed(address)),
            (None, None) => Ok(LeaderRetrieval::Fixed(config.jobmanager_rpc.to_address())),
            #[cfg(feature = "ha")]
            (None, Some(ha)) => {
                // etcd may come up after the TaskManager: it waits as it would for a
                // JobManager, up to its registration timeout.
                let timeout = config.taskmanager.registration_timeout;
                let told = std::sync::atomic::AtomicBool::new(false);
                let connecting = super::ha::Etcd::connect_waiting(ha, |e| {
                    if !told.swap(true, Ordering::SeqCst) {
                        eprintln!("Waiting for etcd: {e}");
                    }
                });
                runtime
                    .block_on(async { tokio::time::timeout(timeout, connecting).await })
                    .map(|etcd| LeaderRetrieval::Etcd(Box::new(etcd)))
                    .map_err(|_| {
                        start_failed("leader retrieval")(format!(
                            "etcd at {} did not answer within {timeout:?}",
                            ha.etcd_endpoints.join(",")
                        ))
                    })
            }
            #[cfg(not(feature = "ha"))]
            (None, Some(_)) => {
                let _ = runtime;
                Err(start_failed("leader retrieval")(
                    "`high-availability.type = \"etcd\"`, but this weir was built without high \
                     availability (cargo feature `ha`)"
                        .into(),
                ))
            }
        }
    }

    /// An address whose route leads toward the JobManager.
    fn route_probe(&self) -> String {
        match self {
            LeaderRetrieval::Fixed(address) => address.clone(),
            #[cfg(feature = "ha")]
            LeaderRetrieval::Etcd(etcd) => {
                let first = etcd.endpoints().split(',').next().unwrap_or_default();
                let plain = first
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                plain.split('/').next().unwrap_or(plain).to_string()
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            LeaderRetrieval::Fixed(address) => address.clone(),
            #[cfg(feature = "ha")]
            LeaderRetrieval::Etcd(etcd) => format!("the leader etcd at {} names", etcd.endpoints()),
        }
    }

    /// The leader's RPC address and fencing token (0 for a fixed JobManager).
    async fn leader(&self) -> Result<(String, u64), String> {
        match self {
            LeaderRetrieval::Fixed(address) => Ok((address.clone(), 0)),
            #[cfg(feature = "ha")]
            LeaderRetrieval::Etcd(etcd) => match etcd.leader().await {
                Ok(Some(leader)) => Ok((leader.addresses.rpc, leader.token)),
                Ok(None) => Err("no JobManager leads the cluster yet".into()),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// The fencing token of a leader other than the one with `token`, if etcd names one now.
    #[cfg_attr(not(feature = "ha"), allow(unused_variables))]
    async fn changed_from(&self, token: u64) -> Option<u64> {
        match self {
            LeaderRetrieval::Fixed(_) => None,
            #[cfg(feature = "ha")]
            LeaderRetrieval::Etcd(etcd) => match etcd.leader().await {
                Ok(Some(leader)) if leader.token != token => Some(leader.token),
                _ => None,
            },
        }
    }
}

/// How a registration attempt failed.
enum Attempt {
    Fatal(TaskManagerError),
    Retry(String),
}
use Attempt::{Fatal, Retry};

/// Where others reach a service of this TaskManager bound at `bound`: `host` if configured;
/// else, for a wildcard bind (which no peer can connect to), the local address of the
/// interface that routes to the JobManager (no packet is sent: a UDP socket's connect only
/// picks the route); else the bound address itself.
fn advertised_address(host: Option<&str>, bound: &str, jobmanager: &str) -> Result<String, String> {
    let bound: std::net::SocketAddr = bound
        .parse()
        .map_err(|e| format!("bound address `{bound}`: {e}"))?;
    let port = bound.port();
    if let Some(host) = host {
        return Ok(join_host_port(host, port));
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    let wildcard = if bound.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let probe = std::net::UdpSocket::bind(wildcard)
        .and_then(|socket| socket.connect(jobmanager).map(|()| socket))
        .and_then(|socket| socket.local_addr())
        .map_err(|e| {
            format!(
                "cannot tell which local address reaches the JobManager at {jobmanager} ({e}); \
                 set `taskmanager.host`"
            )
        })?;
    Ok(join_host_port(&probe.ip().to_string(), port))
}

/// `host:port`, with an IPv6 host in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Keeps this process (its calling thread, and every thread it starts later) on `cpus`: a
/// TaskManager reserved for a tenant on CPUs of its own gives that tenant's tasks those CPUs
/// whatever other tenants run elsewhere.
fn pin_to(cpus: &[usize]) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it (cpus are
        // checked to be below 1024, its size); sched_setaffinity reads `size_of` bytes of it.
        let result = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if result != 0 {
            return Err(format!(
                "cannot run on CPUs {cpus:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        Err("CPU affinity is only set on Linux".into())
    }
}

/// Serves `GET /metrics` (Prometheus) for this TaskManager: its slots, network buffers and
/// memory, and its tasks' IO metrics and guest memory.
/// With `metrics.token` set, only a scraper presenting it is served (every tenant's tasks are
/// in these metrics).
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    task_executor: Arc<TaskExecutor>,
    resource_id: String,
    token: Option<MetricsToken>,
) {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let (te, id) = (task_executor.clone(), resource_id.clone());
            async move {
                if let Some(token) = token
                    && !token.admits_header(headers.get(axum::http::header::AUTHORIZATION))
                {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                        "this TaskManager's metrics need the scraper's token \
                         (`metrics.token`): send `Authorization: Bearer <token>`\n",
                    )
                        .into_response();
                }
                let text = tokio::task::spawn_blocking(move || task_manager_metrics(&te, &id))
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        crate::metrics::prometheus::CONTENT_TYPE,
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the metrics endpoint stopped: {e}");
    }
}

fn task_manager_metrics(te: &TaskExecutor, resource_id: &str) -> String {
    use crate::metrics::prometheus::{Scrape, labels, resident_memory_bytes, split_task_name};
    let mut scrape = Scrape::default();
    let tm = labels(&[("tm_id", resource_id)]);
    let config = te.config();
    scrape.gauge(
        "taskmanager_task_slots",
        "Task slots.",
        &tm,
        f64::from(config.slots),
    );
    scrape.gauge(
        "taskmanager_task_slots_available",
        "Task slots free now.",
        &tm,
        f64::from(te.free_slots()),
    );
    scrape.gauge(
        "taskmanager_memory_rss_bytes",
        "Resident memory of the TaskManager process.",
        &tm,
        resident_memory_bytes() as f64,
    );
    let network = te.network().stats();
    scrape.network(&tm, network.total, network.in_use);
    for job in te.running_jobs() {
        for (_, name, metrics) in te.task_metrics(job) {
            let (task, subtask) = split_task_name(&name);
            let attempt = job.to_string();
            let task_labels = labels(&[
                ("tm_id", resource_id),
                ("job_attempt", &attempt),
                ("task_name", &task),
                ("subtask_index", &subtask),
            ]);
            scrape.task(&task_labels, &metrics.snapshot());
        }
    }
    scrape.encode()
}

#[cfg(test)]
mod tests {
    use super::advertised_address;

    #[test]
    fn a_configured_host_wins_a_concrete_bind_is_kept_and_a_wildcard_takes_the_route_to_the_jobmanager()
     {
        let jm = "127.0.0.1:6123";
        assert_eq!(
            advertised_address(Some("tm7.example"), "0.0.0.0:4000", jm).unwrap(),
            "tm7.example:4000"
        );
        assert_eq!(
            advertised_address(Some("::1"), "[::]:4000", jm).unwrap(),
            "[::1]:4000"
        );
        assert_eq!(
            advertised_address(None, "127.0.0.1:4000", jm).unwrap(),
            "127.0.0.1:4000"
        );
        assert_eq!(
            advertised_address(None, "0.0.0.0:4000", jm).unwrap(),
            "127.0.0.1:4000"
        );
        let err = advertised_address(None, "0.0.0.0:4000", "no-such-host.invalid:1").unwrap_err();
        assert!(err.contains("set `taskmanager.host`"), "{err}");
    }
}
