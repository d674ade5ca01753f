//! The network stack of a TaskExecutor: bounded buffer pools, result partitions and input gates
//! joined by local channels in one process and by credit-based remote channels between
//! TaskExecutors, and the record writer that routes records to channels. Backpressure is the
//! pools running dry: a writer with no free buffer waits, whether its consumer is slow here
//! or grants no credit over there. Knows nothing of wasm.

mod buffer;
mod gate;
mod remote;
mod writer;

pub use buffer::{Buffer, BufferPoolStats, LocalBufferPool, NetworkBufferPool};
pub use gate::{ChannelEvent, ChannelItem, ChannelSender, GateSenders, InputGate};
pub use remote::handshake;
pub use remote::{
    ClusterSecret, NetworkConfig, NetworkEnvironment, PartitionId, RemoteChannelSpec,
    RemoteGateBuffers,
};
pub use writer::{ChannelSelector, PartitionWriter, RecordWriter, WriteError};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when a job is cancelled; every blocking wait in the network stack checks it.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// The flag itself, for layers that must not name this type (a guest's store checks it to
    /// stop a running call).
    pub fn shared(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// A blocking network operation gave up because the job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job was cancelled")]
pub struct Cancelled;
