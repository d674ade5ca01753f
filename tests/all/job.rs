//! Whole jobs on the embedded mini-cluster: manifests, partitioning, backpressure, cancel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::guests;
use weir_host::cluster::{JobFailure, JobResult, MiniCluster, MiniClusterConfig};
use weir_host::job::{JobError, JobGraph, Manifest, load_manifest};
use weir_host::runtime::task_executor::TaskExecutorConfig;
use weir_host::state::key_groups::{key_group_of, subtask_for_key_group};

use crate::support::*;

fn cluster(slots: u32) -> MiniCluster {
    let config = MiniClusterConfig {
        task_executor: TaskExecutorConfig {
            slots,
            ..TaskExecutorConfig::default()
        },
        ..MiniClusterConfig::default()
    };
    MiniCluster::new(config, runtime().clone())
}

pub(crate) fn manifest(
    dir: &Path,
    text: &str,
    args: &[(&str, &str)],
) -> Result<Manifest, JobError> {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).expect("write manifest");
    let args = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_manifest(&path, &args)
}

fn run(dir: &Path, text: &str, parallelism: Option<u32>) -> Result<JobResult, JobFailure> {
    let graph = manifest(dir, text, &[])
        .expect("manifest")
        .job_graph(parallelism)
        .expect("graph");
    cluster(graph.slots_needed()).run(&graph)
}

pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn wordcount_manifest() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount/job.toml"),
    )
    .expect("example manifest")
    .replace(
        "../../target/wasm32-wasip2/release/wordcount.wasm",
        guests::WORDCOUNT,
    )
}

/// The example word count job over `input`, writing `output`.
pub(crate) fn wordcount_graph(
    dir: &Path,
    input: &Path,
    output: &Path,
    parallelism: u32,
) -> JobGraph {
    manifest(
        dir,
        &wordcount_manifest(),
        &[
            ("input", input.to_str().expect("utf-8")),
            ("output", output.to_str().expect("utf-8")),
        ],
    )
    .expect("manifest")
    .job_graph(Some(parallelism))
    .expect("graph")
}

#[test]
fn wordcount_job_equals_independent_count_at_parallelism_1_2_and_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text: String = (0..40).map(|_| passage()).collect();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let expected = independent_word_count(&text);
    for parallelism in [1, 2, 4] {
        let output = dir.path().join(format!("counts-{parallelism}.txt"));
        let graph = wordcount_graph(dir.path(), &input, &output, parallelism);
        let result = cluster(parallelism).run(&graph).expect("job");
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let out = lines(&output);
        for line in &out {
            let (word, count) = line.rsplit_once(' ').expect("`word count`");
            let count = count.parse().expect("count");
            let previous = last.insert(word.to_string(), count).unwrap_or(0);
            assert!(
                count > previous,
                "counts of `{word}` must grow: {previous} then {count}"
            );
        }
        assert_eq!(last, expected, "parallelism {parallelism}");
        assert_eq!(out.len() as u64, expected.values().sum::<u64>());
        let source_in: u64 = result
            .tasks
            .iter()
            .filter(|(n, _)| n.starts_with("lines"))
            .map(|(_, m)| m.records_in)
            .sum();
        assert_eq!(source_in, text.lines().count() as u64);
    }
}

#[test]
fn a_keyed_count_over_more_keys_than_the_guest_state_cache_holds_stays_exact() {
    // The SDK's cache of value state holds 2^17 entries; past that it writes everything back
    // and starts empty, so the second pass over 140,000 words reads every count from the host.
    let dir = tempfile::tempdir().expect("tempdir");
    let words: Vec<String> = (0..140_000).map(|i| format!("w{i}")).collect();
    let pass: String = words
        .chunks(100)
        .map(|line| line.join(" ") + "\n")
        .collect();
    let text = pass.repeat(2);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let output = dir.path().join("counts.txt");
    let graph = wordcount_graph(dir.path(), &input, &output, 1);
    cluster(1).run(&graph).expect("job");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines(&output) {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        last.insert(word.to_string(), count.parse().expect("count"));
    }
    assert_eq!(last, independent_word_count(&text));
    assert!(last.values().all(|&n| n == 2));
}

/// A job from a sequence source of `count` text numbers, keyed by their text, to a file sink
/// of `sink_par` part files over `edge`.
fn partition_job(dir: &Path, edge: &str, count: u64, sink_par: u32) -> String {
    format!(
        r#"
        parallelism = 2
        buffer_timeout_ms = 5
        [[source]]
        id = "numbers"
        kind = "sequence"
        count = {count}
        format = "text"
        [[operator]]
        id = "key-by-word"
        component = "{component}"
        input = "numbers"
        [[sink]]
        id = "out"
        kind = "file"
        path = "{out}"
        input = "key-by-word"
        edge = "{edge}"
        parallelism = {sink_par}
        "#,
        component = guests::WORDCOUNT,
        out = dir.join(edge).display(),
    )
}

fn parts(dir: &Path, sink_par: u32) -> Vec<Vec<String>> {
    (0..sink_par)
        .map(|i| lines(&dir.join(format!("part-{i}"))))
        .collect()
}

#[test]
fn hash_edge_sends_each_key_to_its_key_group_owner_once_and_stably() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(
        dir.path(),
        &partition_job(dir.path(), "hash", 5000, 3),
        None,
    )
    .expect("job");
    let first = parts(&dir.path().join("hash"), 3);
    let mut all = BTreeSet::new();
    for (subtask, records) in first.iter().enumerate() {
        for r in records {
            let owner = subtask_for_key_group(key_group_of(r.as_bytes(), 128), 128, 3);
            assert_eq!(owner as usize, subtask, "`{r}` reached the wrong subtask");
            assert!(all.insert(r.clone()), "`{r}` delivered twice");
        }
    }
    assert_eq!(all.len(), 5000);
    // Same keys, same subtasks, run after run (order within a part may differ).
    run(
        dir.path(),
        &partition_job(dir.path(), "hash", 5000, 3),
        None,
    )
    .expect("job again");
    let sorted = |p: Vec<Vec<String>>| -> Vec<BTreeSet<String>> {
        p.into_iter().map(|v| v.into_iter().collect()).collect()
    };
    assert_eq!(sorted(parts(&dir.path().join("hash"), 3)), sorted(first));
}

#[test]
fn rebalance_edge_spreads_records_evenly_and_delivers_each_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(
        dir.path(),
        &partition_job(dir.path(), "rebalance", 6000, 3),
        None,
    )
    .expect("job");
    let parts = parts(&dir.path().join("rebalance"), 3);
    let all: BTreeSet<String> = parts.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 6000);
    assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 6000);
    for p in &parts {
        // Two producers, each round robin over three channels.
        assert!((1998..=2002).contains(&p.len()), "{}", p.len());
    }
}

#[test]
fn broadcast_edge_delivers_every_record_to_every_subtask() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(
        dir.path(),
        &partition_job(dir.path(), "broadcast", 3000, 3),
        None,
    )
    .expect("job");
    let expected: BTreeSet<String> = (0..3000).map(|i| i.to_string()).collect();
    for p in parts(&dir.path().join("broadcast"), 3) {
        assert_eq!(p.len(), 3000);
        assert_eq!(p.into_iter().collect::<BTreeSet<_>>(), expected);
    }
}

#[test]
fn forward_edges_over_the_network_keep_subtask_to_subtask() {
    // Two consumers of one source: nothing chains, both forward edges cross the network.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
        parallelism = 2
        [[source]]
        id = "numbers"
        kind = "sequence"
        count = 1000
        format = "text"
        [[sink]]
        id = "a"
        kind = "file"
        path = "{a}"
        input = "numbers"
        [[sink]]
        id = "b"
        kind = "file"
        path = "{b}"
        input = "numbers"
        "#,
        a = dir.path().join("a").display(),
        b = dir.path().join("b").display()
    );
    let graph = manifest(dir.path(), &text, &[])
        .expect("manifest")
        .job_graph(None)
        .expect("graph");
    assert_eq!(graph.vertices.len(), 3);
    cluster(2).run(&graph).expect("job");
    for sink in ["a", "b"] {
        let p = parts(&dir.path().join(sink), 2);
        assert_eq!(p[0], (0..500).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(p[1], (500..1000).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}

pub(crate) fn slow_job(count: u64, work: u64) -> String {
    format!(
        r#"
        [[source]]
        id = "numbers"
        kind = "sequence"
        count = {count}
        [[operator]]
        id = "slow"
        component = "{component}"
        input = "numbers"
        edge = "rebalance"
        config = {{ work = {work} }}
        [[sink]]
        id = "out"
        kind = "discard"
        input = "slow"
        "#,
        component = guests::HOSTILE,
    )
}

#[test]
fn a_slow_operator_backpressures_the_source_with_bounded_buffers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = manifest(dir.path(), &slow_job(200_000, 2_000), &[])
        .expect("manifest")
        .job_graph(None)
        .expect("graph");
    let cluster = cluster(1);
    let result = cluster.run(&graph).expect("job");
    let source = &result
        .tasks
        .iter()
        .find(|(n, _)| n.starts_with("numbers"))
        .expect("source task")
        .1;
    let slow = &result
        .tasks
        .iter()
        .find(|(n, _)| n.starts_with("slow"))
        .expect("slow task")
        .1;
    assert_eq!(source.records_in, 200_000);
    assert_eq!(slow.records_out, 200_000);
    assert!(
        source.backpressured_ms_per_s() > 500.0,
        "source back-pressured {} ms/s",
        source.backpressured_ms_per_s()
    );
    // One channel: at most buffers_per_channel queued plus the one being filled.
    let per_channel = cluster.task_executor().config().buffers_per_channel;
    assert!(
        result.network.high_water <= per_channel + 1,
        "{:?}",
        result.network
    );
    assert_eq!(result.network.in_use, 0);
}

#[test]
fn cancel_stops_a_running_job_promptly_and_frees_its_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = manifest(dir.path(), &slow_job(u64::MAX / 2, 100), &[])
        .expect("manifest")
        .job_graph(Some(2))
        .expect("graph");
    let cluster = cluster(2);
    let job = cluster.submit(&graph).expect("submit");
    assert_eq!(cluster.task_executor().free_slots(), 0);
    std::thread::sleep(Duration::from_millis(300));
    let (read, _, _) = job.monitor().progress();
    assert!(read > 0, "the job should be running");
    let cancelled = Instant::now();
    job.cancel();
    let err = job.wait().expect_err("cancelled");
    assert!(matches!(err, JobFailure::Cancelled), "{err}");
    assert!(
        cancelled.elapsed() < Duration::from_secs(5),
        "{:?}",
        cancelled.elapsed()
    );
    assert_eq!(cluster.task_executor().free_slots(), 2);
    assert_eq!(cluster.task_executor().network().stats().in_use, 0);
}

#[test]
fn a_failing_operator_fails_the_job_with_its_error_and_stops_every_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
        parallelism = 2
        [[source]]
        id = "numbers"
        kind = "sequence"
        count = 100000000
        [[operator]]
        id = "fail-at"
        component = "{component}"
        input = "numbers"
        edge = "rebalance"
        config = {{ at = 1000, how = "panic" }}
        [[sink]]
        id = "out"
        kind = "discard"
        input = "fail-at"
        "#,
        component = guests::HOSTILE
    );
    let started = Instant::now();
    let err = run(dir.path(), &text, None).expect_err("the operator panics");
    let message = err.to_string();
    assert!(
        message.contains("fail-at") && message.contains("panicked: failing on record 1000"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

fn graph_error(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let component = PathBuf::from(guests::WORDCOUNT);
    let text = text.replace("WASM", component.to_str().expect("utf-8"));
    match manifest(dir.path(), &text, &[("in", "x")]) {
        Err(e) => e.to_string(),
        Ok(m) => m.job_graph(None).expect_err("invalid job").to_string(),
    }
}

const SOURCE: &str = "[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 10\n";
const SINK: &str = "[[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"op\"\n";

#[test]
fn malformed_manifests_are_refused_with_what_and_where() {
    let op = |extra: &str| {
        format!(
            "{SOURCE}[[operator]]\nid = \"op\"\ncomponent = \"WASM\"\noperator = \"tokenize\"\n{extra}\n{SINK}"
        )
    };
    let cases = [
        (
            op("input = \"nope\""),
            "`op` reads from `nope`, which is not a node of the job",
        ),
        (
            op("input = \"in\"\nedge = \"sideways\""),
            "`op` has edge `sideways`",
        ),
        (
            op("input = \"in\"\nparallelism = 3"),
            "over a forward edge, which needs equal parallelism",
        ),
        (
            op("input = [\"in\", \"op\"]\nedge = \"rebalance\""),
            // The sink reads from the cycle but is not on it.
            "the job has a cycle through op\n",
        ),
        (
            format!(
                "{SOURCE}[[operator]]\nid = \"op\"\ncomponent = \"missing.wasm\"\ninput = \"in\"\n{SINK}"
            ),
            "component file",
        ),
        (
            format!("{SOURCE}{SINK}")
                .replace("input = \"op\"", "input = \"in\"")
                .replace("count = 10", ""),
            "needs a `count`",
        ),
        (SOURCE.to_string(), "the job has no sink"),
        (
            op("input = \"in\"\ncolour = \"red\""),
            "unknown field `colour`",
        ),
        (
            op("input = \"in\"").replace("[[sink]]", "[[sink]\n"),
            "not valid",
        ),
        (
            op("input = \"in\"").replace("count = 10", "count = 10\npath = \"${missing}\""),
            "`${missing}`",
        ),
        (
            format!("{SOURCE}[[sink]]\nid = \"in\"\nkind = \"discard\"\ninput = \"in\"\n"),
            "two nodes have the id `in`",
        ),
        (
            op("input = \"in\"").replace("kind = \"discard\"", "kind = \"teletype\""),
            "sinks are file, stdout, discard, postgres, kafka and nats",
        ),
    ];
    for (text, expected) in cases {
        let message = graph_error(&text) + "\n";
        assert!(
            message.contains(expected),
            "expected `{expected}` in: {message}\n--- manifest:\n{text}"
        );
    }
}

#[test]
fn a_job_wider_than_the_slots_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = manifest(dir.path(), &slow_job(10, 1), &[])
        .expect("manifest")
        .job_graph(Some(3))
        .expect("graph");
    let err = cluster(2).submit(&graph).err().expect("too wide");
    assert_eq!(
        err.to_string(),
        "the job needs 3 task slots but the TaskExecutor has 2 free of 2"
    );
}

#[test]
fn chaining_follows_forward_edges_at_equal_parallelism() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manifest(
        dir.path(),
        &wordcount_manifest(),
        &[("input", "in.txt"), ("output", "out.txt")],
    )
    .expect("manifest");
    let graph = m.job_graph(Some(2)).expect("graph");
    let names: Vec<_> = graph
        .vertices
        .iter()
        .map(|v| (v.name.as_str(), v.parallelism))
        .collect();
    assert_eq!(
        names,
        [
            ("lines -> tokenize -> key-by-word", 2),
            ("count", 2),
            ("counts", 1)
        ]
    );
    let _ = Arc::new(());
}

#[test]
fn a_task_with_two_inputs_reads_the_union_of_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("union");
    let text = format!(
        r#"
        [[source]]
        id = "low"
        kind = "sequence"
        count = 1000
        format = "text"
        [[source]]
        id = "high"
        kind = "sequence"
        count = 2000
        format = "text"
        parallelism = 2
        [[sink]]
        id = "out"
        kind = "file"
        path = "{out}"
        input = ["low", "high"]
        edge = "rebalance"
        "#,
        out = out.display()
    );
    let graph = manifest(dir.path(), &text, &[])
        .expect("manifest")
        .job_graph(None)
        .expect("graph");
    assert!(
        matches!(&graph.vertices[2].input, weir_host::job::VertexInput::Edges(e) if e.len() == 2)
    );
    cluster(2).run(&graph).expect("job");
    let mut got: Vec<u64> = lines(&out)
        .iter()
        .map(|l| l.parse().expect("number"))
        .collect();
    got.sort_unstable();
    let mut expected: Vec<u64> = (0..1000).chain(0..2000).collect();
    expected.sort_unstable();
    assert_eq!(got, expected);
}

#[test]
fn a_failed_subtask_stops_a_sibling_spinning_in_its_guest_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Subtask 0 fails on its first record, subtask 1 loops forever inside its guest; the
    // manifest's deadline is a minute, so only cancellation can end the job quickly.
    let text = format!(
        r#"
        parallelism = 2
        call_deadline = "60s"
        [[source]]
        id = "numbers"
        kind = "sequence"
        count = 1000
        [[operator]]
        id = "fail-or-spin"
        component = "{component}"
        input = "numbers"
        edge = "rebalance"
        [[sink]]
        id = "out"
        kind = "discard"
        input = "fail-or-spin"
        "#,
        component = guests::HOSTILE
    );
    let started = Instant::now();
    let err = run(dir.path(), &text, None).expect_err("subtask 0 fails");
    let message = err.to_string();
    assert!(
        message.contains("subtask 0") && message.contains("subtask 0 fails at once"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the spinning sibling held the job for {:?}",
        started.elapsed()
    );
}

#[test]
fn an_unknown_operator_name_is_reported_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
        [[source]]
        id = "numbers"
        kind = "sequence"
        count = 10
        [[operator]]
        id = "counter"
        component = "{component}"
        operator = "nope"
        input = "numbers"
        [[sink]]
        id = "out"
        kind = "discard"
        input = "counter"
        "#,
        component = guests::WORDCOUNT
    );
    let message = run(dir.path(), &text, None)
        .expect_err("no such operator")
        .to_string();
    assert!(
        message.contains(
            "names operator `nope`, which the component does not export (it exports tokenize, \
             key-by-word, count)"
        ),
        "{message}"
    );
}

#[test]
fn a_job_asking_for_more_than_the_cluster_allows_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "state_limit = \"64GiB\"\n[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 10\n\
         [[operator]]\nid = \"count\"\ncomponent = \"{}\"\ninput = \"n\"\n\
         [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"count\"\n",
        guests::WORDCOUNT
    );
    let err = run(dir.path(), &text, None).expect_err("over the maximum");
    assert!(matches!(err, JobFailure::Limits(_)), "{err}");
    assert!(
        err.to_string()
            .contains("state_limit = 68719476736 bytes, over this cluster's maximum"),
        "{err}"
    );
}

#[test]
fn a_manifest_memory_limit_reaches_the_operators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "memory_limit = \"24MiB\"\n[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 1\n\
         [[operator]]\nid = \"grow\"\ncomponent = \"{}\"\ninput = \"n\"\n\
         [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"grow\"\n",
        guests::HOSTILE
    );
    let message = run(dir.path(), &text, None)
        .expect_err("grows past the cap")
        .to_string();
    assert!(
        message.contains("over its cap of 25165824 bytes"),
        "{message}"
    );
}

#[test]
fn tasks_deployed_from_serialized_descriptors_produce_what_directly_deployed_tasks_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let text: String = (0..20).map(|_| passage()).collect();
    std::fs::write(&input, &text).expect("input");
    let mut outputs = Vec::new();
    for over_the_wire in [false, true] {
        let output = dir.path().join(format!("out-{over_the_wire}"));
        let graph = wordcount_graph(dir.path(), &input, &output, 2);
        let cluster = MiniCluster::new(
            MiniClusterConfig {
                task_executor: TaskExecutorConfig {
                    slots: graph.slots_needed(),
                    ..TaskExecutorConfig::default()
                },
                descriptors_over_the_wire: over_the_wire,
                ..MiniClusterConfig::default()
            },
            runtime().clone(),
        );
        cluster.run(&graph).expect("job");
        let mut lines = lines(&output);
        lines.sort();
        outputs.push(lines);
    }
    assert!(!outputs[0].is_empty());
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn a_native_operator_without_native_operators_is_refused_before_the_job_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 10\n\
                [[operator]]\nid = \"evens\"\nnative = \"even\"\ninput = \"n\"\n\
                [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"evens\"\n";
    let err = run(dir.path(), text, None).expect_err("no native operators");
    assert!(matches!(err, JobFailure::NoNativeOperators { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`evens` names native operator `even`"),
        "{err}"
    );
}

#[test]
fn the_dispatcher_keeps_every_job_and_how_it_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, passage()).expect("input");
    let graph = wordcount_graph(dir.path(), &input, &dir.path().join("out"), 1);
    let cluster = cluster(graph.slots_needed());
    cluster
        .run_job(&graph, &weir_host::cluster::JobOptions::default())
        .expect("job");
    let failing = manifest(
        dir.path(),
        &format!(
            "name = \"failing\"\n[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 10\n\
             [[operator]]\nid = \"fail\"\ncomponent = \"{}\"\noperator = \"fail-at\"\n\
             input = \"n\"\nconfig = {{ at = 3, how = \"error\" }}\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"fail\"\n",
            guests::HOSTILE
        ),
        &[],
    )
    .expect("manifest")
    .job_graph(None)
    .expect("graph");
    cluster
        .run_job(&failing, &weir_host::cluster::JobOptions::default())
        .expect_err("fails");
    let jobs = cluster.jobs();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0].number, jobs[0].name.as_str(), &jobs[0].status),
        (
            1,
            "wordcount",
            &weir_host::cluster::JobStatus::Finished { restarts: 0 }
        )
    );
    assert_eq!(jobs[1].name, "failing");
    match &jobs[1].status {
        weir_host::cluster::JobStatus::Failed { reason } => {
            assert!(reason.contains("refusing record 3"), "{reason}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}
