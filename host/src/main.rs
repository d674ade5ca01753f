//! The `weir` command.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use weir_host::cluster::{JobMonitor, JobResult, MiniCluster, MiniClusterConfig};
use weir_host::job::load_manifest;
use weir_host::runtime::task_executor::TaskExecutorConfig;
use weir_host::wasm::{RuntimeConfig, WasmRuntime};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "A stream processor whose operators are wasm components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a job on an embedded mini-cluster (JobManager and TaskExecutor in this process).
    Run(RunArgs),
    /// Runs a benchmark and prints one `key=value` line per result.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The job manifest (TOML).
    manifest: PathBuf,
    /// Parallelism of every node that does not set its own.
    #[arg(long, short)]
    parallelism: Option<u32>,
    /// Fills `${name}` in the manifest; repeatable.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_arg)]
    args: Vec<(String, String)>,
    /// Task slots of the TaskExecutor (default: as many as the job needs).
    #[arg(long)]
    slots: Option<u32>,
    /// Network buffers of the TaskExecutor (32 KiB each).
    #[arg(long, default_value_t = 4096)]
    network_buffers: usize,
    /// Where compiled components are cached across runs (default: the user's cache directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// ns per record of a chain of three wasm operators, per record and batched, next to native.
    Chain(weir_host::bench::chain::ChainArgs),
    /// records/s and peak RSS of pipelines P1 and P2, wasm and native, at parallelism 1 and 2.
    Pipelines(weir_host::bench::pipelines::PipelinesArgs),
}

fn parse_arg(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("weir").join("components"))
}

fn run(args: RunArgs) -> Result<()> {
    let vars: BTreeMap<String, String> = args.args.into_iter().collect();
    let manifest = load_manifest(&args.manifest, &vars)?;
    let graph = manifest
        .job_graph(args.parallelism)
        .with_context(|| format!("job manifest `{}`", args.manifest.display()))?;
    let config = MiniClusterConfig {
        task_executor: TaskExecutorConfig {
            slots: args.slots.unwrap_or(graph.slots_needed()),
            network_buffers: args.network_buffers,
            ..TaskExecutorConfig::default()
        },
        ..MiniClusterConfig::default()
    };
    let runtime = WasmRuntime::new(RuntimeConfig {
        cache_dir: args.cache_dir.or_else(default_cache_dir),
        ..RuntimeConfig::default()
    })?;
    let cluster = MiniCluster::new(config, Arc::new(runtime));
    let job = cluster.submit(&graph)?;
    let done = Arc::new(AtomicBool::new(false));
    let progress = std::io::stderr().is_terminal().then(|| {
        let (monitor, done) = (job.monitor(), done.clone());
        std::thread::spawn(move || show_progress(&monitor, &done))
    });
    let result = job.wait();
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    let result = result.with_context(|| format!("job `{}` failed", graph.name))?;
    report(&result);
    Ok(())
}

/// One line on the terminal, rewritten every second: records in and out, and their rates.
fn show_progress(monitor: &JobMonitor, done: &AtomicBool) {
    let mut last = (0u64, 0u64, Duration::ZERO);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let now = monitor.progress();
        if now.2 - last.2 < Duration::from_secs(1) {
            continue;
        }
        let secs = (now.2 - last.2).as_secs_f64();
        eprint!(
            "\r{:>8.1} s  in {} ({:.0}/s)  out {} ({:.0}/s)   ",
            now.2.as_secs_f64(),
            now.0,
            (now.0 - last.0) as f64 / secs,
            now.1,
            (now.1 - last.1) as f64 / secs
        );
        last = now;
    }
    eprint!("\r\x1b[2K");
}

fn report(result: &JobResult) {
    let mut vertices: BTreeMap<String, (u64, u64, f64, f64, f64, usize)> = BTreeMap::new();
    for (name, m) in &result.tasks {
        let vertex = name
            .rsplit_once(" (")
            .map_or(name.as_str(), |(v, _)| v)
            .to_string();
        let e = vertices.entry(vertex).or_default();
        e.0 += m.records_in;
        e.1 += m.records_out;
        e.2 += m.busy_ms_per_s();
        e.3 += m.idle_ms_per_s();
        e.4 += m.backpressured_ms_per_s();
        e.5 += 1;
    }
    eprintln!(
        "job `{}` finished in {:.2} s; network buffers used at most {} of {}",
        result.name,
        result.duration.as_secs_f64(),
        result.network.high_water,
        result.network.total
    );
    for (vertex, (rin, rout, busy, idle, bp, n)) in vertices {
        let n = n as f64;
        eprintln!(
            "  {vertex}: records in {rin}, out {rout}; per task busy {:.0} / idle {:.0} / back-pressured {:.0} ms/s",
            busy / n,
            idle / n,
            bp / n
        );
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Bench { which } => match which {
            BenchCommand::Chain(args) => weir_host::bench::chain::run(&args),
            BenchCommand::Pipelines(args) => weir_host::bench::pipelines::run(&args),
        },
    }
}
