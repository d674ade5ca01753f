//! `weir jobmanager` (Flink's StandaloneSessionClusterEntrypoint): one process holding the
//! ResourceManager with its table of TaskManagers, the RPC endpoint they register and send
//! heartbeats at, and the REST endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;

use super::config::{ClusterConfig, ConfigError};
use super::registry::TaskManagerRegistry;
use super::rest;
use super::rpc::{
    self, JobManagerRpc, RegistrationAccepted, RegistrationRefused, SlotReport,
    TaskManagerRegistration, UnknownRegistration,
};
use crate::network::ClusterSecret;

/// Why the JobManager could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobManagerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the JobManager's threads: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for {what} on {address}: {source}")]
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
}

/// A running JobManager: its endpoints' addresses, and the runtime serving them.
pub struct JobManager {
    pub rpc_address: SocketAddr,
    pub rest_address: SocketAddr,
    runtime: tokio::runtime::Runtime,
}

impl JobManager {
    /// Starts the endpoints `config` names (port 0: any free port).
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
        let state = Arc::new(JobManagerState {
            registry: TaskManagerRegistry::new(config.heartbeat.interval, config.heartbeat.timeout),
            secret,
            config,
        });
        runtime.spawn(serve_rpc(rpc_listener, state.clone()));
        runtime.spawn(watch_heartbeats(state.clone()));
        runtime.spawn(rest::serve(rest_listener, state));
        Ok(JobManager {
            rpc_address,
            rest_address,
            runtime,
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

impl JobManagerRpc for RpcServer {
    async fn register_task_manager(
        self,
        _: tarpc::context::Context,
        registration: TaskManagerRegistration,
    ) -> Result<RegistrationAccepted, RegistrationRefused> {
        self.state.registry.register(registration, self.connection)
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
            state.registry.connection_closed(connection);
        });
    }
}

/// Declares TaskManagers lost that have not sent a heartbeat for the timeout.
async fn watch_heartbeats(state: Arc<JobManagerState>) {
    let mut tick = tokio::time::interval(state.config.heartbeat.interval / 2);
    loop {
        tick.tick().await;
        state.registry.expire();
    }
}
