//! `weir-bench cluster`: a standalone cluster of real processes (a JobManager and two
//! TaskManagers of the `weir` program beside this one, on loopback), timed from outside as a
//! user sees it:
//!
//! - `submit_to_running`: from the start of `weir run -d` to the job's REST state RUNNING (the
//!   component already in the TaskManagers' caches);
//! - `trivial_job`: the whole `weir run -m` of a 10-record job;
//! - `tm_kill_to_running`: from `kill -9` of a TaskManager running a job to its tasks deployed
//!   on the spare TaskManager (heartbeat timeout 1 s; a closed connection is noticed at once);
//! - `p2_cluster` and `p2_embedded`: P2 at parallelism 2 over the two TaskManagers (one slot
//!   each), next to the same job in `weir run`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Options of `weir-bench cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Source records of the P2 jobs.
    #[arg(long, default_value_t = 50_000_000)]
    pub records: u64,
}

/// A process of the cluster, its stderr collected; killed when dropped.
pub(crate) struct Process {
    pub(crate) child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    pub(crate) fn start(weir: &Path, args: &[&str]) -> Result<Process> {
        let mut child = Command::new(weir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", weir.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("stderr")?;
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Ok(Process { child, log })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to 30 s for `count` log lines containing `text`; the last.
    pub(crate) fn wait_for(&self, text: &str, count: usize) -> Result<String> {
        let started = Instant::now();
        loop {
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(text)).collect();
            if lines.len() >= count {
                return Ok(lines[count - 1].to_string());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("no `{text}` in the log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(address: &str, path: &str) -> Result<serde_json::Value> {
    get_as(address, None, path)
}

/// `GET path`, presenting `token` if any.
pub(crate) fn get_as(address: &str, token: Option<&str>, path: &str) -> Result<serde_json::Value> {
    let mut stream = TcpStream::connect(address)?;
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{authorization}\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(serde_json::from_str(body)?)
}

fn run(weir: &Path, args: &[&str]) -> Result<String> {
    run_as(weir, None, args)
}

/// `weir args...` with `WEIR_TOKEN=token` if any; its standard output.
pub(crate) fn run_as(weir: &Path, token: Option<&str>, args: &[&str]) -> Result<String> {
    let mut command = Command::new(weir);
    if let Some(token) = token {
        command.env("WEIR_TOKEN", token);
    }
    let out = command.args(args).output()?;
    ensure!(
        out.status.success(),
        "weir {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn job_id(out: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .map(str::to_string)
        .context("no job id in the output")
}

fn line(metric: &str, value: f64, unit: &str) {
    println!("bench=cluster metric={metric} value={value:.1} unit={unit}");
}

/// A JobManager of `weir` on `config`: the process, its RPC and REST addresses.
pub(crate) fn start_jobmanager(weir: &Path, config: &str) -> Result<(Process, String, String)> {
    let jm = Process::start(weir, &["jobmanager", "--config", config])?;
    let rpc = jm.wait_for("RPC endpoint listening on", 1)?;
    let rpc = rpc.rsplit(' ').next().unwrap_or_default().to_string();
    let rest = jm.wait_for("REST endpoint listening on", 1)?;
    let rest = rest
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((jm, rpc, rest))
}

/// Waits up to 30 s for `count` TaskManagers registered (asked with `token`, if any).
pub(crate) fn wait_for_task_managers(rest: &str, token: Option<&str>, count: u64) -> Result<()> {
    let started = Instant::now();
    while get_as(rest, token, "/overview")?["taskmanagers"] != count {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "TaskManagers did not register"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The `weir` program beside this one.
pub(crate) fn weir_program() -> Result<PathBuf> {
    let here = std::env::current_exe()?;
    let weir = here.with_file_name("weir");
    ensure!(
        weir.exists(),
        "no `weir` beside {}: build it first (cargo build --release -p weir-cli)",
        here.display()
    );
    Ok(weir)
}

pub fn run_bench(args: &ClusterArgs) -> Result<()> {
    let weir = weir_program()?;
    let dir = std::env::temp_dir().join(format!("weir-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&weir, &dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(weir: &Path, dir: &Path, args: &ClusterArgs) -> Result<()> {
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        "[cluster]\nsecret = \"weir-bench-cluster-secret\"\n[jobmanager]\njob-store = \"jobs\"\n\
         [jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n[rest]\naddress = \"127.0.0.1\"\nport = 0\n\
         [heartbeat]\ninterval = \"200ms\"\ntimeout = \"1s\"\n",
    )?;
    let config = config.to_str().context("utf-8 path")?;
    let (jm, rpc, rest) = start_jobmanager(weir, config)?;
    let cache = dir.join("cache");
    let cache = cache.to_str().context("utf-8 path")?;
    let tm = |id: &str| {
        Process::start(
            weir,
            &[
                "taskmanager",
                "--config",
                config,
                "--jobmanager",
                &rpc,
                "--slots",
                "1",
                "--resource-id",
                id,
                "--cache-dir",
                cache,
            ],
        )
    };
    let tm1 = tm("tm-1")?;
    let tm2 = tm("tm-2")?;
    wait_for_task_managers(&rest, None, 2)?;

    // A 10-record job: 10 numbers through P1's three operators, once to warm the caches.
    let trivial = dir.join("trivial.toml");
    std::fs::write(&trivial, crate::pipelines::manifest("p1", true, 10, 2)?)?;
    let trivial = trivial.to_str().context("utf-8 path")?;
    run(weir, &["run", "-m", &rest, trivial])?;
    let started = Instant::now();
    run(weir, &["run", "-m", &rest, trivial])?;
    line("trivial_job", started.elapsed().as_secs_f64() * 1e3, "ms");

    let started = Instant::now();
    let id = job_id(&run(weir, &["run", "-d", "-m", &rest, trivial])?)?;
    while get(&rest, &format!("/jobs/{id}"))?["state"] != "RUNNING"
        && get(&rest, &format!("/jobs/{id}"))?["state"] != "FINISHED"
    {
        ensure!(started.elapsed() < Duration::from_secs(30), "job never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    line(
        "submit_to_running",
        started.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    while get(&rest, &format!("/jobs/{id}"))?["state"] != "FINISHED" {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "job never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Its slots as the next heartbeats report them.
    while get(&rest, "/overview")?["slots-available"] != 2 {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "slots never freed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // P2 at parallelism 2: one subtask of each vertex per TaskManager.
    let p2 = dir.join("p2.toml");
    std::fs::write(
        &p2,
        crate::pipelines::manifest("p2", true, args.records, 2)?,
    )?;
    let p2 = p2.to_str().context("utf-8 path")?;
    let started = Instant::now();
    run(weir, &["run", "-m", &rest, p2])?;
    line(
        "p2_cluster",
        args.records as f64 / started.elapsed().as_secs_f64(),
        "records_per_s",
    );
    let started = Instant::now();
    run(weir, &["run", p2, "--cache-dir", cache])?;
    line(
        "p2_embedded",
        args.records as f64 / started.elapsed().as_secs_f64(),
        "records_per_s",
    );

    // A TaskManager killed under a running job (with checkpoints and a restart), a spare
    // ready.
    let tm3 = tm("tm-3")?;
    while get(&rest, "/overview")?["taskmanagers"] != 3 {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "spare did not register"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let long = dir.join("long.toml");
    std::fs::write(
        &long,
        crate::pipelines::manifest("p2", true, 20_000_000_000, 2)?,
    )?;
    let long = long.to_str().context("utf-8 path")?;
    let chk = dir.join("chk");
    let id = job_id(&run(
        weir,
        &[
            "run",
            "-d",
            "-m",
            &rest,
            long,
            "--checkpoint-dir",
            chk.to_str().context("utf-8")?,
            "--checkpoint-interval",
            "1s",
            "--restart-attempts",
            "3",
            "--restart-delay",
            "0ms",
        ],
    )?)?;
    // tm-1 and tm-2 (first by id) run it; tm-2 dies once both run their tasks.
    let mut victim = tm2;
    tm1.wait_for("Received task", 2)?;
    victim.wait_for("Received task", 2)?;
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    victim.child.kill()?;
    tm3.wait_for("Received task", 2)?;
    line(
        "tm_kill_to_running",
        killed.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    run(weir, &["cancel", "-m", &rest, &id])?;
    drop(victim);
    drop(tm1);
    drop(tm3);
    drop(jm);
    Ok(())
}
