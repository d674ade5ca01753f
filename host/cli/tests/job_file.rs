//! A job as one `.wasm` file: `weir package` of the word count manifest, then `weir run` and
//! `weir info` of the file alone; the word count's plan in code against its manifest; and the
//! files and plans `weir run` refuses before anything is deployed.

mod support;

use std::collections::BTreeMap;

use support::*;

/// `weir package` of the word count manifest in `dir`: the manifest and the job file.
fn package_wordcount(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let manifest = wordcount_manifest(dir, None);
    let job = dir.join("wordcount.wasm");
    let (ok, _, err) = weir(&[
        "package",
        manifest.to_str().unwrap(),
        "-o",
        job.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    (manifest, job)
}

#[test]
fn a_packaged_word_count_runs_from_the_file_alone_and_counts_every_word() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, job) = package_wordcount(dir.path());
    // Nothing beside the file: the manifest and the component are gone.
    let alone = tempfile::tempdir().expect("tempdir");
    let moved = alone.path().join("wordcount.wasm");
    std::fs::rename(&job, &moved).expect("move");
    drop(dir);

    runs_word_count_exactly(&moved, alone.path(), 3);

    let (ok, plan, err) = weir(&["info", moved.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(plan.starts_with("job wordcount\n"), "{plan}");
    assert!(plan.contains("vertex 1 `count` parallelism 2"), "{plan}");
    assert!(plan.contains("Hash"), "{plan}");
    let hash =
        weir_host::wasm::content_hash(&std::fs::read(wordcount_component()).expect("component"));
    assert!(
        plan.contains(&format!("sha256 {hash}")),
        "the nested component keeps its content hash: {plan}"
    );
}

#[test]
fn an_altered_job_file_and_an_operator_component_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manifest, job) = package_wordcount(dir.path());
    let mut bytes = std::fs::read(&job).expect("job file");
    let middle = bytes.len() - 100;
    bytes[middle] ^= 0x20;
    let altered = dir.path().join("altered.wasm");
    std::fs::write(&altered, bytes).expect("altered");
    let (ok, _, err) = weir(&["run", altered.to_str().unwrap(), "--arg", "input=x"]);
    assert!(!ok);
    assert!(err.contains("was altered"), "{err}");

    let component = guest_component("stateless-chain", "stateless_chain");
    let (ok, _, err) = weir(&["run", component.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("`stateless_chain.wasm` is an operator component without a plan"),
        "{err}"
    );
    let (ok, _, err) = weir(&["info", manifest.to_str().unwrap(), "--parallelism", "0"]);
    assert!(!ok, "parallelism 0 is refused");
    assert!(err.contains("parallelism 0"), "{err}");
}

/// The job graph of `manifest`, its components named by their canonical paths, so graphs of the
/// same component reached by different paths compare equal.
fn canonical(mut graph: weir_host::job::JobGraph) -> weir_host::job::JobGraph {
    for vertex in &mut graph.vertices {
        for op in &mut vertex.operators {
            if let weir_host::job::OperatorImpl::Wasm { component, .. } = &mut op.implementation {
                *component = std::fs::canonicalize(&*component).expect("component path");
            }
        }
    }
    graph
}

#[test]
fn the_word_count_s_plan_in_code_is_its_manifest_s_graph_and_runs_from_the_component_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let component = wordcount_component();
    let args: BTreeMap<String, String> = [("input", "in.txt"), ("output", "out.txt")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let from_plan = plan_graph(&component, &args);
    let from_manifest = weir_host::job::load_manifest(&wordcount_manifest(dir.path(), None), &args)
        .expect("manifest")
        .job_graph(None)
        .expect("manifest graph");
    assert_eq!(canonical(from_plan), canonical(from_manifest));

    // The component alone, as a user has it: `weir run wordcount.wasm`.
    let alone = tempfile::tempdir().expect("tempdir");
    let job = alone.path().join("wordcount.wasm");
    std::fs::copy(&component, &job).expect("copy");
    runs_word_count_exactly(&job, alone.path(), 3);

    let (ok, shown, err) = weir(&["info", job.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(shown.contains("#   path = \"${input}\"\n"), "{shown}");
    assert!(
        shown.contains("vertex 0 `lines -> tokenize -> key-by-word` parallelism 2"),
        "{shown}"
    );
    assert!(
        shown.contains("edge 0: vertex 0 -> vertex 1 Hash"),
        "{shown}"
    );
}

/// The job graph of `component`'s plan for `args`.
fn plan_graph(
    component: &std::path::Path,
    args: &BTreeMap<String, String>,
) -> weir_host::job::JobGraph {
    let runtime = weir_host::wasm::WasmRuntime::new(Default::default()).expect("runtime");
    let loaded = runtime.load_file(component).expect("load");
    let pairs: Vec<(String, String)> = args.clone().into_iter().collect();
    let plan = weir_host::wasm::describe_job(
        &runtime,
        &loaded,
        &pairs,
        Default::default(),
        std::sync::Arc::new(weir_host::wasm::StderrLog),
    )
    .expect("a plan");
    weir_host::job::manifest_from_plan(&plan.manifest, component, &plan.operators, args)
        .expect("plan manifest")
        .job_graph(None)
        .expect("plan graph")
}

#[test]
fn every_nexmark_query_s_plan_in_code_is_its_manifest_s_graph() {
    let component = guest_component("nexmark-queries", "nexmark_queries");
    let dir = tempfile::tempdir().expect("tempdir");
    for query in ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"] {
        let args: BTreeMap<String, String> = [
            ("query", query),
            ("input", "events.json"),
            ("output", "out.csv"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../examples/nexmark/{query}.toml")),
        )
        .expect("query manifest")
        .replace(
            "../../target/wasm32-wasip2/release/nexmark_queries.wasm",
            component.to_str().expect("utf-8 path"),
        );
        let manifest = dir.path().join(format!("{query}.toml"));
        std::fs::write(&manifest, text).expect("manifest");
        let from_manifest = weir_host::job::load_manifest(&manifest, &args)
            .expect("manifest")
            .job_graph(None)
            .expect("manifest graph");
        assert_eq!(
            canonical(plan_graph(&component, &args)),
            canonical(from_manifest),
            "{query}"
        );
    }
}

#[test]
fn a_plan_that_names_no_operator_of_its_own_fails_validation_traps_or_loops_is_refused_before_anything_is_deployed()
 {
    let component = guest_component("plans", "plans");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "owl\ncat\n").expect("input");
    let output = dir.path().join("out.txt");
    let run = |case: &str| {
        let (ok, out, err) = weir(&[
            "run",
            component.to_str().unwrap(),
            "--call-deadline",
            "300ms",
            "--arg",
            &format!("case={case}"),
            "--arg",
            &format!("input={}", input.display()),
            "--arg",
            &format!("output={}", output.display()),
        ]);
        (ok, format!("{out}{err}"))
    };
    let (ok, said) = run("good");
    assert!(ok, "{said}");
    // Two source subtasks, one line each: in either order.
    let mut lines: Vec<String> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, ["CAT", "OWL"]);
    std::fs::remove_file(&output).expect("remove");

    for (case, expected) in [
        (
            "unknown-operator",
            "error: the plan of `plans.wasm` names operator `uppercase` (node `uppercase`), \
             which the component does not export (it exports upper)",
        ),
        (
            "forward-across-parallelisms",
            "`upper` (parallelism 1) reads from `lines` (parallelism 2) over a forward edge",
        ),
        ("cycle", "the job has a cycle through a, b"),
        (
            "refuse",
            "error: the plan of `plans.wasm` failed: this plan needs `--arg mode=fast`",
        ),
        (
            "panic",
            "error: the plan of `plans.wasm` panicked: the plan fell over (at ",
        ),
        (
            "loop",
            "error: the plan of `plans.wasm` ran past its CPU deadline of 300ms in one call",
        ),
        (
            "memory",
            "error: the plan of `plans.wasm` tried to grow its memory to",
        ),
        ("sleep", "this job grants no clock, so a guest cannot wait"),
        (
            "literal-path",
            "gives sink `out` the path \"/tmp/weir-plan-chose-this\"; a plan's paths must each \
             be an argument",
        ),
        (
            "emit",
            "a record was emitted outside a call of its operator (a plan emits nothing)",
        ),
    ] {
        let (ok, said) = run(case);
        assert!(!ok, "{case}: {said}");
        assert!(said.contains(expected), "{case}: {said}");
        assert!(!said.contains("finished"), "{case}: {said}");
        assert!(!output.exists(), "{case}: nothing ran");
    }
}
