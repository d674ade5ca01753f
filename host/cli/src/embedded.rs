//! `weir run` on the embedded mini-cluster: the job runs on its own thread as a JobManager's
//! would, a progress line follows it on a terminal (checkpointed or not), and with
//! `--web-port` the REST endpoint, the web UI and `/metrics` serve it while it runs.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_host::cluster::insight::JobInsight;
use weir_host::cluster::rest::{self, EmbeddedView};
use weir_host::cluster::{JobFailure, JobOptions, JobResult, MiniCluster};
use weir_host::job::JobGraph;

/// The web server of a `weir run --web-port`, serving until dropped.
struct WebServer {
    _runtime: tokio::runtime::Runtime,
}

impl WebServer {
    fn start(cluster: &Arc<MiniCluster>, port: u16) -> Result<(Self, String)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("web")
            .enable_all()
            .build()
            .context("starting the web server")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the web UI"))?;
        let address = listener.local_addr()?.to_string();
        let view = Arc::new(EmbeddedView {
            cluster: cluster.clone(),
        });
        runtime.spawn(rest::serve(listener, cluster.clone(), view));
        Ok((WebServer { _runtime: runtime }, address))
    }
}

/// Runs `graph` to its end on `cluster`.
pub fn run(
    cluster: &Arc<MiniCluster>,
    graph: JobGraph,
    options: JobOptions,
    web_port: Option<u16>,
) -> Result<Result<JobResult, JobFailure>> {
    let web = web_port
        .map(|port| WebServer::start(cluster, port))
        .transpose()?;
    let (ended, outcome) = mpsc::channel();
    let id = cluster
        .start_job(
            graph,
            options,
            Box::new(move |result| {
                let _ = ended.send(result);
            }),
        )
        .context("cannot start the job")?;
    if let Some((_, address)) = &web {
        eprintln!("Web UI: http://{address}/#/job/{id}");
    }
    let done = Arc::new(AtomicBool::new(false));
    let progress = match cluster.job_insight(&id) {
        Some(insight) if std::io::stderr().is_terminal() => {
            let done = done.clone();
            Some(std::thread::spawn(move || show_progress(&insight, &done)))
        }
        _ => None,
    };
    let result = outcome
        .recv()
        .context("the job's thread ended without a result")?;
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    Ok(result)
}

/// Records read by the sources and written by the sinks, and checkpoints completed so far.
fn progress_of(insight: &JobInsight) -> (u64, u64, u64) {
    let Some(plan) = insight.plan() else {
        return (0, 0, 0);
    };
    let now = insight.tasks_now();
    let (mut read, mut written) = (0, 0);
    for (task, totals, _) in &now.tasks {
        let Some(vertex) = plan.vertices.get(task.vertex) else {
            continue;
        };
        if vertex.source {
            read += totals.records_in;
        }
        if vertex.sink {
            written += totals.records_out;
        }
    }
    (read, written, insight.checkpoints.summary().completed)
}

/// One line on the terminal, rewritten every second: records in and out, their rates, and
/// the checkpoints completed.
fn show_progress(insight: &JobInsight, done: &AtomicBool) {
    let started = Instant::now();
    let mut last = ((0u64, 0u64, 0u64), Duration::ZERO);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = started.elapsed();
        if elapsed - last.1 < Duration::from_secs(1) {
            continue;
        }
        let now = progress_of(insight);
        let secs = (elapsed - last.1).as_secs_f64();
        let checkpoints = if now.2 > 0 {
            format!("  checkpoints {}", now.2)
        } else {
            String::new()
        };
        eprint!(
            "\r{:>8.1} s  in {} ({:.0}/s)  out {} ({:.0}/s){checkpoints}   ",
            elapsed.as_secs_f64(),
            now.0,
            now.0.saturating_sub(last.0.0) as f64 / secs,
            now.1,
            now.1.saturating_sub(last.0.1) as f64 / secs
        );
        last = (now, elapsed);
    }
    eprint!("\r\x1b[2K");
}
