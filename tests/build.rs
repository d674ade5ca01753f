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
    // The word count in the other languages, built as their authors build them.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let c = out_dir.join("wordcount-c.wasm");
    weir_guest_build::c::build(&[root.join("examples/wordcount-c/wordcount.c")], &[], &c)
        .unwrap_or_else(|e| panic!("the C word count: {e} (bash .ci/setup installs clang)"));
    let python = out_dir.join("wordcount-python.wasm");
    weir_guest_build::python::build(
        &root.join("examples/wordcount-python/wordcount.py"),
        &python,
    )
    .unwrap_or_else(|e| {
        panic!("the Python word count: {e} (bash .ci/setup installs componentize-py)")
    });
    let js = out_dir.join("wordcount-js.wasm");
    weir_guest_build::js::build(&root.join("examples/wordcount-js/wordcount.js"), &js)
        .unwrap_or_else(|e| {
            panic!("the JavaScript word count: {e} (bash .ci/setup installs componentize-js)")
        });
    let mut consts = std::fs::read_to_string(out_dir.join("guests.rs")).expect("guests.rs");
    for (constant, path) in [
        ("WORDCOUNT_C", &c),
        ("WORDCOUNT_PYTHON", &python),
        ("WORDCOUNT_JS", &js),
    ] {
        consts.push_str(&format!(
            "/// A word count component built from another language.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("guests.rs"), consts).expect("write guests.rs");
}
