//! Benchmarks behind `weir bench`.

pub mod chain;
pub mod pipelines;
