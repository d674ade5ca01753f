//! The weir runtime: Apache Flink's runtime architecture, in Rust, for operators that are
//! WebAssembly components. See `docs/architecture.md` for the map of modules.

pub mod bench;
pub mod checkpoint;
pub mod cluster;
mod codec;
pub mod connectors;
pub mod guests;
pub mod job;
pub mod metrics;
pub mod native;
pub mod network;
pub mod runtime;
pub mod state;
pub mod wasm;
