//! Builds the guests the end-to-end tests run (the examples and the test guests).

use std::path::PathBuf;

use weir_guest_build::Guest;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root");
    let guest = |package, stem, constant| Guest {
        package,
        stem,
        constant,
    };
    weir_guest_build::build(
        root,
        &[
            guest("wordcount", "wordcount", "WORDCOUNT"),
            guest("stateless-chain", "stateless_chain", "STATELESS_CHAIN"),
            guest("nexmark-queries", "nexmark_queries", "NEXMARK"),
            guest("hostile", "hostile", "HOSTILE"),
            guest("timers", "timers", "TIMERS"),
            guest("bench-ops", "bench_ops", "BENCH_OPS"),
            guest("other-world", "other_world", "OTHER_WORLD"),
            guest("wrong-version", "wrong_version", "WRONG_VERSION"),
            guest("previous-wit", "previous_wit", "PREVIOUS_WIT"),
        ],
    );
}
