//! A job in three languages, one chain: Python tokenizes, Rust keys each word, C counts
//! (`examples/mixed/job.toml`, each component its language's word count example, built by the
//! build script as its author would). It counts exactly, and stopped after checkpoints and
//! restored from a middle one, its committed output is exactly once.

use std::collections::BTreeMap;
use std::path::Path;

use weir_host::job::{JobGraph, parse_manifest};

use crate::checkpoint::{
    checkpoint_id, cluster, committed_lines, expected_lines, input, options, run_then_cancel,
    sink_as_of, waiting,
};
use crate::guests;
use crate::support::*;

fn mixed_manifest() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mixed/job.toml"),
    )
    .expect("mixed manifest")
    .replace(
        "../../target/wordcount-python.wasm",
        guests::WORDCOUNT_PYTHON,
    )
    .replace(
        "../../target/wasm32-wasip2/release/wordcount.wasm",
        guests::WORDCOUNT,
    )
    .replace("../../target/wordcount-c.wasm", guests::WORDCOUNT_C)
}

fn mixed_graph(text: &str, input: &Path, output: &Path) -> JobGraph {
    let args: BTreeMap<String, String> = [("input", input), ("output", output)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect();
    parse_manifest(text, &args)
        .expect("manifest")
        .job_graph(None)
        .expect("graph")
}

#[test]
fn python_rust_and_c_in_one_chain_count_exactly_and_resume_from_a_checkpoint_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 60);

    let plain = dir.path().join("plain.txt");
    let job = mixed_graph(&mixed_manifest(), &input, &plain);
    assert_eq!(
        job.vertices[0].node_ids,
        ["lines", "tokenize", "key-by-word"],
        "Python and Rust chain into one task"
    );
    cluster().run(&job).expect("mixed job");
    let mut last = BTreeMap::new();
    for line in std::fs::read_to_string(&plain).expect("output").lines() {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        last.insert(word.to_string(), count.parse::<u64>().expect("count"));
    }
    assert_eq!(last, independent_word_count(&text));

    // Stopped after three checkpoints, restored from a middle one: every count once.
    let first = dir.path().join("first");
    let opts = options(&dir.path().join("chk"), 10);
    let done = run_then_cancel(
        &mixed_graph(&waiting(&mixed_manifest(), 3), &input, &first),
        &opts,
        3,
    );
    let middle = &done[done.len() / 2];
    let resumed = dir.path().join("resumed");
    sink_as_of(&first, checkpoint_id(middle), &resumed);
    let mut restore = opts.clone();
    restore.restore = Some(middle.clone());
    cluster()
        .run_job(&mixed_graph(&mixed_manifest(), &input, &resumed), &restore)
        .expect("restored run");
    assert_eq!(committed_lines(&resumed), expected_lines(&text));
}

/// The word count with all three operators from `component` (each language's example).
fn one_language_manifest(component: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mixed/job.toml"),
    )
    .expect("mixed manifest")
    .replace("../../target/wordcount-python.wasm", component)
    .replace(
        "../../target/wasm32-wasip2/release/wordcount.wasm",
        component,
    )
    .replace("../../target/wordcount-c.wasm", component)
}

#[test]
fn each_language_s_keyed_state_is_in_its_checkpoints_and_resumes_exactly_once() {
    // The SDKs of C, Python and JavaScript cache keyed state in the guest: what a checkpoint
    // holds is what they hand the host before their snapshot returns.
    for (language, component) in [
        ("c", guests::WORDCOUNT_C),
        ("python", guests::WORDCOUNT_PYTHON),
        ("js", guests::WORDCOUNT_JS),
    ] {
        // Compiled before the clock of `run_then_cancel` starts: a Python component takes
        // seconds to compile.
        load(component);
        let dir = tempfile::tempdir().expect("tempdir");
        // More than one batch per source subtask, so the source waits for checkpoints.
        let (input, text) = input(dir.path(), 100);
        let manifest = one_language_manifest(component);
        let first = dir.path().join("first");
        let opts = options(&dir.path().join("chk"), 10);
        let done = run_then_cancel(
            &mixed_graph(&waiting(&manifest, 3), &input, &first),
            &opts,
            3,
        );
        let middle = &done[done.len() / 2];
        let resumed = dir.path().join("resumed");
        sink_as_of(&first, checkpoint_id(middle), &resumed);
        let mut restore = opts.clone();
        restore.restore = Some(middle.clone());
        cluster()
            .run_job(&mixed_graph(&manifest, &input, &resumed), &restore)
            .unwrap_or_else(|e| panic!("{language}: restored run: {e}"));
        assert_eq!(
            committed_lines(&resumed),
            expected_lines(&text),
            "{language}"
        );
    }
}
