//! `weir-bench connectors`: records/s through each external connector, against real servers
//! the benchmark starts itself as the tests do (PostgreSQL, the tansu Kafka-protocol broker,
//! NATS): a Kafka topic into the discard sink, a sequence into Kafka and into PostgreSQL
//! (exactly once), a sequence into NATS and that stream back out. Every job checkpoints every
//! 100 ms at parallelism 2, so the exactly-once paths commit as they would in production.
//!
//! Output: one line per connector and direction, space-separated `key=value` pairs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weir_host::checkpoint::CheckpointConfig;
use weir_host::cluster::{JobOptions, MiniCluster, MiniClusterConfig, RestartStrategy};
use weir_host::job::parse_manifest;
use weir_host::runtime::task_executor::TaskExecutorConfig;
use weir_host::wasm::{RuntimeConfig, WasmRuntime};
use weir_test_servers::{Kafka, Nats, Postgres};

/// Options of `weir-bench connectors`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectorsArgs {
    /// Records per run.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Only these connectors (comma separated: kafka, postgres, nats).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Peak resident set size of this process in MiB, from /proc (Linux).
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Runs `manifest` with checkpoints every 100 ms; records/s over `records`.
fn run(cluster: &MiniCluster, manifest: &str, records: u64, dir: &Path) -> Result<f64> {
    // The peak reported is the job's: the input written before (a producer's queue, say)
    // does not count. Linux resets the high-water mark on writing 5 to `clear_refs`.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let graph = parse_manifest(manifest, &Default::default())
        .context("manifest")?
        .job_graph(None)
        .context("job graph")?;
    let options = JobOptions {
        checkpoints: Some(CheckpointConfig {
            dir: dir.to_path_buf(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(60),
            retained: 2,
        }),
        restart: RestartStrategy::None,
        ..JobOptions::default()
    };
    let result = cluster.run_job(&graph, &options).context("the job")?;
    let counted: u64 = result.tasks.iter().map(|(_, m)| m.records_out).sum();
    if counted != records {
        bail!("the sink took {counted} records, not {records}");
    }
    Ok(records as f64 / result.duration.as_secs_f64())
}

fn report(connector: &str, direction: &str, mode: &str, records_per_s: f64) {
    println!(
        "bench=connectors connector={connector} direction={direction} mode={mode} \
         records_per_s={records_per_s:.0} peak_rss_mib={}",
        peak_rss_mib().map_or("?".into(), |m| m.to_string())
    );
}

fn sequence(records: u64) -> String {
    format!(
        "[[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = {records}\n\
         format = \"text\"\nparallelism = 2\n"
    )
}

/// Runs the benchmark and prints its results.
pub fn run_bench(args: &ConnectorsArgs) -> Result<()> {
    let wanted = |c: &str| args.only.is_empty() || args.only.iter().any(|o| o == c);
    let runtime = Arc::new(WasmRuntime::new(RuntimeConfig::default())?);
    let cluster = MiniCluster::new(
        MiniClusterConfig {
            task_executor: TaskExecutorConfig {
                slots: 8,
                ..TaskExecutorConfig::default()
            },
            ..MiniClusterConfig::default()
        },
        runtime,
    );
    let dir = tempfile::tempdir().context("temp dir")?;
    let n = args.records;
    if wanted("kafka") {
        let kafka = Kafka::start();
        kafka.create_topic("in", 4);
        kafka.create_topic("out", 4);
        let lines: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        kafka.produce("in", 4, &refs);
        let brokers = kafka.brokers();
        let source = format!(
            "name = \"kafka-source\"\n[[source]]\nid = \"events\"\nkind = \"kafka\"\n\
             brokers = \"{brokers}\"\ntopic = \"in\"\nstop_at = \"latest\"\nparallelism = 2\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"events\"\nparallelism = 2\n"
        );
        report(
            "kafka",
            "source",
            "exactly-once",
            run(&cluster, &source, n, dir.path())?,
        );
        let sink = format!(
            "name = \"kafka-sink\"\n{}[[sink]]\nid = \"out\"\nkind = \"kafka\"\n\
             brokers = \"{brokers}\"\ntopic = \"out\"\ninput = \"numbers\"\nparallelism = 2\n",
            sequence(n)
        );
        report(
            "kafka",
            "sink",
            "exactly-once",
            run(&cluster, &sink, n, dir.path())?,
        );
    }
    if wanted("postgres") {
        let pg = Postgres::start();
        pg.execute("CREATE TABLE numbers (n bigint NOT NULL)");
        let sink = format!(
            "name = \"pg-sink\"\n{}[[sink]]\nid = \"out\"\nkind = \"postgres\"\nurl = \"{}\"\n\
             password_file = {:?}\ntable = \"numbers\"\ninput = \"numbers\"\nparallelism = 2\n",
            sequence(n),
            pg.url(),
            pg.password_file
        );
        let rate = run(&cluster, &sink, n, dir.path())?;
        // Committed, not only sent: the table holds every row once.
        let rows = pg.rows("SELECT count(*), count(DISTINCT n) FROM numbers");
        if rows != [format!("{n} {n}")] {
            bail!("the table holds {rows:?} (rows, distinct), not {n} of each");
        }
        report("postgres", "sink", "exactly-once", rate);
    }
    if wanted("nats") {
        let nats = Nats::start();
        nats.create_stream("NUMBERS", "numbers");
        let url = nats.url();
        let sink = format!(
            "name = \"nats-sink\"\n{}[[sink]]\nid = \"out\"\nkind = \"nats\"\nurl = \"{url}\"\n\
             subject = \"numbers\"\ninput = \"numbers\"\nparallelism = 2\n",
            sequence(n)
        );
        report(
            "nats",
            "sink",
            "exactly-once",
            run(&cluster, &sink, n, dir.path())?,
        );
        let source = format!(
            "name = \"nats-source\"\n[[source]]\nid = \"events\"\nkind = \"nats\"\nurl = \"{url}\"\n\
             stream = \"NUMBERS\"\nstop_at = \"latest\"\nparallelism = 2\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"events\"\nparallelism = 2\n"
        );
        report(
            "nats",
            "source",
            "exactly-once",
            run(&cluster, &source, n, dir.path())?,
        );
    }
    Ok(())
}
