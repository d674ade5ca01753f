//! The one wasm engine of a process: its configuration, the epoch ticker that enforces call
//! deadlines, the linker with weir's imports, and the component cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine};

use super::bindings::Job;
use super::bindings::exports::weir::stream::{batch, job_plan, operator, two_input};
use super::cache::{DiskCache, Origin, content_hash};
use super::error::LoadError;
use super::store::OperatorStore;
use super::{COMPATIBLE_WIT_VERSIONS, WIT_VERSION};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most native stack a guest may use. Task threads have a larger stack than this.
    pub max_wasm_stack: usize,
    /// Granularity of call deadlines.
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// Capabilities a job grants its guests. Everything is denied unless granted: no files,
/// sockets, environment or arguments are ever given; clocks read zero and randomness is a
/// fixed sequence per subtask unless granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// Real wall-clock and monotonic clocks.
    pub clocks: bool,
    /// Real randomness (`wasi:random`); without it a guest draws a sequence fixed by its job
    /// and subtask, so a replay after a failure draws the same numbers.
    #[serde(default)]
    pub random: bool,
}

/// A component ready to instantiate: compiled, checked against the `weir:stream` world, linked.
pub struct LoadedComponent {
    /// File name (or given name) of the component, for messages.
    pub name: String,
    /// Hex SHA-256 of its bytes.
    pub hash: String,
    /// Whether it exports the batched fast path.
    pub has_batch: bool,
    /// How it was obtained, and how long that took.
    pub origin: Origin,
    pub load_time: Duration,
    pub(crate) pre: InstancePre<OperatorStore>,
    pub(crate) operator_indices: operator::GuestIndices,
    pub(crate) batch_indices: Option<batch::GuestIndices>,
    /// The second input's exports, if the component has them (WIT 0.2.2).
    pub(crate) two_input_indices: Option<two_input::GuestIndices>,
    /// The job plan's exports, if the component has them (WIT 0.2.3).
    pub(crate) plan_indices: Option<job_plan::GuestIndices>,
}

impl LoadedComponent {
    /// Whether the component exports a job plan (it may still answer that it has none).
    pub fn exports_plan(&self) -> bool {
        self.plan_indices.is_some()
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("has_batch", &self.has_batch)
            .field("origin", &self.origin)
            .finish()
    }
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, LoadError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The wasm side of a process: create one and share it.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<OperatorStore>,
    disk: Option<DiskCache>,
    memory: Mutex<HashMap<String, Arc<LoadedComponent>>>,
    epoch_tick: Duration,
    _ticker: EpochTicker,
}

impl WasmRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            // Without this every synchronous component call pays ~300 ns of async-task
            // bookkeeping (PERF-NOTES); weir calls guests synchronously.
            .concurrency_support(false);
        // `WEIR_PERF_MAP=1` writes /tmp/perf-<pid>.map so `perf report` can name guest
        // functions; for profiling only, it costs nothing when unset.
        if std::env::var_os("WEIR_PERF_MAP").is_some_and(|v| v == "1") {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Job::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        super::waits::guard_clock_waits(&mut linker)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let disk = config.cache_dir.map(|dir| DiskCache::new(dir, &engine));
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(WasmRuntime {
            engine,
            linker,
            disk,
            memory: Mutex::new(HashMap::new()),
            epoch_tick: config.epoch_tick,
            _ticker: ticker,
        })
    }

    pub(crate) fn epoch_tick(&self) -> Duration {
        self.epoch_tick
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A component loaded before, by the hex SHA-256 of its bytes (its blob key).
    pub fn loaded(&self, hash: &str) -> Option<Arc<LoadedComponent>> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    /// Loads the component at `path`.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedComponent>, LoadError> {
        let (name, bytes) = read_component(path)?;
        self.load_bytes(&name, &bytes)
    }

    /// Loads a component from its bytes; `name` is used in messages. Compiles it only if no
    /// component with the same content was loaded or cached before.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedComponent>, LoadError> {
        let hash = content_hash(bytes);
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = memory.get(&hash) {
            return Ok(loaded.clone());
        }
        check_header(name, bytes)?;
        let started = Instant::now();
        let (component, origin) = match self.disk.as_ref().and_then(|d| d.get(&self.engine, &hash))
        {
            Some(c) => (c, Origin::DiskCache),
            None => {
                let c = Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile {
                    component: name.to_string(),
                    reason: format!("{e:#}"),
                })?;
                if let Some(disk) = &self.disk {
                    disk.put(&hash, &c);
                }
                (c, Origin::Compiled)
            }
        };
        let load_time = started.elapsed();
        let loaded = Arc::new(self.link(name, hash.clone(), component, origin, load_time)?);
        memory.insert(hash, loaded.clone());
        Ok(loaded)
    }

    fn link(
        &self,
        name: &str,
        hash: String,
        component: Component,
        origin: Origin,
        load_time: Duration,
    ) -> Result<LoadedComponent, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let version = COMPATIBLE_WIT_VERSIONS
            .iter()
            .find(|v| exports.contains(&format!("weir:stream/operator@{v}")));
        let Some(version) = version else {
            if let Some(other) = exports
                .iter()
                .find(|e| e.starts_with("weir:stream/operator@"))
            {
                return Err(LoadError::WrongVersion {
                    component: name.to_string(),
                    found: other.rsplit('@').next().unwrap_or_default().to_string(),
                    expected: WIT_VERSION,
                });
            }
            return Err(LoadError::WrongWorld {
                component: name.to_string(),
                expected: WIT_VERSION,
                exports: if exports.is_empty() {
                    "none".into()
                } else {
                    exports.join(", ")
                },
            });
        };
        let has_batch = exports.contains(&format!("weir:stream/batch@{version}"));
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::unsupported_import(name, format!("{e:#}")))?;
        let broken = |e: wasmtime::Error| LoadError::WrongWorld {
            component: name.to_string(),
            expected: WIT_VERSION,
            exports: format!("{} (with mismatched signatures: {e:#})", exports.join(", ")),
        };
        let operator_indices = operator::GuestIndices::new(&pre).map_err(broken)?;
        let batch_indices = if has_batch {
            Some(batch::GuestIndices::new(&pre).map_err(broken)?)
        } else {
            None
        };
        let two_input_indices = if exports.contains(&format!("weir:stream/two-input@{version}")) {
            Some(two_input::GuestIndices::new(&pre).map_err(broken)?)
        } else {
            None
        };
        let plan_indices = if exports.contains(&format!("weir:stream/job-plan@{version}")) {
            Some(job_plan::GuestIndices::new(&pre).map_err(broken)?)
        } else {
            None
        };
        Ok(LoadedComponent {
            name: name.to_string(),
            hash,
            has_batch,
            origin,
            load_time,
            pre,
            operator_indices,
            batch_indices,
            two_input_indices,
            plan_indices,
        })
    }
}

/// The name a component file goes by in messages (its file name), and its bytes.
pub fn read_component(path: &Path) -> Result<(String, Vec<u8>), LoadError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
        component: path.display().to_string(),
        error,
    })?;
    Ok((name, bytes))
}

/// Tells a core module or a non-wasm file from a component before Cranelift sees it, so the
/// error says what the file is.
fn check_header(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    let not = |reason: &str| LoadError::NotAComponent {
        component: name.to_string(),
        reason: reason.to_string(),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not("the file does not start with the wasm magic bytes"));
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    match u16::from_le_bytes([bytes[6], bytes[7]]) {
        1 => Ok(()),
        0 => Err(not(
            "it is a core wasm module; build the operator for wasm32-wasip2 (or wrap the module \
             with `wasm-tools component new`)",
        )),
        layer => Err(not(&format!("unknown wasm layer {layer}"))),
    }
}
