//! Compiled components by content hash: in memory for the life of the process, and on disk as
//! precompiled artifacts so a restart deserializes (~0.2 ms) instead of compiling (~35 ms for a
//! small component, PERF-NOTES).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component came to be in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled by Cranelift now.
    Compiled,
    /// Deserialized from the on-disk cache.
    DiskCache,
}

/// Hex SHA-256 of a component's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The on-disk half of the cache. Artifacts are native code: the directory must be as trusted as
/// the weir binary itself, since loading one runs what it holds.
pub struct DiskCache {
    dir: PathBuf,
    /// Distinguishes artifacts of engines with other settings or wasmtime versions, which
    /// cannot load each other's code.
    engine_tag: String,
}

impl DiskCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        DiskCache {
            dir,
            engine_tag: format!("{:016x}", h.finish()),
        }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_tag))
    }

    /// The cached component, if there is a usable artifact. A corrupt or incompatible artifact
    /// is ignored (and later overwritten): the cache can always be rebuilt from the source.
    pub fn get(&self, engine: &Engine, hash: &str) -> Option<Component> {
        // Read, not mmap: a mapped artifact that someone truncates or rewrites in place would
        // kill the process with SIGBUS the next time its code runs.
        let bytes = fs::read(self.path(hash)).ok()?;
        // SAFETY: the file was written by `put` below from `Component::serialize` of this
        // engine's configuration (the engine tag is in its name), in a directory that is as
        // trusted as the binary. wasmtime checks the header and version before using it.
        unsafe { Component::deserialize(engine, &bytes) }.ok()
    }

    /// Stores a compiled component, atomically (write then rename) so a crash never leaves a
    /// half-written artifact under the final name. Failure to cache is not an error.
    pub fn put(&self, hash: &str, component: &Component) {
        let Ok(bytes) = component.serialize() else {
            return;
        };
        let path = self.path(hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::create_dir_all(&self.dir)
            .and_then(|()| fs::write(&tmp, &bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}
