//! Checkpoints, recovery, savepoints and rescaling, end to end with real guests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::guests;
use weir_host::checkpoint::CheckpointConfig;
use weir_host::checkpoint::storage::resolve;
use weir_host::cluster::{JobFailure, JobOptions, MiniCluster, MiniClusterConfig, RestartStrategy};
use weir_host::job::{JobGraph, parse_manifest};
use weir_host::runtime::task_executor::TaskExecutorConfig;

use crate::support::*;

pub(crate) fn cluster() -> MiniCluster {
    let config = MiniClusterConfig {
        task_executor: TaskExecutorConfig {
            slots: 8,
            ..TaskExecutorConfig::default()
        },
        ..MiniClusterConfig::default()
    };
    MiniCluster::new(config, runtime().clone())
}

/// Word count with a slow step (to give checkpoints time) and an optional failing step.
pub(crate) fn wordcount(input: &Path, output: &Path, work: u64, fail_at: Option<u64>) -> String {
    let fail = match fail_at {
        Some(at) => format!(
            "[[operator]]\nid = \"fail\"\ncomponent = {hostile:?}\noperator = \"fail-at\"\ninput = \"count\"\n\
             config = {{ at = {at}, how = \"unreachable\", first-attempt-only = true }}\n",
            hostile = guests::HOSTILE
        ),
        None => String::new(),
    };
    let last = if fail_at.is_some() { "fail" } else { "count" };
    format!(
        r#"
        name = "wc"
        [[source]]
        id = "lines"
        kind = "file"
        path = {input:?}
        [[operator]]
        id = "tokenize"
        component = {wc:?}
        input = "lines"
        [[operator]]
        id = "slow"
        component = {hostile:?}
        input = "tokenize"
        config = {{ work = {work} }}
        [[operator]]
        id = "key-by-word"
        component = {wc:?}
        input = "slow"
        [[operator]]
        id = "count"
        component = {wc:?}
        input = "key-by-word"
        edge = "hash"
        {fail}
        [[sink]]
        id = "counts"
        kind = "file"
        path = {output:?}
        input = "{last}"
        edge = "rebalance"
        parallelism = 1
        "#,
        wc = guests::WORDCOUNT,
        hostile = guests::HOSTILE,
    )
}

pub(crate) fn graph(text: &str, parallelism: u32) -> JobGraph {
    parse_manifest(text, &Default::default())
        .expect("manifest")
        .job_graph(Some(parallelism))
        .expect("graph")
}

pub(crate) fn options(dir: &Path, interval_ms: u64) -> JobOptions {
    JobOptions {
        checkpoints: Some(CheckpointConfig {
            dir: dir.to_path_buf(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(30),
            retained: 100,
        }),
        restart: RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(10),
        },
        ..JobOptions::default()
    }
}

/// Every line of the committed part files of `dir` (hidden pending files excluded), sorted.
pub(crate) fn committed_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        lines.extend(
            std::fs::read_to_string(entry.path())
                .expect("part")
                .lines()
                .map(str::to_string),
        );
    }
    lines.sort();
    lines
}

pub(crate) fn pending_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("output dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with('.'))
        })
        .count()
}

/// The word count output a failure-free run must produce, sorted: `word n` for n = 1..=count.
pub(crate) fn expected_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = independent_word_count(text)
        .into_iter()
        .flat_map(|(w, n)| (1..=n).map(move |i| format!("{w} {i}")))
        .collect();
    lines.sort();
    lines
}

pub(crate) fn input(dir: &Path, copies: usize) -> (PathBuf, String) {
    let text: String = (0..copies).map(|_| passage()).collect();
    let path = dir.join("input.txt");
    std::fs::write(&path, &text).expect("input");
    (path, text)
}

#[test]
fn a_guest_that_traps_once_recovers_with_exactly_once_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 100);
    let out = dir.path().join("out");
    let words: u64 = independent_word_count(&text).values().sum();
    // Each of the two counting subtasks sees about half of the words.
    let job = graph(&wordcount(&input, &out, 200, Some(words / 3)), 2);
    let result = cluster()
        .run_job(&job, &options(&dir.path().join("chk"), 20))
        .expect("job");
    assert_eq!(result.restarts, 1);
    assert_eq!(committed_lines(&out), expected_lines(&text));
    assert_eq!(pending_files(&out), 0);
}

#[test]
fn without_restarts_the_failure_is_the_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, _) = input(dir.path(), 2);
    let job = graph(&wordcount(&input, &dir.path().join("out"), 0, Some(100)), 1);
    let mut opts = options(&dir.path().join("chk"), 20);
    opts.restart = RestartStrategy::None;
    let err = cluster().run_job(&job, &opts).expect_err("fails");
    assert!(matches!(err, JobFailure::Task(_)), "{err}");
    assert!(err.to_string().contains("operator `fail`"), "{err}");
}

/// The word count job whose source, after its first batch, waits for `checkpoints` completed
/// checkpoints: they fall mid-job however slow or busy the machine.
pub(crate) fn waiting(text: &str, checkpoints: usize) -> String {
    text.replacen(
        "kind = \"file\"\n",
        &format!("kind = \"file\"\n        wait_for_checkpoints = {checkpoints}\n"),
        1,
    )
}

/// Runs `job` until at least `checkpoints` checkpoints completed, then cancels it; returns the
/// completed checkpoint directories. The job's source must wait for them (see [`waiting`]).
pub(crate) fn run_then_cancel(
    job: &JobGraph,
    opts: &JobOptions,
    checkpoints: usize,
) -> Vec<PathBuf> {
    assert!(
        job.vertices[0]
            .source_waits_for_checkpoints
            .is_some_and(|n| n >= checkpoints as u64),
        "the job could end before the checkpoints the test needs"
    );
    let cluster = cluster();
    let handle = cluster.submit_with(job, opts, None, 0).expect("submit");
    let started = Instant::now();
    while handle.completed_checkpoints().len() < checkpoints {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "checkpoints did not complete"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.cancel();
    assert!(matches!(handle.wait(), Err(JobFailure::Cancelled) | Ok(_)));
    // Read from the disk once the job has stopped: a checkpoint can complete between a look
    // at the handle and the cancel.
    let job_dir = opts
        .checkpoints
        .as_ref()
        .expect("checkpointing")
        .dir
        .join(&job.name);
    let mut done: Vec<PathBuf> = weir_host::checkpoint::storage::checkpoint_dirs(&job_dir)
        .into_iter()
        .filter(|(_, dir)| dir.join(weir_host::checkpoint::storage::METADATA).is_file())
        .map(|(_, dir)| dir)
        .collect();
    done.reverse();
    assert!(done.len() >= checkpoints);
    done
}

/// A copy of the sink directory as it stood when checkpoint `n` completed: committed and
/// pending part files of epochs up to n.
pub(crate) fn sink_as_of(out: &Path, n: u64, copy: &Path) {
    std::fs::create_dir_all(copy).expect("copy dir");
    for entry in std::fs::read_dir(out).expect("out") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let epoch: u64 = name
            .trim_start_matches('.')
            .trim_end_matches(".pending")
            .rsplit('-')
            .next()
            .and_then(|e| e.parse().ok())
            .expect("part file name ends in its epoch");
        if epoch <= n {
            std::fs::copy(out.join(&name), copy.join(&name)).expect("copy part");
        }
    }
}

pub(crate) fn checkpoint_id(dir: &Path) -> u64 {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("chk-"))
        .and_then(|n| n.parse().ok())
        .expect("chk-<n>")
}

#[test]
fn golden_to_completion_with_checkpoints_and_restored_at_another_parallelism_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let expected = expected_lines(&text);

    // 1. To completion, no checkpoints, parallelism 1.
    let plain = dir.path().join("plain");
    cluster()
        .run(&graph(&wordcount(&input, &plain, 0, None), 1))
        .expect("plain run");
    let plain_lines = {
        let mut l: Vec<String> = std::fs::read_to_string(&plain)
            .expect("output")
            .lines()
            .map(str::to_string)
            .collect();
        l.sort();
        l
    };
    assert_eq!(plain_lines, expected);

    // 2. Parallelism 2 with checkpoints.
    let checkpointed = dir.path().join("checkpointed");
    let result = cluster()
        .run_job(
            &graph(&wordcount(&input, &checkpointed, 2_000, None), 2),
            &options(&dir.path().join("chk-a"), 10),
        )
        .expect("checkpointed run");
    assert!(!result.checkpoints.is_empty(), "no checkpoint completed");
    assert_eq!(committed_lines(&checkpointed), expected);

    // 3. Stopped after a few checkpoints, restored from a middle one at parallelism 3.
    let first = dir.path().join("first");
    let opts = options(&dir.path().join("chk-b"), 10);
    let done = run_then_cancel(
        &graph(&waiting(&wordcount(&input, &first, 2_000, None), 3), 2),
        &opts,
        3,
    );
    let middle = &done[done.len() / 2];
    let resumed = dir.path().join("resumed");
    sink_as_of(&first, checkpoint_id(middle), &resumed);
    let mut restore = opts.clone();
    restore.restore = Some(middle.clone());
    cluster()
        .run_job(&graph(&wordcount(&input, &resumed, 0, None), 3), &restore)
        .expect("restored run");
    assert_eq!(committed_lines(&resumed), expected);
}

#[test]
fn savepoint_at_parallelism_2_restores_at_3_and_at_1_with_equal_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let out = dir.path().join("out");
    let opts = options(&dir.path().join("chk"), 60_000);
    let job = graph(&wordcount(&input, &out, 5_000, None), 2);
    let cluster = cluster();
    let handle = cluster.submit_with(&job, &opts, None, 0).expect("submit");
    std::thread::sleep(Duration::from_millis(150));
    let savepoint = handle
        .savepoint(&dir.path().join("savepoint"))
        .expect("savepoint");
    handle.cancel();
    let _ = handle.wait();
    let n = resolve(&savepoint)
        .expect("savepoint readable")
        .metadata
        .checkpoint;

    for parallelism in [3, 1] {
        let target = dir.path().join(format!("out-{parallelism}"));
        sink_as_of(&out, n, &target);
        let mut restore = opts.clone();
        restore.restore = Some(savepoint.clone());
        cluster
            .run_job(
                &graph(&wordcount(&input, &target, 0, None), parallelism),
                &restore,
            )
            .expect("restored run");
        assert_eq!(
            committed_lines(&target),
            expected_lines(&text),
            "parallelism {parallelism}"
        );
    }
}

#[test]
fn own_guest_state_cannot_be_rescaled_and_unmatched_state_needs_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = |parallelism: u32, with_total: bool| {
        let total = if with_total {
            format!(
                "[[operator]]\nid = \"total\"\ncomponent = {c:?}\noperator = \"running-total\"\ninput = \"parse\"\n",
                c = guests::STATELESS_CHAIN
            )
        } else {
            String::new()
        };
        let last = if with_total { "total" } else { "parse" };
        graph(
            &format!(
                "name = \"totals\"\n[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 100000000\nformat = \"text\"\n\
                 [[operator]]\nid = \"parse\"\ncomponent = {c:?}\ninput = \"n\"\n{total}\
                 [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"{last}\"\n",
                c = guests::STATELESS_CHAIN
            ),
            parallelism,
        )
    };
    let opts = options(&dir.path().join("chk"), 60_000);
    let cluster = cluster();
    let handle = cluster
        .submit_with(&job(2, true), &opts, None, 0)
        .expect("submit");
    std::thread::sleep(Duration::from_millis(100));
    let savepoint = handle.savepoint(&dir.path().join("sp")).expect("savepoint");
    handle.cancel();
    let _ = handle.wait();
    let restored = resolve(&savepoint).expect("savepoint");

    let err = cluster
        .submit_with(&job(3, true), &opts, Some(&restored), 0)
        .err()
        .expect("cannot rescale");
    assert!(
        err.to_string()
            .contains("operator `total` keeps state of its own"),
        "{err}"
    );

    let err = cluster
        .submit_with(&job(2, false), &opts, Some(&restored), 0)
        .err()
        .expect("unmatched");
    assert!(
        err.to_string().contains("`total`")
            && err.to_string().contains("--allow-non-restored-state"),
        "{err}"
    );
    let mut allowed = opts.clone();
    allowed.allow_non_restored_state = true;
    let handle = cluster
        .submit_with(&job(2, false), &allowed, Some(&restored), 0)
        .expect("dropping allowed");
    handle.cancel();
    let _ = handle.wait();

    // Same parallelism: the guest's running total continues.
    let handle = cluster
        .submit_with(&job(2, true), &opts, Some(&restored), 0)
        .expect("same parallelism");
    handle.cancel();
    let _ = handle.wait();
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_one_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let out = dir.path().join("out");
    let opts = options(&dir.path().join("chk"), 10);
    let done = run_then_cancel(
        &graph(&waiting(&wordcount(&input, &out, 2_000, None), 3), 2),
        &opts,
        3,
    );
    let latest = done.last().expect("a checkpoint");
    let victim = std::fs::read_dir(latest)
        .expect("chk dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "state"))
        .expect("a state file");
    let mut bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&victim, bytes).expect("corrupt");

    let restored = resolve(&dir.path().join("chk").join("wc")).expect("falls back");
    assert_eq!(
        restored.metadata.checkpoint,
        checkpoint_id(&done[done.len() - 2])
    );
    // Skipped: the corrupt one, and any newer one the cancel left incomplete.
    assert!(
        restored
            .skipped
            .iter()
            .any(|s| s.contains("corrupt") && s.contains(&format!("{}", latest.display()))),
        "{:?}",
        restored.skipped
    );

    let resumed = dir.path().join("resumed");
    sink_as_of(&out, restored.metadata.checkpoint, &resumed);
    let mut restore = opts.clone();
    restore.restore = Some(dir.path().join("chk").join("wc"));
    cluster()
        .run_job(&graph(&wordcount(&input, &resumed, 0, None), 2), &restore)
        .expect("restored");
    assert_eq!(committed_lines(&resumed), expected_lines(&text));
}

/// The child half of `a_killed_process_resumes_from_its_latest_checkpoint`: runs the job
/// described by the environment until it is killed. Does nothing unless run by that test.
#[test]
#[ignore = "run only as a child process by a_killed_process_resumes_from_its_latest_checkpoint"]
fn sigkill_child() {
    let Ok(spec) = std::env::var("WEIR_SIGKILL_CHILD") else {
        return;
    };
    let mut parts = spec.split('|');
    let (input, out, chk) = (
        PathBuf::from(parts.next().expect("input")),
        PathBuf::from(parts.next().expect("output")),
        PathBuf::from(parts.next().expect("checkpoints")),
    );
    let _ = cluster().run_job(
        &graph(&wordcount(&input, &out, 20_000, None), 2),
        &options(&chk, 20),
    );
}

#[test]
fn a_killed_process_resumes_from_its_latest_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let (out, chk) = (dir.path().join("out"), dir.path().join("chk"));
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "checkpoint::sigkill_child",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "WEIR_SIGKILL_CHILD",
            format!("{}|{}|{}", input.display(), out.display(), chk.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let started = Instant::now();
    let job_dir = chk.join("wc");
    loop {
        let complete = weir_host::checkpoint::storage::checkpoint_dirs(&job_dir)
            .iter()
            .filter(|(_, d)| d.join("_metadata").exists())
            .count();
        if complete >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child made no checkpoints"
        );
        assert!(
            child.try_wait().expect("child status").is_none(),
            "the child finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let mut restore = options(&chk, 20);
    restore.restore = Some(job_dir);
    cluster()
        .run_job(&graph(&wordcount(&input, &out, 0, None), 2), &restore)
        .expect("resumed");
    assert_eq!(committed_lines(&out), expected_lines(&text));
    let _ = BTreeMap::<u8, u8>::new();
}

#[test]
fn only_the_retained_number_of_checkpoints_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let out = dir.path().join("out");
    let mut opts = options(&dir.path().join("chk"), 5);
    if let Some(c) = opts.checkpoints.as_mut() {
        c.retained = 2;
    }
    let result = cluster()
        .run_job(
            &graph(&waiting(&wordcount(&input, &out, 2_000, None), 3), 2),
            &opts,
        )
        .expect("job");
    assert!(
        result.checkpoints.len() > 2,
        "{} checkpoints",
        result.checkpoints.len()
    );
    // A checkpoint abandoned as the job ended may leave an incomplete directory behind; the
    // complete ones are the retained two.
    let kept: Vec<u64> =
        weir_host::checkpoint::storage::checkpoint_dirs(&dir.path().join("chk").join("wc"))
            .into_iter()
            .filter(|(_, d)| d.join("_metadata").exists())
            .map(|(n, _)| n)
            .collect();
    let newest: Vec<u64> = {
        let mut ids: Vec<u64> = result.checkpoints.iter().map(|c| c.id).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(2);
        ids
    };
    assert_eq!(kept, newest);
    assert_eq!(committed_lines(&out), expected_lines(&text));
}

#[test]
fn a_run_with_a_savepoint_commits_everything_and_a_rerun_numbers_checkpoints_above_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let chk = dir.path().join("chk");
    let opts = options(&chk, 10);
    let cluster = cluster();

    // One attempt with a savepoint along the way, waited for (the CLI's --savepoint-after).
    let out = dir.path().join("out");
    let job = graph(&wordcount(&input, &out, 20_000, None), 2);
    let handle = cluster.submit_with(&job, &opts, None, 0).expect("submit");
    std::thread::sleep(Duration::from_millis(50));
    handle.savepoint(&dir.path().join("sp")).expect("savepoint");
    let first = handle.wait().expect("job");
    assert_eq!(committed_lines(&out), expected_lines(&text));
    assert_eq!(pending_files(&out), 0);

    // Run again into the same checkpoint directory: its ids continue above the first run's.
    let highest = first.checkpoints.iter().map(|c| c.id).max();
    let out2 = dir.path().join("out2");
    let second = cluster
        .run_job(&graph(&wordcount(&input, &out2, 20_000, None), 2), &opts)
        .expect("second run");
    let lowest = second.checkpoints.iter().map(|c| c.id).min();
    assert!(
        lowest.is_some() && lowest > highest,
        "{lowest:?} after {highest:?}"
    );
    assert_eq!(committed_lines(&out2), expected_lines(&text));
}

/// Checkpoint ids of the complete checkpoints under a job's checkpoint directory.
fn complete_checkpoints(job_dir: &Path) -> Vec<u64> {
    weir_host::checkpoint::storage::checkpoint_dirs(job_dir)
        .into_iter()
        .filter(|(_, d)| d.join("_metadata").exists())
        .map(|(n, _)| n)
        .collect()
}

/// A word count stopped after `checkpoints` checkpoints at `parallelism`, under `dir/chk`:
/// its completed checkpoints, oldest first, and a copy of its sink directory as of the one
/// `pick` chooses, in `dir/resumed` (the sink a restore from it continues).
fn stopped_run(
    dir: &Path,
    input: &Path,
    parallelism: u32,
    checkpoints: usize,
    pick: impl Fn(&[PathBuf]) -> PathBuf,
) -> (Vec<PathBuf>, PathBuf, PathBuf) {
    let first = dir.join("first");
    let done = run_then_cancel(
        &graph(
            &waiting(&wordcount(input, &first, 2_000, None), checkpoints),
            parallelism,
        ),
        &options(&dir.join("chk"), 10),
        checkpoints,
    );
    let chosen = pick(&done);
    let resumed = dir.join("resumed");
    sink_as_of(&first, checkpoint_id(&chosen), &resumed);
    (done, chosen, resumed)
}

#[test]
fn a_run_restored_from_an_older_checkpoint_of_its_own_directory_keeps_it_and_ends_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let chk = dir.path().join("chk");
    // Restore from the oldest retained checkpoint, into the same checkpoint directory, keeping
    // only one complete checkpoint: retention must not take the one restored from.
    let (_, oldest, resumed) = stopped_run(dir.path(), &input, 2, 3, |done| done[0].clone());
    let mut restore = options(&chk, 10);
    if let Some(c) = restore.checkpoints.as_mut() {
        c.retained = 1;
    }
    restore.restore = Some(oldest.clone());
    let result = cluster()
        .run_job(
            &graph(&waiting(&wordcount(&input, &resumed, 2_000, None), 2), 2),
            &restore,
        )
        .expect("restored run");
    assert!(result.checkpoints.len() >= 2, "{:?}", result.checkpoints);
    assert!(
        oldest.join("_metadata").exists(),
        "the checkpoint restored from was deleted"
    );
    assert_eq!(committed_lines(&resumed), expected_lines(&text));
    assert_eq!(pending_files(&resumed), 0);
    // Retention kept the newest (the final checkpoint) and the one restored from.
    let kept = complete_checkpoints(&chk.join("wc"));
    let newest = result.checkpoints.last().expect("final checkpoint").id;
    assert!(
        kept.contains(&newest) && kept.contains(&checkpoint_id(&oldest)),
        "{kept:?}"
    );
}

#[test]
fn a_restart_of_a_restored_run_resumes_from_that_runs_latest_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let opts = options(&dir.path().join("chk"), 10);
    let (_, oldest, resumed) = stopped_run(dir.path(), &input, 2, 2, |done| done[0].clone());
    // The restored run completes two checkpoints of its own (its source waits for them), then
    // a guest traps once. The restart must start from the newest of them: starting again from
    // `oldest` would commit, a second time, output its checkpoints already committed.
    let words: u64 = independent_word_count(&text).values().sum();
    let mut restore = opts.clone();
    restore.restore = Some(oldest);
    let result = cluster()
        .run_job(
            &graph(
                &waiting(&wordcount(&input, &resumed, 200, Some(words / 3)), 2),
                2,
            ),
            &restore,
        )
        .expect("restored run with a restart");
    assert_eq!(result.restarts, 1);
    assert_eq!(committed_lines(&resumed), expected_lines(&text));
    assert_eq!(pending_files(&resumed), 0);
}

#[test]
fn a_job_restored_wider_than_its_splits_keeps_checkpointing_and_commits_through_its_final_checkpoint()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 300);
    let opts = options(&dir.path().join("chk"), 10);
    // At parallelism 1 the file is one split; restored at 3, two source subtasks get nothing
    // and end at once, which must not stop checkpoints.
    let (_, middle, resumed) = stopped_run(dir.path(), &input, 1, 2, |done| {
        done.last().expect("a checkpoint").clone()
    });
    let mut restore = opts.clone();
    restore.restore = Some(middle);
    let result = cluster()
        .run_job(
            &graph(&waiting(&wordcount(&input, &resumed, 2_000, None), 2), 3),
            &restore,
        )
        .expect("restored run");
    assert!(result.checkpoints.len() >= 3, "{:?}", result.checkpoints);
    let last = result.checkpoints.last().expect("a final checkpoint");
    assert!(
        resolve(&last.dir)
            .expect("final checkpoint readable")
            .metadata
            .final_checkpoint
    );
    assert_eq!(committed_lines(&resumed), expected_lines(&text));
    assert_eq!(pending_files(&resumed), 0);

    // Restored from its final checkpoint, the job has nothing left to do.
    let mut again = opts.clone();
    again.restore = Some(last.dir.clone());
    let rerun = cluster()
        .run_job(&graph(&wordcount(&input, &resumed, 0, None), 3), &again)
        .expect("nothing left");
    assert!(rerun.tasks.is_empty());
    assert_eq!(committed_lines(&resumed), expected_lines(&text));
}

#[test]
fn a_short_checkpointed_job_commits_all_its_output_through_the_final_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 2);
    let out = dir.path().join("out");
    // The interval is far longer than the job: only the final checkpoint happens.
    let result = cluster()
        .run_job(
            &graph(&wordcount(&input, &out, 0, None), 2),
            &options(&dir.path().join("chk"), 60_000),
        )
        .expect("job");
    assert_eq!(result.checkpoints.len(), 1, "{:?}", result.checkpoints);
    let only = &result.checkpoints[0];
    assert!(
        resolve(&only.dir)
            .expect("readable")
            .metadata
            .final_checkpoint
    );
    assert_eq!(committed_lines(&out), expected_lines(&text));
    assert_eq!(pending_files(&out), 0);
}

#[test]
fn an_unwritable_checkpoint_directory_is_refused_before_the_job_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, _) = input(dir.path(), 1);
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").expect("file");
    let err = cluster()
        .run_job(
            &graph(&wordcount(&input, &dir.path().join("out"), 0, None), 1),
            &options(&blocker.join("chk"), 10),
        )
        .expect_err("unwritable");
    assert!(matches!(err, JobFailure::CheckpointDir { .. }), "{err}");
    let message = format!("{err}: {}", std::error::Error::source(&err).expect("cause"));
    assert!(
        message.contains("cannot write checkpoints under")
            && message.contains("--checkpoint-dir")
            && message.contains("is a file, not a directory"),
        "{message}"
    );
    assert!(!dir.path().join("out").exists(), "the job must not start");
}

#[test]
fn a_fresh_run_into_an_output_directory_with_committed_output_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, _) = input(dir.path(), 2);
    let out = dir.path().join("out");
    let job = graph(&wordcount(&input, &out, 0, None), 2);
    cluster()
        .run_job(&job, &options(&dir.path().join("chk"), 60_000))
        .expect("first run");
    let before = committed_lines(&out);
    let err = cluster()
        .run_job(&job, &options(&dir.path().join("chk"), 60_000))
        .expect_err("output exists");
    assert!(matches!(err, JobFailure::OutputExists { .. }), "{err}");
    assert!(
        err.to_string().contains("already holds committed output")
            && err.to_string().contains("part-0-"),
        "{err}"
    );
    assert_eq!(committed_lines(&out), before, "the output is untouched");
    assert_eq!(pending_files(&out), 0);
}

/// An error and its causes as the `weir` binary prints them: `a: b: c`.
/// How `manifest`'s job fails at parallelism 1 without restarts: the error and its causes.
pub(crate) fn failure_of(manifest: &str) -> String {
    let options = JobOptions {
        restart: RestartStrategy::None,
        ..JobOptions::default()
    };
    match cluster().run_job(&graph(manifest, 1), &options) {
        Ok(_) => panic!("the job succeeded"),
        Err(e) => error_chain(&e),
    }
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[test]
fn a_missing_savepoint_is_named_once_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, _) = input(dir.path(), 1);
    let missing = dir.path().join("no-such-savepoint");
    let mut opts = options(&dir.path().join("chk"), 10);
    opts.restore = Some(missing.clone());
    let err = cluster()
        .run_job(
            &graph(&wordcount(&input, &dir.path().join("out"), 0, None), 1),
            &opts,
        )
        .expect_err("nothing to restore");
    let chain = error_chain(&err);
    assert_eq!(
        chain,
        format!(
            "cannot restore: cannot read `{}`: no such directory",
            missing.display()
        )
    );
}
