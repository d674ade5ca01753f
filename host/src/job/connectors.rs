//! How a job describes its connectors to external systems: the options a manifest gives a
//! PostgreSQL sink or a Kafka source or sink, checked before anything runs, and how the job's
//! transactions are named. The connectors themselves, a layer beside this one, act on these.

use std::path::PathBuf;
use std::time::Duration;

/// Where a secret (a password) comes from: never the manifest itself, which is stored with the
/// job, shown by `weir info` and the REST endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Secret {
    /// An environment variable of the process that connects (the TaskManager's, the
    /// JobManager's for recovery).
    Env(String),
    /// A file readable by that process; one trailing newline is not part of the secret.
    File(PathBuf),
}

impl Secret {
    /// The secret's value, read now (so a rotated file is read again at each connect).
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable `{name}` is not set (or not UTF-8)")),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| {
                    let s = s.strip_suffix('\n').unwrap_or(&s);
                    s.strip_suffix('\r').unwrap_or(s).to_string()
                })
                .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display())),
        }
    }
}

/// How long a connector keeps trying to reach its server before the task fails (the job's
/// restart strategy then decides).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL sink as the job graph carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PostgresSinkSpec {
    /// `postgresql://user@host:port/database` (or `host=... user=...`), without a password.
    pub url: String,
    pub password: Option<Secret>,
    /// The table, as SQL names it (`counts`, `analytics.counts`); it must exist.
    pub table: String,
    /// The columns the record's fields go to; empty: every column of the table, in order.
    pub columns: Vec<String>,
    pub format: RowFormat,
    /// How long to keep trying to reach the server.
    pub connect_timeout_ms: u64,
}

impl PostgresSinkSpec {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// What the manifest can be told about before anything runs: a password written into the
    /// URL (it would be stored and shown with the job), an empty table name.
    pub fn check(&self, sink: &str) -> Result<(), String> {
        if url_has_password(&self.url) {
            return Err(format!(
                "sink `{sink}`: the `url` holds a password; give it with `password_env` (an \
                 environment variable) or `password_file` instead, so it is not stored with \
                 the job"
            ));
        }
        if self.table.trim().is_empty() {
            return Err(format!("sink `{sink}` of kind postgres needs a `table`"));
        }
        Ok(())
    }
}

fn url_has_password(url: &str) -> bool {
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let query_has = rest
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
        return authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
            || query_has;
    }
    url.split_whitespace().any(|kv| kv.starts_with("password="))
}

/// How a record's bytes become a row's fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RowFormat {
    /// Text fields separated by `delimiter`, in column order; a field may be quoted with `"`
    /// (a `""` inside is one quote), as CSV writes it. Every field is text to the server.
    Delimited { delimiter: u8 },
    /// A JSON object; each column takes the field of its name (missing or null: NULL; a
    /// nested value: its JSON text).
    Json,
}

/// The global id of the transaction subtask `subtask` of sink `sink` of job `job` prepares at
/// checkpoint `checkpoint`; [`parse_gid`] reads it back.
pub fn gid(job: &str, sink: &str, subtask: u32, checkpoint: u64) -> String {
    format!("{}{subtask}/{checkpoint}", gid_prefix(job, sink))
}

fn gid_prefix(job: &str, sink: &str) -> String {
    // `/` separates the parts, so no part may hold one.
    let part = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    format!("weir/{}/{}/", part(job), part(sink))
}

/// (subtask, checkpoint) of a transaction of sink `sink` of job `job`; `None` for any other.
pub fn parse_gid(job: &str, sink: &str, gid: &str) -> Option<(u32, u64)> {
    let rest = gid.strip_prefix(&gid_prefix(job, sink))?;
    let (subtask, checkpoint) = rest.split_once('/')?;
    Some((subtask.parse().ok()?, checkpoint.parse().ok()?))
}

/// The server keeps at most 200 bytes of a prepared transaction's id.
pub fn check_gid_length(job: &str, sink: &str) -> Result<(), String> {
    let longest = gid(job, sink, u32::MAX, u64::MAX);
    if longest.len() >= 200 {
        return Err(format!(
            "sink `{sink}`: the job's name and the sink's id are too long to name its \
             transactions ({} bytes with the prefix; PostgreSQL keeps 199)",
            longest.len()
        ));
    }
    Ok(())
}

/// Where a source starts reading a partition it has no checkpointed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// A Kafka source as the job graph carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaSourceSpec {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    pub start_from: StartFrom,
    /// Stop at the partitions' ends as the job first starts (a bounded job that finishes);
    /// otherwise read on until the job is stopped.
    pub bounded: bool,
    /// Extra librdkafka consumer properties.
    pub properties: Vec<(String, String)>,
    pub connect_timeout_ms: u64,
}

impl KafkaSourceSpec {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// What a Kafka sink promises after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Delivery {
    /// Records are flushed (acknowledged by all in-sync replicas) at each checkpoint; a
    /// restore may write records again that were written after the checkpoint.
    AtLeastOnce,
    /// One transaction per checkpoint per subtask; readers with `isolation.level =
    /// read_committed` see each record once.
    ExactlyOnce,
}

/// A Kafka sink as the job graph carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaSinkSpec {
    pub brokers: Vec<String>,
    pub topic: String,
    pub delivery: Delivery,
    /// How long the broker keeps a transaction open before it aborts it: longer than the
    /// longest time between a checkpoint and the end of a recovery after it.
    pub transaction_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

impl KafkaSinkSpec {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn transaction_timeout(&self) -> Duration {
        Duration::from_millis(self.transaction_timeout_ms)
    }
}

/// A NATS JetStream source as the job graph carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatsSourceSpec {
    /// Servers, `nats://host:port[,nats://host:port...]`, without credentials.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub stream: String,
    /// The durable pull consumer the job reads through (created if missing).
    pub consumer: String,
    /// Only messages of this subject (default: all of the stream's).
    pub subject: Option<String>,
    /// How long the server waits for an acknowledgement before it delivers a message again:
    /// longer than a checkpoint takes to complete, since messages are acknowledged then.
    pub ack_wait_ms: u64,
    /// End once nothing is left to deliver and nothing waits for acknowledgement but this
    /// job's own (a bounded job); otherwise read on until the job is stopped.
    pub bounded: bool,
    pub connect_timeout_ms: u64,
}

impl NatsSourceSpec {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
}

/// A NATS JetStream sink as the job graph carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatsSinkSpec {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The subject records are published to; a stream must take it.
    pub subject: String,
    pub connect_timeout_ms: u64,
}

impl NatsSinkSpec {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// The de-duplication id (`Nats-Msg-Id`) of record `index` of the records subtask `subtask` of
/// sink `sink` of job `job` wrote in run `run` between the checkpoint before `checkpoint` and
/// it: the same whenever those records are published again, and never another run's.
pub fn nats_message_id(
    job: &str,
    sink: &str,
    subtask: u32,
    run: u64,
    checkpoint: u64,
    index: usize,
) -> String {
    format!("weir/{job}/{sink}/{subtask}/{run:016x}/{checkpoint}/{index}")
}

/// A NATS URL with credentials in it (`nats://user:password@host`), which would be stored
/// and shown with the job.
pub fn nats_url_has_password(url: &str) -> bool {
    url.split(',').any(|server| {
        let rest = server.split_once("://").map_or(server, |(_, r)| r);
        rest.split('/')
            .next()
            .unwrap_or("")
            .rsplit_once('@')
            .is_some_and(|(credentials, _)| credentials.contains(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_with_passwords_are_found() {
        assert!(nats_url_has_password("nats://weir:pw@127.0.0.1:4222"));
        assert!(nats_url_has_password("nats://a:4222,nats://u:p@b:4222"));
        assert!(!nats_url_has_password("nats://weir@127.0.0.1:4222"));
        assert!(!nats_url_has_password("nats://127.0.0.1:4222"));
        assert_eq!(
            nats_message_id("wc", "out", 1, 0xab, 7, 42),
            "weir/wc/out/1/00000000000000ab/7/42"
        );
    }

    #[test]
    fn a_secret_file_loses_its_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "  s3cret \n").unwrap();
        assert_eq!(Secret::File(path).read().unwrap(), "  s3cret ");
        let missing = Secret::Env("WEIR_TEST_NO_SUCH_VARIABLE".into()).read();
        assert!(missing.unwrap_err().contains("WEIR_TEST_NO_SUCH_VARIABLE"));
    }

    #[test]
    fn transaction_ids_name_job_sink_subtask_and_checkpoint() {
        let id = gid("wc", "out", 3, 17);
        assert_eq!(id, "weir/wc/out/3/17");
        assert_eq!(parse_gid("wc", "out", &id), Some((3, 17)));
        assert_eq!(parse_gid("wc", "other", &id), None);
        assert_eq!(parse_gid("w", "c/out", &id), None);
        let slashed = gid("a/b", "c", 0, 1);
        assert_eq!(slashed, "weir/a%2Fb/c/0/1");
        assert_eq!(parse_gid("a", "b/c", &slashed), None);
        assert_eq!(parse_gid("a/b", "c", &slashed), Some((0, 1)));
        assert!(check_gid_length(&"j".repeat(170), "s").is_err());
        assert!(check_gid_length("wc", "out").is_ok());
    }

    #[test]
    fn passwords_in_urls_are_found() {
        for url in [
            "postgresql://weir:pw@127.0.0.1/db",
            "postgres://weir:pw@h:5432/db?sslmode=disable",
            "postgresql://weir@h/db?password=pw",
            "host=h user=weir password=pw",
        ] {
            assert!(url_has_password(url), "{url}");
        }
        for url in [
            "postgresql://weir@127.0.0.1:5432/db",
            "postgresql://127.0.0.1/db",
            "host=h user=weir dbname=x",
        ] {
            assert!(!url_has_password(url), "{url}");
        }
    }
}
