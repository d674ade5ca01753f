//! Guests that misbehave: each fails its own operator with its own clear error, while a normal
//! operator in the same process keeps running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::guests;
use weir_framing::Record;
use weir_host::runtime::OperatorChain;
use weir_host::stream::StreamError;
use weir_host::wasm::{ExecutionMode, FailureKind, Limits, OperatorSpec};

use crate::support::*;

/// A word count chain that runs before, during and after a hostile guest's failure.
struct Bystander {
    chain: OperatorChain,
    out: weir_host::runtime::CollectingOutput,
}

impl Bystander {
    fn start() -> Self {
        let (mut chain, out) = open_chain(
            guests::WORDCOUNT,
            &["tokenize", "key-by-word", "count"],
            ExecutionMode::Batched,
        )
        .expect("open bystander");
        chain
            .process_batch(&batches([&b"the owl and the cat"[..]], 1)[0])
            .expect("before");
        Bystander { chain, out }
    }

    fn still_counts(mut self) {
        self.chain
            .process_batch(&batches([&b"the end"[..]], 1)[0])
            .expect("after");
        self.chain.finish().expect("finish");
        let lines: Vec<String> = self
            .out
            .take_records()
            .into_iter()
            .map(|r| String::from_utf8(r.value).expect("utf-8"))
            .collect();
        assert_eq!(
            lines,
            [
                "the 1", "owl 1", "and 1", "the 2", "cat 1", "the 3", "end 1"
            ]
        );
    }
}

fn hostile_failure(operator: &str, limits: Limits, config: &[(&str, &str)]) -> FailureKind {
    let bystander = Bystander::start();
    let mut spec = OperatorSpec::new(operator);
    spec.limits = Arc::new(limits);
    spec.config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (mut chain, _out) = open_specs(guests::HOSTILE, vec![spec]).expect("open hostile");
    let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
    let err = chain
        .process_batch(&batches(records.iter().map(Vec::as_slice), 10)[0])
        .expect_err("the hostile operator must fail");
    bystander.still_counts();
    let failure = operator_failure(&err);
    assert_eq!((failure.operator.as_str(), failure.subtask), (operator, 0));
    assert_eq!(failure.component, "hostile.wasm");
    failure.kind.clone()
}

#[test]
fn infinite_loop_hits_the_cpu_deadline() {
    let limits = Limits {
        call_deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let started = Instant::now();
    let kind = hostile_failure("spin", limits, &[]);
    assert_eq!(
        kind,
        FailureKind::DeadlineExceeded(Duration::from_millis(200))
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn memory_growth_hits_the_memory_cap() {
    let limits = Limits {
        max_memory_bytes: 32 << 20,
        ..Limits::default()
    };
    match hostile_failure("grow", limits, &[]) {
        FailureKind::MemoryCap { requested, cap } => {
            assert_eq!(cap, 32 << 20);
            assert!(requested > cap);
        }
        other => panic!("expected the memory cap, got {other}"),
    }
}

#[test]
fn deep_recursion_overflows_the_stack() {
    assert_eq!(
        hostile_failure("recurse", Limits::default(), &[]),
        FailureKind::StackOverflow
    );
}

#[test]
fn panic_on_a_chosen_record_reports_the_panic_message() {
    match hostile_failure("fail-at", Limits::default(), &[("at", "3")]) {
        FailureKind::Panic(message) => assert!(
            message.contains("failing on record 3 as asked"),
            "{message}"
        ),
        other => panic!("expected a panic, got {other}"),
    }
}

#[test]
fn raw_trap_on_a_chosen_record_is_a_trap() {
    match hostile_failure(
        "fail-at",
        Limits::default(),
        &[("at", "2"), ("how", "unreachable")],
    ) {
        FailureKind::Trap(message) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other}"),
    }
}

#[test]
fn operator_error_on_a_chosen_record_is_reported_as_the_guest_said() {
    assert_eq!(
        hostile_failure(
            "fail-at",
            Limits::default(),
            &[("at", "1"), ("how", "error")]
        ),
        FailureKind::Failed("refusing record 1".into())
    );
}

#[test]
fn stdout_flood_hits_the_output_cap_and_reaches_the_log_until_then() {
    let log = Arc::new(CollectingLog::default());
    let bystander = Bystander::start();
    let mut spec = OperatorSpec::new("flood");
    spec.limits = Arc::new(Limits {
        max_log_bytes: 64 << 10,
        ..Limits::default()
    });
    spec.log_sink = log.clone();
    let (mut chain, _out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    let err = chain
        .process_batch(&batches([&b"x"[..]], 1)[0])
        .expect_err("flood");
    bystander.still_counts();
    let failure = operator_failure(&err);
    assert_eq!(failure.kind, FailureKind::OutputCap { cap: 64 << 10 });
    let lines = log.lines.lock().expect("log");
    assert!(lines.len() > 50, "captured {} lines", lines.len());
    assert!(
        lines
            .iter()
            .all(|(source, stream, line)| source == "flood#0"
                && stream == "stdout"
                && line.starts_with("flood flood"))
    );
}

#[test]
fn a_state_value_over_the_limit_fails_the_call_that_writes_it() {
    // No checkpoint follows: the guest-side state cache must not hold the value back.
    let mut spec = OperatorSpec::new("hoard");
    spec.limits = Arc::new(Limits {
        max_state_value_bytes: 1 << 20,
        ..Limits::default()
    });
    let (mut chain, out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    let mut batch = Vec::new();
    for (key, size) in [("a", "100"), ("b", "2000000")] {
        Record {
            value: size.as_bytes(),
            key: Some(key.as_bytes()),
            timestamp: None,
        }
        .write_to(&mut batch);
    }
    let err = chain.process_batch(&batch).expect_err("over the limit");
    let failure = operator_failure(&err);
    assert_eq!(failure.operator, "hoard");
    let FailureKind::Violation(message) = &failure.kind else {
        panic!("expected a violation, got {:?}", failure.kind)
    };
    assert!(
        message.contains("state value of 2000000 bytes exceeds the limit of 1048576 bytes"),
        "{message}"
    );
    assert!(
        out.take_records().is_empty(),
        "nothing of the failed batch goes on"
    );
}

#[test]
fn a_flood_is_echoed_to_the_log_only_up_to_a_bound_of_lines() {
    let log = Arc::new(CollectingLog::default());
    let mut spec = OperatorSpec::new("flood");
    spec.log_sink = log.clone();
    let (mut chain, _out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    let err = chain
        .process_batch(&batches([&b"x"[..]], 1)[0])
        .expect_err("flood");
    let failure = operator_failure(&err);
    assert_eq!(
        failure.kind,
        FailureKind::OutputCap {
            cap: Limits::default().max_log_bytes
        }
    );
    let lines = log.lines.lock().expect("log");
    // The default cap lets ~1,700 lines of 600 bytes through; the log shows the bound and one
    // line saying the rest is not shown.
    assert_eq!(lines.len(), weir_host::wasm::ECHOED_LINES + 1);
    assert!(
        lines[lines.len() - 1].2.contains("the rest is not shown"),
        "{:?}",
        lines.last()
    );
}

#[test]
fn a_sleep_without_the_clock_capability_is_refused_at_once_by_name() {
    let started = Instant::now();
    match hostile_failure("sleep", Limits::default(), &[("millis", "90000")]) {
        FailureKind::Violation(message) => assert!(
            message.contains("tried to wait 90s") && message.contains("grants no clock"),
            "{message}"
        ),
        other => panic!("expected a refused wait, got {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_sleep_with_clocks_granted_is_cut_at_the_call_deadline_and_named() {
    let mut spec = OperatorSpec::new("sleep");
    spec.capabilities.clocks = true;
    spec.limits = Arc::new(Limits {
        call_deadline: Duration::from_millis(300),
        ..Limits::default()
    });
    spec.config = vec![("millis".into(), u64::MAX.to_string())];
    let (mut chain, _out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    let started = Instant::now();
    let err = chain
        .process_batch(&batches([&b"x"[..]], 1)[0])
        .expect_err("the sleep outlasts the deadline");
    assert!(started.elapsed() < Duration::from_secs(20));
    let failure = operator_failure(&err);
    match failure.kind.clone() {
        FailureKind::BlockedPastDeadline { deadline, wait } => {
            assert_eq!(deadline, Duration::from_millis(300));
            assert!(wait.contains("a wait of"), "{wait}");
        }
        other => panic!("expected a wait cut at the deadline, got {other}"),
    }
}

#[test]
fn a_short_sleep_with_clocks_granted_completes() {
    let mut spec = OperatorSpec::new("sleep");
    spec.capabilities.clocks = true;
    spec.config = vec![("millis".into(), "20".into())];
    let (mut chain, out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    chain
        .process_batch(&batches([&b"a"[..], &b"b"[..]], 2)[0])
        .expect("short sleeps are fine");
    chain.finish().expect("finish");
    let values: Vec<Vec<u8>> = out.take_records().into_iter().map(|r| r.value).collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn a_record_over_the_limit_in_a_returned_batch_is_refused() {
    match hostile_failure("big-record", Limits::default(), &[]) {
        FailureKind::Violation(message) => assert!(
            message.contains("a record of 20971520 bytes, over the record limit of 16777216"),
            "{message}"
        ),
        other => panic!("expected the record limit, got {other}"),
    }
}

#[test]
fn keyed_state_past_its_byte_limit_fails_the_operator_with_a_state_error() {
    let mut spec = OperatorSpec::new("hoard");
    spec.limits = Arc::new(Limits {
        max_state_bytes: 8 << 20,
        ..Limits::default()
    });
    spec.config = vec![("read".into(), "false".into())];
    let (mut chain, out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    // A new 1 MiB value per key, for 100 keys: the ninth crosses 8 MiB.
    let keys: Vec<String> = (0..100).map(|k| format!("key-{k}")).collect();
    let mut batch = Vec::new();
    for key in &keys {
        Record {
            value: b"1048576",
            key: Some(key.as_bytes()),
            timestamp: None,
        }
        .write_to(&mut batch);
    }
    let err = chain
        .process_batch(&batch)
        .expect_err("over the state limit");
    let failure = operator_failure(&err);
    assert_eq!(failure.operator, "hoard");
    let FailureKind::State(message) = &failure.kind else {
        panic!("expected a state failure, got {:?}", failure.kind)
    };
    assert!(
        message.contains("over the limit of 8388608 bytes per operator subtask"),
        "{message}"
    );
    assert!(out.take_records().is_empty());
}

/// Records through `chain` into a counting tail.
fn count_out(
    operator: OperatorSpec,
    inputs: usize,
) -> Result<weir_host::metrics::TaskMetricsSnapshot, StreamError> {
    let metrics = Arc::new(weir_host::metrics::TaskMetrics::default());
    let loaded = load(guests::HOSTILE);
    let mut chain = OperatorChain::open(
        runtime(),
        vec![weir_host::runtime::ChainSpec {
            component: loaded,
            spec: operator,
        }],
        Box::new(weir_host::connectors::DiscardSink::new(metrics.clone())),
        None,
    )?;
    let values: Vec<Vec<u8>> = (0..inputs).map(|i| vec![i as u8]).collect();
    chain.process_batch(&batches(values.iter().map(Vec::as_slice), inputs)[0])?;
    chain.finish()?;
    Ok(metrics.snapshot())
}

#[test]
fn fan_out_beyond_guest_memory_is_handed_to_the_host_during_the_call() {
    // 20 inputs of 200,000 outputs each: ~100 MB of framed output from one batch call, with a
    // guest memory cap of 32 MiB. Without partial output the guest would hit the cap.
    for mode in [ExecutionMode::Batched, ExecutionMode::PerRecord] {
        let mut spec = OperatorSpec::new("fan-out");
        spec.mode = mode;
        spec.limits = Arc::new(Limits {
            max_memory_bytes: 32 << 20,
            ..Limits::default()
        });
        spec.config = vec![("per-input".into(), "200000".into())];
        let counted = count_out(spec, 20).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(counted.records_out, 20 * 200_000, "{mode:?}");
    }
}

#[test]
fn fan_out_keeps_the_order_of_records_across_partial_outputs() {
    let mut spec = OperatorSpec::new("fan-out");
    spec.config = vec![("per-input".into(), "50000".into())];
    let (mut chain, out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    chain
        .process_batch(&batches([&b"a"[..], &b"b"[..]], 2)[0])
        .expect("fan out");
    chain.finish().expect("finish");
    let values: Vec<Vec<u8>> = out.take_records().into_iter().map(|r| r.value).collect();
    let expected: Vec<Vec<u8>> = (0..2)
        .flat_map(|_| (0..50_000u64).map(|i| [i.to_le_bytes(), i.to_be_bytes()].concat()))
        .collect();
    assert_eq!(values.len(), expected.len());
    assert!(values == expected, "records out of order or changed");
}

#[test]
fn a_shadow_stack_overflow_in_linear_memory_is_named_as_a_likely_stack_overflow() {
    let kind = hostile_failure("deep-frames", Limits::default(), &[]);
    assert_eq!(kind, FailureKind::OutOfBoundsMemory);
    assert!(
        kind.to_string()
            .contains("most likely its stack overflowed")
    );
}

#[test]
fn a_cancelled_job_stops_a_guest_that_waits_with_clocks_granted() {
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut spec = OperatorSpec::new("sleep");
    spec.capabilities.clocks = true;
    spec.cancel = Some(cancel.clone());
    spec.config = vec![("millis".into(), "600000".into())];
    spec.limits = Arc::new(Limits {
        call_deadline: Duration::from_secs(600),
        ..Limits::default()
    });
    let (mut chain, _out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let started = Instant::now();
    let err = chain
        .process_batch(&batches([&b"x"[..]], 1)[0])
        .expect_err("cancelled while waiting");
    canceller.join().expect("canceller");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let failure = operator_failure(&err);
    assert_eq!(failure.kind, FailureKind::Cancelled);
}

/// What the `random` operator draws for three records, in an instance with `seed` (and real
/// randomness when `granted`).
fn draws(seed: u64, granted: bool) -> Vec<Vec<u8>> {
    let mut spec = OperatorSpec::new("random");
    spec.random_seed = seed;
    spec.capabilities.random = granted;
    let (mut chain, out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
    for _ in 0..3 {
        chain
            .process_record(weir_framing::Record::value(b"x"))
            .expect("process");
    }
    out.take_records().into_iter().map(|r| r.value).collect()
}

#[test]
fn randomness_is_a_sequence_fixed_by_the_subtask_unless_granted() {
    let first = draws(7, false);
    assert_eq!(first.len(), 3);
    assert_ne!(first[0], first[1], "each draw differs from the one before");
    assert_eq!(
        draws(7, false),
        first,
        "an attempt replaying the subtask draws the same"
    );
    assert_ne!(
        draws(8, false),
        first,
        "another subtask draws other numbers"
    );
    assert_ne!(draws(7, true), draws(7, true), "granted randomness is real");
}
