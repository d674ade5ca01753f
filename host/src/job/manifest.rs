//! The job manifest: what a user writes. Parsed with serde from TOML; `${name}` placeholders in
//! string values are filled from `--arg name=value` before anything else looks at them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A manifest that cannot become a job. Every case names what and where.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read job manifest `{path}`: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("job manifest `{path}` is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("job manifest uses `${{{name}}}` in {place} but no `--arg {name}=...` was given")]
    MissingArg { name: String, place: String },
    #[error("{0}")]
    Invalid(String),
}

/// A source: where records come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDecl {
    pub id: String,
    /// `file` (lines of a text file) or `sequence` (the numbers `0..count`).
    pub kind: String,
    pub path: Option<String>,
    pub count: Option<u64>,
    /// For `sequence`: `fixed64` (8-byte little-endian integers, the SDK's `BincodeFixed`) or
    /// `text` (decimal text).
    pub format: Option<String>,
    /// For `nexmark`: the time of the first event, epoch milliseconds (default 2015-07-15).
    pub base_time: Option<u64>,
    pub parallelism: Option<u32>,
    /// After its first batch, read on only once this many checkpoints have completed (with
    /// checkpointing; ignored without). Flink's tests use such a source (`FiniteTestSource`)
    /// so that checkpoints fall in the middle of a short job on any machine, however slow.
    pub wait_for_checkpoints: Option<u64>,
    /// Watermarks from the source's own timestamps (a sequence's: its numbers, as
    /// milliseconds; a Kafka record's timestamp).
    pub watermarks: Option<WatermarksDecl>,
    /// For `kafka`: bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: Option<String>,
    /// For `kafka`: the topic.
    pub topic: Option<String>,
    /// For `kafka`: where a partition without a checkpointed offset starts, `earliest`
    /// (default) or `latest`.
    pub start_from: Option<String>,
    /// For `kafka`: `latest` stops at the partitions' ends as the job first starts (a bounded
    /// job); unset, the source reads on until the job is stopped.
    pub stop_at: Option<String>,
    /// For `kafka`: extra librdkafka consumer properties.
    pub properties: Option<BTreeMap<String, String>>,
    /// For external systems: how long to keep trying to reach the server (`30s`).
    pub connect_timeout: Option<String>,
    /// For `nats`: the servers, `nats://host:port[,...]`, without credentials.
    pub url: Option<String>,
    /// For `nats`: the user, whose password comes from `password_env` or `password_file`.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// For `nats`: the JetStream stream.
    pub stream: Option<String>,
    /// For `nats`: the durable consumer (default `weir-<job>-<source>`).
    pub consumer: Option<String>,
    /// For `nats`: only this subject of the stream.
    pub subject: Option<String>,
    /// For `nats`: how long the server waits for an acknowledgement (`60s`).
    pub ack_wait: Option<String>,
}

/// A watermark strategy, on the node whose output carries event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarksDecl {
    /// How far behind the largest timestamp the watermark trails (`4s`); unset or `0s`:
    /// timestamps only grow (Flink's monotonous watermarks).
    pub out_of_orderness: Option<String>,
    /// A source split without records this long stops holding the watermark back (`1m`).
    pub idle_timeout: Option<String>,
}

impl WatermarksDecl {
    pub fn strategy(&self, node: &str) -> Result<crate::job::WatermarkStrategy, JobError> {
        let ms = |field: &str, text: &Option<String>| -> Result<Option<u64>, JobError> {
            text.as_deref()
                .map(|t| {
                    crate::job::units::parse_duration(t)
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                        .map_err(|e| {
                            JobError::Invalid(format!("`{node}`: `watermarks.{field}`: {e}"))
                        })
                })
                .transpose()
        };
        let idle_timeout_ms = ms("idle_timeout", &self.idle_timeout)?;
        if idle_timeout_ms == Some(0) {
            return Err(JobError::Invalid(format!(
                "`{node}`: `watermarks.idle_timeout` must be longer than 0 (a source idle at \
                 once would never hold the watermark)"
            )));
        }
        Ok(crate::job::WatermarkStrategy {
            out_of_orderness_ms: ms("out_of_orderness", &self.out_of_orderness)?.unwrap_or(0),
            idle_timeout_ms,
        })
    }
}

/// One input of an operator or sink: a node id, or several (their union).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    pub fn ids(&self) -> Vec<&str> {
        match self {
            Inputs::One(id) => vec![id.as_str()],
            Inputs::Many(ids) => ids.iter().map(String::as_str).collect(),
        }
    }
}

/// An operator: a named operator of a wasm component (or a built-in native operator).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorDecl {
    pub id: String,
    /// Path of the `.wasm` component, relative to the manifest.
    pub component: Option<String>,
    /// The operator's name inside the component; defaults to `id`.
    pub operator: Option<String>,
    /// A built-in native operator instead of a component (benchmarks compare against these).
    pub native: Option<String>,
    pub input: Inputs,
    /// `forward`, `rebalance`, `hash` or `broadcast`.
    pub edge: Option<String>,
    pub parallelism: Option<u32>,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Watermarks from the timestamps this operator gives its output records.
    pub watermarks: Option<WatermarksDecl>,
    /// A second input (node ids), for two-input operators: the guest tells its records from
    /// the first input's (Flink's `connect`, joins).
    pub second_input: Option<Inputs>,
    /// The edge into the second input (default forward).
    pub second_edge: Option<String>,
}

/// A sink: where records end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDecl {
    pub id: String,
    /// `file`, `stdout`, `discard` or `postgres`.
    pub kind: String,
    pub path: Option<String>,
    pub input: Inputs,
    pub edge: Option<String>,
    pub parallelism: Option<u32>,
    /// For external systems: the server (`postgresql://user@host:port/database`).
    pub url: Option<String>,
    /// The environment variable that holds the password (of the process that connects).
    pub password_env: Option<String>,
    /// A file that holds the password.
    pub password_file: Option<String>,
    /// How long to keep trying to reach the server (`30s`).
    pub connect_timeout: Option<String>,
    /// For `postgres`: the table rows go to.
    pub table: Option<String>,
    /// For `postgres`: the columns the record's fields fill (default: all, in table order).
    pub columns: Option<Vec<String>>,
    /// How a record becomes fields: `csv` (default; split at `delimiter`) or `json`.
    pub format: Option<String>,
    /// For `csv`: the one-byte field separator (default `,`).
    pub delimiter: Option<String>,
    /// For `kafka`: bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: Option<String>,
    /// For `kafka`: the topic records go to.
    pub topic: Option<String>,
    /// For `kafka`: `exactly-once` (default; transactions, needs checkpoints to commit before
    /// the job ends) or `at-least-once`.
    pub delivery: Option<String>,
    /// For `kafka` exactly-once: how long the broker keeps a transaction open (`15m`).
    pub transaction_timeout: Option<String>,
    /// For `nats`: the user, whose password comes from `password_env` or `password_file`.
    pub user: Option<String>,
    /// For `nats`: the subject records are published to.
    pub subject: Option<String>,
}

/// A job manifest as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Option<String>,
    /// Parallelism of every node that sets none.
    pub parallelism: Option<u32>,
    /// Key groups of the job: the most subtasks keyed state can ever be split into.
    pub max_parallelism: Option<u32>,
    /// Longest a partly filled network buffer waits before it is sent, in milliseconds.
    pub buffer_timeout_ms: Option<u64>,
    /// Checkpoint every this many milliseconds (needs a checkpoint directory at run time).
    pub checkpoint_interval_ms: Option<u64>,
    /// Abandon a checkpoint not complete after this many milliseconds.
    pub checkpoint_timeout_ms: Option<u64>,
    /// Complete checkpoints to keep.
    pub checkpoints_retained: Option<usize>,
    /// Longest one call into an operator may run (`30s`, `500ms`).
    pub call_deadline: Option<String>,
    /// Largest memory of an operator instance (`512MiB`).
    pub memory_limit: Option<String>,
    /// Most keyed state an operator subtask may hold (`1GiB`).
    pub state_limit: Option<String>,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceDecl>,
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorDecl>,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkDecl>,
    /// Directory relative paths are resolved against (the manifest's own).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Manifest {
    /// The sandbox limits the manifest sets, parsed.
    pub fn limits(&self) -> Result<crate::job::JobLimits, JobError> {
        fn parsed<T>(
            key: &str,
            value: &Option<String>,
            parse: fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, JobError> {
            value
                .as_deref()
                .map(|s| {
                    parse(s).map_err(|e| JobError::Invalid(format!("`{key}` in the manifest: {e}")))
                })
                .transpose()
        }
        use super::units::{parse_bytes, parse_duration};
        Ok(crate::job::JobLimits {
            call_deadline: parsed("call_deadline", &self.call_deadline, parse_duration)?,
            memory_bytes: parsed("memory_limit", &self.memory_limit, parse_bytes)?,
            state_bytes: parsed("state_limit", &self.state_limit, parse_bytes)?,
            log_bytes: None,
        })
    }
}

/// Reads the manifest at `path`, filling `${name}` placeholders from `args`.
pub fn load_manifest(path: &Path, args: &BTreeMap<String, String>) -> Result<Manifest, JobError> {
    let text = std::fs::read_to_string(path).map_err(|error| JobError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut manifest = parse_manifest(&text, args).map_err(|e| match e {
        JobError::Parse { message, .. } => JobError::Parse {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    })?;
    manifest.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(manifest)
}

/// Parses manifest text; relative paths stay relative to the working directory.
pub fn parse_manifest(text: &str, args: &BTreeMap<String, String>) -> Result<Manifest, JobError> {
    let parse_error = |message: String| JobError::Parse {
        path: PathBuf::from("<text>"),
        message,
    };
    let mut value: toml::Value = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
    substitute(&mut value, args, "the manifest")?;
    value
        .try_into()
        .map_err(|e: toml::de::Error| parse_error(e.to_string()))
}

fn substitute(
    value: &mut toml::Value,
    args: &BTreeMap<String, String>,
    place: &str,
) -> Result<(), JobError> {
    match value {
        toml::Value::String(s) => *s = fill(s, args, place)?,
        toml::Value::Array(items) => {
            for item in items {
                substitute(item, args, place)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                substitute(item, args, &format!("`{key}`"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn fill(s: &str, args: &BTreeMap<String, String>, place: &str) -> Result<String, JobError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = args.get(name).ok_or_else(|| JobError::MissingArg {
            name: name.to_string(),
            place: place.to_string(),
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_graph_crafted_past_the_manifest_checks_is_refused_by_check() {
        let good = parse_manifest(
            "name = \"wc\"\n[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 3\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"n\"\nedge = \"rebalance\"\nparallelism = 1\n",
            &args(&[]),
        )
        .unwrap()
        .job_graph(Some(2))
        .unwrap();
        good.check().unwrap();
        let refused = |change: &dyn Fn(&mut crate::job::JobGraph), expected: &str| {
            let mut graph = good.clone();
            change(&mut graph);
            let err = graph.check().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        refused(
            &|g| g.name = "../../bob/chk/job".into(),
            "job name `../../bob/chk/job`",
        );
        refused(&|g| g.name = "/srv/bob".into(), "job name `/srv/bob`");
        refused(&|g| g.max_parallelism = 0, "max_parallelism is 0");
        refused(&|g| g.vertices[0].parallelism = 0, "has parallelism 0");
        refused(&|g| g.edges[0].target = 7, "edge 0 joins no vertices");
        refused(
            &|g| g.edges[0].partitioning = crate::job::Partitioning::Forward,
            "forward edge",
        );
        refused(
            &|g| g.vertices[1].input = crate::job::VertexInput::Edges(vec![5]),
            "names an edge the job lacks",
        );
    }

    #[test]
    fn placeholders_are_filled_from_args() {
        let m = parse_manifest(
            r#"
            [[source]]
            id = "in"
            kind = "file"
            path = "${dir}/${file}.txt"
            "#,
            &args(&[("dir", "/data"), ("file", "words")]),
        )
        .unwrap();
        assert_eq!(m.sources[0].path.as_deref(), Some("/data/words.txt"));
    }

    #[test]
    fn missing_placeholder_names_the_arg_and_field() {
        let err = parse_manifest(
            "[[source]]\nid = \"in\"\nkind = \"file\"\npath = \"${input}\"",
            &args(&[]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "job manifest uses `${input}` in `path` but no `--arg input=...` was given"
        );
    }

    #[test]
    fn limits_parse_with_units_and_a_bad_one_names_its_key() {
        let m = parse_manifest(
            "call_deadline = \"5s\"\nmemory_limit = \"64MiB\"\nstate_limit = \"1GiB\"",
            &args(&[]),
        )
        .unwrap();
        let limits = m.limits().unwrap();
        assert_eq!(
            limits.call_deadline,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.state_bytes, Some(1 << 30));
        let bad = parse_manifest("state_limit = \"lots\"", &args(&[])).unwrap();
        let err = bad.limits().unwrap_err().to_string();
        assert!(
            err.contains("`state_limit`") && err.contains("`lots`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse_manifest(
            "[[source]]\nid = \"in\"\nkind = \"file\"\npaht = \"x\"",
            &args(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("paht"), "{err}");
    }
}
