//! Channels between TaskExecutors (Flink's netty shuffle): a producer's buffers for a consumer
//! in another TaskExecutor wait in a subpartition queue until that consumer's TaskExecutor,
//! over the one TCP connection it keeps to the producer's, requests the subpartition and grants
//! credit; the buffers then cross the socket, only against credit, and land in the consumer's
//! gate as a local channel's would. The network threads of a tokio runtime do the I/O; tasks
//! stay on their own threads and only hand buffers across.

mod client;
pub mod handshake;
mod partition;
mod server;
mod wire;

pub use client::{RemoteChannelSpec, RemoteGateBuffers};
pub use partition::PartitionId;
pub(crate) use partition::Subpartition;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use client::ConnectionManager;
use partition::PartitionRegistry;

use super::{ChannelSender, NetworkBufferPool};
use crate::metrics::TaskMetrics;

/// The secret every TaskExecutor of a cluster shares: a data connection is served only to a
/// peer that proves it knows it. Never printed.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    pub fn new(bytes: Vec<u8>) -> Self {
        ClusterSecret(bytes.into())
    }

    /// 32 random bytes: a secret for the TaskExecutors of one process.
    pub fn random() -> Self {
        let mut bytes = vec![0u8; 32];
        // Without an entropy source the process cannot make nonces either; a data connection
        // then fails its handshake with the reason, so a fixed fallback is never served.
        let _ = getrandom::fill(&mut bytes);
        ClusterSecret::new(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Settings of the network between TaskExecutors.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where the data port listens (port 0: any free one).
    pub bind: String,
    /// The address peers connect to, when it is not the bound one (behind a proxy or NAT).
    pub advertised: Option<String>,
    pub secret: ClusterSecret,
    /// Buffers each remote input channel owns (Flink's `buffers-per-channel`).
    pub exclusive_buffers_per_channel: usize,
    /// Buffers a gate lends its remote channels with a backlog (Flink's
    /// `floating-buffers-per-gate`).
    pub floating_buffers_per_gate: usize,
    /// How long a consumer keeps asking for a partition its producer has not registered yet.
    pub partition_request_timeout: Duration,
    /// A peer that sends nothing (not even a heartbeat) for this long is lost.
    pub peer_timeout: Duration,
    /// Threads doing the network I/O.
    pub threads: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bind: "127.0.0.1:0".into(),
            advertised: None,
            secret: ClusterSecret::random(),
            exclusive_buffers_per_channel: 4,
            floating_buffers_per_gate: 16,
            partition_request_timeout: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(30),
            threads: 1,
        }
    }
}

impl NetworkConfig {
    /// How often an idle side of a connection says it is still there.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        (self.peer_timeout / 4).max(Duration::from_millis(10))
    }
}

/// What the server and client halves share.
pub(crate) struct Shared {
    pub(crate) config: NetworkConfig,
    pub(crate) segment_bytes: usize,
    pub(crate) pool: Arc<NetworkBufferPool>,
    pub(crate) registry: PartitionRegistry,
}

struct Started {
    runtime: tokio::runtime::Runtime,
    address: String,
    connections: Arc<ConnectionManager>,
}

/// A TaskExecutor's network between TaskExecutors: the data port, the partitions it serves, the
/// connections to its peers. Started when first needed (a job spread over TaskExecutors), so
/// a lone TaskExecutor never opens a port.
pub struct NetworkEnvironment {
    shared: Arc<Shared>,
    started: OnceLock<Result<Started, String>>,
}

impl NetworkEnvironment {
    pub fn new(config: NetworkConfig, pool: Arc<NetworkBufferPool>) -> Self {
        NetworkEnvironment {
            shared: Arc::new(Shared {
                segment_bytes: pool.segment_size(),
                config,
                pool,
                registry: PartitionRegistry::default(),
            }),
            started: OnceLock::new(),
        }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.shared.config
    }

    fn start(&self) -> Result<&Started, String> {
        self.started
            .get_or_init(|| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.shared.config.threads.max(1))
                    .thread_name("weir-network")
                    .enable_io()
                    .enable_time()
                    .build()
                    .map_err(|e| format!("cannot start the network threads: {e}"))?;
                let bind = &self.shared.config.bind;
                let listener = runtime
                    .block_on(tokio::net::TcpListener::bind(bind))
                    .map_err(|e| format!("cannot open the data port on {bind}: {e}"))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| format!("the data port on {bind} has no address: {e}"))?;
                let address = self
                    .shared
                    .config
                    .advertised
                    .clone()
                    .unwrap_or_else(|| bound.to_string());
                runtime.spawn(server::serve(listener, self.shared.clone()));
                let connections = Arc::new(ConnectionManager::new(
                    self.shared.clone(),
                    runtime.handle().clone(),
                ));
                Ok(Started {
                    runtime,
                    address,
                    connections,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The address peers reach this TaskExecutor's data port at; opens the port on first use.
    pub fn data_address(&self) -> Result<String, String> {
        self.start().map(|s| s.address.clone())
    }

    /// Registers subpartitions `indexes` of a producer's partition for remote consumers to
    /// request; the senders the producer writes them through, in the order of `indexes`.
    pub fn register_partition(
        &self,
        id: PartitionId,
        indexes: &[u32],
        metrics: &Arc<TaskMetrics>,
    ) -> Vec<ChannelSender> {
        self.shared
            .registry
            .register(id, indexes, metrics)
            .into_iter()
            .map(ChannelSender::remote)
            .collect()
    }

    /// Opens a remote input channel whose items go to `sender`.
    pub fn open_remote_channel(
        &self,
        spec: RemoteChannelSpec,
        job: u64,
        sender: ChannelSender,
        gate: Arc<RemoteGateBuffers>,
        metrics: Arc<TaskMetrics>,
    ) -> Result<(), String> {
        let started = self.start()?;
        started
            .connections
            .open_channel(spec, job, sender, gate, metrics);
        Ok(())
    }

    /// Releases everything of `job`: its produced subpartitions (queued buffers go back to
    /// their pools) and its remote input channels (their producers are told).
    pub fn release_job(&self, job: u64) {
        self.shared.registry.release_job(job);
        if let Some(Ok(started)) = self.started.get() {
            started.connections.release_job(job);
        }
    }

    /// Closes every connection this TaskExecutor opened to its peers; the channels on them
    /// fail as on a lost connection (their jobs restart by their strategy). For an operator
    /// taking a TaskExecutor off the network, and for tests of exactly that.
    pub fn close_connections(&self, reason: &str) {
        if let Some(Ok(started)) = self.started.get() {
            started.connections.close_all(reason);
        }
    }

    /// Subpartitions registered and not yet consumed or released.
    pub fn registered_subpartitions(&self) -> usize {
        self.shared.registry.len()
    }
}

impl Drop for NetworkEnvironment {
    fn drop(&mut self) {
        // Channels fail and subpartitions are released first: once the network threads stop,
        // nothing else would tell their tasks.
        self.close_connections("the TaskExecutor shut down");
        self.shared.registry.release_all();
        if let Some(Ok(started)) = self.started.take() {
            started.runtime.shutdown_background();
        }
    }
}
