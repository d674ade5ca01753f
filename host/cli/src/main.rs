//! The `weir` command.

mod build;
mod cluster;
mod embedded;
mod job_file;
mod new_project;
mod rest_client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use weir_host::checkpoint::CheckpointConfig;
use weir_host::cluster::{JobOptions, JobResult, MiniCluster, MiniClusterConfig, RestartStrategy};
use weir_host::runtime::task_executor::TaskExecutorConfig;
use weir_host::wasm::{RuntimeConfig, WasmRuntime};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "A stream processor whose operators are wasm components"
)]
struct Cli {
    /// The API token to present to the JobManager's REST endpoint (a tenant's; see
    /// `jobmanager.tenants-file`).
    #[arg(long, global = true, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a job on an embedded mini-cluster (JobManager and TaskExecutor in this process).
    Run(Box<RunArgs>),
    /// Starts the JobManager of a standalone cluster (ResourceManager, RPC and REST
    /// endpoints) and serves until stopped.
    Jobmanager(cluster::JobManagerArgs),
    /// Starts a TaskManager that registers at the JobManager and serves until stopped.
    Taskmanager(cluster::TaskManagerArgs),
    /// Lists the jobs of a standalone cluster.
    List(cluster::ListArgs),
    /// Cancels a job of a standalone cluster.
    Cancel(cluster::CancelArgs),
    /// Takes a savepoint of a running job of a standalone cluster.
    Savepoint(cluster::SavepointArgs),
    /// Takes a savepoint of a running job of a standalone cluster, then stops it.
    Stop(cluster::StopArgs),
    /// Makes a fresh API token, and the line to put in the tenants file.
    Token,
    /// Builds an operator component from C, Python or JavaScript sources with weir's SDK.
    Build(build::BuildArgs),
    /// Creates an operator project (Rust, C, Python or JavaScript) that builds as it is.
    New(new_project::NewArgs),
    /// Packages a job manifest and every component it names into one `.wasm` job file.
    Package(job_file::PackageArgs),
    /// Prints a job's plan (a manifest, a job file or a component with a plan) and the
    /// components it runs.
    Info(job_file::InfoArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The job: a manifest (TOML), a job file made by `weir package`, or a component that
    /// carries its plan.
    manifest: PathBuf,
    /// Submit to the standalone cluster whose JobManager's REST endpoint is HOST:PORT, instead
    /// of running on an embedded mini-cluster.
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// Submit to the cluster (`-m`, or `rest` of conf/weir.toml) and return once submitted.
    #[arg(short = 'd', long)]
    detached: bool,
    /// Parallelism of every node that does not set its own.
    #[arg(long, short)]
    parallelism: Option<u32>,
    /// Fills `${name}` in the manifest; repeatable.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_arg)]
    args: Vec<(String, String)>,
    /// Task slots of each TaskExecutor (default: as many as the job needs, shared out among
    /// the TaskExecutors).
    #[arg(long)]
    slots: Option<u32>,
    /// TaskExecutors of the embedded cluster. With more than one, a job too wide for one is
    /// spread over several, and the edges between them cross loopback TCP with credit-based
    /// flow control, as between TaskManagers of a cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    task_executors: u32,
    /// Network buffers of the TaskExecutor (32 KiB each).
    #[arg(long, default_value_t = 16384)]
    network_buffers: usize,
    /// Where compiled components are cached across runs (default: the user's cache directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Checkpoint this often (e.g. `1s`, `500ms`); overrides the manifest.
    #[arg(long, value_parser = parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Where checkpoints go: `<dir>/<job name>/chk-<n>/`. Needed for checkpointing.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Start from a savepoint, a retained `chk-<n>` directory, or a job's checkpoint directory
    /// (its newest complete checkpoint).
    #[arg(short = 's', long)]
    from_savepoint: Option<PathBuf>,
    /// Start even if the savepoint holds state of operators the job no longer has.
    #[arg(long)]
    allow_non_restored_state: bool,
    /// Restarts after a failure (from the latest checkpoint, so it needs --checkpoint-dir;
    /// default 3 with checkpoints); 0 fails the job at once.
    #[arg(long)]
    restart_attempts: Option<u32>,
    /// Delay before a restart; with --restart-backoff it doubles each time up to 1 minute.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    restart_delay: Duration,
    /// Exponential delay between restarts instead of a fixed one.
    #[arg(long)]
    restart_backoff: bool,
    /// Take a savepoint into this directory (see --savepoint-after).
    #[arg(long, requires = "savepoint_after")]
    savepoint_dir: Option<PathBuf>,
    /// Longest one call into an operator may run (e.g. `5s`); overrides the manifest's
    /// `call_deadline`, and bounds the call that asks a component for its plan (default 10s).
    #[arg(long, value_parser = parse_duration)]
    call_deadline: Option<Duration>,
    /// Largest memory of one operator instance (e.g. `256MiB`); overrides `memory_limit`.
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<u64>,
    /// Most keyed state one operator subtask may hold (e.g. `2GiB`); overrides `state_limit`.
    #[arg(long, value_parser = parse_bytes)]
    state_limit: Option<u64>,
    /// When to take the savepoint, after the job started.
    #[arg(long, value_parser = parse_duration, requires = "savepoint_dir")]
    savepoint_after: Option<Duration>,
    /// Serve the web UI, the REST endpoint and `/metrics` for the job on 127.0.0.1:PORT while
    /// it runs (0: any free port; the address is printed).
    #[arg(long, value_name = "PORT")]
    web_port: Option<u16>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weir_host::job::units::parse_duration(s)
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    weir_host::job::units::parse_bytes(s)
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
    let vars: BTreeMap<String, String> = args.args.iter().cloned().collect();
    let cache_dir = args.cache_dir.clone().or_else(default_cache_dir);
    // Made once: asking a component for its plan compiles it, and the job then runs it.
    let runtime: std::cell::OnceCell<Arc<WasmRuntime>> = std::cell::OnceCell::new();
    let make_runtime = || -> Result<Arc<WasmRuntime>> {
        if let Some(r) = runtime.get() {
            return Ok(r.clone());
        }
        let made = Arc::new(job_file::plan_runtime(cache_dir.clone())?);
        Ok(runtime.get_or_init(|| made).clone())
    };
    // A job file is unpacked for as long as this command runs.
    let job = job_file::load(
        &args.manifest,
        &vars,
        job_file::Placeholders::Fill,
        make_runtime,
        args.call_deadline,
    )?;
    let mut graph = job
        .manifest
        .job_graph(args.parallelism)
        .with_context(|| format!("job `{}`", args.manifest.display()))?;
    if let Some(deadline) = args.call_deadline {
        graph.limits.call_deadline = Some(deadline);
    }
    if let Some(bytes) = args.memory_limit {
        graph.limits.memory_bytes = Some(bytes);
    }
    if let Some(bytes) = args.state_limit {
        graph.limits.state_bytes = Some(bytes);
    }
    if args.jobmanager.is_some() || args.detached {
        return cluster::submit(
            &args.jobmanager,
            args.detached,
            graph,
            &checkpointing_of(&args),
        );
    }
    let config = MiniClusterConfig {
        task_executor: TaskExecutorConfig {
            slots: args
                .slots
                .unwrap_or(graph.slots_needed().div_ceil(args.task_executors)),
            network_buffers: args.network_buffers,
            ..TaskExecutorConfig::default()
        },
        task_executors: args.task_executors as usize,
        ..MiniClusterConfig::default()
    };
    let runtime = match runtime.into_inner() {
        Some(runtime) => runtime,
        None => Arc::new(WasmRuntime::new(RuntimeConfig {
            cache_dir,
            ..RuntimeConfig::default()
        })?),
    };
    let cluster = Arc::new(MiniCluster::new(config, runtime));
    let interval = args
        .checkpoint_interval
        .or(graph.checkpoint_interval_ms.map(Duration::from_millis));
    let checkpoints = match (interval, args.checkpoint_dir) {
        (Some(interval), Some(dir)) => Some(CheckpointConfig {
            dir,
            interval,
            timeout: Duration::from_millis(graph.checkpoint_timeout_ms),
            retained: graph.checkpoints_retained,
        }),
        (Some(_), None) => bail!("checkpointing needs a directory: pass --checkpoint-dir"),
        (None, Some(dir)) => Some(CheckpointConfig {
            dir,
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(graph.checkpoint_timeout_ms),
            retained: graph.checkpoints_retained,
        }),
        (None, None) => None,
    };
    if args.savepoint_dir.is_some() && checkpoints.is_none() {
        bail!("savepoints need checkpointing: pass --checkpoint-dir");
    }
    let restart = restart_strategy(
        args.restart_attempts,
        args.restart_delay,
        args.restart_backoff,
        checkpoints.is_some(),
    )?;
    let options = JobOptions {
        checkpoints,
        restart,
        restore: args.from_savepoint,
        allow_non_restored_state: args.allow_non_restored_state,
        ..JobOptions::default()
    };
    let result = if let (Some(dir), Some(after)) = (args.savepoint_dir, args.savepoint_after) {
        // One attempt, with a savepoint taken along the way.
        let restored = match &options.restore {
            Some(path) => Some(weir_host::checkpoint::storage::resolve(path)?),
            None => None,
        };
        let job = cluster.submit_with(&graph, &options, restored.as_ref(), 0)?;
        std::thread::sleep(after);
        match job.savepoint(&dir) {
            Ok(path) => eprintln!("savepoint written to {}", path.display()),
            Err(e) => eprintln!("warning: no savepoint: {e}"),
        }
        job.wait()
    } else {
        embedded::run(&cluster, graph.clone(), options, args.web_port)?
    };
    let result = result.with_context(|| format!("job `{}` failed", graph.name))?;
    report(&result);
    Ok(())
}

/// The restart strategy the flags ask for: 3 attempts by default with checkpoints, none
/// without (a restart resumes from a checkpoint, so asking for restarts needs them).
fn restart_strategy(
    attempts: Option<u32>,
    delay: Duration,
    backoff: bool,
    checkpointing: bool,
) -> Result<RestartStrategy> {
    if !checkpointing && attempts.is_some_and(|n| n > 0) {
        bail!(
            "--restart-attempts needs checkpointing (a restart resumes from the latest \
             checkpoint): pass --checkpoint-dir"
        );
    }
    Ok(match (attempts.unwrap_or(3), backoff) {
        (0, _) => RestartStrategy::None,
        (attempts, false) => RestartStrategy::FixedDelay { attempts, delay },
        (attempts, true) => RestartStrategy::ExponentialDelay {
            attempts,
            initial: delay,
            max: Duration::from_secs(60),
        },
    })
}

/// How a job submitted to a cluster checkpoints and restarts, from the command line.
fn checkpointing_of(args: &RunArgs) -> cluster::Checkpointing {
    cluster::Checkpointing {
        dir: args.checkpoint_dir.clone(),
        interval: args.checkpoint_interval,
        restart_attempts: args.restart_attempts,
        restart_delay: args.restart_delay,
        restore: args.from_savepoint.clone(),
        allow_non_restored_state: args.allow_non_restored_state,
    }
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
        "job `{}` finished in {:.2} s; network buffers used at most {} of {}; {} checkpoints in the last attempt, {} restarts",
        result.name,
        result.duration.as_secs_f64(),
        result.network.high_water,
        result.network.total,
        result.checkpoints.len(),
        result.restarts
    );
    let (bytes_in, bytes_out) = result
        .tasks
        .iter()
        .fold((0, 0), |(i, o), (_, m)| (i + m.bytes_in, o + m.bytes_out));
    if bytes_in + bytes_out > 0 {
        let starved: Duration = result.tasks.iter().map(|(_, m)| m.credit_starved).sum();
        eprintln!(
            "  between TaskExecutors: {:.1} MiB sent, {:.1} MiB received; producers waited {:.2} s for credit",
            bytes_out as f64 / (1 << 20) as f64,
            bytes_in as f64 / (1 << 20) as f64,
            starved.as_secs_f64()
        );
    }
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

/// Prints failures as their chain of causes, one line, without a backtrace: the messages name
/// what failed and where.
/// `weir token`: a fresh token, and its hash for the tenants file.
fn new_token() -> Result<()> {
    use weir_host::cluster::standalone::tenants;
    let token = tenants::new_token().map_err(anyhow::Error::msg)?;
    println!("token: {token}");
    println!(
        "for the tenant's `tokens` in the tenants file: {:?}",
        tenants::token_hash(&token)
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    if let Some(token) = cli.token {
        rest_client::set_token(token);
    }
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Jobmanager(args) => cluster::jobmanager(args),
        Command::Taskmanager(args) => cluster::taskmanager(args, default_cache_dir()),
        Command::List(args) => cluster::list(args),
        Command::Cancel(args) => cluster::cancel(args),
        Command::Savepoint(args) => cluster::savepoint(args),
        Command::Stop(args) => cluster::stop(args),
        Command::Token => new_token(),
        Command::Build(args) => build::build(args),
        Command::New(args) => new_project::new_project(args),
        Command::Package(args) => job_file::package_job(args),
        Command::Info(args) => job_file::info(args, default_cache_dir()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_attempts_without_checkpoints_are_refused_with_the_flag_to_add() {
        let second = Duration::from_secs(1);
        let err = restart_strategy(Some(2), second, false, false).unwrap_err();
        assert!(err.to_string().contains("pass --checkpoint-dir"), "{err}");
        assert_eq!(
            restart_strategy(None, second, false, true).unwrap(),
            RestartStrategy::FixedDelay {
                attempts: 3,
                delay: second
            }
        );
        assert_eq!(
            restart_strategy(Some(0), second, false, false).unwrap(),
            RestartStrategy::None
        );
    }
}
