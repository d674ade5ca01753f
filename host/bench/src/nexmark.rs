//! `weir-bench nexmark`: the Nexmark queries of `examples/nexmark` on a JSON-lines file of
//! generated events (written once, and kept for later runs), each at parallelism 1 with its
//! file sink replaced by a discard sink, as Flink's suite runs them into a blackhole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use weir_host::cluster::{JobOptions, MiniCluster, MiniClusterConfig};
use weir_host::connectors::nexmark::{DEFAULT_BASE_TIME, write_events};
use weir_host::job::parse_manifest;
use weir_host::runtime::task_executor::TaskExecutorConfig;
use weir_host::wasm::{RuntimeConfig, WasmRuntime};

use crate::pipelines::{peak_rss_mb, reset_peak_rss};

pub const QUERIES: &[&str] = &["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"];

#[derive(clap::Args)]
pub struct NexmarkArgs {
    /// Events to generate (and run each query over).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The queries to run, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    queries: Option<Vec<String>>,
    /// Where the events file goes (default: beside the build, named by the event count).
    #[arg(long)]
    events_file: Option<PathBuf>,
    /// The queries' component (default: the one built with the benchmark); to compare two
    /// builds of the queries on one host.
    #[arg(long)]
    component: Option<PathBuf>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Query `q`'s shipped manifest on `events`, with the benchmark's component and a discard sink
/// in place of its file sink. The file sink gathers every row into one file (parallelism 1
/// over a rebalance edge); the discard sink runs beside the query's last operator, chained
/// to it, as Flink's blackhole sink in its Nexmark suite is.
fn manifest(q: &str, component: &Path) -> Result<String> {
    let path = workspace().join(format!("examples/nexmark/{q}.toml"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file_sink = "kind = \"file\"\npath = \"${output}\"\n";
    let Some((query, sink)) = text.rsplit_once("[[sink]]") else {
        bail!("{} has no sink", path.display());
    };
    if !sink.contains(file_sink) {
        bail!("{} has no file sink to replace", path.display());
    }
    let sink = sink
        .replace(file_sink, "kind = \"discard\"\n")
        .replace("edge = \"rebalance\"\n", "")
        .replace("parallelism = 1\n", "");
    Ok(format!("{query}[[sink]]{sink}").replace(
        "\"../../target/wasm32-wasip2/release/nexmark_queries.wasm\"",
        &format!("{:?}", component.display().to_string()),
    ))
}

pub fn run(args: &NexmarkArgs) -> Result<()> {
    let file = args
        .events_file
        .clone()
        .unwrap_or_else(|| workspace().join(format!("target/nexmark-events-{}.json", args.events)));
    if !file.is_file() {
        let started = Instant::now();
        write_events(&file, args.events, DEFAULT_BASE_TIME)
            .with_context(|| format!("writing {}", file.display()))?;
        eprintln!(
            "wrote {} events to {} in {:.1}s",
            args.events,
            file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let component = args
        .component
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::guests::NEXMARK));
    let runtime = Arc::new(WasmRuntime::new(RuntimeConfig::default())?);
    // Compiled before the clock starts, as a cluster's component cache has it after the first
    // job: the queries measure the run, not Cranelift.
    runtime
        .load_file(&component)
        .context("compiling the queries' component")?;
    let queries: Vec<String> = match &args.queries {
        Some(q) => q.clone(),
        None => QUERIES.iter().map(|q| q.to_string()).collect(),
    };
    let events = count_events(&file)?;
    for q in &queries {
        if !QUERIES.contains(&q.as_str()) {
            bail!("no query `{q}`; there are {}", QUERIES.join(", "));
        }
        let args = [("input".to_string(), file.display().to_string())]
            .into_iter()
            .collect();
        let graph = parse_manifest(&manifest(q, &component)?, &args)?.job_graph(Some(1))?;
        let cluster = MiniCluster::new(
            MiniClusterConfig {
                task_executor: TaskExecutorConfig {
                    slots: 1,
                    ..TaskExecutorConfig::default()
                },
                ..MiniClusterConfig::default()
            },
            runtime.clone(),
        );
        reset_peak_rss();
        let result = cluster
            .run_job(&graph, &JobOptions::default())
            .with_context(|| format!("nexmark {q}"))?;
        let seconds = result.duration.as_secs_f64().max(1e-6);
        println!(
            "bench=nexmark query={q} events={events} seconds={seconds:.2} events_per_s={:.0} peak_rss_mb={:.0}",
            events as f64 / seconds,
            peak_rss_mb().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Events in the file: one per line.
fn count_events(file: &Path) -> Result<u64> {
    use std::io::Read;
    let mut reader = std::fs::File::open(file)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}
