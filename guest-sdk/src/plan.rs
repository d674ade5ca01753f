//! A job's plan in code: the graph of a job written in Rust, the way Flink's DataStream API
//! writes it, compiled into the same component as its operators. `weir run job.wasm` asks the
//! component for its plan and builds the job graph a manifest would, so the component alone is
//! the job.
//!
//! Operators are the ones [`export_operators!`](crate::export_operators) exports, named as a
//! manifest names them; the plan wires them to sources, each other and sinks, and sets
//! parallelism, edges, watermarks and configuration. Arguments come from `--arg name=value`.
//!
//! ```
//! use weir_sdk::plan::{Args, Job, PlanError, Sink, Source};
//!
//! fn plan(args: &Args) -> Result<Job, PlanError> {
//!     let job = Job::new("wordcount").parallelism(2);
//!     job.source("lines", Source::file(args.get("input")))
//!         .operator("tokenize")
//!         .operator("key-by-word")
//!         .hash()
//!         .operator("count")
//!         .rebalance()
//!         .sink("counts", Sink::file(args.get("output")))
//!         .parallelism(1);
//!     Ok(job)
//! }
//!
//! let manifest = plan(&Args::default()).unwrap().manifest().unwrap();
//! assert!(manifest.contains("[[operator]]\nid = \"count\"\ninput = \"key-by-word\"\nedge = \"hash\"\n"));
//! ```
//!
//! What the plan hands the host is a job manifest (the text `weir info job.wasm` shows): the
//! host checks it as it checks one written by hand, so a plan can say everything a manifest
//! can and is refused with the same messages.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// The `--arg name=value` pairs of the command line.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    /// The arguments `pairs`, as the host passes them.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Args { pairs }
    }

    /// The argument `name` as a `${name}` placeholder, which the host fills from
    /// `--arg name=...` when it runs the job, and names when it is missing; `weir info` shows
    /// the plan with its placeholders. Use it for values the job only passes on (paths).
    pub fn get(&self, name: &str) -> String {
        format!("${{{name}}}")
    }

    /// The value of `--arg name=...`, if given: for a plan whose shape depends on it.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `--arg name=...` parsed, or `default` without one; a value that does not
    /// parse is an error naming the argument.
    pub fn parsed_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, PlanError>
    where
        T::Err: std::fmt::Display,
    {
        match self.value(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|e| PlanError::new(format!("`--arg {name}={text}`: {e}"))),
        }
    }
}

/// Why a plan could not be made; the host shows the message to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(String);

impl PlanError {
    pub fn new(message: impl Into<String>) -> Self {
        PlanError(message.into())
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

/// How records of an edge are spread over the next node's subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Subtask i to subtask i (the default): both nodes at the same parallelism, chained.
    Forward,
    /// Round robin over every subtask.
    Rebalance,
    /// By the record's key (Flink's `keyBy`): the same key always reaches the same subtask.
    Hash,
    /// Every record to every subtask.
    Broadcast,
}

impl Edge {
    fn name(self) -> &'static str {
        match self {
            Edge::Forward => "forward",
            Edge::Rebalance => "rebalance",
            Edge::Hash => "hash",
            Edge::Broadcast => "broadcast",
        }
    }
}

/// A value of the manifest: text or a number.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Number(u64),
}

/// Where records come from.
#[derive(Debug, Clone)]
pub struct Source {
    fields: Vec<(&'static str, Value)>,
}

impl Source {
    /// The lines of a text file, split by byte ranges across the source's subtasks.
    pub fn file(path: impl Into<String>) -> Self {
        Source::kind("file").with("path", Value::Text(path.into()))
    }

    /// The numbers `0..count`, as 8-byte little-endian integers ([`BincodeFixed`] u64).
    ///
    /// [`BincodeFixed`]: crate::codec::BincodeFixed
    pub fn sequence(count: u64) -> Self {
        Source::kind("sequence").with("count", Value::Number(count))
    }

    /// `count` Nexmark events as JSON lines, from the generator's pinned start time.
    pub fn nexmark(count: u64) -> Self {
        Source::kind("nexmark").with("count", Value::Number(count))
    }

    /// A sequence's numbers as decimal text instead of integers.
    pub fn text(self) -> Self {
        self.with("format", Value::Text("text".into()))
    }

    /// The Nexmark generator's first event time, in epoch milliseconds.
    pub fn base_time(self, epoch_ms: u64) -> Self {
        self.with("base_time", Value::Number(epoch_ms))
    }

    /// After its first batch, the source reads on only once this many checkpoints completed.
    pub fn wait_for_checkpoints(self, checkpoints: u64) -> Self {
        self.with("wait_for_checkpoints", Value::Number(checkpoints))
    }

    fn kind(kind: &str) -> Self {
        Source {
            fields: vec![("kind", Value::Text(kind.into()))],
        }
    }

    fn with(mut self, key: &'static str, value: Value) -> Self {
        self.fields.retain(|(k, _)| *k != key);
        self.fields.push((key, value));
        self
    }
}

/// Where records end.
#[derive(Debug, Clone)]
pub struct Sink {
    fields: Vec<(&'static str, Value)>,
}

impl Sink {
    /// One line per record: the file itself at parallelism 1, `part-<i>` files beside it.
    pub fn file(path: impl Into<String>) -> Self {
        Sink {
            fields: vec![
                ("kind", Value::Text("file".into())),
                ("path", Value::Text(path.into())),
            ],
        }
    }

    /// One line per record on the TaskManager's standard output.
    pub fn stdout() -> Self {
        Sink {
            fields: vec![("kind", Value::Text("stdout".into()))],
        }
    }

    /// Records are dropped (benchmarks).
    pub fn discard() -> Self {
        Sink {
            fields: vec![("kind", Value::Text("discard".into()))],
        }
    }
}

/// How a node's output gets event-time watermarks (Flink's `WatermarkStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    out_of_orderness: Duration,
    idle_timeout: Option<Duration>,
}

impl Watermarks {
    /// Timestamps only grow: the watermark is the largest seen.
    pub fn monotonous() -> Self {
        Watermarks::bounded_out_of_orderness(Duration::ZERO)
    }

    /// The watermark trails the largest timestamp seen by `delay`.
    pub fn bounded_out_of_orderness(delay: Duration) -> Self {
        Watermarks {
            out_of_orderness: delay,
            idle_timeout: None,
        }
    }

    /// A split without records for `timeout` stops holding the watermark back.
    pub fn with_idleness(self, timeout: Duration) -> Self {
        Watermarks {
            idle_timeout: Some(timeout),
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Source,
    Operator,
    Sink,
}

#[derive(Debug)]
struct Node {
    kind: NodeKind,
    id: String,
    fields: Vec<(&'static str, Value)>,
    inputs: Vec<usize>,
    edge: Edge,
    second: Vec<usize>,
    second_edge: Edge,
    config: Vec<(String, String)>,
    watermarks: Option<Watermarks>,
}

impl Node {
    fn new(kind: NodeKind, id: &str) -> Self {
        Node {
            kind,
            id: id.to_string(),
            fields: Vec::new(),
            inputs: Vec::new(),
            edge: Edge::Forward,
            second: Vec::new(),
            second_edge: Edge::Forward,
            config: Vec::new(),
            watermarks: None,
        }
    }

    fn set(&mut self, key: &'static str, value: Value) {
        self.fields.retain(|(k, _)| *k != key);
        self.fields.push((key, value));
    }
}

#[derive(Debug, Default)]
struct Graph {
    settings: Vec<(&'static str, Value)>,
    nodes: Vec<Node>,
    /// A plan given as manifest text instead.
    text: Option<String>,
}

type Shared = Rc<RefCell<Graph>>;

/// A job being planned: its settings and the nodes added to it through [`Job::source`] and
/// the streams that follow.
#[derive(Debug, Clone)]
pub struct Job {
    graph: Shared,
}

impl Job {
    /// A job called `name` (the name of its checkpoint directory: letters, digits, `-`, `_`).
    pub fn new(name: &str) -> Self {
        let job = Job {
            graph: Shared::default(),
        };
        job.set("name", Value::Text(name.into()))
    }

    /// A plan given as a whole manifest, e.g. `include_str!("job.toml")` of a manifest whose
    /// operators name no component, so the component carries the manifest it runs.
    pub fn from_manifest(text: impl Into<String>) -> Self {
        let job = Job {
            graph: Shared::default(),
        };
        job.graph.borrow_mut().text = Some(text.into());
        job
    }

    /// Parallelism of every node that sets none.
    pub fn parallelism(self, parallelism: u32) -> Self {
        self.set("parallelism", Value::Number(parallelism.into()))
    }

    /// Key groups of the job: the most subtasks its keyed state can ever be split into.
    pub fn max_parallelism(self, max: u32) -> Self {
        self.set("max_parallelism", Value::Number(max.into()))
    }

    /// Longest a partly filled network buffer waits before it is sent.
    pub fn buffer_timeout(self, timeout: Duration) -> Self {
        self.set("buffer_timeout_ms", Value::Number(millis(timeout)))
    }

    /// Checkpoint this often (the run needs a checkpoint directory).
    pub fn checkpoint_interval(self, interval: Duration) -> Self {
        self.set("checkpoint_interval_ms", Value::Number(millis(interval)))
    }

    /// Abandon a checkpoint not complete after this long.
    pub fn checkpoint_timeout(self, timeout: Duration) -> Self {
        self.set("checkpoint_timeout_ms", Value::Number(millis(timeout)))
    }

    /// Complete checkpoints to keep.
    pub fn checkpoints_retained(self, count: u32) -> Self {
        self.set("checkpoints_retained", Value::Number(count.into()))
    }

    /// Longest one call into an operator may run.
    pub fn call_deadline(self, deadline: Duration) -> Self {
        self.set(
            "call_deadline",
            Value::Text(format!("{}ms", millis(deadline))),
        )
    }

    /// Largest memory of an operator instance, in bytes.
    pub fn memory_limit(self, bytes: u64) -> Self {
        self.set("memory_limit", Value::Text(bytes.to_string()))
    }

    /// Most keyed state an operator instance may hold, in bytes.
    pub fn state_limit(self, bytes: u64) -> Self {
        self.set("state_limit", Value::Text(bytes.to_string()))
    }

    /// A source node called `id`; its records are the stream returned.
    pub fn source(&self, id: &str, source: Source) -> Stream {
        let mut node = Node::new(NodeKind::Source, id);
        node.fields = source.fields;
        Stream::add(&self.graph, node)
    }

    /// The plan as a job manifest, the text the component gives the host.
    pub fn manifest(&self) -> Result<String, PlanError> {
        write_manifest(&self.graph.borrow())
    }

    fn set(self, key: &'static str, value: Value) -> Self {
        {
            let mut graph = self.graph.borrow_mut();
            graph.settings.retain(|(k, _)| *k != key);
            graph.settings.push((key, value));
        }
        self
    }
}

/// Whole milliseconds, rounded up: a duration under one is not zero.
fn millis(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The output of a source or operator node. Further steps read it; the `parallelism`, `id`,
/// `config` and `watermarks` methods set the node it comes from.
#[derive(Debug, Clone)]
pub struct Stream {
    graph: Shared,
    node: usize,
}

impl Stream {
    fn add(graph: &Shared, node: Node) -> Stream {
        let mut g = graph.borrow_mut();
        g.nodes.push(node);
        Stream {
            graph: graph.clone(),
            node: g.nodes.len() - 1,
        }
    }

    fn with_node(self, f: impl FnOnce(&mut Node)) -> Self {
        f(&mut self.graph.borrow_mut().nodes[self.node]);
        self
    }

    /// The component's operator `name`, reading this stream over a forward edge; the node's id
    /// is `name` (see [`Stream::id`]).
    pub fn operator(&self, name: &str) -> Stream {
        self.forward().operator(name)
    }

    /// A built-in native operator of the host, as node `id`.
    pub fn native(&self, id: &str, name: &str) -> Stream {
        self.forward().native(id, name)
    }

    /// A sink node called `id`, reading this stream over a forward edge.
    pub fn sink(&self, id: &str, sink: Sink) -> SinkNode {
        self.forward().sink(id, sink)
    }

    /// This stream, over a forward edge (subtask i to subtask i).
    pub fn forward(&self) -> Inputs {
        self.inputs(Edge::Forward)
    }

    /// This stream, spread round robin over the next node's subtasks.
    pub fn rebalance(&self) -> Inputs {
        self.inputs(Edge::Rebalance)
    }

    /// This stream, partitioned by key (Flink's `keyBy`): the next node is keyed.
    pub fn hash(&self) -> Inputs {
        self.inputs(Edge::Hash)
    }

    /// This stream, every record to every subtask of the next node.
    pub fn broadcast(&self) -> Inputs {
        self.inputs(Edge::Broadcast)
    }

    /// This stream and `others` as one input (their union), over a forward edge until
    /// another is chosen.
    pub fn union(&self, others: &[&Stream]) -> Inputs {
        let mut inputs = self.forward();
        inputs.nodes.extend(
            others
                .iter()
                .map(|s| (s.node, Rc::ptr_eq(&s.graph, &self.graph))),
        );
        inputs
    }

    /// This stream as the first input and `second` as the second of a two-input operator
    /// (Flink's `connect`), both over forward edges until others are chosen.
    pub fn connect(&self, second: impl Into<Inputs>) -> Connected {
        self.forward().connect(second)
    }

    /// Parallelism of the node this stream comes from.
    pub fn parallelism(self, parallelism: u32) -> Self {
        self.with_node(|n| n.set("parallelism", Value::Number(parallelism.into())))
    }

    /// The id of the node this stream comes from (by default its operator's name), for a
    /// component operator used twice in one job.
    pub fn id(self, id: &str) -> Self {
        self.with_node(|n| {
            let named = n
                .fields
                .iter()
                .any(|(k, _)| *k == "operator" || *k == "native");
            if n.kind == NodeKind::Operator && !named {
                let name = std::mem::take(&mut n.id);
                n.set("operator", Value::Text(name));
            }
            n.id = id.to_string();
        })
    }

    /// A configuration entry of the operator this stream comes from (its `OperatorInfo`'s
    /// config).
    pub fn config(self, key: &str, value: impl ToString) -> Self {
        let value = value.to_string();
        self.with_node(|n| {
            n.config.retain(|(k, _)| k != key);
            n.config.push((key.to_string(), value));
        })
    }

    /// Watermarks from the timestamps of this stream's records (a source's own, or those its
    /// operator gives them).
    pub fn watermarks(self, watermarks: Watermarks) -> Self {
        self.with_node(|n| n.watermarks = Some(watermarks))
    }

    fn inputs(&self, edge: Edge) -> Inputs {
        Inputs {
            graph: self.graph.clone(),
            nodes: vec![(self.node, true)],
            edge,
        }
    }
}

/// One or more streams on their way into a node, and the edge they take.
#[derive(Debug, Clone)]
pub struct Inputs {
    graph: Shared,
    /// (node, whether it belongs to this job).
    nodes: Vec<(usize, bool)>,
    edge: Edge,
}

impl From<&Stream> for Inputs {
    fn from(stream: &Stream) -> Self {
        stream.forward()
    }
}

impl From<Stream> for Inputs {
    fn from(stream: Stream) -> Self {
        stream.forward()
    }
}

impl Inputs {
    /// The same streams over another edge.
    pub fn edge(mut self, edge: Edge) -> Self {
        self.edge = edge;
        self
    }

    /// Round robin over the next node's subtasks.
    pub fn rebalance(self) -> Self {
        self.edge(Edge::Rebalance)
    }

    /// By key.
    pub fn hash(self) -> Self {
        self.edge(Edge::Hash)
    }

    /// To every subtask.
    pub fn broadcast(self) -> Self {
        self.edge(Edge::Broadcast)
    }

    /// The component's operator `name` reading these streams.
    pub fn operator(&self, name: &str) -> Stream {
        self.node_reading(NodeKind::Operator, name, Vec::new())
    }

    /// A built-in native operator of the host, as node `id`.
    pub fn native(&self, id: &str, name: &str) -> Stream {
        self.node_reading(
            NodeKind::Operator,
            id,
            vec![("native", Value::Text(name.into()))],
        )
    }

    /// A sink node called `id` reading these streams.
    pub fn sink(&self, id: &str, sink: Sink) -> SinkNode {
        let stream = self.node_reading(NodeKind::Sink, id, sink.fields);
        SinkNode { stream }
    }

    /// These streams as the first input and `second` as the second of a two-input operator.
    pub fn connect(&self, second: impl Into<Inputs>) -> Connected {
        Connected {
            first: self.clone(),
            second: second.into(),
        }
    }

    fn node_reading(&self, kind: NodeKind, id: &str, fields: Vec<(&'static str, Value)>) -> Stream {
        let mut node = Node::new(kind, id);
        node.fields = fields;
        node.inputs = self.own_nodes();
        node.edge = self.edge;
        Stream::add(&self.graph, node)
    }

    /// The input nodes; a stream of another job becomes an index past this job's nodes, which
    /// the manifest writer reports.
    fn own_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|&(node, ours)| if ours { node } else { usize::MAX })
            .collect()
    }
}

/// Two inputs on their way into a two-input operator.
#[derive(Debug, Clone)]
pub struct Connected {
    first: Inputs,
    second: Inputs,
}

impl Connected {
    /// The component's two-input operator `name` (a [`co_process`](crate::co_process),
    /// [`interval_join`](crate::join::interval_join) or
    /// [`window_join`](crate::join::window_join)), reading both.
    pub fn operator(&self, name: &str) -> Stream {
        let stream = self.first.operator(name);
        let second = if Rc::ptr_eq(&self.first.graph, &self.second.graph) {
            self.second.own_nodes()
        } else {
            vec![usize::MAX]
        };
        let edge = self.second.edge;
        stream.with_node(|n| {
            n.second = second;
            n.second_edge = edge;
        })
    }
}

/// A sink node, for its settings.
#[derive(Debug, Clone)]
pub struct SinkNode {
    stream: Stream,
}

impl SinkNode {
    /// Parallelism of the sink.
    pub fn parallelism(self, parallelism: u32) -> Self {
        SinkNode {
            stream: self.stream.parallelism(parallelism),
        }
    }

    /// The sink's id.
    pub fn id(self, id: &str) -> Self {
        SinkNode {
            stream: self.stream.id(id),
        }
    }
}

fn write_manifest(graph: &Graph) -> Result<String, PlanError> {
    if let Some(text) = &graph.text {
        return Ok(text.clone());
    }
    let mut seen = std::collections::BTreeSet::new();
    for node in &graph.nodes {
        if !seen.insert(node.id.as_str()) {
            return Err(PlanError::new(format!(
                "two nodes of the plan are called `{}`; give one another id with `.id(...)`",
                node.id
            )));
        }
    }
    for node in &graph.nodes {
        if node.kind != NodeKind::Operator && !node.config.is_empty() {
            return Err(PlanError::new(format!(
                "`{}` is not an operator: only operators take `config`",
                node.id
            )));
        }
    }
    let fields = graph
        .nodes
        .iter()
        .flat_map(|node| node.fields.iter().map(|(k, v)| (node.id.as_str(), k, v)));
    let settings = graph.settings.iter().map(|(k, v)| ("the job", k, v));
    for (of, key, value) in fields.chain(settings) {
        if matches!(value, Value::Number(n) if i64::try_from(*n).is_err()) {
            return Err(PlanError::new(format!(
                "{of}: `{key}` is past the largest number a manifest holds ({})",
                i64::MAX
            )));
        }
    }
    let id_of = |index: usize, of: &str| -> Result<&str, PlanError> {
        graph
            .nodes
            .get(index)
            .map(|n| n.id.as_str())
            .ok_or_else(|| PlanError::new(format!("node `{of}` reads a stream of another job")))
    };
    let mut out = String::new();
    for (key, value) in &graph.settings {
        write_value(&mut out, key, value);
    }
    for (kind, table) in [
        (NodeKind::Source, "source"),
        (NodeKind::Operator, "operator"),
        (NodeKind::Sink, "sink"),
    ] {
        for node in graph.nodes.iter().filter(|n| n.kind == kind) {
            let _ = write!(out, "\n[[{table}]]\nid = {}\n", quoted(&node.id));
            for (key, value) in node.fields.iter().filter(|(k, _)| *k != "parallelism") {
                write_value(&mut out, key, value);
            }
            if kind != NodeKind::Source {
                write_inputs(&mut out, "input", &node.inputs, &node.id, &id_of)?;
                if node.edge != Edge::Forward {
                    let _ = writeln!(out, "edge = {}", quoted(node.edge.name()));
                }
            }
            if !node.second.is_empty() {
                write_inputs(&mut out, "second_input", &node.second, &node.id, &id_of)?;
                if node.second_edge != Edge::Forward {
                    let _ = writeln!(out, "second_edge = {}", quoted(node.second_edge.name()));
                }
            }
            if let Some((_, value)) = node.fields.iter().find(|(k, _)| *k == "parallelism") {
                write_value(&mut out, "parallelism", value);
            }
            if let Some(w) = node.watermarks {
                let _ = write!(
                    out,
                    "watermarks = {{ out_of_orderness = \"{}ms\"",
                    millis(w.out_of_orderness)
                );
                if let Some(idle) = w.idle_timeout {
                    let _ = write!(out, ", idle_timeout = \"{}ms\"", millis(idle));
                }
                out.push_str(" }\n");
            }
            if !node.config.is_empty() {
                let entries: Vec<String> = node
                    .config
                    .iter()
                    .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
                    .collect();
                let _ = writeln!(out, "config = {{ {} }}", entries.join(", "));
            }
        }
    }
    Ok(out)
}

fn write_inputs<'g>(
    out: &mut String,
    key: &str,
    inputs: &[usize],
    node: &str,
    id_of: &impl Fn(usize, &str) -> Result<&'g str, PlanError>,
) -> Result<(), PlanError> {
    let ids = inputs
        .iter()
        .map(|&i| id_of(i, node).map(quoted))
        .collect::<Result<Vec<_>, _>>()?;
    match ids.as_slice() {
        [one] => {
            let _ = writeln!(out, "{key} = {one}");
        }
        many => {
            let _ = writeln!(out, "{key} = [{}]", many.join(", "));
        }
    }
    Ok(())
}

fn write_value(out: &mut String, key: &str, value: &Value) {
    let _ = match value {
        Value::Text(text) => writeln!(out, "{key} = {}", quoted(text)),
        Value::Number(n) => writeln!(out, "{key} = {n}"),
    };
}

/// `text` as a TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_node_and_setting_is_written_as_a_manifest_says_it() {
        let job = Job::new("joins")
            .parallelism(2)
            .max_parallelism(64)
            .checkpoint_interval(Duration::from_secs(1))
            .call_deadline(Duration::from_millis(1500))
            .memory_limit(64 << 20);
        let bids = job
            .source("bids", Source::sequence(10).text().wait_for_checkpoints(1))
            .parallelism(1)
            .watermarks(
                Watermarks::bounded_out_of_orderness(Duration::from_secs(4))
                    .with_idleness(Duration::from_secs(60)),
            );
        let people = job.source("people", Source::nexmark(5).base_time(7));
        let both = bids
            .union(&[&people])
            .rebalance()
            .operator("parse")
            .config("field", "a \"quoted\"\\path");
        let joined = both
            .hash()
            .connect(people.hash())
            .operator("join")
            .id("join-1");
        joined.sink("out", Sink::file("${output}")).parallelism(1);
        joined
            .native("copy", "identity")
            .sink("nowhere", Sink::discard());
        let text = job.manifest().unwrap();
        assert_eq!(
            text,
            "name = \"joins\"\nparallelism = 2\nmax_parallelism = 64\n\
             checkpoint_interval_ms = 1000\ncall_deadline = \"1500ms\"\nmemory_limit = \"67108864\"\n\
             \n[[source]]\nid = \"bids\"\nkind = \"sequence\"\ncount = 10\nformat = \"text\"\n\
             wait_for_checkpoints = 1\nparallelism = 1\n\
             watermarks = { out_of_orderness = \"4000ms\", idle_timeout = \"60000ms\" }\n\
             \n[[source]]\nid = \"people\"\nkind = \"nexmark\"\ncount = 5\nbase_time = 7\n\
             \n[[operator]]\nid = \"parse\"\ninput = [\"bids\", \"people\"]\nedge = \"rebalance\"\n\
             config = { \"field\" = \"a \\\"quoted\\\"\\\\path\" }\n\
             \n[[operator]]\nid = \"join-1\"\noperator = \"join\"\ninput = \"parse\"\nedge = \"hash\"\n\
             second_input = \"people\"\nsecond_edge = \"hash\"\n\
             \n[[operator]]\nid = \"copy\"\nnative = \"identity\"\ninput = \"join-1\"\n\
             \n[[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${output}\"\ninput = \"join-1\"\nparallelism = 1\n\
             \n[[sink]]\nid = \"nowhere\"\nkind = \"discard\"\ninput = \"copy\"\n"
        );
    }

    #[test]
    fn arguments_are_placeholders_unless_their_value_is_asked_for() {
        let args = Args::new(vec![("n".into(), "12".into()), ("mode".into(), "x".into())]);
        assert_eq!(args.get("input"), "${input}");
        assert_eq!(args.value("mode"), Some("x"));
        assert_eq!(args.value("other"), None);
        assert_eq!(args.parsed_or("n", 3u64), Ok(12));
        assert_eq!(args.parsed_or("m", 3u64), Ok(3));
        let err = args.parsed_or("mode", 3u64).unwrap_err();
        assert!(err.to_string().starts_with("`--arg mode=x`"), "{err}");
    }

    #[test]
    fn two_nodes_of_one_id_and_a_stream_of_another_job_are_refused() {
        let job = Job::new("j");
        let n = job.source("n", Source::sequence(1));
        n.operator("double").operator("double");
        let err = job.manifest().unwrap_err();
        assert!(err.to_string().contains("called `double`"), "{err}");

        let other = Job::new("other");
        let foreign = other.source("m", Source::sequence(1));
        let job = Job::new("k");
        job.source("n", Source::sequence(1))
            .union(&[&foreign])
            .sink("out", Sink::stdout());
        let err = job.manifest().unwrap_err();
        assert!(err.to_string().contains("another job"), "{err}");
    }

    #[test]
    fn what_a_manifest_cannot_say_is_refused_and_short_durations_are_not_zero() {
        let job = Job::new("j");
        job.source("n", Source::sequence(1)).config("k", "v");
        let err = job.manifest().unwrap_err();
        assert!(
            err.to_string().contains("only operators take `config`"),
            "{err}"
        );

        let job = Job::new("j").checkpoint_timeout(Duration::MAX);
        let err = job.manifest().unwrap_err();
        assert!(
            err.to_string().contains("`checkpoint_timeout_ms` is past"),
            "{err}"
        );
        let job = Job::new("j");
        job.source("n", Source::sequence(u64::MAX));
        assert!(job.manifest().is_err());

        let job = Job::new("j");
        job.source("n", Source::sequence(1))
            .watermarks(Watermarks::monotonous().with_idleness(Duration::from_micros(500)))
            .native("copy", "identity")
            .id("copy-2");
        let text = job.manifest().unwrap();
        assert!(text.contains("idle_timeout = \"1ms\""), "{text}");
        assert!(
            text.contains("[[operator]]\nid = \"copy-2\"\nnative = \"identity\"\ninput = \"n\"\n"),
            "{text}"
        );
    }

    #[test]
    fn a_manifest_plan_is_handed_over_as_written() {
        let text = "name = \"x\"\n";
        assert_eq!(Job::from_manifest(text).manifest().unwrap(), text);
    }
}
