//! The weir runtime: Apache Flink's runtime architecture, in Rust, for operators that are
//! WebAssembly components. See `docs/architecture.md` for the map of modules.

pub mod checkpoint;
pub mod cluster;
mod codec;
pub mod connectors;
pub mod job;
mod layers;
pub mod metrics;
pub mod network;
pub mod runtime;
pub mod state;
pub mod stream;
pub mod wasm;
