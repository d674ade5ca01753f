//! `weir-bench ha`: failover of the leading JobManager on etcd, as a user sees it. Two
//! JobManagers and two TaskManagers of the `weir` program beside this one and a real etcd, all
//! on loopback; a checkpointed job runs. Then, `--kills` times: `kill -9` of the leader, a new
//! standby started, and the time until the job runs again on the new leader, every task
//! deployed (`failover_to_running`, each kill and the mean). Most of it is the lease: a standby
//! is elected only once etcd lets the dead leader's lease expire.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::cluster::{Process, get_as, job_id, run_as, start_jobmanager, weir_program};

/// Options of `weir-bench ha`.
#[derive(Debug, Clone, clap::Args)]
pub struct HaArgs {
    /// Leaders killed.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// The leader's lease (`high-availability.lease-ttl`), whole seconds.
    #[arg(long, default_value = "2s")]
    pub lease_ttl: String,
}

pub fn run_bench(args: &HaArgs) -> Result<()> {
    let weir = weir_program()?;
    let dir = std::env::temp_dir().join(format!("weir-bench-ha-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&weir, &dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Where the JobManager at `rest` stands (`leader`, `standby`, `waiting`), if it answers.
fn role(rest: &str) -> Option<String> {
    let answer = get_as(rest, None, "/leadership").ok()?;
    answer["role"].as_str().map(str::to_string)
}

/// Whether job `id` runs on the JobManager at `rest` with every task deployed.
fn running(rest: &str, id: &str) -> bool {
    let Ok(job) = get_as(rest, None, &format!("/jobs/{id}")) else {
        return false;
    };
    job["state"] == "RUNNING"
        && job["vertices"]
            .as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(|v| v["status"] == "RUNNING"))
}

fn measure(weir: &Path, dir: &Path, args: &HaArgs) -> Result<()> {
    let etcd = weir_test_servers::Etcd::start();
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"weir-bench-ha-cluster-secret\"\n\
             [jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n[rest]\naddress = \"127.0.0.1\"\nport = 0\n\
             [heartbeat]\ninterval = \"200ms\"\ntimeout = \"1s\"\n\
             [high-availability]\ntype = \"etcd\"\netcd-endpoints = [\"{}\"]\ncluster-id = \"bench\"\n\
             storage-dir = \"ha\"\nlease-ttl = \"{}\"\n",
            etcd.endpoint(),
            args.lease_ttl
        ),
    )?;
    let config = config.to_str().context("utf-8 path")?;
    let mut jobmanagers = vec![start_jobmanager(weir, config)?];
    jobmanagers[0].0.wait_for("Granted leadership", 1)?;
    jobmanagers.push(start_jobmanager(weir, config)?);
    let cache = dir.join("cache");
    let cache = cache.to_str().context("utf-8 path")?;
    let _taskmanagers = ["tm-1", "tm-2"]
        .iter()
        .map(|id| {
            Process::start(
                weir,
                &[
                    "taskmanager",
                    "--config",
                    config,
                    "--slots",
                    "2",
                    "--resource-id",
                    id,
                    "--cache-dir",
                    cache,
                ],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let leader_rest = jobmanagers[0].2.clone();
    crate::cluster::wait_for_task_managers(&leader_rest, None, 2)?;

    let long = dir.join("long.toml");
    std::fs::write(
        &long,
        crate::pipelines::manifest("p2", true, 20_000_000_000, 2)?,
    )?;
    let chk = dir.join("chk");
    let id = job_id(&run_as(
        weir,
        None,
        &[
            "run",
            "-d",
            "-m",
            &leader_rest,
            long.to_str().context("utf-8 path")?,
            "--checkpoint-dir",
            chk.to_str().context("utf-8 path")?,
            "--checkpoint-interval",
            "500ms",
            "--restart-attempts",
            "100",
            "--restart-delay",
            "0ms",
        ],
    )?)?;
    let started = Instant::now();
    while !running(&leader_rest, &id) {
        ensure!(started.elapsed() < Duration::from_secs(60), "job never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut times = Vec::new();
    for kill in 0..args.kills {
        // A checkpoint to recover from.
        std::thread::sleep(Duration::from_millis(1500));
        let leader = jobmanagers
            .iter()
            .position(|(_, _, rest)| role(rest).as_deref() == Some("leader"))
            .context("no leader")?;
        let (mut old, _, _) = jobmanagers.remove(leader);
        let killed = Instant::now();
        old.child.kill()?;
        let _ = old.child.wait();
        jobmanagers.push(start_jobmanager(weir, config)?);
        let new_leader = loop {
            ensure!(
                killed.elapsed() < Duration::from_secs(120),
                "kill {kill}: the job did not run again"
            );
            if let Some((_, _, rest)) = jobmanagers
                .iter()
                .find(|(_, _, rest)| role(rest).as_deref() == Some("leader"))
                && running(rest, &id)
            {
                break rest.clone();
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let ms = killed.elapsed().as_secs_f64() * 1e3;
        println!(
            "bench=ha metric=failover_to_running kill={} value={ms:.0} unit=ms lease_ttl={}",
            kill + 1,
            args.lease_ttl
        );
        times.push(ms);
        let _ = new_leader;
    }
    if !times.is_empty() {
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let max = times.iter().copied().fold(0.0, f64::max);
        println!(
            "bench=ha metric=failover_to_running value={mean:.0} unit=ms max={max:.0} kills={} lease_ttl={}",
            times.len(),
            args.lease_ttl
        );
    }
    let leader = jobmanagers
        .iter()
        .find(|(_, _, rest)| role(rest).as_deref() == Some("leader"))
        .map(|(_, _, rest)| rest.clone())
        .context("no leader")?;
    run_as(weir, None, &["cancel", "-m", &leader, &id])?;
    Ok(())
}
