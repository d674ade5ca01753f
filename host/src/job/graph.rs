//! From manifest to job graph: nodes checked, edges resolved, operators chained.
//!
//! Chaining follows Flink: a node joins its input's chain when that input is its only one, the
//! edge is `forward`, both run at the same parallelism, and the input feeds nothing else. A
//! chain is one task per subtask; everything else crosses the network stack.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::manifest::{JobError, Manifest};
use crate::state::key_groups::DEFAULT_MAX_PARALLELISM;

/// How records of an edge are distributed over the consumer's subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Partitioning {
    /// Subtask i to subtask i; both sides at the same parallelism.
    Forward,
    /// Round robin over all consumer subtasks.
    Rebalance,
    /// By key: key bytes -> key group -> subtask, stable across runs and rescaling.
    Hash,
    /// Every record to every consumer subtask.
    Broadcast,
}

impl Partitioning {
    fn parse(edge: Option<&str>, node: &str) -> Result<Self, JobError> {
        match edge.unwrap_or("forward") {
            "forward" => Ok(Partitioning::Forward),
            "rebalance" => Ok(Partitioning::Rebalance),
            "hash" => Ok(Partitioning::Hash),
            "broadcast" => Ok(Partitioning::Broadcast),
            other => Err(JobError::Invalid(format!(
                "`{node}` has edge `{other}`; edges are forward, rebalance, hash or broadcast"
            ))),
        }
    }
}

/// Where a job's records come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceSpec {
    /// Lines of a text file, split by byte ranges across subtasks.
    File { path: PathBuf },
    /// The integers `0..count`, split across subtasks; `timestamps`: each record's event time
    /// is its number, in milliseconds (the source's own timestamps, for watermarks).
    Sequence {
        count: u64,
        text: bool,
        #[serde(default)]
        timestamps: bool,
    },
    /// Nexmark events `0..count` of the generator whose first event is at `base_time` (unset:
    /// the generator's pinned default), as JSON lines stamped with their times, split by event
    /// numbers.
    Nexmark { count: u64, base_time: Option<u64> },
    /// The partitions of a Kafka topic, split across subtasks.
    Kafka(super::connectors::KafkaSourceSpec),
    /// A NATS JetStream stream through a durable pull consumer the subtasks share.
    Nats(super::connectors::NatsSourceSpec),
}

/// Where a job's records end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SinkSpec {
    /// One line per record: the file itself at parallelism 1, `part-<i>` files in the directory
    /// above.
    File {
        path: PathBuf,
    },
    Stdout,
    Discard,
    /// Rows of a PostgreSQL table.
    Postgres(super::connectors::PostgresSinkSpec),
    /// Records of a Kafka topic.
    Kafka(super::connectors::KafkaSinkSpec),
    /// Messages of a NATS JetStream subject.
    Nats(super::connectors::NatsSinkSpec),
}

/// What runs an operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorImpl {
    /// A named operator of a wasm component.
    Wasm {
        component: PathBuf,
        operator: String,
    },
    /// A built-in native operator.
    Native(String),
}

/// An operator placed in a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainedOperator {
    pub id: String,
    pub implementation: OperatorImpl,
    pub config: Vec<(String, String)>,
}

/// An edge between vertices.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Edge {
    pub source: usize,
    pub target: usize,
    pub partitioning: Partitioning,
    /// Into the second input of the target, a two-input operator.
    #[serde(default)]
    pub second: bool,
}

/// Where a vertex's input comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VertexInput {
    Source(SourceSpec),
    /// Indices into [`JobGraph::edges`]; more than one is a union of inputs.
    Edges(Vec<usize>),
}

/// Where a vertex's output goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VertexOutput {
    Sink(SinkSpec),
    /// Indices into [`JobGraph::edges`].
    Edges(Vec<usize>),
}

/// A chain of nodes, run as one task per subtask.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobVertex {
    /// Ids of the chained nodes, joined with ` -> `.
    pub name: String,
    /// Ids of the chained nodes, in chain order.
    pub node_ids: Vec<String>,
    pub parallelism: u32,
    pub input: VertexInput,
    pub operators: Vec<ChainedOperator>,
    pub output: VertexOutput,
    /// For a source vertex: after its first batch, each subtask reads on only once this many
    /// checkpoints have completed (see the manifest's `wait_for_checkpoints`).
    pub source_waits_for_checkpoints: Option<u64>,
    /// Where in the chain watermarks are generated, if the chain holds the node that declares
    /// them.
    #[serde(default)]
    pub watermarks: Option<VertexWatermarks>,
}

/// How a node's output gets watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkStrategy {
    /// Bounded out-of-orderness: the watermark trails the largest timestamp seen by this much
    /// (and one millisecond, as Flink's `BoundedOutOfOrdernessWatermarks`); 0: monotonous.
    pub out_of_orderness_ms: u64,
    /// A split (or task) without records this long stops holding the watermark back.
    pub idle_timeout_ms: Option<u64>,
}

/// A watermark generator in a vertex's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VertexWatermarks {
    /// How many of the chain's operators come before it: 0 right after the input (a source's
    /// own timestamps), n after the n-th operator (the one that assigns timestamps).
    pub after: usize,
    pub strategy: WatermarkStrategy,
}

/// A checked job: vertices in topological order and the edges between them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobGraph {
    pub name: String,
    pub max_parallelism: u32,
    pub buffer_timeout_ms: u64,
    pub checkpoint_interval_ms: Option<u64>,
    pub checkpoint_timeout_ms: u64,
    pub checkpoints_retained: usize,
    /// Limits the job asks for its operators; unset ones take the cluster's defaults.
    pub limits: JobLimits,
    /// Capabilities its guests get: none unless the cluster grants them (a tenant's come from
    /// the tenants file, never from the job).
    #[serde(default)]
    pub grants: Grants,
    pub vertices: Vec<JobVertex>,
    pub edges: Vec<Edge>,
}

/// Capabilities granted to a job's guests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    /// Real clocks (without: clocks read zero, and a guest cannot wait).
    pub clocks: bool,
    /// Real randomness (without: a sequence fixed by job and subtask).
    #[serde(default)]
    pub random: bool,
}

/// Sandbox limits a job sets for each of its operator subtasks, within the cluster's maximums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobLimits {
    /// Longest one call into a guest may run.
    pub call_deadline: Option<std::time::Duration>,
    /// Largest linear memory of a guest.
    pub memory_bytes: Option<u64>,
    /// Most bytes of keyed state an operator subtask may hold.
    pub state_bytes: Option<u64>,
    /// Most bytes of log output an operator subtask may write (a tenant's quota sets it).
    #[serde(default)]
    pub log_bytes: Option<u64>,
}

/// Whether `name` may name a job (it names the job's checkpoint directory).
fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.')
}

impl JobGraph {
    /// Checks a graph that did not come from [`Manifest::job_graph`] here (an upload, a job
    /// store): what the manifest's checks guarantee, so nothing a sender crafts can name a
    /// path outside the checkpoint directory, divide by a zero parallelism or index past the
    /// vertices and edges.
    pub fn check(&self) -> Result<(), JobError> {
        if !valid_job_name(&self.name) {
            return Err(invalid(format!(
                "job name `{}` must be letters, digits, `-`, `_` and `.` (it names the job's \
                 checkpoint directory)",
                self.name
            )));
        }
        if self.max_parallelism == 0 || self.max_parallelism > 32_768 {
            return Err(invalid(format!(
                "max_parallelism is {}; it must be between 1 and 32768",
                self.max_parallelism
            )));
        }
        if self.vertices.is_empty() {
            return Err(invalid("the job has no vertex".into()));
        }
        let (vertices, edges) = (self.vertices.len(), self.edges.len());
        for (i, e) in self.edges.iter().enumerate() {
            // Vertices come in topological order: an edge goes forward.
            if e.source >= vertices || e.target >= vertices || e.source >= e.target {
                return Err(invalid(format!("edge {i} joins no vertices of the job")));
            }
        }
        for v in &self.vertices {
            if v.parallelism == 0 || v.parallelism > self.max_parallelism {
                return Err(invalid(format!(
                    "`{}` has parallelism {}; it must be between 1 and max_parallelism {}",
                    v.name, v.parallelism, self.max_parallelism
                )));
            }
            let named = match (&v.input, &v.output) {
                (VertexInput::Edges(i), VertexOutput::Edges(o)) => [i.as_slice(), o].concat(),
                (VertexInput::Edges(i), _) => i.clone(),
                (_, VertexOutput::Edges(o)) => o.clone(),
                _ => Vec::new(),
            };
            if named.iter().any(|&e| e >= edges) {
                return Err(invalid(format!("`{}` names an edge the job lacks", v.name)));
            }
            if v.watermarks.is_some_and(|w| w.after > v.operators.len()) {
                return Err(invalid(format!(
                    "`{}` generates watermarks after an operator it lacks",
                    v.name
                )));
            }
        }
        for e in &self.edges {
            let (from, to) = (&self.vertices[e.source], &self.vertices[e.target]);
            if e.second && to.operators.is_empty() {
                return Err(invalid(format!(
                    "a second input goes into `{}`, which has no operator to take it",
                    to.name
                )));
            }
            if e.partitioning == Partitioning::Forward && from.parallelism != to.parallelism {
                return Err(invalid(format!(
                    "a forward edge from `{}` to `{}` joins different parallelisms",
                    from.name, to.name
                )));
            }
        }
        Ok(())
    }

    /// Slots the job needs: with slot sharing (as Flink does by default), one subtask of every
    /// vertex can share a slot, so the job needs as many slots as its widest vertex.
    pub fn slots_needed(&self) -> u32 {
        self.vertices
            .iter()
            .map(|v| v.parallelism)
            .max()
            .unwrap_or(0)
    }
}

enum NodeKind {
    Source(SourceSpec),
    Operator(ChainedOperator),
    Sink(SinkSpec),
}

struct Node {
    id: String,
    /// A source's `wait_for_checkpoints`.
    waits_for_checkpoints: Option<u64>,
    /// The watermark strategy it declares for its output.
    watermarks: Option<WatermarkStrategy>,
    kind: NodeKind,
    parallelism: u32,
    /// (node, edge, into its second input).
    inputs: Vec<(usize, Partitioning, bool)>,
    consumers: Vec<usize>,
}

fn invalid(message: String) -> JobError {
    JobError::Invalid(message)
}

impl Manifest {
    /// Checks the manifest and builds its job graph; `parallelism` overrides the default
    /// parallelism of nodes that set none.
    pub fn job_graph(&self, parallelism: Option<u32>) -> Result<JobGraph, JobError> {
        let default_par = parallelism.or(self.parallelism).unwrap_or(1);
        let name = self.name.clone().unwrap_or_else(|| "job".into());
        // External systems keep what a job names by its name (a sink's transactions, a
        // source's durable consumer): two unnamed jobs would share them.
        let external = self
            .sinks
            .iter()
            .map(|s| (&s.id, &s.kind, "sink"))
            .chain(self.sources.iter().map(|s| (&s.id, &s.kind, "source")))
            .find(|(_, kind, what)| match *what {
                "sink" => matches!(kind.as_str(), "postgres" | "kafka" | "nats"),
                _ => kind.as_str() == "nats",
            });
        if let (None, Some((id, kind, what))) = (&self.name, external) {
            return Err(invalid(format!(
                "the job needs a `name`: its {kind} {what} `{id}` names what it keeps in \
                 {kind} (transactions, message ids, a consumer) by it, across restarts"
            )));
        }
        if !valid_job_name(&name) {
            return Err(invalid(format!(
                "job name `{name}` must be letters, digits, `-`, `_` and `.` (it names the job's checkpoint directory)"
            )));
        }
        let max_parallelism = self.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM);
        if max_parallelism == 0 || max_parallelism > 32_768 {
            return Err(invalid(format!(
                "max_parallelism is {max_parallelism}; it must be between 1 and 32768"
            )));
        }
        let par = |id: &str, p: Option<u32>| -> Result<u32, JobError> {
            let p = p.unwrap_or(default_par);
            if p == 0 || p > max_parallelism {
                return Err(invalid(format!(
                    "`{id}` has parallelism {p}; it must be between 1 and max_parallelism {max_parallelism}"
                )));
            }
            Ok(p)
        };
        // Components ship with the manifest: relative to its directory. Data paths usually come
        // from `--arg` at run time: relative to the working directory, as a shell user expects.
        let resolve = |p: &str| -> PathBuf {
            let path = PathBuf::from(p);
            if path.is_absolute() {
                path
            } else {
                self.base_dir.join(path)
            }
        };
        let data_path = |p: &str| -> PathBuf { PathBuf::from(p) };

        let mut nodes: Vec<Node> = Vec::new();
        let mut raw_inputs: Vec<(Vec<String>, Option<String>)> = Vec::new();
        // (node, its second input's ids, edge): two-input operators.
        let mut raw_second: Vec<(usize, Vec<String>, Option<String>)> = Vec::new();
        for s in &self.sources {
            s.check_options()?;
            let spec = match s.kind.as_str() {
                "file" => SourceSpec::File {
                    path: data_path(s.path.as_deref().ok_or_else(|| {
                        invalid(format!("source `{}` of kind file needs a `path`", s.id))
                    })?),
                },
                "sequence" => SourceSpec::Sequence {
                    timestamps: s.watermarks.is_some(),
                    count: s.count.ok_or_else(|| {
                        invalid(format!(
                            "source `{}` of kind sequence needs a `count`",
                            s.id
                        ))
                    })?,
                    text: match s.format.as_deref().unwrap_or("fixed64") {
                        "fixed64" => false,
                        "text" => true,
                        other => {
                            return Err(invalid(format!(
                                "source `{}` has format `{other}`; formats are fixed64 and text",
                                s.id
                            )));
                        }
                    },
                },
                "nexmark" => SourceSpec::Nexmark {
                    count: s.count.ok_or_else(|| {
                        invalid(format!(
                            "source `{}` of kind nexmark needs a `count` of events",
                            s.id
                        ))
                    })?,
                    base_time: s.base_time,
                },
                "kafka" => SourceSpec::Kafka(s.kafka()?),
                "nats" => SourceSpec::Nats(s.nats(&name)?),
                other => {
                    return Err(invalid(format!(
                        "source `{}` has kind `{other}`; sources are file, sequence, nexmark, \
                         kafka and nats",
                        s.id
                    )));
                }
            };
            if s.watermarks.is_some() && s.kind == "file" {
                return Err(invalid(format!(
                    "source `{}`: a file's lines have no timestamps of their own; declare \
                     `watermarks` on the operator that gives records their timestamps",
                    s.id
                )));
            }
            nodes.push(Node {
                id: s.id.clone(),
                watermarks: s
                    .watermarks
                    .as_ref()
                    .map(|w| w.strategy(&s.id))
                    .transpose()?,
                waits_for_checkpoints: s.wait_for_checkpoints,
                kind: NodeKind::Source(spec),
                parallelism: par(&s.id, s.parallelism)?,
                inputs: Vec::new(),
                consumers: Vec::new(),
            });
            raw_inputs.push((Vec::new(), None));
        }
        for o in &self.operators {
            let implementation = match (&o.component, &o.native) {
                (Some(component), None) => {
                    let path = resolve(component);
                    if !path.is_file() {
                        return Err(invalid(format!(
                            "operator `{}`: component file `{}` does not exist",
                            o.id,
                            path.display()
                        )));
                    }
                    OperatorImpl::Wasm {
                        component: path,
                        operator: o.operator.clone().unwrap_or_else(|| o.id.clone()),
                    }
                }
                (None, Some(native)) => OperatorImpl::Native(native.clone()),
                _ => {
                    return Err(invalid(format!(
                        "operator `{}` needs exactly one of `component` and `native`",
                        o.id
                    )));
                }
            };
            let config = o
                .config
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect();
            nodes.push(Node {
                waits_for_checkpoints: None,
                watermarks: o
                    .watermarks
                    .as_ref()
                    .map(|w| w.strategy(&o.id))
                    .transpose()?,
                id: o.id.clone(),
                kind: NodeKind::Operator(ChainedOperator {
                    id: o.id.clone(),
                    implementation,
                    config,
                }),
                parallelism: par(&o.id, o.parallelism)?,
                inputs: Vec::new(),
                consumers: Vec::new(),
            });
            if let Some(second) = &o.second_input {
                raw_second.push((
                    raw_inputs.len(),
                    second.ids().into_iter().map(String::from).collect(),
                    o.second_edge.clone(),
                ));
            } else if o.second_edge.is_some() {
                return Err(invalid(format!(
                    "operator `{}` has a `second_edge` but no `second_input`",
                    o.id
                )));
            }
            raw_inputs.push((
                o.input.ids().into_iter().map(String::from).collect(),
                o.edge.clone(),
            ));
        }
        for s in &self.sinks {
            s.check_options()?;
            let spec = match s.kind.as_str() {
                "file" => SinkSpec::File {
                    path: data_path(s.path.as_deref().ok_or_else(|| {
                        invalid(format!("sink `{}` of kind file needs a `path`", s.id))
                    })?),
                },
                "stdout" => SinkSpec::Stdout,
                "discard" => SinkSpec::Discard,
                "postgres" => SinkSpec::Postgres(s.postgres(&name)?),
                "kafka" => SinkSpec::Kafka(s.kafka()?),
                "nats" => SinkSpec::Nats(s.nats()?),
                other => {
                    return Err(invalid(format!(
                        "sink `{}` has kind `{other}`; sinks are file, stdout, discard, \
                         postgres, kafka and nats",
                        s.id
                    )));
                }
            };
            nodes.push(Node {
                waits_for_checkpoints: None,
                watermarks: None,
                id: s.id.clone(),
                kind: NodeKind::Sink(spec),
                parallelism: par(&s.id, s.parallelism)?,
                inputs: Vec::new(),
                consumers: Vec::new(),
            });
            raw_inputs.push((
                s.input.ids().into_iter().map(String::from).collect(),
                s.edge.clone(),
            ));
        }
        if self.sources.is_empty() {
            return Err(invalid("the job has no source".into()));
        }
        if self.sinks.is_empty() {
            return Err(invalid("the job has no sink".into()));
        }

        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.id.is_empty()
                || n.id.starts_with('.')
                || !n
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(format!(
                    "node id `{}` must be letters, digits, `-`, `_` and `.` (it names state files)",
                    n.id
                )));
            }
            if index.insert(n.id.as_str(), i).is_some() {
                return Err(invalid(format!("two nodes have the id `{}`", n.id)));
            }
        }
        let mut wiring = Vec::new();
        let all_inputs = raw_inputs
            .iter()
            .enumerate()
            .map(|(i, (inputs, edge))| (i, inputs, edge, false))
            .chain(
                raw_second
                    .iter()
                    .map(|(i, inputs, edge)| (*i, inputs, edge, true)),
            );
        for (i, inputs, edge, second) in all_inputs {
            let id = nodes[i].id.clone();
            if !matches!(nodes[i].kind, NodeKind::Source(_)) && inputs.is_empty() {
                return Err(invalid(format!("`{id}` has no input")));
            }
            let partitioning = Partitioning::parse(edge.as_deref(), &id)?;
            for input in inputs {
                let &from = index.get(input.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "`{id}` reads from `{input}`, which is not a node of the job"
                    ))
                })?;
                if matches!(nodes[from].kind, NodeKind::Sink(_)) {
                    return Err(invalid(format!(
                        "`{id}` reads from sink `{input}`; sinks have no output"
                    )));
                }
                if partitioning == Partitioning::Forward
                    && nodes[from].parallelism != nodes[i].parallelism
                {
                    return Err(invalid(format!(
                        "`{id}` (parallelism {}) reads from `{input}` (parallelism {}) over a forward edge, \
                         which needs equal parallelism; use rebalance or hash",
                        nodes[i].parallelism, nodes[from].parallelism
                    )));
                }
                wiring.push((from, i, partitioning, second));
            }
        }
        for (from, to, partitioning, second) in wiring {
            nodes[to].inputs.push((from, partitioning, second));
            nodes[from].consumers.push(to);
        }
        for n in &nodes {
            if !matches!(n.kind, NodeKind::Sink(_)) && n.consumers.is_empty() {
                return Err(invalid(format!(
                    "the output of `{}` goes nowhere; connect it to an operator or sink",
                    n.id
                )));
            }
        }
        let order = topological_order(&nodes)?;

        // Chain: node -> the vertex (and position) it belongs to.
        let chains_into = |n: &Node, nodes: &[Node]| -> Option<usize> {
            let [(from, Partitioning::Forward, false)] = n.inputs.as_slice() else {
                return None;
            };
            let up = &nodes[*from];
            (up.consumers.len() == 1 && up.parallelism == n.parallelism).then_some(*from)
        };
        let mut vertex_of: Vec<Option<usize>> = vec![None; nodes.len()];
        let mut members: Vec<Vec<usize>> = Vec::new();
        for &i in &order {
            match chains_into(&nodes[i], &nodes) {
                Some(up) => {
                    let v = vertex_of[up].expect("topological order visits inputs first");
                    vertex_of[i] = Some(v);
                    members[v].push(i);
                }
                None => {
                    vertex_of[i] = Some(members.len());
                    members.push(vec![i]);
                }
            }
        }

        let mut edges = Vec::new();
        let mut inputs_of: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut outputs_of: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let target = vertex_of[i].expect("every node placed");
            for &(from, partitioning, second) in &n.inputs {
                let source = vertex_of[from].expect("every node placed");
                if source == target {
                    continue;
                }
                outputs_of.entry(source).or_default().push(edges.len());
                inputs_of.entry(target).or_default().push(edges.len());
                edges.push(Edge {
                    source,
                    target,
                    partitioning,
                    second,
                });
            }
        }

        let mut vertices = Vec::new();
        for (v, ids) in members.iter().enumerate() {
            let first = &nodes[ids[0]];
            let last = &nodes[*ids.last().expect("non-empty chain")];
            let input = match &first.kind {
                NodeKind::Source(spec) => VertexInput::Source(spec.clone()),
                _ => VertexInput::Edges(inputs_of.remove(&v).unwrap_or_default()),
            };
            let output = match &last.kind {
                NodeKind::Sink(spec) => VertexOutput::Sink(spec.clone()),
                _ => VertexOutput::Edges(outputs_of.remove(&v).unwrap_or_default()),
            };
            let operators: Vec<ChainedOperator> = ids
                .iter()
                .filter_map(|&i| match &nodes[i].kind {
                    NodeKind::Operator(op) => Some(op.clone()),
                    _ => None,
                })
                .collect();
            let mut watermarks = None;
            let mut operators_so_far = 0;
            for &i in ids {
                if matches!(nodes[i].kind, NodeKind::Operator(_)) {
                    operators_so_far += 1;
                }
                if let Some(strategy) = nodes[i].watermarks {
                    if let Some((_, other)) = watermarks {
                        return Err(invalid(format!(
                            "`{other}` and `{}` both declare watermarks in one chain; declare \
                             them where records get their timestamps",
                            nodes[i].id
                        )));
                    }
                    watermarks = Some((
                        VertexWatermarks {
                            after: operators_so_far,
                            strategy,
                        },
                        nodes[i].id.as_str(),
                    ));
                }
            }
            vertices.push(JobVertex {
                node_ids: ids.iter().map(|&i| nodes[i].id.clone()).collect(),
                name: ids
                    .iter()
                    .map(|&i| nodes[i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> "),
                parallelism: first.parallelism,
                input,
                operators,
                output,
                source_waits_for_checkpoints: first.waits_for_checkpoints,
                watermarks: watermarks.map(|(w, _)| w),
            });
        }
        Ok(JobGraph {
            name,
            max_parallelism,
            buffer_timeout_ms: self.buffer_timeout_ms.unwrap_or(100),
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            checkpoint_timeout_ms: self.checkpoint_timeout_ms.unwrap_or(60_000),
            checkpoints_retained: self.checkpoints_retained.unwrap_or(3),
            limits: self.limits()?,
            grants: Grants::default(),
            vertices,
            edges,
        })
    }
}

/// Kahn's algorithm; a cycle is named by the nodes left on it.
fn topological_order(nodes: &[Node]) -> Result<Vec<usize>, JobError> {
    let mut pending: Vec<usize> = nodes.iter().map(|n| n.inputs.len()).collect();
    let mut ready: Vec<usize> = (0..nodes.len())
        .filter(|&i| pending[i] == 0)
        .rev()
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in nodes[i].consumers.iter().rev() {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() < nodes.len() {
        // Nodes left over lie on a cycle or downstream of one; peel off, again and again,
        // those that feed nothing left over, so only the cycle is named.
        let mut left: Vec<bool> = pending.iter().map(|&p| p > 0).collect();
        loop {
            let leaf =
                (0..nodes.len()).find(|&i| left[i] && !nodes[i].consumers.iter().any(|&c| left[c]));
            match leaf {
                Some(i) => left[i] = false,
                None => break,
            }
        }
        let cycle: Vec<&str> = (0..nodes.len())
            .filter(|&i| left[i])
            .map(|i| nodes[i].id.as_str())
            .collect();
        return Err(invalid(format!(
            "the job has a cycle through {}",
            cycle.join(", ")
        )));
    }
    Ok(order)
}
