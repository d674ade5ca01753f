//! Shared set-up: one wasm runtime per test process, chain builders and an independent word
//! count to compare against.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use weir_framing::Record;
use weir_host::runtime::{ChainSpec, CollectingOutput, OperatorChain};
use weir_host::state::OperatorSnapshot;
use weir_host::stream::StreamError;
use weir_host::wasm::{
    ExecutionMode, LoadedComponent, LogSink, OperatorFailure, OperatorSpec, RuntimeConfig,
    WasmRuntime,
};

/// The process's one runtime, as in production.
pub fn runtime() -> &'static Arc<WasmRuntime> {
    static RUNTIME: OnceLock<Arc<WasmRuntime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(WasmRuntime::new(RuntimeConfig::default()).expect("wasm runtime")))
}

pub fn load(path: &str) -> Arc<LoadedComponent> {
    runtime()
        .load_file(Path::new(path))
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Opens a chain of `operators` of one component in `mode`, ending in a collecting output.
pub fn open_chain(
    component: &str,
    operators: &[&str],
    mode: ExecutionMode,
) -> Result<(OperatorChain, CollectingOutput), StreamError> {
    let specs = operators
        .iter()
        .map(|name| {
            let mut spec = OperatorSpec::new(*name);
            spec.mode = mode;
            spec
        })
        .collect();
    open_specs(component, specs)
}

pub fn open_specs(
    component: &str,
    specs: Vec<OperatorSpec>,
) -> Result<(OperatorChain, CollectingOutput), StreamError> {
    open_specs_restored(component, specs, None)
}

/// Opens a chain of `operators` of one component restored from `snapshots`.
pub fn restore_chain(
    component: &str,
    operators: &[&str],
    snapshots: &[OperatorSnapshot],
) -> Result<(OperatorChain, CollectingOutput), StreamError> {
    let specs = operators.iter().map(|n| OperatorSpec::new(*n)).collect();
    open_specs_restored(component, specs, Some(snapshots))
}

fn open_specs_restored(
    component: &str,
    specs: Vec<OperatorSpec>,
    snapshots: Option<&[OperatorSnapshot]>,
) -> Result<(OperatorChain, CollectingOutput), StreamError> {
    let loaded = load(component);
    let chain_specs = specs
        .into_iter()
        .map(|spec| ChainSpec {
            component: loaded.clone(),
            spec,
        })
        .collect();
    let out = CollectingOutput::new();
    let chain = OperatorChain::open(runtime(), chain_specs, Box::new(out.clone()), snapshots)?;
    Ok((chain, out))
}

/// The wasm operator's failure inside `err`, which must be one.
pub fn operator_failure(err: &StreamError) -> &OperatorFailure {
    err.failure::<OperatorFailure>()
        .unwrap_or_else(|| panic!("expected a wasm operator's failure, got {err}"))
}

/// Frames `values` as unkeyed records, `per_batch` to a buffer.
pub fn batches<'a>(values: impl IntoIterator<Item = &'a [u8]>, per_batch: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut n = 0;
    for v in values {
        if n == per_batch {
            out.push(Vec::new());
            n = 0;
        }
        Record::value(v).write_to(out.last_mut().expect("non-empty"));
        n += 1;
    }
    out
}

/// Word counts computed without any weir code: lowercase, split on every character that is not
/// alphanumeric, drop empty words.
pub fn independent_word_count(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut word = String::new();
    for c in text.to_lowercase().chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() {
            word.push(c);
        } else if !word.is_empty() {
            *counts.entry(std::mem::take(&mut word)).or_insert(0) += 1;
        }
    }
    counts
}

/// The text the word count tests read.
pub fn passage() -> &'static str {
    include_str!("../data/passage.txt")
}

/// A log sink that keeps lines, to check what guests printed.
#[derive(Default)]
pub struct CollectingLog {
    pub lines: Mutex<Vec<(String, String, String)>>,
}

impl LogSink for CollectingLog {
    fn line(&self, source: &str, stream: &str, line: &str) {
        self.lines
            .lock()
            .expect("log lock")
            .push((source.into(), stream.into(), line.into()));
    }
}
