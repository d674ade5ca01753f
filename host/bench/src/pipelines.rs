//! `weir-bench pipelines`: whole jobs on the mini-cluster, with wasm operators and, in the same
//! run, the same jobs with native operators (`crate::native`):
//!
//! - P1 stateless chain: N longs -> map x*3+1 -> filter even -> map to (x, x) -> discard;
//! - P2 keyed aggregation: N longs -> (x mod 10000, 1) -> hash by key -> running sum per key in
//!   keyed state -> discard;
//! - P3: P2 (wasm) with a checkpoint every second, next to P2 without: records/s, checkpoint
//!   duration and size.
//!
//! With `--remote`, each job at parallelism 2 and up also runs spread over one TaskExecutor
//! per subtask index (`placement=remote`), next to the same job in one (`placement=local`).
//!
//! With `--runs N` every job runs N times (the modes taking turns) and the best run is
//! reported, with the median and all rates: on a shared machine one run can be off by 2x.
//!
//! records/s counts source records over the job's wall time (deployment included; the component
//! is compiled once before the first job, as a cluster's component cache would have it). Peak RSS is
//! the process's high-water mark during the job (reset before each job through
//! `/proc/self/clear_refs`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::guests;
use weir_host::checkpoint::CheckpointConfig;
use weir_host::cluster::{JobOptions, MiniCluster, MiniClusterConfig};
use weir_host::job::parse_manifest;
use weir_host::runtime::task_executor::TaskExecutorConfig;
use weir_host::wasm::{RuntimeConfig, WasmRuntime};

/// Options of `weir-bench pipelines`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelinesArgs {
    /// Source records per job.
    #[arg(long, default_value_t = 100_000_000)]
    pub records: u64,
    /// Parallelisms to run at.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub parallelism: Vec<u32>,
    /// Pipelines to run.
    #[arg(long, value_delimiter = ',', default_value = "p1,p2,p3")]
    pub pipelines: Vec<String>,
    /// Operator kinds to run the pipelines with.
    #[arg(long, value_delimiter = ',', default_value = "wasm,native")]
    pub modes: Vec<String>,
    /// Runs of each job; the best is reported, with the median and every rate.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Also run each job (at parallelism 2 and up) spread over one TaskExecutor per subtask,
    /// each with its own buffer pool, talking over loopback TCP, next to the same job in one
    /// TaskExecutor (`placement=remote` and `placement=local`).
    #[arg(long)]
    pub remote: bool,
}

/// Where a job's subtasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// All in one TaskExecutor.
    Local,
    /// One TaskExecutor per subtask index: every edge but forward ones crosses a socket for
    /// all but 1/parallelism of its records.
    Remote,
}

/// Flink 2.3 on this kind of machine at N = 100 million (PERF-NOTES), records/s, by
/// (pipeline, parallelism).
fn flink(pipeline: &str, parallelism: u32) -> Option<f64> {
    match (pipeline, parallelism) {
        ("p1", 1) => Some(21.0e6),
        ("p1", 2) => Some(33.8e6),
        ("p2", 1) => Some(7.8e6),
        ("p2", 2) => Some(10.2e6),
        ("p3", 1) => Some(6.9e6),
        ("p3", 2) => Some(8.7e6),
        _ => None,
    }
}

fn operator(id: &str, input: &str, wasm: bool, edge: &str) -> String {
    let implementation = if wasm {
        format!("component = {:?}\noperator = {id:?}", guests::BENCH_OPS)
    } else {
        format!("native = {id:?}")
    };
    format!("[[operator]]\nid = {id:?}\n{implementation}\ninput = {input:?}\nedge = {edge:?}\n")
}

pub(crate) fn manifest(
    pipeline: &str,
    wasm: bool,
    records: u64,
    parallelism: u32,
) -> Result<String> {
    let ops = match pipeline {
        "p1" => [
            operator("times-three-plus-one", "numbers", wasm, "forward"),
            operator("even", "times-three-plus-one", wasm, "forward"),
            operator("pair", "even", wasm, "forward"),
        ]
        .concat(),
        // In wasm as a Flink job writes it, with the SDK's builders: map to (x mod 10000, 1)
        // keyed by its first field, reduce to (key, sum). The native operators do the same in
        // two steps: (key x mod 10000, value 1), then the sum per key.
        "p2" | "p3" if wasm => [
            operator("keyed-pair-mod-10000", "numbers", wasm, "forward"),
            operator("sum-pairs", "keyed-pair-mod-10000", wasm, "hash"),
        ]
        .concat(),
        "p2" | "p3" => [
            operator("key-mod-10000", "numbers", wasm, "forward"),
            operator("running-sum", "key-mod-10000", wasm, "hash"),
        ]
        .concat(),
        other => anyhow::bail!("no pipeline `{other}`; there are p1, p2 and p3"),
    };
    let last = match (pipeline, wasm) {
        ("p1", _) => "pair",
        (_, true) => "sum-pairs",
        (_, false) => "running-sum",
    };
    Ok(format!(
        "name = \"{pipeline}\"\nparallelism = {parallelism}\n\
         [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = {records}\n\
         {ops}\
         [[sink]]\nid = \"discard\"\nkind = \"discard\"\ninput = \"{last}\"\n"
    ))
}

pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What one job run measured.
struct Run {
    seconds: f64,
    records_per_s: f64,
    peak_rss_mb: f64,
    /// Bytes that crossed between TaskExecutors.
    remote_bytes: u64,
    /// P3: checkpoints completed, mean duration (ms) and mean size (KiB).
    checkpoints: Option<(usize, f64, f64)>,
}

fn run_once(
    runtime: &Arc<WasmRuntime>,
    args: &PipelinesArgs,
    pipeline: &str,
    parallelism: u32,
    wasm: bool,
    placement: Placement,
    checkpoint_root: &std::path::Path,
) -> Result<Run> {
    let text = manifest(pipeline, wasm, args.records, parallelism)?;
    let graph = parse_manifest(&text, &Default::default())?.job_graph(None)?;
    let (task_executors, slots) = match placement {
        Placement::Local => (1, parallelism),
        Placement::Remote => (parallelism as usize, 1),
    };
    let cluster = MiniCluster::new(
        MiniClusterConfig {
            task_executor: TaskExecutorConfig {
                slots,
                ..TaskExecutorConfig::default()
            },
            task_executors,
            native_operators: Some(Arc::new(crate::native::BenchNatives)),
            ..MiniClusterConfig::default()
        },
        runtime.clone(),
    );
    let options = JobOptions {
        checkpoints: (pipeline == "p3").then(|| CheckpointConfig {
            dir: checkpoint_root.to_path_buf(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            retained: 2,
        }),
        ..JobOptions::default()
    };
    reset_peak_rss();
    let result = cluster
        .run_job(&graph, &options)
        .with_context(|| format!("{pipeline} at parallelism {parallelism}"))?;
    let seconds = result.duration.max(Duration::from_micros(1)).as_secs_f64();
    let read: u64 = result
        .tasks
        .iter()
        .filter(|(n, _)| n.starts_with("numbers"))
        .map(|(_, m)| m.records_in)
        .sum();
    anyhow::ensure!(
        read == args.records,
        "{pipeline} read {read} of {} records",
        args.records
    );
    let checkpoints = (pipeline == "p3").then(|| {
        if result.checkpoints.is_empty() {
            return (0, 0.0, 0.0);
        }
        let n = result.checkpoints.len() as f64;
        let ms = result
            .checkpoints
            .iter()
            .map(|c| c.duration.as_secs_f64() * 1e3)
            .sum::<f64>()
            / n;
        let kib = result
            .checkpoints
            .iter()
            .map(|c| c.bytes as f64 / 1024.0)
            .sum::<f64>()
            / n;
        (result.checkpoints.len(), ms, kib)
    });
    Ok(Run {
        seconds,
        records_per_s: args.records as f64 / seconds,
        peak_rss_mb: peak_rss_mb().unwrap_or(0.0),
        remote_bytes: result.tasks.iter().map(|(_, m)| m.bytes_in).sum(),
        checkpoints,
    })
}

/// One line for the runs of one pipeline, parallelism and mode: the best run's numbers, the
/// median rate, and every rate (this kind of machine varies from run to run).
fn report(
    pipeline: &str,
    parallelism: u32,
    (wasm, placement): (bool, Option<Placement>),
    records: u64,
    runs: &[Run],
) -> String {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.records_per_s).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let best = runs
        .iter()
        .max_by(|a, b| a.records_per_s.total_cmp(&b.records_per_s))
        .expect("at least one run");
    let placement = match placement {
        None => String::new(),
        Some(Placement::Local) => " placement=local".into(),
        Some(Placement::Remote) => " placement=remote".into(),
    };
    let mut line = format!(
        "bench={pipeline} mode={} parallelism={parallelism}{placement} records={records} seconds={:.2} records_per_s={:.0} peak_rss_mb={:.0}",
        if wasm { "wasm" } else { "native" },
        best.seconds,
        best.records_per_s,
        runs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max),
    );
    if runs.len() > 1 {
        let all: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.records_per_s))
            .collect();
        line.push_str(&format!(
            " runs={} median_records_per_s={median:.0} all_records_per_s={}",
            runs.len(),
            all.join(",")
        ));
    }
    if best.remote_bytes > 0 {
        line.push_str(&format!(
            " remote_mib={:.0}",
            best.remote_bytes as f64 / (1 << 20) as f64
        ));
    }
    if let Some((n, ms, kib)) = best.checkpoints {
        line.push_str(&format!(
            " checkpoints={n} checkpoint_ms={ms:.1} checkpoint_kib={kib:.0}"
        ));
    }
    if let Some(peer) = flink(pipeline, parallelism) {
        line.push_str(&format!(
            " flink_records_per_s={peer:.0} vs_flink={:.2}",
            best.records_per_s / peer
        ));
    }
    line
}

/// Runs the benchmark and prints its results.
pub fn run(args: &PipelinesArgs) -> Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let runtime = Arc::new(WasmRuntime::new(RuntimeConfig::default())?);
    let started = std::time::Instant::now();
    runtime
        .load_file(std::path::Path::new(guests::BENCH_OPS))
        .context("compiling the benchmark operators")?;
    println!(
        "bench=setup compile_ms={:.0}",
        started.elapsed().as_secs_f64() * 1e3
    );
    let checkpoint_root =
        std::env::temp_dir().join(format!("weir-bench-checkpoints-{}", std::process::id()));
    for pipeline in &args.pipelines {
        for &parallelism in &args.parallelism {
            // P3 is P2 with checkpoints, and only its wasm form keeps checkpointed state.
            let modes: Vec<bool> = if pipeline == "p3" {
                vec![true]
            } else {
                vec![true, false]
            };
            let modes: Vec<bool> = modes
                .into_iter()
                .filter(|&wasm| {
                    args.modes
                        .iter()
                        .any(|m| m == if wasm { "wasm" } else { "native" })
                })
                .collect();
            let placements: Vec<Option<Placement>> = if args.remote && parallelism > 1 {
                vec![Some(Placement::Local), Some(Placement::Remote)]
            } else {
                vec![None]
            };
            let jobs: Vec<(bool, Option<Placement>)> = modes
                .iter()
                .flat_map(|&wasm| placements.iter().map(move |&p| (wasm, p)))
                .collect();
            // Runs alternate between the jobs, so a machine that drifts affects all alike.
            let mut runs: Vec<Vec<Run>> = jobs.iter().map(|_| Vec::new()).collect();
            for _ in 0..args.runs {
                for (i, &(wasm, placement)) in jobs.iter().enumerate() {
                    runs[i].push(run_once(
                        &runtime,
                        args,
                        pipeline,
                        parallelism,
                        wasm,
                        placement.unwrap_or(Placement::Local),
                        &checkpoint_root,
                    )?);
                }
            }
            for (job, runs) in jobs.iter().zip(&runs) {
                println!(
                    "{}",
                    report(pipeline, parallelism, *job, args.records, runs)
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&checkpoint_root);
    Ok(())
}
