//! `weir-bench chain`: what the wasm boundary costs. A chain of three operators (map x*3+1,
//! filter even, map x/2) over 8-byte integers, as wasm guests in batched and per-record mode and
//! as native Rust closures with the same framing work, in one run; the keyed running sum alone
//! (what keyed state costs a guest) next to the native operator; plus compile, deserialize and
//! instantiation time and resident memory per instance.
//!
//! Output: one result per line, space-separated `key=value` pairs.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_framing::{BatchWriter, Record};

use crate::guests;
use weir_host::runtime::{ChainSpec, OperatorChain, WasmOperator};
use weir_host::stream::{Output, StreamError};
use weir_host::wasm::{ExecutionMode, OperatorSpec, RuntimeConfig, WasmRuntime};

/// Options of `weir-bench chain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// Records through the native and batched chains.
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// Records through the per-record chain (it is ~50x slower).
    #[arg(long, default_value_t = 200_000)]
    pub per_record_records: u64,
    /// Records per input batch.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Instances to create for the instantiation and memory measurements.
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
}

const OPERATORS: [&str; 3] = ["times-three-plus-one", "even", "half"];

/// Counts what reaches the end of the chain, to check the result and keep work observable.
#[derive(Clone, Default)]
pub(crate) struct Counter(pub(crate) Arc<AtomicU64>);

impl Output for Counter {
    fn collect(&mut self, _: Record<'_>) -> Result<(), StreamError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        let n =
            weir_framing::count_records(batch).map_err(|e| StreamError::Output(e.to_string()))?;
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }
    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }
}

fn input_batches(records: u64, per_batch: usize) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut current = BatchWriter::new();
    for x in 0..records {
        current.push(Record::value(&x.to_le_bytes()));
        if (x + 1) % per_batch as u64 == 0 {
            batches.push(std::mem::take(&mut current).into_vec());
        }
    }
    if !current.is_empty() {
        batches.push(current.into_vec());
    }
    batches
}

/// Records the chain lets through: x*3+1 is even exactly when x is odd.
fn expected_output(records: u64) -> u64 {
    records / 2
}

/// The same chain as native closures, each reading a framed batch and writing one, as a guest
/// does: the comparison prices the wasm boundary, not the framing.
fn run_native(batches: &[Vec<u8>]) -> Result<(Duration, u64)> {
    type Op = Box<dyn FnMut(u64) -> Option<u64>>;
    let mut ops: Vec<Op> = vec![
        Box::new(|x: u64| Some(x.wrapping_mul(3).wrapping_add(1))),
        Box::new(|x: u64| x.is_multiple_of(2).then_some(x)),
        Box::new(|x: u64| Some(x / 2)),
    ];
    let (mut first, mut second, mut third) =
        (BatchWriter::new(), BatchWriter::new(), BatchWriter::new());
    let mut count = 0u64;
    let started = Instant::now();
    for batch in batches {
        apply(&mut ops[0], batch, &mut first)?;
        apply(&mut ops[1], first.as_bytes(), &mut second)?;
        apply(&mut ops[2], second.as_bytes(), &mut third)?;
        count += weir_framing::count_records(black_box(third.as_bytes()))? as u64;
    }
    Ok((started.elapsed(), count))
}

/// One native operator over a framed batch: decode each value, apply, frame the result.
fn apply(
    op: &mut dyn FnMut(u64) -> Option<u64>,
    input: &[u8],
    out: &mut BatchWriter,
) -> Result<()> {
    out.clear();
    let mut records = weir_framing::records(input);
    while let Some((record, _)) = records.next_with_bytes() {
        let bytes: [u8; 8] = record.value.try_into().context("8-byte record")?;
        if let Some(y) = op(u64::from_le_bytes(bytes)) {
            out.push(Record::value(&y.to_le_bytes()));
        }
    }
    match records.fault() {
        None => Ok(()),
        Some(e) => Err(e.clone()).context("malformed native batch"),
    }
}

fn open_chain(
    runtime: &WasmRuntime,
    mode: ExecutionMode,
    output: Box<dyn Output>,
) -> Result<OperatorChain> {
    let component = runtime.load_file(Path::new(guests::BENCH_OPS))?;
    let specs = OPERATORS
        .iter()
        .map(|name| {
            let mut spec = OperatorSpec::new(*name);
            spec.mode = mode;
            ChainSpec {
                component: component.clone(),
                spec,
            }
        })
        .collect();
    Ok(OperatorChain::open(runtime, specs, output, None)?)
}

fn run_wasm(
    runtime: &WasmRuntime,
    mode: ExecutionMode,
    batches: &[Vec<u8>],
) -> Result<(Duration, u64)> {
    let counter = Counter::default();
    let mut chain = open_chain(runtime, mode, Box::new(counter.clone()))?;
    let started = Instant::now();
    for batch in batches {
        chain.process_batch(batch)?;
    }
    chain.finish()?;
    Ok((started.elapsed(), counter.0.load(Ordering::Relaxed)))
}

/// Keyed records as P2's running sum sees them: key x mod 10000, value 1.
fn keyed_batches(records: u64, per_batch: usize) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut current = BatchWriter::new();
    for x in 0..records {
        current.push(Record {
            value: &1u64.to_le_bytes(),
            key: Some(&(x % 10_000).to_le_bytes()),
            timestamp: None,
        });
        if (x + 1) % per_batch as u64 == 0 {
            batches.push(std::mem::take(&mut current).into_vec());
        }
    }
    if !current.is_empty() {
        batches.push(current.into_vec());
    }
    batches
}

/// How the keyed running sum is computed.
#[derive(Debug, Clone, Copy)]
enum KeyedSum {
    Native,
    /// The SDK's `reduce`: one state-cache lookup per record.
    WasmReduce,
    /// A process function reading and writing a `ValueState` per record.
    WasmValueState,
}

/// The keyed running sum alone, in one thread: the per-record cost of keyed state in a guest
/// (through the SDK's state cache) next to the native operator's hash map.
fn run_keyed(runtime: &WasmRuntime, how: KeyedSum, batches: &[Vec<u8>]) -> Result<(Duration, u64)> {
    let counter = Counter::default();
    let wasm_operator = match how {
        KeyedSum::Native => None,
        KeyedSum::WasmReduce => Some("running-sum"),
        KeyedSum::WasmValueState => Some("running-sum-value-state"),
    };
    let mut head: Box<dyn Output> = if let Some(operator) = wasm_operator {
        let component = runtime.load_file(Path::new(guests::BENCH_OPS))?;
        Box::new(WasmOperator::open(
            runtime,
            component,
            OperatorSpec::new(operator),
            Box::new(counter.clone()),
            None,
        )?)
    } else {
        Box::new(crate::native::NativeOperator::new(
            "running-sum",
            Box::new(counter.clone()),
        )?)
    };
    let started = Instant::now();
    for batch in batches {
        head.collect_batch(batch)?;
    }
    head.finish()?;
    Ok((started.elapsed(), counter.0.load(Ordering::Relaxed)))
}

fn ns_per_record(elapsed: Duration, records: u64) -> f64 {
    elapsed.as_nanos() as f64 / records.max(1) as f64
}

/// Resident set size of this process in KiB, from /proc (Linux).
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// Runs the benchmark and prints its results.
pub fn run(args: &ChainArgs) -> Result<()> {
    if args.batch == 0 || args.records == 0 {
        bail!("--records and --batch must be positive");
    }
    let bytes = std::fs::read(guests::BENCH_OPS).context("reading the bench guest")?;

    // Compile from scratch, then load the precompiled artifact as a restart would.
    let cache = std::env::temp_dir().join(format!("weir-bench-cache-{}", std::process::id()));
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let compiled = WasmRuntime::new(config.clone())?.load_bytes("bench_ops.wasm", &bytes)?;
    let reloaded = WasmRuntime::new(config)?.load_bytes("bench_ops.wasm", &bytes)?;
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "bench=compile component_kib={} compile_ms={:.2} deserialize_ms={:.3}",
        bytes.len() / 1024,
        compiled.load_time.as_secs_f64() * 1e3,
        reloaded.load_time.as_secs_f64() * 1e3
    );

    let runtime = WasmRuntime::new(RuntimeConfig::default())?;
    let component = runtime.load_bytes("bench_ops.wasm", &bytes)?;

    let batches = input_batches(args.records, args.batch);
    let (native_time, native_count) = run_native(&batches)?;
    let (batched_time, batched_count) = run_wasm(&runtime, ExecutionMode::Batched, &batches)?;
    let per_record_batches = input_batches(args.per_record_records.max(1), args.batch);
    let (per_record_time, per_record_count) =
        run_wasm(&runtime, ExecutionMode::PerRecord, &per_record_batches)?;
    for (mode, count, records) in [
        ("native", native_count, args.records),
        ("batched", batched_count, args.records),
        (
            "per-record",
            per_record_count,
            args.per_record_records.max(1),
        ),
    ] {
        if count != expected_output(records) {
            bail!(
                "{mode} chain emitted {count} records, expected {}",
                expected_output(records)
            );
        }
    }
    let keyed = keyed_batches(args.records, args.batch);
    for (how, mode) in [
        (KeyedSum::Native, "native"),
        (KeyedSum::WasmReduce, "batched"),
        (KeyedSum::WasmValueState, "batched-value-state"),
    ] {
        let (time, count) = run_keyed(&runtime, how, &keyed)?;
        if count != args.records {
            bail!(
                "keyed sum emitted {count} records, expected {}",
                args.records
            );
        }
        println!(
            "bench=keyed-sum mode={mode} records={} keys=10000 ns_per_record={:.2}",
            args.records,
            ns_per_record(time, args.records)
        );
    }
    let native_ns = ns_per_record(native_time, args.records);
    let batched_ns = ns_per_record(batched_time, args.records);
    let per_record_ns = ns_per_record(per_record_time, args.per_record_records.max(1));
    let goal_ns = 2.0 * native_ns + 15.0 * OPERATORS.len() as f64;
    println!(
        "bench=chain3 mode=native records={} ns_per_record={native_ns:.2}",
        args.records
    );
    println!(
        "bench=chain3 mode=batched records={} batch={} ns_per_record={batched_ns:.2} goal_ns_per_record={goal_ns:.2} within_goal={}",
        args.records,
        args.batch,
        batched_ns <= goal_ns
    );
    println!(
        "bench=chain3 mode=per-record records={} ns_per_record={per_record_ns:.2}",
        args.per_record_records.max(1)
    );

    // Instantiation from the cached component, and what a live instance costs in memory.
    let rss_before = rss_kib();
    let mut live = Vec::with_capacity(args.instances);
    let (mut instantiate, mut first_call) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..args.instances {
        let op = WasmOperator::open(
            &runtime,
            component.clone(),
            OperatorSpec::new("even"),
            Box::new(Counter::default()),
            None,
        )?;
        instantiate += op.function().open_timings().instantiate;
        first_call += op.function().open_timings().open;
        live.push(op);
    }
    let n = args.instances.max(1) as f64;
    let rss_after = rss_kib();
    let instantiate_us = instantiate.as_secs_f64() * 1e6 / n;
    println!(
        "bench=instantiate instances={} instantiate_us={instantiate_us:.1} open_call_us={:.1} within_goal={}",
        args.instances,
        first_call.as_secs_f64() * 1e6 / n,
        instantiate_us < 50.0
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "bench=instance-memory instances={} kib_per_instance={:.1}",
            args.instances,
            after.saturating_sub(before) as f64 / args.instances.max(1) as f64
        );
    }
    drop(live);
    Ok(())
}
