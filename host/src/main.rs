//! The `weir` command.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "A stream processor whose operators are wasm components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a benchmark and prints one `key=value` line per result.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// ns per record of a chain of three wasm operators, per record and batched, next to native.
    Chain(weir_host::bench::chain::ChainArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { which } => match which {
            BenchCommand::Chain(args) => weir_host::bench::chain::run(&args),
        },
    }
}
