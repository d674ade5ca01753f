//! Components that are not weir operators are refused at load time with an error that says
//! what they are; compiled components are cached in memory and on disk.

use std::path::Path;

use crate::guests;
use weir_host::wasm::{LoadError, Origin, RuntimeConfig, WasmRuntime};

use crate::support::*;

#[test]
fn component_of_another_world_is_not_a_weir_operator() {
    let err = runtime()
        .load_file(Path::new(guests::OTHER_WORLD))
        .expect_err("other world");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("other_world.wasm")
            && text.contains("weir:stream/operator@0.2.3")
            && text.contains("add"),
        "{text}"
    );
}

#[test]
fn a_component_built_against_the_previous_wit_still_loads_and_runs() {
    let loaded = runtime()
        .load_file(Path::new(guests::PREVIOUS_WIT))
        .expect("a 0.2.1 component loads");
    assert!(!loaded.has_batch, "it exports no batch interface");
    let (mut chain, out) = open_chain(
        guests::PREVIOUS_WIT,
        &["upper"],
        weir_host::wasm::ExecutionMode::Batched,
    )
    .expect("open");
    chain
        .process_record(weir_framing::Record::value(b"weir"))
        .expect("process");
    assert_eq!(out.take_records()[0].value, b"WEIR");
}

#[test]
fn component_of_another_weir_version_names_both_versions() {
    let err = runtime()
        .load_file(Path::new(guests::WRONG_VERSION))
        .expect_err("0.3.0");
    match &err {
        LoadError::WrongVersion {
            found, expected, ..
        } => {
            assert_eq!((found.as_str(), *expected), ("0.3.0", "0.2.3"));
        }
        other => panic!("expected a version error, got {other}"),
    }
}

#[test]
fn core_module_is_not_a_component() {
    // The smallest valid core module: magic and version 1.
    let err = runtime()
        .load_bytes("plain.wasm", b"\0asm\x01\0\0\0")
        .expect_err("core module");
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err}");
    assert!(err.to_string().contains("core wasm module"), "{err}");
}

#[test]
fn arbitrary_bytes_are_not_a_component() {
    let err = runtime()
        .load_bytes("notes.txt", b"hello, world")
        .expect_err("text");
    assert!(
        err.to_string()
            .contains("`notes.txt` is not a wasm component"),
        "{err}"
    );
    let truncated = std::fs::read(guests::WORDCOUNT).expect("read");
    let err = runtime()
        .load_bytes("truncated.wasm", &truncated[..truncated.len() / 2])
        .expect_err("truncated");
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = runtime()
        .load_file(Path::new("no/such/operator.wasm"))
        .expect_err("missing");
    assert!(err.to_string().contains("no/such/operator.wasm"), "{err}");
}

#[test]
fn components_are_compiled_once_and_cached_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = std::fs::read(guests::STATELESS_CHAIN).expect("read");
    let first = WasmRuntime::new(config()).expect("runtime");
    let compiled = first.load_bytes("chain.wasm", &bytes).expect("compile");
    assert_eq!(compiled.origin, Origin::Compiled);
    let again = first.load_bytes("chain.wasm", &bytes).expect("memory");
    assert!(std::sync::Arc::ptr_eq(&compiled, &again));

    // A new process (runtime) finds the artifact on disk.
    let second = WasmRuntime::new(config()).expect("runtime");
    assert_eq!(
        second
            .load_bytes("chain.wasm", &bytes)
            .expect("disk")
            .origin,
        Origin::DiskCache
    );

    // A corrupt artifact is ignored and replaced.
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt");
    }
    let third = WasmRuntime::new(config()).expect("runtime");
    assert_eq!(
        third
            .load_bytes("chain.wasm", &bytes)
            .expect("recompile")
            .origin,
        Origin::Compiled
    );
    let fourth = WasmRuntime::new(config()).expect("runtime");
    assert_eq!(
        fourth
            .load_bytes("chain.wasm", &bytes)
            .expect("disk")
            .origin,
        Origin::DiskCache
    );
}
