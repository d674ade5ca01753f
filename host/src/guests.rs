//! Paths of the guest components built from this repository by `build.rs` (examples, test
//! guests and the benchmark's operators), for the benchmark and the tests.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
