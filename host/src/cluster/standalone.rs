//! The standalone session cluster (FLIP-6, seed 004): a JobManager process and TaskManager
//! processes that find each other through the configuration, talk RPC authenticated by the
//! cluster secret, and keep each other alive with heartbeats.

pub mod admission;
pub mod config;
pub mod confine;
#[cfg(feature = "ha")]
mod election;
#[cfg(feature = "ha")]
pub mod ha;
mod job_store;
pub mod jobmanager;
mod registry;
mod remote_task_executor;
pub mod rpc;
pub mod submission;
pub mod taskmanager;
pub mod tenants;
mod tm_service;
mod view;

pub use config::{ClusterConfig, ConfigError};
pub use jobmanager::{JobManager, JobManagerError};
pub use submission::{JobSubmission, SubmissionError};
pub use taskmanager::{TaskManager, TaskManagerError, TaskManagerOptions};
