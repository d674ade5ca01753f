//! The weir runtime: Apache Flink's runtime architecture, in Rust, for operators that are
//! WebAssembly components. See `docs/architecture.md` for the map of modules.

pub mod bench;
pub mod guests;
pub mod runtime;
pub mod state;
pub mod wasm;
