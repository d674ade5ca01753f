//! Tenants of a cluster (`conf/tenants.toml`, named by `jobmanager.tenants-file`): who may call
//! the REST endpoint, as which tenant, within which quotas. Tokens are kept only as SHA-256
//! hashes (tokens are 256 random bits, so a fast hash is enough: there is nothing to guess) and
//! a presented token is compared with every stored hash in constant time. The file is read
//! again when it changes, so a token is rotated without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::job::Grants;
use crate::job::units::{parse_bytes, parse_duration};

/// What a tenant may use. Unset: no limit beyond the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    /// Slots its running jobs hold together.
    pub slots: Option<u32>,
    /// Parallelism of any one vertex.
    pub parallelism: Option<u32>,
    pub running_jobs: Option<u32>,
    /// Linear memory of one operator instance.
    pub memory_per_operator: Option<u64>,
    /// Linear memory of every operator instance of its running jobs together.
    pub memory: Option<u64>,
    /// Longest one call into a guest.
    pub call_deadline: Option<Duration>,
    /// Keyed state bytes of one job (shared equally by its guest operator instances).
    pub keyed_state_per_job: Option<u64>,
    /// Log output of one operator subtask.
    pub log_per_operator: Option<u64>,
    /// Bytes the retained checkpoints of one job may take.
    pub checkpoint_storage: Option<u64>,
    /// The shortest checkpoint interval a job may ask for.
    pub min_checkpoint_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Checked to be a plain name (it names directories).
    pub name: String,
    /// The cluster's operator: sees and acts on every job, reads metrics.
    pub admin: bool,
    pub quota: Quota,
    /// The directories its jobs may read and write (file sources and sinks, checkpoints,
    /// savepoints); an admin's jobs reach anywhere.
    pub dirs: Vec<PathBuf>,
    /// What its jobs' guests may use (none unless granted here).
    pub grants: Grants,
    /// Whether its jobs may use connectors to external systems (PostgreSQL, Kafka, NATS):
    /// they make the cluster's processes reach servers on the network in the tenant's name.
    pub connectors: bool,
    tokens: Vec<[u8; 32]>,
}

/// Who made a REST call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No tenants are configured: the endpoint is open, as to the cluster's operator.
    Open,
    Tenant(Box<Tenant>),
}

impl Caller {
    /// Whether the caller may see and act on a job owned by `owner` (`None`: submitted with
    /// no tenants configured).
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Open => true,
            Caller::Tenant(t) => t.admin || owner == Some(t.name.as_str()),
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Tenant(t) => t.admin,
        }
    }

    /// The tenant that owns what this caller submits.
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            Caller::Open => None,
            Caller::Tenant(t) => Some(t),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantsError {
    #[error("cannot read the tenants file `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the tenants file `{path}`: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tenant: Vec<RawTenant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    #[serde(default)]
    admin: bool,
    tokens: Vec<String>,
    #[serde(default)]
    dirs: Vec<PathBuf>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    quota: RawQuota,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawQuota {
    slots: Option<u32>,
    parallelism: Option<u32>,
    running_jobs: Option<u32>,
    memory_per_operator: Option<String>,
    memory: Option<String>,
    call_deadline: Option<String>,
    keyed_state_per_job: Option<String>,
    log_per_operator: Option<String>,
    checkpoint_storage: Option<String>,
    min_checkpoint_interval: Option<String>,
}

/// The SHA-256 of a token, as the tenants file holds it: `sha256:<64 hex digits>`.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A fresh token: 32 random bytes in hex.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A tenant name may name a directory: lower-case letters, digits, `-` and `_`, not first.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Parses a tenants file's text.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Tenant>, TenantsError> {
    let invalid = |message: String| TenantsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut tenants: Vec<Tenant> = Vec::new();
    for t in raw.tenant {
        if !valid_name(&t.name) {
            return Err(invalid(format!(
                "tenant name `{}`: use lower-case letters, digits, `-` and `_` (it names \
                 directories)",
                t.name
            )));
        }
        if tenants.iter().any(|o| o.name == t.name) {
            return Err(invalid(format!("tenant `{}` appears twice", t.name)));
        }
        let tokens = t
            .tokens
            .iter()
            .enumerate()
            .map(|(n, h)| {
                // Never echoed: it may be a token written in clear by mistake.
                parse_hash(h).ok_or_else(|| {
                    invalid(format!(
                        "tenant `{}`: token {} is not a hash; a token must be given as its \
                         hash, `sha256:` and 64 hex digits (`weir token` makes one)",
                        t.name,
                        n + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key = |k: &str| format!("tenant `{}`: `quota.{k}`", t.name);
        let q = &t.quota;
        let bytes = |k: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|b| parse_bytes(b).map_err(|e| invalid(format!("{}: {e}", key(k)))))
                .transpose()
        };
        let duration = |k: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|d| parse_duration(d).map_err(|e| invalid(format!("{}: {e}", key(k)))))
                .transpose()
        };
        let quota = Quota {
            slots: q.slots,
            parallelism: q.parallelism,
            running_jobs: q.running_jobs,
            memory_per_operator: bytes("memory-per-operator", &q.memory_per_operator)?,
            memory: bytes("memory", &q.memory)?,
            call_deadline: duration("call-deadline", &q.call_deadline)?,
            keyed_state_per_job: bytes("keyed-state-per-job", &q.keyed_state_per_job)?,
            log_per_operator: bytes("log-per-operator", &q.log_per_operator)?,
            checkpoint_storage: bytes("checkpoint-storage", &q.checkpoint_storage)?,
            min_checkpoint_interval: duration(
                "min-checkpoint-interval",
                &q.min_checkpoint_interval,
            )?,
        };
        let mut grants = Grants::default();
        let mut connectors = false;
        for capability in &t.capabilities {
            match capability.as_str() {
                "clocks" => grants.clocks = true,
                "random" => grants.random = true,
                "connectors" => connectors = true,
                other => {
                    return Err(invalid(format!(
                        "tenant `{}`: unknown capability `{other}` (there are `clocks`, \
                         `random` and `connectors`)",
                        t.name
                    )));
                }
            }
        }
        if let Some(dir) = t.dirs.iter().find(|d| !d.is_absolute()) {
            return Err(invalid(format!(
                "tenant `{}`: granted directory `{}` is not absolute",
                t.name,
                dir.display()
            )));
        }
        tenants.push(Tenant {
            name: t.name,
            admin: t.admin,
            quota,
            dirs: t.dirs,
            grants,
            connectors,
            tokens,
        });
    }
    Ok(tenants)
}

/// Equal in constant time (no early exit on the first difference).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `token`'s SHA-256 is `hash`, compared in constant time.
pub(super) fn token_has_hash(token: &str, hash: &[u8; 32]) -> bool {
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    same(hash, &presented)
}

/// The tenant a token belongs to, looking at every stored hash whatever matches.
fn find<'a>(tenants: &'a [Tenant], token: &str) -> Option<&'a Tenant> {
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for tenant in tenants {
        for hash in &tenant.tokens {
            if same(hash, &presented) && found.is_none() {
                found = Some(tenant);
            }
        }
    }
    found
}

/// The tenants file, read again when it changes.
pub struct TenantDirectory {
    path: PathBuf,
    /// The text last read and the tenants it gave.
    state: Mutex<(String, Vec<Tenant>)>,
}

impl TenantDirectory {
    /// Reads `path`; an unreadable or invalid file is refused here, at start.
    pub fn open(path: &Path) -> Result<Self, TenantsError> {
        let text = Self::read(path)?;
        let tenants = parse(&text, path)?;
        Ok(TenantDirectory {
            path: path.to_path_buf(),
            state: Mutex::new((text, tenants)),
        })
    }

    fn read(path: &Path) -> Result<String, TenantsError> {
        std::fs::read_to_string(path).map_err(|e| TenantsError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Tenant `name`, as last read.
    pub fn get(&self, name: &str) -> Option<Tenant> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1.iter().find(|t| t.name == name).cloned()
    }

    /// The tenant `token` belongs to. The file is read on every call (it is small, and a
    /// REST call is not a hot path; its timestamp is too coarse to tell two quick writes
    /// apart): a changed file that parses replaces the tenants, one that does not keeps them
    /// (and says why).
    pub fn authenticate(&self, token: &str) -> Option<Tenant> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match Self::read(&self.path) {
            Ok(text) if text != state.0 => match parse(&text, &self.path) {
                Ok(tenants) => {
                    eprintln!("Read the tenants file `{}` again", self.path.display());
                    *state = (text, tenants);
                }
                Err(e) => {
                    eprintln!("warning: {e}; keeping the tenants read before");
                    state.0 = text;
                }
            },
            Ok(_) => {}
            Err(e) => eprintln!("warning: {e}; keeping the tenants read before"),
        }
        find(&state.1, token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tokens: &[&str]) -> String {
        let hashes: Vec<String> = tokens
            .iter()
            .map(|t| format!("{:?}", token_hash(t)))
            .collect();
        format!(
            "[[tenant]]\nname = \"alice\"\ntokens = [{}]\n[tenant.quota]\nslots = 2\n\
             call-deadline = \"5s\"\nkeyed-state-per-job = \"1MiB\"\n\
             [[tenant]]\nname = \"ops\"\nadmin = true\ntokens = [{:?}]\n",
            hashes.join(", "),
            token_hash("root")
        )
    }

    #[test]
    fn tokens_find_their_tenant_by_hash_and_nothing_else_does() {
        let tenants = parse(&file(&["a1", "a2"]), Path::new("t.toml")).unwrap();
        assert_eq!(find(&tenants, "a2").map(|t| t.name.as_str()), Some("alice"));
        assert_eq!(find(&tenants, "root").map(|t| t.admin), Some(true));
        assert!(find(&tenants, "a3").is_none());
        assert!(find(&tenants, "").is_none());
        let alice = find(&tenants, "a1").unwrap();
        assert_eq!(alice.quota.slots, Some(2));
        assert_eq!(alice.quota.call_deadline, Some(Duration::from_secs(5)));
        assert_eq!(alice.quota.keyed_state_per_job, Some(1 << 20));
        assert!(Caller::Tenant(Box::new(alice.clone())).may_see(Some("alice")));
        assert!(!Caller::Tenant(Box::new(alice.clone())).may_see(Some("bob")));
        assert!(!Caller::Tenant(Box::new(alice.clone())).may_see(None));
    }

    #[test]
    fn a_token_in_clear_a_bad_name_and_a_repeated_tenant_are_refused_with_the_reason() {
        let clear = "[[tenant]]\nname = \"alice\"\ntokens = [\"hunter2\"]\n";
        let err = parse(clear, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("must be given as its hash"), "{err}");
        assert!(!err.contains("hunter2"), "the token is not echoed: {err}");
        let bad = format!(
            "[[tenant]]\nname = \"../x\"\ntokens = [{:?}]\n",
            token_hash("t")
        );
        let err = parse(&bad, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("tenant name `../x`"), "{err}");
        let twice = format!(
            "[[tenant]]\nname = \"a\"\ntokens = []\n[[tenant]]\nname = \"a\"\ntokens = [{:?}]\n",
            token_hash("t")
        );
        let err = parse(&twice, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn the_shipped_tenants_file_parses_and_its_example_uncommented_too() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/tenants.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(parse(&text, &path).unwrap().is_empty());
        // The example's lines, uncommented, with real hashes.
        let example: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| l.replace("sha256:...", &token_hash("t")[..]))
            .map(|l| format!("{l}\n"))
            .collect();
        let tenants = parse(&example, &path).unwrap();
        assert_eq!(tenants.len(), 2, "{example}");
        assert_eq!(tenants[0].quota.memory_per_operator, Some(256 << 20));
        assert!(tenants[1].admin);
    }

    #[test]
    fn a_rewritten_file_rotates_the_tokens_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, file(&["old"])).unwrap();
        let directory = TenantDirectory::open(&path).unwrap();
        assert!(directory.authenticate("old").is_some());
        std::fs::write(&path, file(&["new-token"])).unwrap();
        assert!(directory.authenticate("old").is_none());
        assert!(directory.authenticate("new-token").is_some());
        std::fs::write(&path, "[[tenant]]\nname = ").unwrap();
        assert!(directory.authenticate("new-token").is_some(), "kept");
    }
}
