//! Jobs in one file: `weir package` makes a job file from a manifest, and `weir run` and `weir
//! info` take one as they take a manifest (unpacked into a directory of its own for the time the
//! command runs), or a component that carries its plan (asked for it in a sandbox).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_host::job::{
    Manifest, VertexInput, VertexOutput, load_manifest, manifest_from_plan, package,
};
use weir_host::wasm::{PlanLimits, StderrLog, WasmRuntime, describe_job};

/// A job file unpacked for the time a command runs; the directory goes with it.
pub struct Unpacked {
    dir: PathBuf,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A job as a command takes it: a manifest, a job file, or a component with a plan.
pub struct LoadedJob {
    pub manifest: Manifest,
    /// The manifest a component's plan gave, for `weir info`.
    pub plan_text: Option<String>,
    /// A job file's unpacked manifest and components, kept until the command ends.
    _unpacked: Option<Unpacked>,
}

/// Loads the job at `path` with the command line's `args`. A component is asked for its plan
/// (through `runtime`, made only then) under `plan_deadline`; its guests print to stderr.
pub fn load(
    path: &Path,
    args: &BTreeMap<String, String>,
    placeholders: Placeholders,
    runtime: impl FnOnce() -> Result<Arc<WasmRuntime>>,
    plan_deadline: Option<Duration>,
) -> Result<LoadedJob> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let filled = |text: &str| match placeholders {
        Placeholders::Fill => args.clone(),
        Placeholders::Keep => keeping_placeholders(text, args),
    };
    if !package::is_wasm(&bytes) {
        let vars = filled(&String::from_utf8_lossy(&bytes));
        return Ok(LoadedJob {
            manifest: load_manifest(path, &vars)?,
            plan_text: None,
            _unpacked: None,
        });
    }
    let name = path.display().to_string();
    match package::unpack(&name, &bytes) {
        Ok(job) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!("weir-job-{}-{nanos}", std::process::id()));
            let unpacked = Unpacked { dir: dir.clone() };
            let manifest_path = job.write_to(&name, &dir)?;
            Ok(LoadedJob {
                manifest: load_manifest(&manifest_path, &filled(&job.manifest))?,
                plan_text: None,
                _unpacked: Some(unpacked),
            })
        }
        Err(package::PackageError::OperatorComponent { .. }) => {
            let runtime = runtime()?;
            let component = runtime.load_bytes(&component_name(path), &bytes)?;
            let limits = PlanLimits {
                deadline: plan_deadline.unwrap_or(PlanLimits::default().deadline),
                ..PlanLimits::default()
            };
            let pairs: Vec<(String, String)> =
                args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let plan = describe_job(&runtime, &component, &pairs, limits, Arc::new(StderrLog))?;
            let vars = filled(&plan.manifest);
            let manifest = manifest_from_plan(&plan.manifest, path, &plan.operators, &vars)?;
            Ok(LoadedJob {
                manifest,
                plan_text: Some(plan.manifest),
                _unpacked: None,
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// What becomes of a `${name}` placeholder without an `--arg name=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// It is an error naming the argument (running a job).
    Fill,
    /// It stays as written (showing a job).
    Keep,
}

/// `args`, and every placeholder of `text` they leave unfilled filled with itself.
fn keeping_placeholders(text: &str, args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars = args.clone();
    for (name, _) in text.split("${").skip(1).filter_map(|r| r.split_once('}')) {
        vars.entry(name.to_string())
            .or_insert_with(|| format!("${{{name}}}"));
    }
    vars
}

fn component_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[derive(clap::Args)]
pub struct PackageArgs {
    /// The job manifest (TOML) to package with every component it names.
    manifest: PathBuf,
    /// The job file to write.
    #[arg(short, long)]
    output: PathBuf,
}

/// `weir package`: one `.wasm` file holding the manifest and its components.
pub fn package_job(args: PackageArgs) -> Result<()> {
    let bytes = package::package(&args.manifest)?;
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    eprintln!(
        "Packaged `{}` into `{}` ({} bytes)",
        args.manifest.display(),
        args.output.display(),
        bytes.len()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A job manifest or job file.
    job: PathBuf,
    /// Fills `${name}` in the manifest; repeatable (placeholders left unfilled print as they
    /// are).
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = crate::parse_arg)]
    args: Vec<(String, String)>,
    /// Parallelism of every node that does not set its own.
    #[arg(long, short)]
    parallelism: Option<u32>,
}

/// `weir info`: the job's plan (vertices, their chained nodes and parallelism, edges) and the
/// components it runs.
pub fn info(args: InfoArgs, cache_dir: Option<PathBuf>) -> Result<()> {
    let vars: BTreeMap<String, String> = args.args.iter().cloned().collect();
    // Unfilled placeholders name themselves, so a plan prints without its data paths.
    let job = load(
        &args.job,
        &vars,
        Placeholders::Keep,
        || Ok(Arc::new(plan_runtime(cache_dir)?)),
        None,
    )?;
    let graph = job
        .manifest
        .job_graph(args.parallelism)
        .with_context(|| format!("job `{}`", args.job.display()))?;
    if let Some(plan) = &job.plan_text {
        println!("# the plan of {}, as a manifest:", args.job.display());
        for line in plan.lines() {
            println!("#   {line}");
        }
    }
    println!("job {}", graph.name);
    for (i, v) in graph.vertices.iter().enumerate() {
        let input = match &v.input {
            VertexInput::Source(spec) => format!("source {spec:?}"),
            VertexInput::Edges(edges) => format!("edges {edges:?}"),
        };
        let output = match &v.output {
            VertexOutput::Sink(spec) => format!("sink {spec:?}"),
            VertexOutput::Edges(edges) => format!("edges {edges:?}"),
        };
        println!(
            "vertex {i} `{}` parallelism {}: {input} -> {output}",
            v.name, v.parallelism
        );
    }
    for (i, e) in graph.edges.iter().enumerate() {
        println!(
            "edge {i}: vertex {} -> vertex {} {:?}{}",
            e.source,
            e.target,
            e.partitioning,
            if e.second { " (second input)" } else { "" }
        );
    }
    let mut components = std::collections::BTreeSet::new();
    for v in &graph.vertices {
        for op in &v.operators {
            if let weir_host::job::OperatorImpl::Wasm {
                component,
                operator,
            } = &op.implementation
            {
                let bytes = std::fs::read(component)
                    .with_context(|| format!("cannot read `{}`", component.display()))?;
                components.insert(format!(
                    "operator `{}` = `{operator}` of {} ({} bytes, sha256 {})",
                    op.id,
                    component
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    bytes.len(),
                    weir_host::wasm::content_hash(&bytes)
                ));
            }
        }
    }
    for c in components {
        println!("{c}");
    }
    Ok(())
}

/// A wasm runtime for asking a component for its plan, its compiled code cached where `weir
/// run` caches it.
pub fn plan_runtime(cache_dir: Option<PathBuf>) -> Result<WasmRuntime> {
    Ok(WasmRuntime::new(weir_host::wasm::RuntimeConfig {
        cache_dir,
        ..weir_host::wasm::RuntimeConfig::default()
    })?)
}
