//! Benchmarks behind `weir bench`.

pub mod chain;
