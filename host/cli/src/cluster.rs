//! `weir jobmanager` and `weir taskmanager`: the processes of a standalone cluster; and
//! submitting a job to one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_host::cluster::standalone::{
    ClusterConfig, JobManager, JobSubmission, TaskManager, TaskManagerOptions,
};
use weir_host::job::JobGraph;

use crate::rest_client::{error_of, request};

#[derive(clap::Args)]
pub struct JobManagerArgs {
    /// The cluster configuration (default: `weir.toml` in `$WEIR_CONF_DIR`, in `conf/` beside
    /// the installation's `bin/`, or in `./conf`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The REST port (default: `rest.port`); `bin/start-cluster.sh` gives each JobManager of
    /// `conf/masters` its own.
    #[arg(long)]
    rest_port: Option<u16>,
    /// The RPC port TaskManagers register at (default: `jobmanager.rpc.port`; 0: any free one,
    /// which with high availability TaskManagers learn from etcd).
    #[arg(long)]
    rpc_port: Option<u16>,
}

#[derive(clap::Args)]
pub struct TaskManagerArgs {
    /// The cluster configuration (found as for `weir jobmanager`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The JobManager's RPC address, HOST:PORT (default: `jobmanager.rpc` of the
    /// configuration).
    #[arg(long)]
    jobmanager: Option<String>,
    /// Task slots (default: `taskmanager.slots` of the configuration).
    #[arg(long)]
    slots: Option<u32>,
    /// The TaskManager's resource id (default: its data address and a random suffix).
    #[arg(long)]
    resource_id: Option<String>,
    /// Where compiled components are cached (default: the user's cache directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Reserve this TaskManager for one tenant (default: `taskmanager.tenant`).
    #[arg(long)]
    tenant: Option<String>,
    /// Run on these CPUs, e.g. `0-1,3` (default: `taskmanager.cpus`).
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// Write each job's guest log lines to a file of its own under this directory (default:
    /// `taskmanager.log-dir`; unset: into the TaskManager's log).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
}

fn config(explicit: Option<&std::path::Path>) -> Result<ClusterConfig> {
    let path = ClusterConfig::find(explicit);
    if let Some(p) = &path {
        eprintln!("Loading configuration from {}", p.display());
    }
    Ok(ClusterConfig::load(path.as_deref())?)
}

pub fn jobmanager(args: JobManagerArgs) -> Result<()> {
    let mut config = config(args.config.as_deref())?;
    if let Some(port) = args.rest_port {
        config.rest.port = port;
    }
    if let Some(port) = args.rpc_port {
        config.jobmanager_rpc.port = port;
    }
    let jm = JobManager::start(config).context("starting the JobManager")?;
    // Tests and scripts read these two lines for the ports (port 0 picks free ones).
    eprintln!("JobManager RPC endpoint listening on {}", jm.rpc_address);
    eprintln!("REST endpoint listening on http://{}", jm.rest_address);
    jm.run_forever()
}

pub fn taskmanager(args: TaskManagerArgs, cache_dir: Option<PathBuf>) -> Result<()> {
    let config = config(args.config.as_deref())?;
    let tm = TaskManager::start(TaskManagerOptions {
        config,
        jobmanager: args.jobmanager,
        slots: args.slots,
        resource_id: args.resource_id,
        cache_dir: args.cache_dir.or(cache_dir),
        tenant: args.tenant,
        cpus: args
            .cpus
            .as_deref()
            .map(weir_host::cluster::standalone::config::parse_cpu_list)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--cpus: {e}"))?,
        log_dir: args.log_dir,
    })
    .context("starting the TaskManager")?;
    eprintln!("TaskManager `{}` started", tm.resource_id());
    tm.run().context("TaskManager")?;
    Ok(())
}

/// Checkpoints and restarts of a job submitted to a cluster.
pub struct Checkpointing {
    pub dir: Option<PathBuf>,
    pub interval: Option<Duration>,
    pub restart_attempts: Option<u32>,
    pub restart_delay: Duration,
    pub restore: Option<PathBuf>,
    pub allow_non_restored_state: bool,
}

/// `weir run -m HOST:PORT` / `weir run -d`: uploads the job to the JobManager, prints its id,
/// and (unless detached) waits for its end.
pub fn submit(
    jobmanager: &Option<String>,
    detached: bool,
    graph: JobGraph,
    checkpointing: &Checkpointing,
) -> Result<()> {
    let address = rest_address(jobmanager)?;
    let interval = checkpointing
        .interval
        .or(graph.checkpoint_interval_ms.map(Duration::from_millis));
    let mut submission = JobSubmission::new(graph)?;
    submission.checkpoints = match (&checkpointing.dir, interval) {
        (Some(dir), Some(interval)) => {
            let dir = std::path::absolute(dir)
                .with_context(|| format!("checkpoint directory `{}`", dir.display()))?;
            Some((dir, interval.as_millis() as u64))
        }
        (Some(_), None) => {
            bail!("--checkpoint-dir needs --checkpoint-interval (or the manifest's)")
        }
        (None, _) => None,
    };
    submission.restart_attempts =
        checkpointing
            .restart_attempts
            .unwrap_or(if submission.checkpoints.is_some() {
                3
            } else {
                0
            });
    submission.restart_delay_ms = checkpointing.restart_delay.as_millis() as u64;
    submission.restore = match &checkpointing.restore {
        Some(path) => Some(
            std::path::absolute(path).with_context(|| format!("savepoint `{}`", path.display()))?,
        ),
        None => None,
    };
    submission.allow_non_restored_state = checkpointing.allow_non_restored_state;
    let body = submission.encode()?;
    let (status, answer) = request(&address, "POST", "/jobs", Some(&body))?;
    if status != 202 {
        bail!(
            "the JobManager at {address} refused the job: {}",
            error_of(&answer)
        );
    }
    let id = answer["jobid"]
        .as_str()
        .context("the JobManager's answer has no job id")?
        .to_string();
    println!("Job has been submitted with JobID {id}");
    println!("Web UI: http://{address}/#/job/{id}");
    if detached {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let path = format!("/jobs/{id}/execution-result");
        let (status, answer) = request(&address, "GET", &path, None)?;
        if status != 200 {
            bail!("the JobManager lost job {id}: {}", error_of(&answer));
        }
        let result = &answer["job-execution-result"];
        match result["application-status"].as_str() {
            Some("SUCCEEDED") => {
                println!(
                    "Job with JobID {id} has finished.\nJob Runtime: {} ms",
                    started.elapsed().as_millis()
                );
                return Ok(());
            }
            Some("FAILED") => bail!(
                "job {id} failed: {}",
                result["failure-cause"]["stack-trace"]
                    .as_str()
                    .unwrap_or("(no reason given)")
            ),
            Some("CANCELED") => bail!("job {id} was cancelled"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// The JobManager's REST address (default: `rest` of conf/weir.toml).
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// Only running jobs.
    #[arg(short = 'r', long)]
    running: bool,
    /// Every job, ended ones included.
    #[arg(short = 'a', long)]
    all: bool,
}

#[derive(clap::Args)]
pub struct CancelArgs {
    /// The JobManager's REST address (default: `rest` of conf/weir.toml).
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// The job's id (32 hex digits).
    id: String,
}

/// The REST endpoint to call: `-m`, else the leader etcd names (with high availability), else
/// the configuration's.
fn rest_address(explicit: &Option<String>) -> Result<String> {
    if let Some(address) = explicit {
        return Ok(address.clone());
    }
    let config = config(None)?;
    match &config.high_availability {
        None => Ok(config.rest.to_address()),
        #[cfg(feature = "ha")]
        Some(ha) => {
            let leader = weir_host::cluster::standalone::ha::find_leader(ha)
                .map_err(anyhow::Error::msg)
                .context("finding the leading JobManager")?;
            Ok(leader.addresses.rest)
        }
        #[cfg(not(feature = "ha"))]
        Some(_) => bail!(
            "the configuration uses high availability, but this weir was built without it \
             (cargo feature `ha`); name the JobManager with -m"
        ),
    }
}

/// `dd.MM.yyyy HH:mm:ss` (UTC) of a time in milliseconds since the Unix epoch.
fn flink_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}.{month:02}.{year:04} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `weir list`: the cluster's jobs, in Flink's sections and lines.
pub fn list(args: ListArgs) -> Result<()> {
    let address = rest_address(&args.jobmanager)?;
    let (status, answer) = request(&address, "GET", "/jobs/overview", None)?;
    if status != 200 {
        bail!(
            "the JobManager at {address} answered {status}: {}",
            error_of(&answer)
        );
    }
    let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
    let line = |job: &serde_json::Value| {
        format!(
            "{} : {} : {} ({})",
            flink_time(job["start-time"].as_u64().unwrap_or(0)),
            job["jid"].as_str().unwrap_or("?"),
            job["name"].as_str().unwrap_or("?"),
            job["state"].as_str().unwrap_or("?")
        )
    };
    println!("Waiting for response...");
    let running: Vec<String> = jobs
        .iter()
        .filter(|j| j["state"] == "RUNNING")
        .map(line)
        .collect();
    if running.is_empty() {
        println!("No running jobs.");
    } else {
        println!("------------------ Running/Restarting Jobs -------------------");
        running.iter().for_each(|l| println!("{l}"));
        println!("--------------------------------------------------------------");
    }
    if !args.running {
        println!("No scheduled jobs.");
    }
    if args.all {
        let ended: Vec<String> = jobs
            .iter()
            .filter(|j| j["state"] != "RUNNING")
            .map(line)
            .collect();
        if ended.is_empty() {
            println!("No terminated jobs.");
        } else {
            println!("---------------------- Terminated Jobs -----------------------");
            ended.iter().for_each(|l| println!("{l}"));
            println!("--------------------------------------------------------------");
        }
    }
    Ok(())
}

/// `weir cancel <id>`: cancels a running job and waits until it is.
pub fn cancel(args: CancelArgs) -> Result<()> {
    let address = rest_address(&args.jobmanager)?;
    let id = &args.id;
    println!("Cancelling job {id}.");
    let (status, answer) = request(&address, "PATCH", &format!("/jobs/{id}?mode=cancel"), None)?;
    if status != 202 {
        bail!("cannot cancel job {id}: {}", error_of(&answer));
    }
    let started = Instant::now();
    loop {
        let path = format!("/jobs/{id}/execution-result");
        let (_, answer) = request(&address, "GET", &path, None)?;
        match answer["job-execution-result"]["application-status"].as_str() {
            Some("CANCELED") => break,
            None if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            None => bail!("job {id} did not cancel within a minute"),
            Some(other) => bail!("job {id} did not cancel: it ended {other}"),
        }
    }
    println!("Cancelled job {id}.");
    Ok(())
}

#[derive(clap::Args)]
pub struct SavepointArgs {
    /// The JobManager's REST address (default: `rest` of conf/weir.toml).
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// The job's id.
    id: String,
    /// Where the savepoint goes (its directory is made inside).
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// The JobManager's REST address (default: `rest` of conf/weir.toml).
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    jobmanager: Option<String>,
    /// Where the savepoint goes.
    #[arg(long, short = 'p', value_name = "DIR")]
    savepoint_path: PathBuf,
    /// End the sources' input before the savepoint, so every timer fires and every window
    /// closes: the job finishes with all its output committed. A run resumed from it reads on
    /// where the sources stopped, but what fired early does not fire again (as in Flink, for a
    /// job that is to end for good).
    #[arg(long, short = 'd')]
    drain: bool,
    /// The job's id.
    id: String,
}

/// What a savepoint request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavepointKind {
    /// The job goes on.
    Keep,
    /// The job stops (`drain`: after its sources end).
    Stop { drain: bool },
}

/// Asks for a savepoint (or a stop with one) and waits for its path.
fn savepoint_of(
    address: &str,
    id: &str,
    dir: &std::path::Path,
    kind: SavepointKind,
) -> Result<String> {
    let dir = std::path::absolute(dir)?;
    let (path, body) = match kind {
        SavepointKind::Stop { drain } => (
            format!("/jobs/{id}/stop"),
            serde_json::json!({ "targetDirectory": dir, "drain": drain }),
        ),
        SavepointKind::Keep => (
            format!("/jobs/{id}/savepoints"),
            serde_json::json!({ "target-directory": dir }),
        ),
    };
    let body = body.to_string();
    let (status, answer) = request(address, "POST", &path, Some(body.as_bytes()))?;
    if status != 202 {
        bail!("cannot take a savepoint of job {id}: {}", error_of(&answer));
    }
    let trigger = answer["request-id"]
        .as_str()
        .context("the JobManager's answer has no request id")?
        .to_string();
    println!("Waiting for response...");
    let started = Instant::now();
    loop {
        let (_, state) = request(
            address,
            "GET",
            &format!("/jobs/{id}/savepoints/{trigger}"),
            None,
        )?;
        if state["status"]["id"] == "COMPLETED" {
            if let Some(location) = state["operation"]["location"].as_str() {
                return Ok(location.to_string());
            }
            bail!(
                "the savepoint of job {id} failed: {}",
                state["operation"]["failure-cause"]["stack-trace"]
                    .as_str()
                    .unwrap_or("(no reason given)")
            );
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the savepoint of job {id} did not complete within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `weir savepoint <id> DIR`.
pub fn savepoint(args: SavepointArgs) -> Result<()> {
    let address = rest_address(&args.jobmanager)?;
    println!("Triggering savepoint for job {}.", args.id);
    let path = savepoint_of(&address, &args.id, &args.dir, SavepointKind::Keep)?;
    println!("Savepoint completed. Path: {path}");
    println!("You can resume your program from this savepoint with the run command.");
    Ok(())
}

/// `weir stop --savepoint-path DIR <id>`.
pub fn stop(args: StopArgs) -> Result<()> {
    let address = rest_address(&args.jobmanager)?;
    println!("Suspending job {}.", args.id);
    let kind = SavepointKind::Stop { drain: args.drain };
    let path = savepoint_of(&address, &args.id, &args.savepoint_path, kind)?;
    println!("Savepoint completed. Path: {path}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_flink_prints_them() {
        assert_eq!(super::flink_time(0), "01.01.1970 00:00:00");
        assert_eq!(super::flink_time(1_795_812_005_000), "27.11.2026 20:40:05");
        assert_eq!(super::flink_time(951_868_799_000), "29.02.2000 23:59:59");
    }
}
