//! The options a manifest gives sources and sinks of external systems, read into the job's
//! description of each connector (`super::connectors`) and checked as far as they can be
//! before anything runs: a field another kind takes, a password in a URL, a missing topic or
//! table name.

use std::path::PathBuf;

use super::manifest::{JobError, SinkDecl, SourceDecl};

impl SinkDecl {
    /// Refuses options the sink's kind does not take: a `table` on a file sink is a mistake
    /// (most likely in `kind`), not something to ignore.
    pub fn check_options(&self) -> Result<(), JobError> {
        let allowed: &[&str] = match self.kind.as_str() {
            "file" => &["path"],
            "postgres" => &[
                "url",
                "password_env",
                "password_file",
                "connect_timeout",
                "table",
                "columns",
                "format",
                "delimiter",
            ],
            "kafka" => &[
                "brokers",
                "topic",
                "delivery",
                "transaction_timeout",
                "connect_timeout",
            ],
            "nats" => &[
                "url",
                "user",
                "password_env",
                "password_file",
                "subject",
                "connect_timeout",
            ],
            _ => &[],
        };
        let set = [
            ("path", self.path.is_some()),
            ("url", self.url.is_some()),
            ("password_env", self.password_env.is_some()),
            ("password_file", self.password_file.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("table", self.table.is_some()),
            ("columns", self.columns.is_some()),
            ("format", self.format.is_some()),
            ("delimiter", self.delimiter.is_some()),
            ("brokers", self.brokers.is_some()),
            ("topic", self.topic.is_some()),
            ("delivery", self.delivery.is_some()),
            ("transaction_timeout", self.transaction_timeout.is_some()),
            ("user", self.user.is_some()),
            ("subject", self.subject.is_some()),
        ];
        refuse_others("sink", &self.id, &self.kind, allowed, &set)
    }

    /// A `postgres` sink's spec, checked as far as it can be without the server.
    pub fn postgres(&self, job: &str) -> Result<super::connectors::PostgresSinkSpec, JobError> {
        use super::connectors::DEFAULT_CONNECT_TIMEOUT;
        use super::connectors::{PostgresSinkSpec, RowFormat, check_gid_length};
        let id = &self.id;
        let needs = |field: &str| {
            JobError::Invalid(format!("sink `{id}` of kind postgres needs a `{field}`"))
        };
        let password = secret(id, &self.password_env, &self.password_file)?;
        let format = match (self.format.as_deref().unwrap_or("csv"), &self.delimiter) {
            ("csv", delimiter) => {
                let delimiter = delimiter.as_deref().unwrap_or(",");
                let &[byte] = delimiter.as_bytes() else {
                    return Err(JobError::Invalid(format!(
                        "sink `{id}`: `delimiter` must be one byte, not `{delimiter}`"
                    )));
                };
                RowFormat::Delimited { delimiter: byte }
            }
            ("json", None) => RowFormat::Json,
            ("json", Some(_)) => {
                return Err(JobError::Invalid(format!(
                    "sink `{id}`: a `delimiter` is for format csv, not json"
                )));
            }
            (other, _) => {
                return Err(JobError::Invalid(format!(
                    "sink `{id}` has format `{other}`; formats are csv and json"
                )));
            }
        };
        let connect_timeout = match &self.connect_timeout {
            Some(text) => super::units::parse_duration(text)
                .map_err(|e| JobError::Invalid(format!("sink `{id}`: `connect_timeout`: {e}")))?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let spec = PostgresSinkSpec {
            url: self.url.clone().ok_or_else(|| needs("url"))?,
            password,
            table: self.table.clone().ok_or_else(|| needs("table"))?,
            columns: self.columns.clone().unwrap_or_default(),
            format,
            connect_timeout_ms: u64::try_from(connect_timeout.as_millis()).unwrap_or(u64::MAX),
        };
        spec.check(id).map_err(JobError::Invalid)?;
        check_gid_length(job, id).map_err(JobError::Invalid)?;
        Ok(spec)
    }
}

/// A duration option of node `node`, or `default`.
fn duration_option(
    node: &str,
    field: &str,
    value: &Option<String>,
    default: std::time::Duration,
) -> Result<u64, JobError> {
    let duration = match value {
        Some(text) => super::units::parse_duration(text)
            .map_err(|e| JobError::Invalid(format!("`{node}`: `{field}`: {e}")))?,
        None => default,
    };
    Ok(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// `host:port[,host:port...]` as a list, refusing an empty one.
fn broker_list(node: &str, brokers: &Option<String>) -> Result<Vec<String>, JobError> {
    let list: Vec<String> = brokers
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(String::from)
        .collect();
    if list.is_empty() {
        return Err(JobError::Invalid(format!(
            "`{node}` of kind kafka needs `brokers` (`host:port[,host:port...]`)"
        )));
    }
    Ok(list)
}

impl SinkDecl {
    /// A `kafka` sink's spec.
    pub fn kafka(&self) -> Result<super::connectors::KafkaSinkSpec, JobError> {
        use super::connectors::DEFAULT_CONNECT_TIMEOUT;
        use super::connectors::{Delivery, KafkaSinkSpec};
        let id = &self.id;
        Ok(KafkaSinkSpec {
            brokers: broker_list(id, &self.brokers)?,
            topic: self.topic.clone().ok_or_else(|| {
                JobError::Invalid(format!("sink `{id}` of kind kafka needs a `topic`"))
            })?,
            delivery: match self.delivery.as_deref().unwrap_or("exactly-once") {
                "exactly-once" => Delivery::ExactlyOnce,
                "at-least-once" => Delivery::AtLeastOnce,
                other => {
                    return Err(JobError::Invalid(format!(
                        "sink `{id}` has delivery `{other}`; it is exactly-once or at-least-once"
                    )));
                }
            },
            transaction_timeout_ms: duration_option(
                id,
                "transaction_timeout",
                &self.transaction_timeout,
                std::time::Duration::from_secs(15 * 60),
            )?,
            connect_timeout_ms: duration_option(
                id,
                "connect_timeout",
                &self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
        })
    }
}

impl SourceDecl {
    /// Refuses options the source's kind does not take.
    pub fn check_options(&self) -> Result<(), JobError> {
        let allowed: &[&str] = match self.kind.as_str() {
            "file" => &["path"],
            "sequence" => &["count", "format"],
            "nexmark" => &["count", "base_time"],
            "kafka" => &[
                "brokers",
                "topic",
                "start_from",
                "stop_at",
                "properties",
                "connect_timeout",
            ],
            "nats" => &[
                "url",
                "user",
                "password_env",
                "password_file",
                "stream",
                "consumer",
                "subject",
                "ack_wait",
                "stop_at",
                "connect_timeout",
            ],
            _ => &[],
        };
        let set = [
            ("path", self.path.is_some()),
            ("count", self.count.is_some()),
            ("format", self.format.is_some()),
            ("base_time", self.base_time.is_some()),
            ("brokers", self.brokers.is_some()),
            ("topic", self.topic.is_some()),
            ("start_from", self.start_from.is_some()),
            ("stop_at", self.stop_at.is_some()),
            ("properties", self.properties.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("url", self.url.is_some()),
            ("user", self.user.is_some()),
            ("password_env", self.password_env.is_some()),
            ("password_file", self.password_file.is_some()),
            ("stream", self.stream.is_some()),
            ("consumer", self.consumer.is_some()),
            ("subject", self.subject.is_some()),
            ("ack_wait", self.ack_wait.is_some()),
        ];
        refuse_others("source", &self.id, &self.kind, allowed, &set)
    }

    /// A `kafka` source's spec.
    pub fn kafka(&self) -> Result<super::connectors::KafkaSourceSpec, JobError> {
        use super::connectors::DEFAULT_CONNECT_TIMEOUT;
        use super::connectors::{KafkaSourceSpec, StartFrom};
        let id = &self.id;
        Ok(KafkaSourceSpec {
            brokers: broker_list(id, &self.brokers)?,
            topic: self.topic.clone().ok_or_else(|| {
                JobError::Invalid(format!("source `{id}` of kind kafka needs a `topic`"))
            })?,
            start_from: match self.start_from.as_deref().unwrap_or("earliest") {
                "earliest" => StartFrom::Earliest,
                "latest" => StartFrom::Latest,
                other => {
                    return Err(JobError::Invalid(format!(
                        "source `{id}` has start_from `{other}`; it is earliest or latest"
                    )));
                }
            },
            bounded: stops_at_latest(id, &self.stop_at)?,
            properties: self
                .properties
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            connect_timeout_ms: duration_option(
                id,
                "connect_timeout",
                &self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
        })
    }
}

/// The password of node `node`, from an environment variable or a file (never the manifest).
fn secret(
    node: &str,
    env: &Option<String>,
    file: &Option<String>,
) -> Result<Option<super::connectors::Secret>, JobError> {
    use super::connectors::Secret;
    match (env, file) {
        (Some(_), Some(_)) => Err(JobError::Invalid(format!(
            "`{node}`: give the password with `password_env` or `password_file`, not both"
        ))),
        (Some(var), None) => Ok(Some(Secret::Env(var.clone()))),
        (None, Some(file)) => Ok(Some(Secret::File(PathBuf::from(file)))),
        (None, None) => Ok(None),
    }
}

/// A NATS `url`, refused with a password in it.
fn nats_url(node: &str, url: &Option<String>) -> Result<String, JobError> {
    let url = url.clone().ok_or_else(|| {
        JobError::Invalid(format!(
            "`{node}` of kind nats needs a `url` (`nats://host:port`)"
        ))
    })?;
    if super::connectors::nats_url_has_password(&url) {
        return Err(JobError::Invalid(format!(
            "`{node}`: the `url` holds a password; give `user` and `password_env` or \
             `password_file` instead, so it is not stored with the job"
        )));
    }
    Ok(url)
}

impl SinkDecl {
    /// A `nats` sink's spec.
    pub fn nats(&self) -> Result<super::connectors::NatsSinkSpec, JobError> {
        use super::connectors::{DEFAULT_CONNECT_TIMEOUT, NatsSinkSpec};
        let id = &self.id;
        Ok(NatsSinkSpec {
            url: nats_url(id, &self.url)?,
            user: self.user.clone(),
            password: secret(id, &self.password_env, &self.password_file)?,
            subject: self.subject.clone().ok_or_else(|| {
                JobError::Invalid(format!("sink `{id}` of kind nats needs a `subject`"))
            })?,
            connect_timeout_ms: duration_option(
                id,
                "connect_timeout",
                &self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
        })
    }
}

impl SourceDecl {
    /// A `nats` source's spec; its durable consumer defaults to `weir-<job>-<source>`.
    pub fn nats(&self, job: &str) -> Result<super::connectors::NatsSourceSpec, JobError> {
        use super::connectors::{DEFAULT_CONNECT_TIMEOUT, NatsSourceSpec};
        let id = &self.id;
        Ok(NatsSourceSpec {
            url: nats_url(id, &self.url)?,
            user: self.user.clone(),
            password: secret(id, &self.password_env, &self.password_file)?,
            stream: self.stream.clone().ok_or_else(|| {
                JobError::Invalid(format!("source `{id}` of kind nats needs a `stream`"))
            })?,
            consumer: self
                .consumer
                .clone()
                .unwrap_or_else(|| format!("weir-{job}-{id}")),
            subject: self.subject.clone(),
            ack_wait_ms: duration_option(
                id,
                "ack_wait",
                &self.ack_wait,
                std::time::Duration::from_secs(60),
            )?,
            bounded: stops_at_latest(id, &self.stop_at)?,
            connect_timeout_ms: duration_option(
                id,
                "connect_timeout",
                &self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
        })
    }
}

/// Refuses the first option of `set` (name, whether given) that node `id` of kind `kind`
/// does not take.
fn refuse_others(
    what: &str,
    id: &str,
    kind: &str,
    allowed: &[&str],
    set: &[(&str, bool)],
) -> Result<(), JobError> {
    match set.iter().find(|(name, on)| *on && !allowed.contains(name)) {
        Some((name, _)) => Err(JobError::Invalid(format!(
            "{what} `{id}` of kind {kind} does not take `{name}`"
        ))),
        None => Ok(()),
    }
}

/// Whether a source's `stop_at` makes it bounded: `latest`, or unset (never).
fn stops_at_latest(id: &str, stop_at: &Option<String>) -> Result<bool, JobError> {
    match stop_at.as_deref() {
        None => Ok(false),
        Some("latest") => Ok(true),
        Some(other) => Err(JobError::Invalid(format!(
            "source `{id}` has stop_at `{other}`; it is latest (or unset: never)"
        ))),
    }
}
