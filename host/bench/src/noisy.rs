//! `weir-bench noisy-neighbour`: tenant B's P2 (parallelism 1) alone, then while tenant A keeps
//! submitting hostile jobs (an endless loop, unbounded memory growth, a million records per
//! input, a trap at once), then while A runs a legitimate CPU-heavy job of its own. Each tenant
//! has a TaskManager reserved for it and pinned to a CPU of its own, the isolation the cluster
//! offers; B's throughput next to its solo throughput shows what is left of it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::cluster::{
    Process, get_as, job_id, run_as, start_jobmanager, wait_for_task_managers, weir_program,
};

const TOKEN_A: &str = "noisy-neighbour-tenant-a-0123456789abcdef";
const TOKEN_B: &str = "noisy-neighbour-tenant-b-0123456789abcdef";
const TOKEN_OPS: &str = "noisy-neighbour-operator-0123456789abcdef";

/// Options of `weir-bench noisy-neighbour`.
#[derive(Debug, Clone, clap::Args)]
pub struct NoisyArgs {
    /// Source records of tenant B's P2.
    #[arg(long, default_value_t = 150_000_000)]
    pub records: u64,
}

pub fn run_bench(args: &NoisyArgs) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus >= 2,
        "the noisy neighbour needs two CPUs (one per tenant); this machine has {cpus}"
    );
    let weir = weir_program()?;
    let dir = std::env::temp_dir().join(format!("weir-bench-noisy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&weir, &dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn hash(token: &str) -> String {
    weir_host::cluster::standalone::tenants::token_hash(token)
}

/// Waits for job `id` (tenant `token`) to end, or for `stop`; its end (`None`: stopped first).
fn wait_end(rest: &str, token: &str, id: &str, stop: &AtomicBool) -> Result<Option<String>> {
    loop {
        let answer = get_as(rest, Some(token), &format!("/jobs/{id}/execution-result"))?;
        if answer["status"]["id"] == "COMPLETED" {
            let result = &answer["job-execution-result"];
            let status = result["application-status"].as_str().unwrap_or("?");
            let cause = result["failure-cause"]["stack-trace"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            return Ok(Some(format!("{status} {cause}").trim().to_string()));
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// B's P2 on the cluster: records per second of the whole `weir run -m`.
fn b_run(weir: &Path, rest: &str, p2: &str, records: u64) -> Result<f64> {
    let started = Instant::now();
    run_as(weir, Some(TOKEN_B), &["run", "-m", rest, p2])?;
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

fn report(scenario: &str, solo: f64, shared: f64) {
    println!(
        "bench=noisy-neighbour tenant=B scenario={scenario} solo_records_per_s={solo:.0} \
         shared_records_per_s={shared:.0} ratio={:.3}",
        shared / solo
    );
}

fn measure(weir: &Path, dir: &Path, args: &NoisyArgs) -> Result<()> {
    let tenants = dir.join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"a\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [tenant.quota]\ncall-deadline = \"1s\"\nmemory-per-operator = \"64MiB\"\n\
             [[tenant]]\nname = \"b\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [[tenant]]\nname = \"ops\"\nadmin = true\ntokens = [{:?}]\n",
            hash(TOKEN_A),
            dir.display(),
            hash(TOKEN_B),
            dir.display(),
            hash(TOKEN_OPS)
        ),
    )?;
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"weir-bench-noisy-neighbour\"\n[jobmanager]\n\
             job-store = \"jobs\"\ntenants-file = {:?}\n\
             [jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n\
             [rest]\naddress = \"127.0.0.1\"\nport = 0\n",
            tenants.display()
        ),
    )?;
    let config = config.to_str().context("utf-8 path")?;
    let (jm, rpc, rest) = start_jobmanager(weir, config)?;
    let cache = dir.join("cache");
    let cache = cache.to_str().context("utf-8 path")?;
    let tm = |tenant: &str, cpu: &str, slots: &str| {
        Process::start(
            weir,
            &[
                "taskmanager",
                "--config",
                config,
                "--jobmanager",
                &rpc,
                "--slots",
                slots,
                "--resource-id",
                &format!("tm-{tenant}"),
                "--tenant",
                tenant,
                "--cpus",
                cpu,
                "--cache-dir",
                cache,
            ],
        )
    };
    let tm_a = tm("a", "0", "4")?;
    let _tm_b = tm("b", "1", "2")?;
    wait_for_task_managers(&rest, Some(TOKEN_OPS), 2)?;

    let p2 = dir.join("p2.toml");
    std::fs::write(
        &p2,
        crate::pipelines::manifest("p2", true, args.records, 1)?,
    )?;
    let p2 = p2.to_str().context("utf-8 path")?;
    // Warm the component cache, then B alone.
    b_run(weir, &rest, p2, args.records)?;
    let solo = b_run(weir, &rest, p2, args.records)?;

    // A's hostile jobs, one after another for the whole of B's run.
    let hostile = crate::guests::HOSTILE;
    let jobs = [
        ("spin", "operator = \"spin\"\n", 1_000),
        ("grow", "operator = \"grow\"\n", 1_000),
        (
            "fan-out",
            "operator = \"fan-out\"\nconfig = { per-input = 1000000 }\n",
            100_000,
        ),
        (
            "fail-at",
            "operator = \"fail-at\"\nconfig = { at = 0, how = \"unreachable\" }\n",
            1_000,
        ),
    ];
    let mut manifests = Vec::new();
    for (name, op, count) in jobs {
        let path = dir.join(format!("a-{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"a-{name}\"\n\
                 [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = {count}\n\
                 [[operator]]\nid = \"hostile\"\ncomponent = {hostile:?}\ninput = \"numbers\"\n{op}\
                 [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"hostile\"\n"
            ),
        )?;
        manifests.push((name, path.to_str().context("utf-8 path")?.to_string()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = {
        let (stop, weir, rest) = (stop.clone(), weir.to_path_buf(), rest.clone());
        std::thread::spawn(move || -> Result<Vec<(String, String)>> {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (name, manifest) in &manifests {
                    let id = job_id(&run_as(
                        &weir,
                        Some(TOKEN_A),
                        &["run", "-d", "-m", &rest, manifest],
                    )?)?;
                    match wait_end(&rest, TOKEN_A, &id, &stop)? {
                        Some(end) => outcomes.push((name.to_string(), end)),
                        None => {
                            run_as(&weir, Some(TOKEN_A), &["cancel", "-m", &rest, &id])?;
                            outcomes.push((name.to_string(), "still running: cancelled".into()));
                            return Ok(outcomes);
                        }
                    }
                }
            }
            Ok(outcomes)
        })
    };
    let shared = b_run(weir, &rest, p2, args.records)?;
    stop.store(true, Ordering::Relaxed);
    let outcomes = neighbour
        .join()
        .map_err(|_| anyhow::anyhow!("the neighbour's thread panicked"))??;
    report("hostile", solo, shared);
    let mut kinds: Vec<(String, String, usize)> = Vec::new();
    for (name, end) in outcomes {
        match kinds.iter_mut().find(|(n, e, _)| *n == name && *e == end) {
            Some(kind) => kind.2 += 1,
            None => kinds.push((name, end, 1)),
        }
    }
    for (name, end, count) in kinds {
        println!("bench=noisy-neighbour tenant=A job={name} count={count} outcome={end:?}");
    }

    // A's legitimate heavy job: P2 at the same parallelism, for the whole of B's run.
    let heavy = dir.join("a-heavy.toml");
    std::fs::write(
        &heavy,
        crate::pipelines::manifest("p2", true, 100_000_000_000, 1)?,
    )?;
    let heavy_id = job_id(&run_as(
        weir,
        Some(TOKEN_A),
        &[
            "run",
            "-d",
            "-m",
            &rest,
            heavy.to_str().context("utf-8 path")?,
        ],
    )?)?;
    tm_a.wait_for("Received task", 1)?;
    let shared = b_run(weir, &rest, p2, args.records)?;
    report("heavy", solo, shared);
    run_as(weir, Some(TOKEN_A), &["cancel", "-m", &rest, &heavy_id])?;
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", tm_a.pid())) {
        let peak = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        println!("bench=noisy-neighbour process=tm-a peak_rss={peak:?}");
    }
    drop(jm);
    Ok(())
}
