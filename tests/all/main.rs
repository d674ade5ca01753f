//! One integration-test binary (as wasmtime does) so the host links once. Every test runs real
//! guest components that this crate's build script compiled from this repository.

mod chain;
/// Paths of the guests `build.rs` built.
mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
mod checkpoint;
mod event_time;
mod hostile;
mod job;
mod kafka;
mod languages;
mod loading;
mod nats;
mod nexmark;
mod postgres;
mod remote;
/// The external servers (shared with the benchmarks).
mod servers {
    pub use weir_test_servers::*;
}
mod support;
