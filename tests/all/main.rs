//! One integration-test binary (as wasmtime does) so the host links once. Every test runs real
//! guest components that `weir-host`'s build script compiled from this repository.

mod chain;
mod checkpoint;
mod hostile;
mod job;
mod loading;
mod support;
