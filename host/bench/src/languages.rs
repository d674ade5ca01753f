//! `weir-bench languages`: what an operator costs in each language weir has an SDK for. For
//! Rust, C, Python and JavaScript, a map (x*3+1 of an 8-byte integer) and a keyed running sum
//! (value state per key) in batched mode, the instance start time and memory per instance,
//! next to the same loop run natively by the language itself (Rust and C compiled for this
//! machine, CPython, `node --jitless`: an interpreter like the one inside the component), and
//! for Python and JavaScript the same loops run by the interpreter inside the component. The
//! components of C, Python and JavaScript are built from `host/bench/guests/` at the start, as
//! their authors would build them.
//!
//! Output: one line per language and operator, space-separated `key=value` pairs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_framing::{BatchWriter, Record};
use weir_host::runtime::WasmOperator;
use weir_host::stream::Output;

use weir_host::wasm::{OperatorSpec, RuntimeConfig, WasmRuntime};

use crate::chain::Counter;
use crate::guests;

/// Options of `weir-bench languages`.
#[derive(Debug, Clone, clap::Args)]
pub struct LanguagesArgs {
    /// Records per operator for Rust and C.
    #[arg(long, default_value_t = 2_000_000)]
    pub records: u64,
    /// Records per operator for Python and JavaScript.
    #[arg(long, default_value_t = 200_000)]
    pub interpreted_records: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Instances opened for the start time and memory per instance.
    #[arg(long, default_value_t = 20)]
    pub instances: usize,
    /// Only these languages (comma separated: rust, c, python, js).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only these operators (comma separated: map, keyed-sum).
    #[arg(long, value_delimiter = ',')]
    pub ops: Vec<String>,
}

/// A language's component and the names of its two operators.
struct Language {
    name: &'static str,
    component: PathBuf,
    map: &'static str,
    keyed_sum: &'static str,
    interpreted: bool,
}

fn batches(records: u64, per_batch: usize, keyed: bool) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut current = BatchWriter::new();
    for x in 0..records {
        let key = (x % 10_000).to_le_bytes();
        current.push(Record {
            value: &x.to_le_bytes(),
            key: keyed.then_some(&key[..]),
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

/// ns per record of `operator` over `batches` of `records` records, each emitting one.
fn run(
    runtime: &WasmRuntime,
    component: &Path,
    operator: &str,
    batches: &[Vec<u8>],
    records: u64,
) -> Result<f64> {
    let loaded = runtime.load_file(component)?;
    let counter = Counter::default();
    let mut op = WasmOperator::open(
        runtime,
        loaded,
        OperatorSpec::new(operator),
        Box::new(counter.clone()),
        None,
    )?;
    let started = Instant::now();
    for batch in batches {
        op.collect_batch(batch)?;
    }
    op.finish()?;
    let elapsed = started.elapsed();
    let emitted = counter.0.load(Ordering::Relaxed);
    if emitted != records {
        bail!(
            "`{operator}` of {} emitted {emitted} records of {records}",
            component.display()
        );
    }
    Ok(elapsed.as_nanos() as f64 / records as f64)
}

/// ns per record of the native loops run by the interpreter inside `component` (its
/// `interpreter-loops` operator), for (map, keyed sum): each loop is one call, timed here. At
/// most 50,000 records: the loops hold all their inputs and outputs, and an instance's memory
/// is bounded.
fn interpreter_loops(runtime: &WasmRuntime, component: &Path, records: u64) -> Result<(f64, f64)> {
    let records = records.min(50_000);
    let loaded = runtime.load_file(component)?;
    let counter = Counter::default();
    let mut op = WasmOperator::open(
        runtime,
        loaded,
        OperatorSpec::new("interpreter-loops"),
        Box::new(counter.clone()),
        None,
    )?;
    let mut batch = BatchWriter::new();
    batch.push(Record::value(&records.to_le_bytes()));
    let batch = batch.into_vec();
    let mut timed = [0.0; 3];
    for step in &mut timed {
        let started = Instant::now();
        op.collect_batch(&batch)?;
        *step = started.elapsed().as_nanos() as f64 / records as f64;
    }
    op.finish()?;
    if counter.0.load(Ordering::Relaxed) != 3 {
        bail!(
            "`interpreter-loops` of {} did not run its three steps",
            component.display()
        );
    }
    Ok((timed[1], timed[2]))
}

/// Mean start time of an instance (µs) and resident memory per live instance (KiB).
fn instances(
    runtime: &WasmRuntime,
    component: &Path,
    operator: &str,
    n: usize,
) -> Result<(f64, f64)> {
    let loaded = runtime.load_file(component)?;
    let before = rss_kib();
    let mut live = Vec::with_capacity(n);
    let mut instantiate = Duration::ZERO;
    for _ in 0..n {
        let op = WasmOperator::open(
            runtime,
            loaded.clone(),
            OperatorSpec::new(operator),
            Box::new(Counter::default()),
            None,
        )?;
        let timings = op.function().open_timings();
        instantiate += timings.instantiate + timings.open;
        live.push(op);
    }
    let after = rss_kib();
    let n = n.max(1) as f64;
    Ok((
        instantiate.as_secs_f64() * 1e6 / n,
        after.saturating_sub(before) as f64 / n,
    ))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

/// The same two loops, run by each language natively: ns per record of (map, keyed sum).
fn native(language: &str, records: u64, dir: &Path) -> Result<(f64, f64)> {
    match language {
        "rust" => Ok(native_rust(records)),
        "c" => {
            let source = dir.join("native.c");
            std::fs::write(&source, NATIVE_C)?;
            let binary = dir.join("native-c");
            let built = Command::new("clang")
                .args(["-O2", "-o"])
                .arg(&binary)
                .arg(&source)
                .output()
                .context("clang for the native C loop")?;
            if !built.status.success() {
                bail!("clang: {}", String::from_utf8_lossy(&built.stderr));
            }
            parse_native(Command::new(&binary).arg(records.to_string()).output()?)
        }
        "python" => parse_native(
            Command::new("python3")
                .args(["-c", NATIVE_PY, &records.to_string()])
                .output()
                .context("python3 for the native Python loop")?,
        ),
        "js" => parse_native(
            Command::new("node")
                .args(["--jitless", "-e", NATIVE_JS, "--", &records.to_string()])
                .output()
                .context("node for the native JavaScript loop")?,
        ),
        other => bail!("no native loop for {other}"),
    }
}

fn parse_native(out: std::process::Output) -> Result<(f64, f64)> {
    if !out.status.success() {
        bail!(
            "native loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(map)), Some(Ok(sum))) => Ok((map, sum)),
        _ => bail!("native loop printed `{text}`, not two numbers"),
    }
}

fn native_rust(records: u64) -> (f64, f64) {
    let values: Vec<[u8; 8]> = (0..records).map(u64::to_le_bytes).collect();
    let started = Instant::now();
    let mut out = Vec::with_capacity(values.len());
    for v in &values {
        out.push(
            u64::from_le_bytes(*v)
                .wrapping_mul(3)
                .wrapping_add(1)
                .to_le_bytes(),
        );
    }
    std::hint::black_box(&out);
    let map = started.elapsed().as_nanos() as f64 / records as f64;
    let started = Instant::now();
    let mut sums: std::collections::HashMap<[u8; 8], [u8; 8]> = Default::default();
    out.clear();
    for (x, v) in values.iter().enumerate() {
        let key = (x as u64 % 10_000).to_le_bytes();
        let sum = sums.get(&key).map_or(0, |s| u64::from_le_bytes(*s));
        let total = sum.wrapping_add(u64::from_le_bytes(*v)).to_le_bytes();
        sums.insert(key, total);
        out.push(total);
    }
    std::hint::black_box(&out);
    (map, started.elapsed().as_nanos() as f64 / records as f64)
}

const NATIVE_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    uint64_t n = strtoull(argv[1], 0, 10);
    uint8_t *in = malloc(n * 8), *out = malloc(n * 8);
    for (uint64_t x = 0; x < n; x++) memcpy(in + 8 * x, &x, 8);
    double t0 = now();
    for (uint64_t x = 0; x < n; x++) { uint64_t v; memcpy(&v, in + 8 * x, 8); v = v * 3 + 1; memcpy(out + 8 * x, &v, 8); }
    double t1 = now();
    uint64_t *sums = calloc(10000, 8);
    for (uint64_t x = 0; x < n; x++) { uint64_t v; memcpy(&v, in + 8 * x, 8); sums[x % 10000] += v; memcpy(out + 8 * x, &sums[x % 10000], 8); }
    double t2 = now();
    printf("%f %f %u\n", (t1 - t0) / n, (t2 - t1) / n, out[n - 1]);
    return 0;
}
"#;

const NATIVE_PY: &str = r#"
import sys, time
n = int(sys.argv[1])
MASK = (1 << 64) - 1
values = [x.to_bytes(8, "little") for x in range(n)]
t0 = time.perf_counter_ns()
out = [((int.from_bytes(v, "little") * 3 + 1) & MASK).to_bytes(8, "little") for v in values]
t1 = time.perf_counter_ns()
sums = {}
out = []
for x, v in enumerate(values):
    key = (x % 10000).to_bytes(8, "little")
    stored = sums.get(key)
    total = ((int.from_bytes(stored, "little") if stored else 0) + int.from_bytes(v, "little")) & MASK
    b = total.to_bytes(8, "little")
    sums[key] = b
    out.append(b)
t2 = time.perf_counter_ns()
print((t1 - t0) / n, (t2 - t1) / n)
"#;

const NATIVE_JS: &str = r#"
const n = Number(process.argv[process.argv.length - 1]);
const u64 = (b) => new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
const bytesOf = (v) => { const o = new Uint8Array(8); new DataView(o.buffer).setBigUint64(0, BigInt.asUintN(64, v), true); return o; };
const values = [];
for (let x = 0; x < n; x++) values.push(bytesOf(BigInt(x)));
let t0 = process.hrtime.bigint();
let out = values.map((v) => bytesOf(u64(v) * 3n + 1n));
let t1 = process.hrtime.bigint();
const sums = new Map();
out = [];
for (let x = 0; x < n; x++) {
  const key = String(x % 10000);
  const stored = sums.get(key);
  const b = bytesOf((stored ? u64(stored) : 0n) + u64(values[x]));
  sums.set(key, b);
  out.push(b);
}
let t2 = process.hrtime.bigint();
console.log(Number(t1 - t0) / n, Number(t2 - t1) / n);
"#;

/// Runs the benchmark and prints its results.
pub fn run_bench(args: &LanguagesArgs) -> Result<()> {
    if args.batch == 0 || args.records == 0 || args.interpreted_records == 0 {
        bail!("--records, --interpreted-records and --batch must be positive");
    }
    let dir = std::env::temp_dir().join(format!("weir-bench-languages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(args: &LanguagesArgs, dir: &Path) -> Result<()> {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests");
    let built = |name: &str| dir.join(format!("bench-{name}.wasm"));
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|l| l == name);
    if wanted("c") {
        weir_guest_build::c::build(&[sources.join("bench.c")], &[], &built("c"))
            .map_err(anyhow::Error::msg)?;
    }
    if wanted("python") {
        weir_guest_build::python::build(&sources.join("bench.py"), &built("python"))
            .map_err(anyhow::Error::msg)?;
    }
    if wanted("js") {
        weir_guest_build::js::build(&sources.join("bench.js"), &built("js"))
            .map_err(anyhow::Error::msg)?;
    }
    let languages = [
        Language {
            name: "rust",
            component: PathBuf::from(guests::BENCH_OPS),
            map: "times-three-plus-one",
            keyed_sum: "running-sum-value-state",
            interpreted: false,
        },
        Language {
            name: "c",
            component: built("c"),
            map: "map",
            keyed_sum: "keyed-sum",
            interpreted: false,
        },
        Language {
            name: "python",
            component: built("python"),
            map: "map",
            keyed_sum: "keyed-sum",
            interpreted: true,
        },
        Language {
            name: "js",
            component: built("js"),
            map: "map",
            keyed_sum: "keyed-sum",
            interpreted: true,
        },
    ];
    let runtime = WasmRuntime::new(RuntimeConfig::default())?;
    for language in &languages {
        if !wanted(language.name) {
            continue;
        }
        let records = if language.interpreted {
            args.interpreted_records
        } else {
            args.records
        };
        let component_kib = std::fs::metadata(&language.component)?.len() / 1024;
        let (instantiate_us, instance_kib) =
            instances(&runtime, &language.component, language.map, args.instances)?;
        let (native_map, native_sum) = native(language.name, records, dir)?;
        let inside = if language.interpreted {
            let (map, sum) = interpreter_loops(&runtime, &language.component, records)?;
            [
                format!(" interpreter_in_component_ns_per_record={map:.1}"),
                format!(" interpreter_in_component_ns_per_record={sum:.1}"),
            ]
        } else {
            Default::default()
        };
        for ((op, operator, keyed, native_ns), inside) in [
            ("map", language.map, false, native_map),
            ("keyed-sum", language.keyed_sum, true, native_sum),
        ]
        .into_iter()
        .zip(inside)
        {
            if !args.ops.is_empty() && !args.ops.iter().any(|o| o == op) {
                continue;
            }
            let input = batches(records, args.batch, keyed);
            let ns = run(&runtime, &language.component, operator, &input, records)?;
            println!(
                "bench=languages language={} op={op} records={records} ns_per_record={ns:.1} \
                 native_ns_per_record={native_ns:.1} instantiate_us={instantiate_us:.0} \
                 instance_kib={instance_kib:.0} component_kib={component_kib}{inside}",
                language.name
            );
        }
    }
    Ok(())
}
