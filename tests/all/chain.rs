//! Records through real operator chains: exact results, per-record and batched, state scoping,
//! snapshots.

use std::collections::BTreeMap;

use crate::guests;
use weir_framing::{OwnedRecord, Record};
use weir_host::runtime::{ChainSpec, CollectingOutput, OperatorChain};
use weir_host::state::StateData;
use weir_host::stream::Barrier;
use weir_host::wasm::{ExecutionMode, FailureKind, OperatorSpec};

use crate::support::*;

const WORDCOUNT_OPS: &[&str] = &["tokenize", "key-by-word", "count"];

fn text_values(records: &[OwnedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).expect("utf-8 output"))
        .collect()
}

fn run_wordcount(mode: ExecutionMode, lines_per_batch: usize) -> (Vec<String>, Vec<bool>) {
    let (mut chain, out) = open_chain(guests::WORDCOUNT, WORDCOUNT_OPS, mode).expect("open");
    for batch in batches(passage().lines().map(str::as_bytes), lines_per_batch) {
        chain.process_batch(&batch).expect("process");
    }
    chain.finish().expect("finish");
    assert!(out.lock().finished);
    (text_values(&out.take_records()), chain.batched().to_vec())
}

/// Checks word count output lines against the independent count: every update in order
/// (1, 2, ... per word), the last one equal to the total.
fn assert_counts_match(lines: &[String]) {
    let expected = independent_word_count(passage());
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        let count: u64 = count.parse().expect("count");
        let previous = seen.insert(word.to_string(), count).unwrap_or(0);
        assert_eq!(count, previous + 1, "updates of `{word}` out of order");
    }
    assert_eq!(seen, expected);
    assert_eq!(lines.len() as u64, expected.values().sum::<u64>());
}

#[test]
fn wordcount_batched_equals_independent_count() {
    let (lines, batched) = run_wordcount(ExecutionMode::Batched, 7);
    assert_eq!(batched, [true, true, true]);
    assert_counts_match(&lines);
}

#[test]
fn wordcount_per_record_equals_independent_count() {
    let (lines, batched) = run_wordcount(ExecutionMode::PerRecord, 3);
    assert_eq!(batched, [false, false, false]);
    assert_counts_match(&lines);
}

#[test]
fn per_record_and_batched_modes_produce_identical_output() {
    assert_eq!(
        run_wordcount(ExecutionMode::Batched, 1).0,
        run_wordcount(ExecutionMode::PerRecord, 50).0
    );
}

#[test]
fn a_per_record_operator_can_feed_a_batched_one() {
    let loaded = load(guests::WORDCOUNT);
    let specs = WORDCOUNT_OPS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut spec = OperatorSpec::new(*name);
            spec.mode = if i == 1 {
                ExecutionMode::PerRecord
            } else {
                ExecutionMode::Batched
            };
            ChainSpec {
                component: loaded.clone(),
                spec,
            }
        })
        .collect();
    let out = CollectingOutput::new();
    let mut chain =
        OperatorChain::open(runtime(), specs, Box::new(out.clone()), None).expect("open");
    assert_eq!(chain.batched(), [true, false, true]);
    for batch in batches(passage().lines().map(str::as_bytes), 4) {
        chain.process_batch(&batch).expect("process");
    }
    chain.finish().expect("finish");
    assert_counts_match(&text_values(&out.take_records()));
}

#[test]
fn keyed_state_is_scoped_per_key() {
    let (mut chain, out) =
        open_chain(guests::WORDCOUNT, &["count"], ExecutionMode::Batched).expect("open");
    let mut batch = Vec::new();
    for key in ["owl", "cat", "owl", "owl", "cat", "emu"] {
        Record {
            value: b"ignored",
            key: Some(key.as_bytes()),
            timestamp: Some(5),
        }
        .write_to(&mut batch);
    }
    chain.process_batch(&batch).expect("process");
    let records = out.take_records();
    assert_eq!(
        text_values(&records),
        ["owl 1", "cat 1", "owl 2", "owl 3", "cat 2", "emu 1"]
    );
    assert!(
        records
            .iter()
            .all(|r| r.timestamp == Some(5) && r.key.is_none())
    );
}

#[test]
fn stateless_chain_parses_scales_filters_and_formats() {
    let mut spec = vec![OperatorSpec::new("parse"), OperatorSpec::new("scale")];
    spec[1].config.push(("factor".into(), "3".into()));
    spec.push(OperatorSpec::new("even"));
    spec.push(OperatorSpec::new("format"));
    let (mut chain, out) = open_specs(guests::STATELESS_CHAIN, spec).expect("open");
    let inputs: Vec<String> = (-5..=20).map(|i| format!(" {i} ")).collect();
    for batch in batches(inputs.iter().map(|s| s.as_bytes()), 4) {
        chain.process_batch(&batch).expect("process");
    }
    chain.finish().expect("finish");
    let expected: Vec<String> = (-5i64..=20)
        .map(|i| i * 3)
        .filter(|x| x % 2 == 0)
        .map(|x| x.to_string())
        .collect();
    assert_eq!(text_values(&out.take_records()), expected);
}

#[test]
fn undecodable_record_fails_with_its_position_and_content() {
    let (mut chain, _out) =
        open_chain(guests::STATELESS_CHAIN, &["parse"], ExecutionMode::Batched).expect("open");
    let batch = &batches([&b"1"[..], b"2", b"twelve", b"4"], 10)[0];
    let err = chain
        .process_batch(batch)
        .expect_err("twelve is not a number");
    let failure = operator_failure(&err);
    assert_eq!(failure.operator, "parse");
    assert_eq!(failure.component, "stateless_chain.wasm");
    match &failure.kind {
        FailureKind::Decode {
            index,
            message,
            preview,
        } => {
            assert_eq!(*index, 2);
            assert!(message.contains("`twelve` is not an integer"), "{message}");
            assert!(preview.contains("\"twelve\""), "{preview}");
        }
        other => panic!("expected a decode failure, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("operator `parse` (subtask 0)") && text.contains("twelve"),
        "{text}"
    );
    // The failed instance refuses further work instead of running on in an unknown state.
    let again = chain.process_batch(batch).expect_err("already failed");
    assert!(again.to_string().contains("after it had failed"), "{again}");
}

#[test]
fn undecodable_record_in_per_record_mode_is_shown_too() {
    let (mut chain, _out) = open_chain(
        guests::STATELESS_CHAIN,
        &["parse"],
        ExecutionMode::PerRecord,
    )
    .expect("open");
    let err = chain
        .process_record(Record::value(b"1e9x"))
        .expect_err("not a number");
    assert!(err.to_string().contains("\"1e9x\""), "{err}");
}

#[test]
fn bad_configuration_is_reported_as_such() {
    let spec = OperatorSpec::new("scale").with_config("factor", "three");
    let err = open_specs(guests::STATELESS_CHAIN, vec![spec])
        .err()
        .expect("bad factor");
    let failure = operator_failure(&err);
    assert!(
        matches!(&failure.kind, FailureKind::Config(m) if m.contains("factor")),
        "{}",
        failure.kind
    );
}

#[test]
fn unknown_operator_name_lists_the_exported_ones() {
    let err = open_chain(guests::WORDCOUNT, &["tokenise"], ExecutionMode::Batched)
        .err()
        .expect("no such operator");
    let text = err.to_string();
    assert!(
        text.contains("`tokenise`") && text.contains("tokenize, key-by-word, count"),
        "{text}"
    );
}

#[test]
fn guest_state_snapshot_restores_into_a_new_instance() {
    let (mut chain, out) = open_chain(
        guests::STATELESS_CHAIN,
        &["parse", "running-total"],
        ExecutionMode::Batched,
    )
    .expect("open");
    chain
        .process_batch(&batches([&b"1"[..], b"2", b"3"], 10)[0])
        .expect("process");
    let snapshots = chain.snapshot(&Barrier::in_memory(1)).expect("snapshot");
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[1].operator, "running-total");
    assert_eq!(snapshots[1].guest_state, 6i64.to_le_bytes());
    let totals = |records: Vec<OwnedRecord>| -> Vec<i64> {
        records
            .iter()
            .map(|r| {
                bincode::serde::decode_from_slice(&r.value, bincode::config::standard())
                    .expect("i64")
                    .0
            })
            .collect()
    };
    assert_eq!(totals(out.take_records()), [1, 3, 6]);

    let loaded = load(guests::STATELESS_CHAIN);
    let specs = ["parse", "running-total"]
        .iter()
        .map(|n| ChainSpec {
            component: loaded.clone(),
            spec: OperatorSpec::new(*n),
        })
        .collect();
    let restored_out = CollectingOutput::new();
    let mut restored = OperatorChain::open(
        runtime(),
        specs,
        Box::new(restored_out.clone()),
        Some(&snapshots),
    )
    .expect("restore");
    restored
        .process_batch(&batches([&b"4"[..]], 10)[0])
        .expect("process");
    assert_eq!(totals(restored_out.take_records()), [10]);
}

#[test]
fn keyed_state_snapshot_restores_counts() {
    let (mut chain, _) =
        open_chain(guests::WORDCOUNT, WORDCOUNT_OPS, ExecutionMode::Batched).expect("open");
    chain
        .process_batch(&batches([&b"owl cat owl"[..]], 10)[0])
        .expect("process");
    let snapshots = chain.snapshot(&Barrier::in_memory(1)).expect("snapshot");
    assert_eq!(snapshots[2].operator, "count");
    let StateData::Value(groups) = &snapshots[2].keyed.states["count"] else {
        panic!("count is a value state")
    };
    let mut keys: Vec<&[u8]> = groups
        .values()
        .flatten()
        .map(|(k, _)| k.as_slice())
        .collect();
    keys.sort();
    assert_eq!(keys, [&b"cat"[..], b"owl"]);

    let (mut restored, out) =
        restore_chain(guests::WORDCOUNT, WORDCOUNT_OPS, &snapshots).expect("restore");
    restored
        .process_batch(&batches([&b"owl emu"[..]], 10)[0])
        .expect("process");
    assert_eq!(text_values(&out.take_records()), ["owl 3", "emu 1"]);
}

fn alarm_chain(domain: &str) -> (OperatorChain, CollectingOutput) {
    let spec = OperatorSpec::new("alarm")
        .with_config("delay", "10")
        .with_config("domain", domain);
    open_specs(guests::TIMERS, vec![spec]).expect("open alarm")
}

fn keyed_batch(records: &[(&str, i64, &str)]) -> Vec<u8> {
    let mut batch = Vec::new();
    for (key, ts, value) in records {
        Record {
            value: value.as_bytes(),
            key: Some(key.as_bytes()),
            timestamp: Some(*ts),
        }
        .write_to(&mut batch);
    }
    batch
}

#[test]
fn event_time_timers_fire_in_order_when_the_watermark_passes_them() {
    let (mut chain, out) = alarm_chain("event");
    chain
        .process_batch(&keyed_batch(&[("a", 1, "x"), ("b", 5, "y"), ("a", 3, "z")]))
        .expect("process");
    assert!(out.take_records().is_empty());
    chain.emit_watermark(12).expect("watermark 12");
    assert_eq!(text_values(&out.take_records()), ["a 11 z"]);
    chain.emit_watermark(12).expect("same watermark again");
    chain.emit_watermark(20).expect("watermark 20");
    let fired = out.take_records();
    assert_eq!(text_values(&fired), ["a 13 z", "b 15 y"]);
    assert_eq!(fired[0].timestamp, Some(13));
    assert_eq!(out.lock().watermarks, [12, 20]);
}

#[test]
fn pending_timers_survive_a_snapshot() {
    let (mut chain, _) = alarm_chain("event");
    chain
        .process_batch(&keyed_batch(&[("k", 100, "v")]))
        .expect("process");
    let snapshots = chain.snapshot(&Barrier::in_memory(1)).expect("snapshot");
    assert_eq!(snapshots[0].timers.event_time, [(110, b"k".to_vec())]);

    let spec = OperatorSpec::new("alarm").with_config("delay", "10");
    let loaded = load(guests::TIMERS);
    let out = CollectingOutput::new();
    let specs = vec![ChainSpec {
        component: loaded,
        spec,
    }];
    let mut restored =
        OperatorChain::open(runtime(), specs, Box::new(out.clone()), Some(&snapshots))
            .expect("restore");
    restored.emit_watermark(i64::MAX).expect("end of time");
    assert_eq!(text_values(&out.take_records()), ["k 110 v"]);
}

#[test]
fn processing_time_timers_fire_when_processing_time_advances() {
    let (mut chain, out) = alarm_chain("processing");
    chain
        .process_batch(&keyed_batch(&[("p", 1_000, "late")]))
        .expect("process");
    chain
        .emit_watermark(i64::MAX)
        .expect("event time does not fire them");
    assert!(out.take_records().is_empty());
    chain.advance_processing_time(1_009).expect("not yet");
    assert!(out.take_records().is_empty());
    chain.advance_processing_time(1_010).expect("now");
    assert_eq!(text_values(&out.take_records()), ["p 1010 late"]);
}

#[test]
fn state_of_every_size_reads_back_and_reaches_the_snapshot() {
    // Small values wait in the guest's cache; big ones go to the host at once. A key that
    // turns big after a small write must not get the small value back at the snapshot, read
    // in between or not.
    let writes = [
        ("a", "10"),
        ("b", "100000"),
        ("a", "100000"),
        ("a", "20"),
        ("c", "7"),
        ("b", "5"),
        ("c", "90000"),
    ];
    for read in ["true", "false"] {
        let spec = OperatorSpec::new("hoard").with_config("read", read);
        let (mut chain, out) = open_specs(guests::HOSTILE, vec![spec]).expect("open");
        let batch = keyed_batch(
            &writes
                .iter()
                .map(|(k, size)| (*k, 0, *size))
                .collect::<Vec<_>>(),
        );
        chain.process_batch(&batch).expect("process");
        let lengths: Vec<String> = out
            .take_records()
            .into_iter()
            .map(|r| String::from_utf8(r.value).expect("utf-8"))
            .collect();
        assert_eq!(
            lengths,
            writes.map(|(_, size)| size.to_string()),
            "read {read}"
        );

        let snapshots = chain.snapshot(&Barrier::in_memory(1)).expect("snapshot");
        let StateData::Value(groups) = &snapshots[0].keyed.states["hoard"] else {
            panic!("hoard is a value state")
        };
        let mut sizes: Vec<(String, usize)> = groups
            .values()
            .flatten()
            .map(|(k, v)| (String::from_utf8(k.clone()).expect("utf-8"), v.len()))
            .collect();
        sizes.sort();
        assert_eq!(
            sizes,
            [
                ("a".to_string(), 20),
                ("b".to_string(), 5),
                ("c".to_string(), 90000)
            ],
            "read {read}"
        );
    }
}

/// `n` numbers as the sequence source writes them: 8-byte values in blocks.
fn number_batches(numbers: std::ops::Range<u64>, per_batch: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = weir_framing::BatchWriter::new();
    for x in numbers {
        writer.push(Record::value(&x.to_le_bytes()));
        if (x + 1) % per_batch == 0 {
            out.push(std::mem::take(&mut writer).into_vec());
        }
    }
    out.push(writer.into_vec());
    out
}

/// Checks the running sums `key-mod-10000 -> running-sum` emitted for `numbers`, given how many
/// times each key was seen before: every output is its key's count so far.
fn check_running_sums(
    records: Vec<OwnedRecord>,
    numbers: std::ops::Range<u64>,
    seen: &mut BTreeMap<u64, u64>,
) {
    assert_eq!(records.len() as u64, numbers.end - numbers.start);
    for (x, record) in numbers.zip(records) {
        let key = u64::from_le_bytes(record.key.expect("keyed output")[..].try_into().unwrap());
        assert_eq!(key, x % 10_000);
        let count = seen.entry(key).or_insert(0);
        *count += 1;
        let sum = u64::from_le_bytes(record.value[..].try_into().expect("8-byte sum"));
        assert_eq!(sum, *count, "record {x}");
    }
}

#[test]
fn a_reduce_in_a_component_sums_every_key_exactly_across_a_snapshot() {
    const OPS: &[&str] = &["key-mod-10000", "running-sum"];
    let (mut chain, out) =
        open_chain(guests::BENCH_OPS, OPS, ExecutionMode::Batched).expect("open");
    let mut seen = BTreeMap::new();
    for batch in number_batches(0..25_000, 1000) {
        chain.process_batch(&batch).expect("process");
    }
    check_running_sums(out.take_records(), 0..25_000, &mut seen);
    let snapshots = chain.snapshot(&Barrier::in_memory(1)).expect("snapshot");
    let StateData::Value(groups) = &snapshots[1].keyed.states["reduce"] else {
        panic!("the accumulators are a value state")
    };
    assert_eq!(groups.values().map(Vec::len).sum::<usize>(), 10_000);

    let (mut restored, restored_out) =
        restore_chain(guests::BENCH_OPS, OPS, &snapshots).expect("restore");
    for batch in number_batches(25_000..40_000, 1000) {
        restored.process_batch(&batch).expect("process");
    }
    check_running_sums(restored_out.take_records(), 25_000..40_000, &mut seen);
}

#[test]
fn map_key_by_and_reduce_of_pairs_sum_every_key_exactly() {
    // P2 as the benchmark runs it in wasm: (x mod 10000, 1) keyed by the first field, summed;
    // the map and the key_by as one operator and as two.
    sum_pairs_exactly(&["keyed-pair-mod-10000", "sum-pairs"]);
    sum_pairs_exactly(&["pair-mod-10000", "key-by-first", "sum-pairs"]);
}

fn sum_pairs_exactly(operators: &[&str]) {
    let (mut chain, out) =
        open_chain(guests::BENCH_OPS, operators, ExecutionMode::Batched).expect("open");
    for batch in number_batches(0..30_000, 1000) {
        chain.process_batch(&batch).expect("process");
    }
    let records = out.take_records();
    assert_eq!(records.len(), 30_000);
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for (x, record) in (0..30_000u64).zip(records) {
        let key = x % 10_000;
        let count = seen.entry(key).or_insert(0);
        *count += 1;
        let mut expected = key.to_le_bytes().to_vec();
        expected.extend_from_slice(&count.to_le_bytes());
        assert_eq!(record.key, Some(key.to_le_bytes().to_vec()), "record {x}");
        assert_eq!(record.value, expected, "record {x}");
    }
}
