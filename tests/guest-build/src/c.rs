//! Builds an operator component from C sources with the weir C SDK: clang (with wasi-libc)
//! compiles the sources, the SDK and its vendored bindings into a core module; `wit-component`
//! makes it a component, with WASI preview 1 (which wasi-libc's stdio calls) adapted to the
//! preview 2 the host links. The SDK's files are carried in this crate, so a C author needs only
//! clang and wasi-libc (Debian: `clang lld wasi-libc libclang-rt-dev-wasm32`).

use std::path::{Path, PathBuf};
use std::process::Command;

const WEIR_H: &str = include_str!("../../../guest-sdk/c/weir.h");
const WEIR_C: &str = include_str!("../../../guest-sdk/c/weir.c");
const STATE_CACHE_H: &str = include_str!("../../../guest-sdk/c/state_cache.h");
const STATE_CACHE_C: &str = include_str!("../../../guest-sdk/c/state_cache.c");
const JOB_H: &str = include_str!("../../../guest-sdk/c/bindings/job.h");
const JOB_C: &str = include_str!("../../../guest-sdk/c/bindings/job.c");
const JOB_TYPE: &[u8] = include_bytes!("../../../guest-sdk/c/bindings/job_component_type.o");

/// The clang that compiles for `wasm32-wasi`: `$WEIR_CLANG`, else `clang` on the path.
fn clang() -> String {
    std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang".into())
}

/// Compiles `sources` (C files of operators written against `weir.h`) into the component
/// `output`. `include` directories are searched for headers after the SDK's own.
pub fn build(sources: &[PathBuf], include: &[PathBuf], output: &Path) -> Result<(), String> {
    if sources.is_empty() {
        return Err("no C sources to build".into());
    }
    let sdk = temp_dir("weir-c-sdk")?;
    let result = build_in(&sdk, sources, include, output);
    let _ = std::fs::remove_dir_all(&sdk);
    result
}

fn build_in(
    sdk: &Path,
    sources: &[PathBuf],
    include: &[PathBuf],
    output: &Path,
) -> Result<(), String> {
    let write = |name: &str, bytes: &[u8]| {
        let path = sdk.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<PathBuf, String>(path)
    };
    write("weir.h", WEIR_H.as_bytes())?;
    let weir_c = write("weir.c", WEIR_C.as_bytes())?;
    write("state_cache.h", STATE_CACHE_H.as_bytes())?;
    let state_cache_c = write("state_cache.c", STATE_CACHE_C.as_bytes())?;
    write("bindings/job.h", JOB_H.as_bytes())?;
    let job_c = write("bindings/job.c", JOB_C.as_bytes())?;
    let job_type = write("bindings/job_component_type.o", JOB_TYPE)?;
    let core = sdk.join("core.wasm");
    let mut cmd = Command::new(clang());
    cmd.args([
        "--target=wasm32-wasi",
        "-mexec-model=reactor",
        "-O3",
        // The SDK's per-record calls inline into the operator's loop.
        "-flto",
        "-std=c11",
        "-Wall",
        "-Wno-unused-function",
    ])
    .arg("-I")
    .arg(sdk);
    for dir in include {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(sources)
        .arg(&weir_c)
        .arg(&state_cache_c)
        .arg(&job_c)
        .arg(&job_type)
        .arg("-o")
        .arg(&core);
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run `{}` ({e}); the C SDK needs clang and wasi-libc (Debian: apt-get install \
             clang lld wasi-libc libclang-rt-dev-wasm32)",
            clang()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "clang failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let module = std::fs::read(&core).map_err(|e| format!("{}: {e}", core.display()))?;
    let component = componentize(&module)?;
    std::fs::write(output, component).map_err(|e| format!("{}: {e}", output.display()))
}

/// A component of the core module `module`, whose `component-type` section (from the
/// bindings' object file) names the world it implements.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|e| {
            e.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|e| e.encode())
        .map_err(|e| format!("cannot make a component of the compiled module: {e:#}"))
}

/// A fresh directory under the system's temp directory.
pub(crate) fn temp_dir(prefix: &str) -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
