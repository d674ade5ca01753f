//! `conf/weir.toml`: the configuration of a standalone cluster, one file for the JobManager and
//! every TaskManager (Flink's `config.yaml`), found in `$WEIR_CONF_DIR`, else `conf/` beside
//! the installation's `bin/`, else `./conf`. Every key has a default but the cluster secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::job::units::parse_duration;
use crate::network::ClusterSecret;

/// A configuration that cannot be used, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}`: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no cluster secret: set `cluster.secret` (or `cluster.secret-file`) in {where_}; every \
         process of a cluster must share it"
    )]
    NoSecret { where_: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct Raw {
    cluster: RawCluster,
    jobmanager: RawJobManager,
    rest: Endpoint,
    taskmanager: RawTaskManager,
    heartbeat: RawHeartbeat,
    metrics: RawMetrics,
    high_availability: RawHighAvailability,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawHighAvailability {
    #[serde(rename = "type")]
    kind: String,
    etcd_endpoints: Vec<String>,
    cluster_id: String,
    storage_dir: Option<PathBuf>,
    lease_ttl: String,
    etcd_username: Option<String>,
    etcd_password_file: Option<PathBuf>,
}

impl Default for RawHighAvailability {
    fn default() -> Self {
        RawHighAvailability {
            kind: "none".into(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            cluster_id: "default".into(),
            storage_dir: None,
            lease_ttl: "2s".into(),
            etcd_username: None,
            etcd_password_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawMetrics {
    token: Option<String>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            cluster: RawCluster::default(),
            jobmanager: RawJobManager::default(),
            rest: Endpoint {
                address: "127.0.0.1".into(),
                port: 8081,
            },
            taskmanager: RawTaskManager::default(),
            heartbeat: RawHeartbeat::default(),
            metrics: RawMetrics::default(),
            high_availability: RawHighAvailability::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawCluster {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawJobManager {
    rpc: Endpoint,
    job_store: Option<PathBuf>,
    slot_request_timeout: String,
    tenants_file: Option<PathBuf>,
}

impl Default for RawJobManager {
    fn default() -> Self {
        RawJobManager {
            rpc: Endpoint {
                address: "127.0.0.1".into(),
                port: 6123,
            },
            job_store: None,
            slot_request_timeout: "5m".into(),
            tenants_file: None,
        }
    }
}

/// An address and port to listen on or connect to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Endpoint {
    pub address: String,
    /// 0: any free port (the process logs the one it got).
    pub port: u16,
}

impl Endpoint {
    pub fn to_address(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawTaskManager {
    slots: u32,
    tenant: Option<String>,
    cpus: Option<String>,
    log_dir: Option<PathBuf>,
    host: Option<String>,
    bind_address: String,
    data_port: u16,
    metrics_port: u16,
    network_buffers: usize,
    registration_timeout: String,
}

impl Default for RawTaskManager {
    fn default() -> Self {
        RawTaskManager {
            slots: 1,
            tenant: None,
            cpus: None,
            log_dir: None,
            host: None,
            bind_address: "127.0.0.1".into(),
            data_port: 0,
            metrics_port: 0,
            network_buffers: 16384,
            registration_timeout: "5m".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawHeartbeat {
    interval: String,
    timeout: String,
}

impl Default for RawHeartbeat {
    fn default() -> Self {
        RawHeartbeat {
            interval: "1s".into(),
            timeout: "10s".into(),
        }
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The file it came from, for messages (`None`: built-in defaults).
    pub source: Option<PathBuf>,
    pub secret: Option<ClusterSecret>,
    /// Where the JobManager listens for TaskManagers (and they connect).
    pub jobmanager_rpc: Endpoint,
    /// Where the JobManager keeps submitted jobs until they end: a restarted JobManager
    /// recovers the jobs it finds there. `None`: one of its own in the temporary directory,
    /// named by its RPC port (so JobManagers of different clusters on one host never share
    /// one, and a JobManager restarted on its port finds its jobs).
    pub job_store: Option<PathBuf>,
    /// The tenants and their tokens and quotas (relative paths are the configuration file's);
    /// without one the REST endpoint serves anyone who reaches it.
    pub tenants_file: Option<PathBuf>,
    /// How long a job waits for the slots it needs (Flink's `slot.request.timeout`) before it
    /// fails with the numbers.
    pub slot_request_timeout: Duration,
    /// The JobManager's REST endpoint.
    pub rest: Endpoint,
    pub taskmanager: TaskManagerConfig,
    pub heartbeat: HeartbeatConfig,
    /// The SHA-256 of the token a scraper presents for `/metrics` (`metrics.token`): every
    /// TaskManager's then refuses anyone without it, and the JobManager's takes it besides an
    /// admin tenant's. Unset: a TaskManager's `/metrics` is open.
    pub metrics_token: Option<MetricsToken>,
    /// Standby JobManagers with leader election on etcd (`[high-availability]`); `None`: one
    /// JobManager, its job store on its own disk.
    pub high_availability: Option<HighAvailabilityConfig>,
}

/// `[high-availability]` with `type = "etcd"` (Flink's `high-availability.type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighAvailabilityConfig {
    /// The etcd cluster's client URLs.
    pub etcd_endpoints: Vec<String>,
    /// Names this cluster's keys in etcd (`/weir/<cluster-id>/`) and its directory under the
    /// storage directory, so clusters can share both.
    pub cluster_id: String,
    /// Where the large artifacts live (submitted jobs' components and graphs): a file system
    /// every JobManager reaches. etcd holds only small records pointing into it.
    pub storage_dir: PathBuf,
    /// The leader's lease: a leader that cannot renew it within this time stops acting, and
    /// a standby takes over after it.
    pub lease_ttl: Duration,
    /// The etcd user (with etcd's authentication on) and the file its password is read from
    /// (never the password itself in the configuration).
    pub etcd_user: Option<(String, PathBuf)>,
}

/// A token kept as its hash, compared in constant time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl MetricsToken {
    /// Whether `token` is the one whose hash this is.
    pub fn admits(&self, token: &str) -> bool {
        super::tenants::token_has_hash(token, &self.0)
    }

    /// Whether the `Authorization` header `value` presents it as a bearer token.
    pub fn admits_header(&self, value: Option<&axum::http::HeaderValue>) -> bool {
        value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.admits(t.trim()))
    }
}

#[derive(Debug, Clone)]
pub struct TaskManagerConfig {
    pub slots: u32,
    /// The tenant it is reserved for: only that tenant's jobs get its slots.
    pub tenant: Option<String>,
    /// The CPUs its threads run on (e.g. `0-1,3`); unset: any.
    pub cpus: Option<Vec<usize>>,
    /// Where each job's guests log, in a file of the job's own under its tenant's directory
    /// (`runtime::job_log`); unset: into the TaskManager's own log.
    pub log_dir: Option<PathBuf>,
    /// The address other processes reach the TaskManager under (Flink's `taskmanager.host`);
    /// unset, the bind address, or for a wildcard bind the local address that reaches the
    /// JobManager.
    pub host: Option<String>,
    /// Where the TaskManager's data port and RPC service listen.
    pub bind_address: String,
    pub data_port: u16,
    /// Where the TaskManager serves `GET /metrics` (Prometheus); 0: any free port.
    pub metrics_port: u16,
    pub network_buffers: usize,
    /// How long a TaskManager keeps trying to register before it gives up.
    pub registration_timeout: Duration,
}

/// Heartbeats between the ResourceManager and TaskManagers (Flink's `heartbeat.interval` and
/// `heartbeat.timeout`; shorter by default, because a weir job restarts in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

/// A CPU list as Linux writes them: `0`, `0-3`, `0,2-3`.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim) {
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{list}` is not a CPU list like `0-1,3`"))
        };
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (number(from)?, number(to)?);
                if from > to {
                    return Err(format!("`{part}` runs backwards"));
                }
                cpus.extend(from..=to);
            }
            None => cpus.push(number(part)?),
        }
    }
    if cpus.iter().any(|&c| c >= 1024) {
        return Err(format!("`{list}` names a CPU past 1023"));
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// `file` as named in the configuration at `config`: a relative path is the configuration's.
fn beside(config: Option<&Path>, file: PathBuf) -> PathBuf {
    match config.and_then(Path::parent) {
        Some(base) if file.is_relative() => base.join(file),
        _ => file,
    }
}

/// The checked `[high-availability]` of `type = "etcd"`.
fn high_availability(
    raw: RawHighAvailability,
    path: Option<&Path>,
) -> Result<HighAvailabilityConfig, String> {
    if raw.etcd_endpoints.is_empty() {
        return Err("`high-availability.etcd-endpoints` lists no etcd endpoint".into());
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if raw.cluster_id.is_empty() || !raw.cluster_id.chars().all(plain) || raw.cluster_id == ".." {
        return Err(format!(
            "`high-availability.cluster-id` `{}` must be a plain name (letters, digits, `-`, \
             `_`, `.`)",
            raw.cluster_id
        ));
    }
    let storage_dir = raw.storage_dir.ok_or(
        "`high-availability.storage-dir` is not set: the JobManagers keep submitted jobs there, \
         so it must be a directory every JobManager reaches",
    )?;
    let lease_ttl = parse_duration(&raw.lease_ttl)
        .map_err(|e| format!("`high-availability.lease-ttl`: {e}"))?;
    // etcd grants leases in whole seconds.
    if lease_ttl < Duration::from_secs(1) {
        return Err(format!(
            "`high-availability.lease-ttl` is {lease_ttl:?}; etcd grants at least 1s"
        ));
    }
    let etcd_user = match (raw.etcd_username, raw.etcd_password_file) {
        (Some(user), Some(file)) => Some((user, beside(path, file))),
        (None, None) => None,
        _ => {
            return Err(
                "set both `high-availability.etcd-username` and `etcd-password-file`, or neither"
                    .into(),
            );
        }
    };
    Ok(HighAvailabilityConfig {
        etcd_endpoints: raw.etcd_endpoints,
        cluster_id: raw.cluster_id,
        storage_dir: beside(path, storage_dir),
        lease_ttl,
        etcd_user,
    })
}

impl ClusterConfig {
    /// The configuration file to use: `explicit`, else `weir.toml` in `$WEIR_CONF_DIR`, in
    /// `conf/` beside the `bin/` of the running program, in `./conf`; `None` if there is none.
    pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_path_buf());
        }
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os("WEIR_CONF_DIR") {
            candidates.push(PathBuf::from(dir).join("weir.toml"));
        }
        if let Some(bin) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            && bin.file_name().is_some_and(|n| n == "bin")
            && let Some(root) = bin.parent()
        {
            candidates.push(root.join("conf").join("weir.toml"));
        }
        candidates.push(PathBuf::from("conf").join("weir.toml"));
        candidates.into_iter().find(|p| p.is_file())
    }

    /// Loads `path`, or the defaults when there is no file.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Self::from_raw(Raw::default(), None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw, Some(path))
    }

    fn from_raw(raw: Raw, path: Option<&Path>) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.map_or_else(|| PathBuf::from("<defaults>"), Path::to_path_buf),
            message,
        };
        let duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| invalid(format!("`{key}`: {e}")))
        };
        let secret = match (raw.cluster.secret, raw.cluster.secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "set `cluster.secret` or `cluster.secret-file`, not both".into(),
                ));
            }
            (Some(s), None) => Some(s.into_bytes()),
            (None, Some(file)) => {
                let file = match path.and_then(Path::parent) {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file,
                };
                let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                    path: file.clone(),
                    source,
                })?;
                Some(text.trim().as_bytes().to_vec())
            }
            (None, None) => None,
        };
        if let Some(s) = &secret
            && s.len() < 16
        {
            return Err(invalid(format!(
                "`cluster.secret` has {} bytes; use at least 16 (e.g. 32 random hex digits)",
                s.len()
            )));
        }
        let heartbeat = HeartbeatConfig {
            interval: duration("heartbeat.interval", &raw.heartbeat.interval)?,
            timeout: duration("heartbeat.timeout", &raw.heartbeat.timeout)?,
        };
        if heartbeat.interval.is_zero() || heartbeat.timeout <= heartbeat.interval {
            return Err(invalid(format!(
                "`heartbeat.timeout` ({:?}) must be longer than a non-zero `heartbeat.interval` \
                 ({:?})",
                heartbeat.timeout, heartbeat.interval
            )));
        }
        let metrics_token = raw
            .metrics
            .token
            .as_deref()
            .map(|text| {
                super::tenants::parse_hash(text)
                    .map(MetricsToken)
                    .ok_or_else(|| {
                        invalid(
                            "`metrics.token` must be a token's hash, `sha256:` and 64 hex digits \
                         (`weir token` makes one); never the token itself"
                                .into(),
                        )
                    })
            })
            .transpose()?;
        let high_availability = match raw.high_availability.kind.as_str() {
            "none" => None,
            "etcd" => Some(high_availability(raw.high_availability, path).map_err(invalid)?),
            other => {
                return Err(invalid(format!(
                    "`high-availability.type` is `{other}`; it is `none` or `etcd`"
                )));
            }
        };
        if raw.taskmanager.slots == 0 {
            return Err(invalid("`taskmanager.slots` must be at least 1".into()));
        }
        Ok(ClusterConfig {
            source: path.map(Path::to_path_buf),
            secret: secret.map(ClusterSecret::new),
            job_store: raw.jobmanager.job_store.map(|dir| beside(path, dir)),
            tenants_file: raw.jobmanager.tenants_file.map(|file| beside(path, file)),
            slot_request_timeout: duration(
                "jobmanager.slot-request-timeout",
                &raw.jobmanager.slot_request_timeout,
            )?,
            jobmanager_rpc: raw.jobmanager.rpc,
            rest: raw.rest,
            taskmanager: TaskManagerConfig {
                slots: raw.taskmanager.slots,
                tenant: raw.taskmanager.tenant,
                cpus: raw
                    .taskmanager
                    .cpus
                    .as_deref()
                    .map(|list| {
                        parse_cpu_list(list)
                            .map_err(|e| invalid(format!("`taskmanager.cpus`: {e}")))
                    })
                    .transpose()?,
                log_dir: raw.taskmanager.log_dir.map(|dir| beside(path, dir)),
                host: raw.taskmanager.host,
                bind_address: raw.taskmanager.bind_address,
                data_port: raw.taskmanager.data_port,
                metrics_port: raw.taskmanager.metrics_port,
                network_buffers: raw.taskmanager.network_buffers,
                registration_timeout: duration(
                    "taskmanager.registration-timeout",
                    &raw.taskmanager.registration_timeout,
                )?,
            },
            heartbeat,
            metrics_token,
            high_availability,
        })
    }

    /// The cluster secret, which a standalone process cannot do without.
    pub fn require_secret(&self) -> Result<ClusterSecret, ConfigError> {
        self.secret.clone().ok_or_else(|| ConfigError::NoSecret {
            where_: match &self.source {
                Some(p) => format!("`{}`", p.display()),
                None => "conf/weir.toml (none was found)".into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Path::new("conf/weir.toml"))
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = parse("[cluster]\nsecret = \"0123456789abcdef0123\"\n[taskmanager]\nslots = 2\n")
            .unwrap();
        assert_eq!(c.jobmanager_rpc.to_address(), "127.0.0.1:6123");
        assert_eq!(c.rest.port, 8081);
        assert_eq!(c.taskmanager.slots, 2);
        assert_eq!(c.heartbeat.interval, Duration::from_secs(1));
        assert!(c.require_secret().is_ok());
    }

    #[test]
    fn the_shipped_configuration_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/weir.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let shipped = ClusterConfig::parse(&text, &path).unwrap();
        let defaults = ClusterConfig::load(None).unwrap();
        assert_eq!(shipped.jobmanager_rpc, defaults.jobmanager_rpc);
        assert_eq!(shipped.rest, defaults.rest);
        assert_eq!(shipped.heartbeat, defaults.heartbeat);
        assert_eq!(shipped.taskmanager.slots, defaults.taskmanager.slots);
        assert_eq!(
            shipped.taskmanager.registration_timeout,
            defaults.taskmanager.registration_timeout
        );
        assert!(shipped.secret.is_none(), "the shipped file holds no secret");
        assert_eq!(shipped.high_availability, None);
        let with_ha = text
            .replace("type = \"none\"", "type = \"etcd\"")
            .replace("# storage-dir = ", "storage-dir = ")
            .replace("# etcd-username = ", "etcd-username = ")
            .replace("# etcd-password-file = ", "etcd-password-file = ");
        let ha = ClusterConfig::parse(&with_ha, &path)
            .unwrap()
            .high_availability
            .expect("high availability");
        assert_eq!(ha.etcd_endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(ha.storage_dir, Path::new("/var/lib/weir/ha"));
        assert_eq!(ha.lease_ttl, Duration::from_secs(2));
        assert_eq!(
            ha.etcd_user,
            Some(("weir".into(), path.parent().unwrap().join("etcd-password")))
        );
    }

    #[test]
    fn high_availability_on_etcd_takes_its_endpoints_id_storage_and_lease() {
        assert_eq!(parse("").unwrap().high_availability, None);
        let c = parse(
            "[high-availability]\ntype = \"etcd\"\netcd-endpoints = [\"http://10.0.0.1:2379\"]\n\
             cluster-id = \"prod\"\nstorage-dir = \"ha\"\nlease-ttl = \"3s\"\n",
        )
        .unwrap();
        assert_eq!(
            c.high_availability,
            Some(HighAvailabilityConfig {
                etcd_endpoints: vec!["http://10.0.0.1:2379".into()],
                cluster_id: "prod".into(),
                storage_dir: PathBuf::from("conf/ha"),
                lease_ttl: Duration::from_secs(3),
                etcd_user: None,
            })
        );
    }

    #[test]
    fn mistakes_are_named_with_file_and_key() {
        let err = parse("[taskmanager]\nslot = 2\n").unwrap_err().to_string();
        assert!(
            err.contains("conf/weir.toml") && err.contains("slot"),
            "{err}"
        );
        let err = parse("[heartbeat]\ninterval = \"5s\"\ntimeout = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat.timeout"), "{err}");
        let err = parse("[cluster]\nsecret = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        let err = parse("[high-availability]\ntype = \"zookeeper\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("high-availability.type"), "{err}");
        let err = parse("[high-availability]\ntype = \"etcd\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage-dir"), "{err}");
        let err = parse(
            "[high-availability]\ntype = \"etcd\"\nstorage-dir = \"ha\"\ncluster-id = \"a/b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cluster-id"), "{err}");
        let err = parse(
            "[high-availability]\ntype = \"etcd\"\nstorage-dir = \"ha\"\netcd-username = \"weir\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("etcd-password-file"), "{err}");
        let none = parse("").unwrap();
        let err = none.require_secret().unwrap_err().to_string();
        assert!(err.contains("cluster.secret"), "{err}");
    }
}
