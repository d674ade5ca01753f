//! `weir-bench`: what the wasm boundary costs, and what whole pipelines reach, on this machine.
//! Prints one `key=value` line per result. A binary of its own, so that building the `weir`
//! command (and a TaskManager) never builds the benchmark's guest.

mod chain;
mod cluster;
mod connectors;
mod ha;
mod languages;
mod native;
mod nexmark;
mod noisy;
mod pipelines;

/// The benchmark's guest, built by `build.rs`.
mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir-bench",
    version,
    about = "Benchmarks of weir; one `key=value` line per result"
)]
struct Cli {
    #[command(subcommand)]
    which: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// ns per record of a chain of three wasm operators, per record and batched, next to native.
    Chain(chain::ChainArgs),
    /// records/s and peak RSS of pipelines P1 and P2, wasm and native, at parallelism 1 and 2.
    Pipelines(pipelines::PipelinesArgs),
    /// A standalone cluster of processes: submit to running, a trivial job, failover, P2.
    Cluster(cluster::ClusterArgs),
    /// Tenant B's P2 alone and next to tenant A's hostile and heavy jobs.
    NoisyNeighbour(noisy::NoisyArgs),
    /// The Nexmark queries on generated events: events/s and peak RSS per query.
    Nexmark(nexmark::NexmarkArgs),
    /// An operator in Rust, C, Python and JavaScript: ns per record, start time, memory.
    Languages(languages::LanguagesArgs),
    /// Records/s through the Kafka, PostgreSQL and NATS connectors, against real servers.
    Connectors(connectors::ConnectorsArgs),
    /// Failover of the leading JobManager on etcd: kill -9 to the job running on the next.
    Ha(ha::HaArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().which {
        Bench::Chain(args) => chain::run(&args),
        Bench::Pipelines(args) => pipelines::run(&args),
        Bench::Cluster(args) => cluster::run_bench(&args),
        Bench::NoisyNeighbour(args) => noisy::run_bench(&args),
        Bench::Nexmark(args) => nexmark::run(&args),
        Bench::Languages(args) => languages::run_bench(&args),
        Bench::Connectors(args) => connectors::run_bench(&args),
        Bench::Ha(args) => ha::run_bench(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
