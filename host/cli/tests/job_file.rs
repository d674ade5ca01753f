//! A job as one `.wasm` file: `weir package` of the word count manifest, then `weir run` and
//! `weir info` of the file alone, and the files `weir run` refuses.

mod support;

use std::collections::BTreeMap;

use support::*;

/// The highest count of each word in `weir run`'s output: its final count.
fn final_counts(output: &std::path::Path) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    for line in std::fs::read_to_string(output).expect("output").lines() {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        let count: u64 = count.parse().expect("count");
        let top = last.entry(word.to_string()).or_insert(0);
        *top = (*top).max(count);
    }
    last
}

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

    let input = alone.path().join("input.txt");
    let text = read_passage().repeat(3);
    std::fs::write(&input, &text).expect("input");
    let output = alone.path().join("counts.txt");
    let (ok, out, err) = weir(&[
        "run",
        moved.to_str().unwrap(),
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(final_counts(&output), independent_word_count(&text));

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

    let component = wordcount_component();
    let (ok, _, err) = weir(&["run", component.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is an operator component, not a job"), "{err}");
    let (ok, _, err) = weir(&["info", manifest.to_str().unwrap(), "--parallelism", "0"]);
    assert!(!ok, "parallelism 0 is refused");
    assert!(err.contains("parallelism 0"), "{err}");
}
