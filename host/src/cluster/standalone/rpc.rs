//! RPC between the processes of a standalone cluster, on tarpc: typed services whose requests
//! and replies are plain serde data (the same data the gateways pass in one process), framed by
//! length and encoded with the host's codec, over TCP connections that first pass the cluster
//! secret's challenge-response (the data port's handshake, for another purpose). tarpc over
//! tonic: the messages are already serde types (descriptors, blob keys), so no schema and no
//! `protoc` in the build; deadlines travel with every call.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::checkpoint::TaskCheckpointEvent;
use crate::metrics::TaskMetricsSnapshot;
use crate::network::handshake::{self, Purpose};
use crate::network::{BufferPoolStats, ClusterSecret};
use crate::runtime::deployment::TaskDeploymentDescriptor;
use crate::runtime::job_log::RegisteredJob;
use crate::runtime::task_executor::SlotError;

/// Largest RPC message: a component travels in one (the Python SDK's are ~18 MB).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// What a TaskManager tells the ResourceManager when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagerRegistration {
    /// Stable name of the TaskManager (Flink's ResourceID).
    pub resource_id: String,
    /// Where its data port is reached.
    pub data_address: String,
    pub slots: u32,
    pub hardware: Hardware,
    /// Where the TaskManager's own RPC service (deployment, checkpoints, cancel) is reached.
    pub rpc_address: String,
    /// Where its Prometheus metrics are scraped, if it serves them.
    pub metrics_address: Option<String>,
    /// The tenant it is reserved for (`taskmanager.tenant`); `None`: shared.
    pub tenant: Option<String>,
    /// Random per TaskManager process: the same process registering again (after a broken
    /// connection) replaces its registration; another process under the same id is refused.
    pub instance: u64,
    /// The fencing token of the leader the TaskManager found in etcd (0 without high
    /// availability): a JobManager that is not that leader refuses the registration.
    pub leader_token: u64,
}

/// What a TaskManager runs on, for the REST endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu_cores: u32,
    pub network_buffers: usize,
    pub segment_bytes: usize,
}

/// A registration accepted: its id (each registration of a TaskManager gets a new one, so a
/// heartbeat of an older one is told apart) and the heartbeat to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationAccepted {
    pub registration: u64,
    pub heartbeat_interval_ms: u64,
}

/// Why the ResourceManager refused a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegistrationRefused {
    #[error(
        "a TaskManager with resource id `{resource_id}` is already registered (from {data_address})"
    )]
    DuplicateResourceId {
        resource_id: String,
        data_address: String,
    },
    #[error("a TaskManager must offer at least one slot")]
    NoSlots,
    #[error("the JobManager cannot reach the TaskManager's RPC port at {rpc_address}: {reason}")]
    Unreachable { rpc_address: String, reason: String },
    /// The TaskManager follows another leader than this JobManager (or this one stopped
    /// leading): it asks etcd again.
    #[error(
        "this JobManager is not the leader with fencing token {asked} (it is {mine}, leading: {leading})"
    )]
    NotLeader {
        asked: u64,
        mine: u64,
        leading: bool,
    },
}

/// The slots of a TaskManager now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    pub total: u32,
    pub free: u32,
}

/// Why a heartbeat was refused: the registration it names is not (or no longer) known, so the
/// TaskManager must register again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("registration {registration} of `{resource_id}` is not known (it was declared lost)")]
pub struct UnknownRegistration {
    pub resource_id: String,
    pub registration: u64,
}

/// How a task on a TaskManager ended, as its job master hears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskEnd {
    Finished,
    Cancelled { task: String },
    Failed { task: String, reason: String },
}

/// The JobManager's RPC service, as TaskManagers call it.
#[tarpc::service]
pub trait JobManagerRpc {
    /// A component from the blob server, by its hash: (file name, bytes).
    async fn fetch_blob(hash: String) -> Result<(String, Vec<u8>), String>;
    /// A checkpoint event of a task of attempt `job` running in slot allocation `allocation`
    /// (refused unless that allocation is still the attempt's on that TaskManager).
    async fn task_checkpoint_event(job: u64, allocation: u64, event: TaskCheckpointEvent);
    /// Task `index` of attempt `job` in slot allocation `allocation` ended.
    async fn task_ended(job: u64, allocation: u64, index: usize, end: TaskEnd);
    /// Registers a TaskManager at the ResourceManager.
    async fn register_task_manager(
        registration: TaskManagerRegistration,
    ) -> Result<RegistrationAccepted, RegistrationRefused>;
    /// The TaskManager is alive, with its slots.
    async fn heartbeat(
        resource_id: String,
        registration: u64,
        slots: SlotReport,
    ) -> Result<(), UnknownRegistration>;
}

/// A TaskManager's RPC service, as the JobManager calls it (the TaskExecutorGateway across
/// processes).
#[tarpc::service]
pub trait TaskManagerRpc {
    /// Reserves `slots` slots and `buffers` network buffers; the allocation's id (random, so
    /// an id never names two allocations of one TaskManager, nor of two).
    async fn allocate(slots: u32, buffers: usize) -> Result<u64, SlotError>;
    /// Gives an allocation back, cancelling what still runs in it.
    async fn release(allocation: u64);
    /// Opens attempt `job` in slot allocation `allocation` before its tasks come; refused
    /// unless this connection holds that allocation.
    async fn register_job(
        job: u64,
        allocation: u64,
        registration: RegisteredJob,
    ) -> Result<(), String>;
    /// Deploys a task into slot allocation `allocation` (fetching its components from the
    /// blob server first, once); refused unless the allocation is active and holds its job
    /// (Flink's fencing of deployments by allocation id).
    async fn submit_task(allocation: u64, tdd: TaskDeploymentDescriptor) -> Result<(), String>;
    async fn trigger_checkpoint(job: u64, tasks: Vec<usize>, checkpoint: u64, location: PathBuf);
    async fn notify_checkpoint_complete(job: u64, checkpoint: u64, last: bool);
    /// Ends the input of attempt `job`'s sources here (stop with drain).
    async fn drain_sources(job: u64);
    async fn cancel_job(job: u64);
    async fn unregister_job(job: u64);
    async fn task_metrics(job: u64) -> Vec<(usize, String, TaskMetricsSnapshot)>;
    async fn network_stats() -> BufferPoolStats;
    /// What the TaskManager uses now: network buffers and resident memory.
    async fn resource_usage() -> crate::cluster::rest::ResourceUsage;
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A message transport over an authenticated stream: length-delimited frames of the host
/// codec.
pub(crate) fn transport<Out, In>(
    stream: TcpStream,
) -> impl Stream<Item = io::Result<In>> + Sink<Out, Error = io::Error> + Send
where
    Out: Serialize + Send + 'static,
    In: DeserializeOwned + Send + 'static,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_MESSAGE_BYTES)
        .new_codec();
    Framed::new(stream, codec)
        .map(|frame| {
            frame.and_then(|bytes| crate::codec::decode_untrusted::<In>(&bytes).map_err(invalid))
        })
        .with(|message: Out| {
            futures::future::ready(
                crate::codec::try_encode(&message)
                    .map(Bytes::from)
                    .map_err(invalid),
            )
        })
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("{address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("{address} refused the cluster handshake: {source}")]
    Handshake {
        address: String,
        source: handshake::HandshakeError,
    },
}

/// Connects to `address` and authenticates both ways, within `timeout`.
pub(crate) async fn connect(
    address: &str,
    secret: &ClusterSecret,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let timed_out = || ConnectError::Timeout {
        address: address.to_string(),
        timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(address))
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| ConnectError::Connect {
            address: address.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout_at(
        deadline,
        handshake::client(&mut stream, secret, Purpose::Rpc),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|source| ConnectError::Handshake {
        address: address.to_string(),
        source,
    })?;
    Ok(stream)
}

/// Tells the TaskManager at the other end of a new connection the fencing token of the leader
/// that opened it: it refuses every call on the connection unless that is the leader it
/// follows.
pub(crate) async fn send_fence(stream: &mut TcpStream, token: u64) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    stream.write_all(&token.to_be_bytes()).await
}

/// The fencing token [`send_fence`] sent, read within `timeout`.
pub(crate) async fn read_fence(stream: &mut TcpStream, timeout: Duration) -> Result<u64, String> {
    use tokio::io::AsyncReadExt;
    let mut token = [0u8; 8];
    match tokio::time::timeout(timeout, stream.read_exact(&mut token)).await {
        Ok(Ok(_)) => Ok(u64::from_be_bytes(token)),
        Ok(Err(e)) => Err(format!("no fencing token: {e}")),
        Err(_) => Err(format!("no fencing token within {timeout:?}")),
    }
}

/// Authenticates a connection accepted on an RPC port.
pub(crate) async fn accept(
    stream: &mut TcpStream,
    secret: &ClusterSecret,
    timeout: Duration,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(timeout, handshake::server(stream, secret, Purpose::Rpc)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {timeout:?}")),
    }
}

/// A call context whose deadline is `timeout` from now.
pub(crate) fn deadline(timeout: Duration) -> tarpc::context::Context {
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + timeout;
    context
}
