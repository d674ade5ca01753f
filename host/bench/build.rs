//! Builds the operators of `weir-bench` (the bench-ops guest, and the hostile one the
//! noisy-neighbour benchmark runs).

use std::path::PathBuf;

use weir_guest_build::Guest;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/bench/ lives two levels below the workspace root");
    weir_guest_build::build(
        root,
        &[
            Guest {
                package: "bench-ops",
                stem: "bench_ops",
                constant: "BENCH_OPS",
            },
            Guest {
                package: "nexmark-queries",
                stem: "nexmark_queries",
                constant: "NEXMARK",
            },
            // The noisy neighbour's hostile jobs.
            Guest {
                package: "hostile",
                stem: "hostile",
                constant: "HOSTILE",
            },
        ],
    );
}
