//! `weir jobmanager` and `weir taskmanager`: the processes of a standalone cluster.

use std::path::PathBuf;

use anyhow::{Context, Result};
use weir_host::cluster::standalone::{ClusterConfig, JobManager, TaskManager, TaskManagerOptions};

#[derive(clap::Args)]
pub struct JobManagerArgs {
    /// The cluster configuration (default: `weir.toml` in `$WEIR_CONF_DIR`, in `conf/` beside
    /// the installation's `bin/`, or in `./conf`).
    #[arg(long)]
    config: Option<PathBuf>,
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
}

fn config(explicit: Option<&std::path::Path>) -> Result<ClusterConfig> {
    let path = ClusterConfig::find(explicit);
    if let Some(p) = &path {
        eprintln!("Loading configuration from {}", p.display());
    }
    Ok(ClusterConfig::load(path.as_deref())?)
}

pub fn jobmanager(args: JobManagerArgs) -> Result<()> {
    let config = config(args.config.as_deref())?;
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
    })
    .context("starting the TaskManager")?;
    eprintln!("TaskManager `{}` started", tm.resource_id());
    tm.run().context("TaskManager")?;
    Ok(())
}
