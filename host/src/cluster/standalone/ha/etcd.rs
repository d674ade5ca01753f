//! The etcd side of high availability: the leader election of the JobManagers (etcd's election
//! API on a lease), leader retrieval, and the small records the leader keeps, each written in a
//! transaction that holds only while its leader key is still there (the fencing of Flink's
//! leader-checked ZooKeeper writes). Keys live under `/weir/<cluster-id>/`:
//!
//! - `leader/…`: the election; the leader's value is its [`LeaderAddresses`], and the creation
//!   revision of its key is its fencing token, which grows with every election;
//! - `jobs/<job id>`: the running-job registry, pointing at each job's directory in the storage
//!   directory;
//! - `checkpoints/<job id>`: the job's latest completed checkpoint.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::super::config::HighAvailabilityConfig;

/// An etcd call that failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd at {endpoints} cannot be reached: {source}")]
    Unreachable {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} did not answer within {timeout:?}")]
    Timeout {
        endpoints: String,
        timeout: Duration,
    },
    /// The write's fence no longer holds: another JobManager leads, or none does.
    #[error("this JobManager is no longer the leader")]
    NotLeader,
    /// The record changed between two reads of one write; trying again settles it.
    #[error("`{key}` changed while it was written")]
    Conflict { key: String },
    #[error("etcd holds a record weir cannot read at `{key}`: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot read the etcd password from `{file}`: {source}")]
    Password {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// Where the leader is reached: what its election value says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAddresses {
    /// The RPC endpoint TaskManagers register at.
    pub rpc: String,
    /// The REST endpoint the CLI and the web UI call.
    pub rest: String,
}

/// The current leader: where it is, and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub addresses: LeaderAddresses,
    pub token: u64,
}

/// A won election: the leader key whose existence the leader's writes are conditioned on.
#[derive(Debug, Clone)]
pub struct LeaderKey {
    pub key: Vec<u8>,
    pub token: u64,
    pub lease: i64,
}

/// A job in the running-job registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningJob {
    /// Its directory (submission and components), relative to the cluster's storage
    /// directory.
    pub dir: PathBuf,
    /// The tenant that submitted it.
    pub tenant: Option<String>,
}

/// A job's latest completed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub id: u64,
    pub dir: PathBuf,
}

/// A connection to the etcd cluster of one weir cluster.
#[derive(Clone)]
pub struct Etcd {
    /// Unary calls, each bounded by `timeout`.
    client: Client,
    /// Calls that wait for as long as they must (a campaign) or stream (keep-alives).
    waiting: Client,
    prefix: String,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Etcd {
    /// Connects, trying again every second until etcd answers (a cluster may start before its
    /// etcd); `waiting` hears each failure.
    pub async fn connect_waiting(
        config: &HighAvailabilityConfig,
        waiting: impl Fn(&EtcdError),
    ) -> Etcd {
        loop {
            match Etcd::connect(config).await {
                Ok(etcd) => return etcd,
                Err(e) => {
                    waiting(&e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Connects (lazily without a user: a cluster may start before its etcd answers; with one,
    /// it authenticates at once).
    pub async fn connect(config: &HighAvailabilityConfig) -> Result<Etcd, EtcdError> {
        let endpoints = config.etcd_endpoints.join(",");
        // A call must give up well within the lease, so a leader that cannot reach etcd
        // notices before its lease runs out.
        let timeout = (config.lease_ttl / 2).max(Duration::from_millis(500));
        let unreachable = |source| EtcdError::Unreachable {
            endpoints: endpoints.clone(),
            source,
        };
        // HTTP/2 pings well apart from etcd's `grpc-keepalive-min-time` (5 s), and only while
        // calls are open (it refuses idle pings); every call has a timeout of its own anyway.
        // A member cut off from its etcd cluster's leader answers nothing (`require_leader`).
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), timeout)
            .with_tcp_keepalive(Duration::from_secs(10))
            .with_require_leader(true);
        let options = match &config.etcd_user {
            None => options,
            Some((user, file)) => {
                let password =
                    std::fs::read_to_string(file).map_err(|source| EtcdError::Password {
                        file: file.clone(),
                        source,
                    })?;
                options
                    .with_user(user.clone(), password.trim_end_matches(['\n', '\r']))
                    .with_auto_token_refresh(true)
            }
        };
        let client = Client::connect(
            &config.etcd_endpoints,
            Some(options.clone().with_timeout(timeout)),
        )
        .await
        .map_err(unreachable)?;
        let waiting = Client::connect(&config.etcd_endpoints, Some(options))
            .await
            .map_err(unreachable)?;
        Ok(Etcd {
            client,
            waiting,
            prefix: format!("/weir/{}/", config.cluster_id),
            endpoints,
            timeout,
        })
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn election(&self) -> String {
        format!("{}leader", self.prefix)
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}jobs/{id}", self.prefix)
    }

    fn checkpoint_key(&self, id: &str) -> String {
        format!("{}checkpoints/{id}", self.prefix)
    }

    fn failed(&self) -> impl Fn(etcd_client::Error) -> EtcdError + '_ {
        move |source| EtcdError::Unreachable {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    /// A unary call bounded by the timeout, whatever the transport does.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(self.failed()),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// The leader now, if there is one.
    pub async fn leader(&self) -> Result<Option<Leader>, EtcdError> {
        let mut client = self.client.clone();
        let response = match self.bounded(client.leader(self.election())).await {
            Ok(response) => response,
            // etcd answers "election: no leader" as an error.
            Err(EtcdError::Unreachable {
                source: etcd_client::Error::GRpcStatus(s),
                ..
            }) if s.message().contains("no leader") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(kv) = response.kv() else {
            return Ok(None);
        };
        let addresses = serde_json::from_slice(kv.value()).map_err(|e| EtcdError::Corrupt {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some(Leader {
            addresses,
            token: kv.create_revision() as u64,
        }))
    }

    /// A fresh lease of `ttl` (whole seconds, at least one).
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let mut client = self.client.clone();
        let seconds = ttl.as_secs().max(1) as i64;
        Ok(self.bounded(client.lease_grant(seconds, None)).await?.id())
    }

    /// Gives a lease up (its keys go with it); best effort.
    pub async fn revoke_lease(&self, lease: i64) {
        let mut client = self.client.clone();
        let _ = self.bounded(client.lease_revoke(lease)).await;
    }

    /// Stands for election under `lease`; returns once this process leads.
    pub async fn campaign(
        &self,
        lease: i64,
        addresses: &LeaderAddresses,
    ) -> Result<LeaderKey, EtcdError> {
        let value = serde_json::to_vec(addresses).map_err(|e| EtcdError::Corrupt {
            key: self.election(),
            reason: e.to_string(),
        })?;
        let mut client = self.waiting.clone();
        let response = client
            .campaign(self.election(), value, lease)
            .await
            .map_err(self.failed())?;
        let key = response.leader().ok_or_else(|| EtcdError::Corrupt {
            key: self.election(),
            reason: "a campaign answered without a leader key".into(),
        })?;
        Ok(LeaderKey {
            key: key.key().to_vec(),
            token: key.rev() as u64,
            lease: key.lease(),
        })
    }

    /// Opens the keep-alive stream of `lease`.
    pub async fn keep_alive(
        &self,
        lease: i64,
    ) -> Result<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream), EtcdError> {
        let mut client = self.waiting.clone();
        match tokio::time::timeout(self.timeout, client.lease_keep_alive(lease)).await {
            Ok(result) => result.map_err(self.failed()),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// Runs `ops` if `leader`'s key still exists as created; else [`EtcdError::NotLeader`].
    async fn fenced(&self, leader: &LeaderKey, ops: Vec<TxnOp>) -> Result<(), EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader.key.clone(),
                CompareOp::Equal,
                leader.token as i64,
            )])
            .and_then(ops);
        let mut client = self.client.clone();
        let response = self.bounded(client.txn(txn)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::NotLeader)
        }
    }

    fn json<T: Serialize>(&self, key: &str, value: &T) -> Result<Vec<u8>, EtcdError> {
        serde_json::to_vec(value).map_err(|e| EtcdError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Adds job `id` to the running-job registry.
    pub async fn add_job(
        &self,
        leader: &LeaderKey,
        id: &str,
        job: &RunningJob,
    ) -> Result<(), EtcdError> {
        let key = self.job_key(id);
        let value = self.json(&key, job)?;
        self.fenced(leader, vec![TxnOp::put(key, value, None)])
            .await
    }

    /// Removes job `id` (it ended) and its checkpoint pointer.
    pub async fn remove_job(&self, leader: &LeaderKey, id: &str) -> Result<(), EtcdError> {
        self.fenced(
            leader,
            vec![
                TxnOp::delete(self.job_key(id), None),
                TxnOp::delete(self.checkpoint_key(id), None),
            ],
        )
        .await
    }

    /// The running-job registry: each job's id and record.
    pub async fn running_jobs(&self) -> Result<Vec<(String, RunningJob)>, EtcdError> {
        let prefix = self.job_key("");
        let mut client = self.client.clone();
        let response = self
            .bounded(client.get(prefix.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let mut jobs = Vec::new();
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let id = key[prefix.len()..].to_string();
            let job = serde_json::from_slice(kv.value()).map_err(|e| EtcdError::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            jobs.push((id, job));
        }
        Ok(jobs)
    }

    /// Records checkpoint `pointer` as job `id`'s latest completed one, unless a newer one is
    /// recorded: ids only grow (a write delayed past a newer one changes nothing). The value
    /// starts with the zero-padded id, so etcd compares ids as it compares values.
    pub async fn add_checkpoint(
        &self,
        leader: &LeaderKey,
        id: &str,
        pointer: &CheckpointPointer,
    ) -> Result<(), EtcdError> {
        let key = self.checkpoint_key(id);
        let value = format!(
            "{:020} {}",
            pointer.id,
            String::from_utf8_lossy(&self.json(&key, pointer)?)
        );
        let fence =
            Compare::create_revision(leader.key.clone(), CompareOp::Equal, leader.token as i64);
        let mut client = self.client.clone();
        // The first record, or a newer one than recorded.
        for guard in [
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Compare::value(key.clone(), CompareOp::Less, value.clone()),
        ] {
            let txn = Txn::new()
                .when([fence.clone(), guard])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            if self.bounded(client.txn(txn)).await?.succeeded() {
                return Ok(());
            }
        }
        // Refused: by the fence, or because this id (or a newer one) is recorded already.
        let recorded = self.latest_checkpoint(id).await?;
        let still = Txn::new().when([fence]);
        if !self.bounded(client.txn(still)).await?.succeeded() {
            return Err(EtcdError::NotLeader);
        }
        match recorded {
            Some(recorded) if recorded.id >= pointer.id => Ok(()),
            _ => Err(EtcdError::Conflict { key }),
        }
    }

    /// Job `id`'s latest completed checkpoint, if it completed one.
    pub async fn latest_checkpoint(
        &self,
        id: &str,
    ) -> Result<Option<CheckpointPointer>, EtcdError> {
        let key = self.checkpoint_key(id);
        let mut client = self.client.clone();
        let response = self.bounded(client.get(key.clone(), None)).await?;
        response
            .kvs()
            .first()
            .map(|kv| {
                let corrupt = |reason: String| EtcdError::Corrupt {
                    key: key.clone(),
                    reason,
                };
                let text = std::str::from_utf8(kv.value()).map_err(|e| corrupt(e.to_string()))?;
                let (_, json) = text
                    .split_once(' ')
                    .ok_or_else(|| corrupt("no id before the record".into()))?;
                serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))
            })
            .transpose()
    }
}
