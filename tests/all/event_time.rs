//! Event time end to end: a source's own timestamps and watermarks, windows of the SDK in a
//! real guest, at several parallelisms and across a rescaled restore.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{checkpoint_id, committed_lines, options, run_then_cancel, sink_as_of};
use crate::guests;
use crate::support::*;
use weir_host::cluster::{MiniCluster, MiniClusterConfig};
use weir_host::job::{JobGraph, parse_manifest};
use weir_host::runtime::task_executor::TaskExecutorConfig;

const KEYS: u64 = 7;

fn cluster() -> MiniCluster {
    MiniCluster::new(
        MiniClusterConfig {
            task_executor: TaskExecutorConfig {
                slots: 8,
                ..TaskExecutorConfig::default()
            },
            ..MiniClusterConfig::default()
        },
        runtime().clone(),
    )
}

/// The numbers `0..count`, each its own event time in ms, keyed by `n % 7`, summed per key
/// and window (`window` is the window-sum's configuration), written as
/// `key,start,end,sum,count`. `gaps`: every third block of 1000 numbers left out.
fn job(count: u64, window: &str, gaps: bool, out: &Path, waits: Option<u64>) -> String {
    let waits = waits.map_or(String::new(), |n| format!("wait_for_checkpoints = {n}\n"));
    let (gaps_op, keyed_input) = if gaps {
        (
            format!(
                "[[operator]]\nid = \"gaps\"\ncomponent = {t:?}\ninput = \"numbers\"\n",
                t = guests::TIMERS
            ),
            "gaps",
        )
    } else {
        (String::new(), "numbers")
    };
    format!(
        "name = \"windows\"\n\
         [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = {count}\n{waits}\
         watermarks = {{ out_of_orderness = \"0ms\" }}\n\
         {gaps_op}\
         [[operator]]\nid = \"key\"\ncomponent = {t:?}\noperator = \"key-mod\"\ninput = \"{keyed_input}\"\n\
         config = {{ modulus = {KEYS} }}\n\
         [[operator]]\nid = \"sum\"\ncomponent = {t:?}\noperator = \"window-sum\"\ninput = \"key\"\n\
         edge = \"hash\"\nconfig = {{ {window} }}\n\
         [[sink]]\nid = \"out\"\nkind = \"file\"\npath = {out:?}\ninput = \"sum\"\n\
         edge = \"rebalance\"\nparallelism = 1\n",
        t = guests::TIMERS,
    )
}

fn graph(text: &str, parallelism: u32) -> JobGraph {
    parse_manifest(text, &Default::default())
        .expect("manifest")
        .job_graph(Some(parallelism))
        .expect("graph")
}

/// `key,start,end,sum,count` lines of `windows`, sorted.
fn lines(windows: BTreeMap<(u64, i64, i64), (u64, u64)>) -> Vec<String> {
    let mut lines: Vec<String> = windows
        .into_iter()
        .map(|((k, s, e), (sum, n))| format!("{k},{s},{e},{sum},{n}"))
        .collect();
    lines.sort();
    lines
}

/// The same sums in plain code: every number into each window that covers it.
fn expected_fixed(count: u64, size: i64, slide: i64) -> Vec<String> {
    let mut windows = BTreeMap::new();
    for n in 0..count {
        let t = n as i64;
        let mut start = t - t.rem_euclid(slide);
        while start > t - size {
            let w = windows
                .entry((n % KEYS, start, start + size))
                .or_insert((0, 0));
            w.0 += n;
            w.1 += 1;
            start -= slide;
        }
    }
    lines(windows)
}

/// Sessions in plain code: a key's numbers closer than `gap` to the previous one share one.
fn expected_sessions(count: u64, gap: i64) -> Vec<String> {
    let mut windows = BTreeMap::new();
    for key in 0..KEYS {
        let mut current: Option<(i64, i64, u64, u64)> = None;
        for n in (key..count).step_by(KEYS as usize) {
            if (n / 1_000) % 3 == 2 {
                continue;
            }
            let t = n as i64;
            current = match current {
                Some((s, e, sum, c)) if t < e => Some((s, t + gap, sum + n, c + 1)),
                Some((s, e, sum, c)) => {
                    windows.insert((key, s, e), (sum, c));
                    Some((t, t + gap, n, 1))
                }
                None => Some((t, t + gap, n, 1)),
            };
        }
        if let Some((s, e, sum, c)) = current {
            windows.insert((key, s, e), (sum, c));
        }
    }
    lines(windows)
}

#[test]
fn tumbling_sliding_and_session_windows_equal_plain_sums_at_parallelism_1_and_2() {
    let count = 50_000;
    let cases = [
        (
            "kind = \"tumbling\", size = 1000",
            false,
            expected_fixed(count, 1_000, 1_000),
        ),
        (
            "kind = \"sliding\", size = 1000, slide = 200",
            false,
            expected_fixed(count, 1_000, 200),
        ),
        (
            "kind = \"session\", gap = 500",
            true,
            expected_sessions(count, 500),
        ),
    ];
    for (window, gaps, expected) in cases {
        for parallelism in [1, 2] {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = dir.path().join("out.txt");
            let job = graph(&job(count, window, gaps, &out, None), parallelism);
            cluster()
                .run_job(&job, &Default::default())
                .unwrap_or_else(|e| panic!("{window} at {parallelism}: {e}"));
            let mut got: Vec<String> = std::fs::read_to_string(&out)
                .expect("output")
                .lines()
                .map(str::to_string)
                .collect();
            got.sort();
            assert_eq!(got.len(), expected.len(), "{window} at {parallelism}");
            assert_eq!(got, expected, "{window} at {parallelism}");
        }
    }
}

#[test]
fn windows_restored_mid_window_at_another_parallelism_count_every_number_once() {
    let count = 200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let window = "kind = \"sliding\", size = 1000, slide = 500";
    let opts = options(&dir.path().join("chk"), 20);
    let checkpoints = run_then_cancel(
        &graph(&job(count, window, false, &out, Some(2)), 2),
        &opts,
        2,
    );
    let last = checkpoints.last().expect("a checkpoint").clone();
    let n = checkpoint_id(&last);
    let expected = expected_fixed(count, 1_000, 500);
    for parallelism in [1, 3] {
        let target = dir.path().join(format!("out-{parallelism}"));
        sink_as_of(&out, n, &target);
        let mut restore = opts.clone();
        restore.restore = Some(last.clone());
        cluster()
            .run_job(
                &graph(&job(count, window, false, &target, None), parallelism),
                &restore,
            )
            .expect("restored run");
        assert_eq!(
            committed_lines(&target),
            expected,
            "parallelism {parallelism}"
        );
    }
}

#[test]
fn a_file_source_cannot_declare_timestamps_it_does_not_have() {
    let text = "[[source]]\nid = \"lines\"\nkind = \"file\"\npath = \"in.txt\"\n\
                watermarks = { out_of_orderness = \"4s\" }\n\
                [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"lines\"\n";
    let err = parse_manifest(text, &Default::default())
        .expect("manifest")
        .job_graph(None)
        .expect_err("no timestamps");
    assert!(
        err.to_string()
            .contains("declare `watermarks` on the operator"),
        "{err}"
    );
    let bad = "[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 1\n\
               watermarks = { out_of_orderness = \"soon\" }\n\
               [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"n\"\n";
    let err = parse_manifest(bad, &Default::default())
        .expect("manifest")
        .job_graph(None)
        .expect_err("bad duration");
    assert!(
        err.to_string().contains("`watermarks.out_of_orderness`"),
        "{err}"
    );
    let zero = bad.replace("out_of_orderness = \"soon\"", "idle_timeout = \"0s\"");
    let err = parse_manifest(&zero, &Default::default())
        .expect("manifest")
        .job_graph(None)
        .expect_err("zero idle timeout");
    assert!(
        err.to_string()
            .contains("`watermarks.idle_timeout` must be longer than 0"),
        "{err}"
    );
}

#[test]
fn a_task_waits_for_its_slowest_active_channel_and_an_idle_one_stops_holding_it_back() {
    use weir_host::network::{ChannelEvent, ChannelItem};
    use weir_host::runtime::{CollectingOutput, InputProcessor, OperatorChain};
    let out = CollectingOutput::new();
    let mut chain =
        OperatorChain::open_links(runtime(), None, Vec::new(), Box::new(out.clone()), None)
            .expect("an empty chain");
    let mut input = InputProcessor::new(2);
    let mut send = |channel: usize, event: ChannelEvent| {
        input
            .process(channel, ChannelItem::Event(event), &mut chain)
            .expect("processed");
    };
    send(0, ChannelEvent::Watermark(10));
    assert!(
        out.lock().watermarks.is_empty(),
        "channel 1 has said nothing"
    );
    send(1, ChannelEvent::Watermark(5));
    send(0, ChannelEvent::Watermark(20));
    assert_eq!(out.lock().watermarks, vec![5]);
    // Channel 1 goes idle: channel 0 alone counts.
    send(1, ChannelEvent::WatermarkStatus { idle: true });
    assert_eq!(out.lock().watermarks, vec![5, 20]);
    // Both idle: the task is idle, once.
    send(0, ChannelEvent::WatermarkStatus { idle: true });
    assert_eq!(out.lock().statuses, vec![true]);
    // Channel 1 comes back behind: the task is active again, and its watermark waits.
    send(1, ChannelEvent::WatermarkStatus { idle: false });
    assert_eq!(out.lock().statuses, vec![true, false]);
    send(1, ChannelEvent::Watermark(15));
    assert_eq!(out.lock().watermarks, vec![5, 20]);
    send(1, ChannelEvent::Watermark(30));
    assert_eq!(out.lock().watermarks, vec![5, 20, 30]);
}

/// Two sequences (each its own event time), keyed by `n % 7`, joined by `operator` of the
/// timers guest into `left,right` lines.
fn join_job(operator: &str, left: u64, right: u64, out: &Path, waits: Option<u64>) -> String {
    let waits = waits.map_or(String::new(), |n| format!("wait_for_checkpoints = {n}\n"));
    format!(
        "name = \"join\"\n\
         [[source]]\nid = \"left\"\nkind = \"sequence\"\ncount = {left}\n{waits}\
         watermarks = {{ out_of_orderness = \"0ms\" }}\n\
         [[source]]\nid = \"right\"\nkind = \"sequence\"\ncount = {right}\n{waits}\
         watermarks = {{ out_of_orderness = \"0ms\" }}\n\
         [[operator]]\nid = \"key-left\"\ncomponent = {t:?}\noperator = \"key-mod\"\ninput = \"left\"\n\
         config = {{ modulus = {KEYS} }}\n\
         [[operator]]\nid = \"key-right\"\ncomponent = {t:?}\noperator = \"key-mod\"\ninput = \"right\"\n\
         config = {{ modulus = {KEYS} }}\n\
         [[operator]]\nid = \"join\"\ncomponent = {t:?}\noperator = \"{operator}\"\n\
         input = \"key-left\"\nedge = \"hash\"\nsecond_input = \"key-right\"\nsecond_edge = \"hash\"\n\
         [[sink]]\nid = \"out\"\nkind = \"file\"\npath = {out:?}\ninput = \"join\"\n\
         edge = \"rebalance\"\nparallelism = 1\n",
        t = guests::TIMERS,
    )
}

/// `left,right` for every pair of one key that `matches`, sorted.
fn expected_pairs(left: u64, right: u64, matches: impl Fn(u64, u64) -> bool) -> Vec<String> {
    let mut pairs = Vec::new();
    for l in 0..left {
        for r in (l % KEYS..right).step_by(KEYS as usize) {
            if matches(l, r) {
                pairs.push(format!("{l},{r}"));
            }
        }
    }
    pairs.sort();
    pairs
}

fn lines_of(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn interval_and_window_joins_of_two_inputs_equal_plain_pairs_at_parallelism_1_and_2() {
    let (left, right) = (3_000, 2_000);
    let interval = expected_pairs(left, right, |l, r| r + 2 >= l && r <= l + 2);
    let windowed = expected_pairs(left, right, |l, r| l / 100 == r / 100);
    for parallelism in [1, 2] {
        for (operator, expected) in [("interval-join", &interval), ("window-join", &windowed)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = dir.path().join("out.txt");
            let job = graph(&join_job(operator, left, right, &out, None), parallelism);
            assert!(job.edges.iter().any(|e| e.second), "a second input");
            cluster()
                .run_job(&job, &Default::default())
                .unwrap_or_else(|e| panic!("{operator} at {parallelism}: {e}"));
            let got = lines_of(&out);
            assert_eq!(got.len(), expected.len(), "{operator} at {parallelism}");
            assert_eq!(&got, expected, "{operator} at {parallelism}");
        }
    }
}

#[test]
fn a_window_join_restored_mid_stream_at_another_parallelism_pairs_every_record_once() {
    let (left, right) = (60_000, 40_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let opts = options(&dir.path().join("chk"), 20);
    let first = graph(&join_job("window-join", left, right, &out, Some(2)), 2);
    let checkpoints = run_then_cancel(&first, &opts, 2);
    let last = checkpoints.last().expect("a checkpoint").clone();
    let n = checkpoint_id(&last);
    let expected = expected_pairs(left, right, |l, r| l / 100 == r / 100);
    for parallelism in [1, 3] {
        let target = dir.path().join(format!("out-{parallelism}"));
        sink_as_of(&out, n, &target);
        let mut restore = opts.clone();
        restore.restore = Some(last.clone());
        cluster()
            .run_job(
                &graph(
                    &join_job("window-join", left, right, &target, None),
                    parallelism,
                ),
                &restore,
            )
            .expect("restored run");
        let got = committed_lines(&target);
        assert_eq!(got.len(), expected.len(), "parallelism {parallelism}");
        assert_eq!(got, expected, "parallelism {parallelism}");
    }
}

#[test]
fn a_second_input_into_a_one_input_operator_fails_the_job_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.txt");
    let job = graph(&join_job("gaps", 10, 10, &out, None), 1);
    let err = cluster()
        .run_job(&job, &Default::default())
        .expect_err("a filter takes one input");
    assert!(
        err.to_string()
            .contains("takes one input, but the job gives it a second"),
        "{err}"
    );
}
