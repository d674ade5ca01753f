//! Guests that misbehave: each fails its own operator with its own clear error, while a normal
//! operator in the same process keeps running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_framing::Record;
use weir_host::guests;
use weir_host::runtime::{ChainError, OperatorChain};
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
    let ChainError::Operator(failure) = err else {
        panic!("expected an operator failure, got {err}")
    };
    assert_eq!((failure.operator.as_str(), failure.subtask), (operator, 0));
    assert_eq!(failure.component, "hostile.wasm");
    failure.kind
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
    let ChainError::Operator(failure) = err else {
        panic!("{err}")
    };
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
    let ChainError::Operator(failure) = err else {
        panic!("expected an operator failure, got {err}")
    };
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
