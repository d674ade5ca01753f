//! Everything that touches wasmtime: the engine and its component cache, the store each operator
//! instance lives in, the host side of the `weir:stream` imports, and the user function the
//! runtime's stream operator drives. Nothing outside this module names a wasmtime type.

mod bindings;
mod cache;
mod engine;
mod error;
mod function;
mod host_impl;
mod limits;
mod plan;
mod spec;
mod stdio;
mod store;
mod waits;

pub use cache::{Origin, content_hash};
pub use engine::{Capabilities, LoadedComponent, RuntimeConfig, WasmRuntime, read_component};
pub use error::{FailureKind, LoadError, OperatorFailure};
pub use function::{OpenTimings, WasmFunction};
pub use limits::Limits;
pub use plan::{ComponentPlan, PlanError, PlanLimits, describe_job};
pub use spec::{ExecutionMode, OperatorSpec};
pub use stdio::{ECHOED_LINES, LogSink, StderrLog};

/// The WIT package version this host implements, as it appears in export names.
pub const WIT_VERSION: &str = "0.2.3";

/// The versions whose components this host loads: every 0.2.x up to its own (0.2.1 only
/// added an import, 0.2.2 and 0.2.3 optional exports).
pub const COMPATIBLE_WIT_VERSIONS: &[&str] = &["0.2.3", "0.2.2", "0.2.1", "0.2.0"];
