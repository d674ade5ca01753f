//! Job files: `weir package` makes one from a manifest, `weir run` and `weir info` take one as
//! they take a manifest (unpacked into a directory of its own for the time the command runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use weir_host::job::{VertexInput, VertexOutput, load_manifest, package};

/// A job file unpacked for the time a command runs; the directory goes with it.
pub struct Unpacked {
    dir: PathBuf,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The manifest to run for `path`: the path itself for a manifest; for a job file, the manifest
/// unpacked beside its components, and what keeps them until the command ends.
pub fn open(path: &Path) -> Result<(PathBuf, Option<Unpacked>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if !package::is_wasm(&bytes) {
        return Ok((path.to_path_buf(), None));
    }
    let name = path.display().to_string();
    let job = package::unpack(&name, &bytes)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("weir-job-{}-{nanos}", std::process::id()));
    let unpacked = Unpacked { dir: dir.clone() };
    let manifest = job.write_to(&name, &dir)?;
    Ok((manifest, Some(unpacked)))
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
pub fn info(args: InfoArgs) -> Result<()> {
    let (manifest_path, _unpacked) = open(&args.job)?;
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read `{}`", manifest_path.display()))?;
    // Unfilled placeholders name themselves, so a plan prints without its data paths.
    let mut vars: BTreeMap<String, String> = args.args.iter().cloned().collect();
    for name in text.split("${").skip(1).filter_map(|r| r.split_once('}')) {
        vars.entry(name.0.to_string())
            .or_insert_with(|| format!("${{{}}}", name.0));
    }
    let manifest = load_manifest(&manifest_path, &vars)?;
    let graph = manifest
        .job_graph(args.parallelism)
        .with_context(|| format!("job `{}`", args.job.display()))?;
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
