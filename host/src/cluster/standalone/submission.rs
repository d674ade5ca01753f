//! A job as the CLI uploads it to the JobManager: its checked graph, the bytes of every
//! component it names (keyed by the path the graph names them by), and how it checkpoints and
//! restarts. The JobManager keeps the components in its job store and runs the graph with
//! their paths there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointConfig;
use crate::cluster::{JobOptions, RestartStrategy};
use crate::job::{JobGraph, OperatorImpl, SinkSpec, SourceSpec, VertexInput, VertexOutput};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSubmission {
    pub graph: JobGraph,
    /// (path as the graph names it, bytes)
    pub components: Vec<(PathBuf, Vec<u8>)>,
    /// Where checkpoints go and how often (`None`: no checkpoints).
    pub checkpoints: Option<(PathBuf, u64)>,
    pub restart_attempts: u32,
    pub restart_delay_ms: u64,
    /// A savepoint or checkpoint to start from (a path the JobManager reads).
    pub restore: Option<PathBuf>,
    pub allow_non_restored_state: bool,
}

/// A submission that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SubmissionError(String);

impl JobSubmission {
    /// The submission of `graph`, reading the component files it names. Relative paths of
    /// its file sources and sinks are made absolute here, where the submitter meant them, not
    /// on the TaskManagers.
    pub fn new(mut graph: JobGraph) -> Result<Self, SubmissionError> {
        let absolute = |path: &mut PathBuf| -> Result<(), SubmissionError> {
            *path = std::path::absolute(&*path).map_err(|e| {
                SubmissionError(format!("cannot resolve `{}`: {e}", path.display()))
            })?;
            Ok(())
        };
        for vertex in &mut graph.vertices {
            if let VertexInput::Source(SourceSpec::File { path }) = &mut vertex.input {
                absolute(path)?;
            }
            if let VertexOutput::Sink(SinkSpec::File { path }) = &mut vertex.output {
                absolute(path)?;
            }
        }
        let mut components: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for path in component_paths(&graph) {
            let bytes = std::fs::read(&path).map_err(|e| {
                SubmissionError(format!("cannot read component `{}`: {e}", path.display()))
            })?;
            components.push((path, bytes));
        }
        Ok(JobSubmission {
            graph,
            components,
            checkpoints: None,
            restart_attempts: 0,
            restart_delay_ms: 1000,
            restore: None,
            allow_non_restored_state: false,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, SubmissionError> {
        crate::codec::try_encode(self).map_err(|e| SubmissionError(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, SubmissionError> {
        crate::codec::decode_untrusted(bytes)
            .map_err(|e| SubmissionError(format!("not a job submission: {e}")))
    }

    /// Writes the components under `dir` and points the graph at them; checks that every
    /// component the graph names came with it.
    pub fn store(mut self, dir: &Path) -> Result<(JobGraph, JobOptions), SubmissionError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SubmissionError(format!("cannot create `{}`: {e}", dir.display())))?;
        let mut stored = Vec::new();
        for (path, bytes) in &self.components {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "component.wasm".into());
            let file = dir.join(format!("{}-{name}", crate::wasm::content_hash(bytes)));
            std::fs::write(&file, bytes)
                .map_err(|e| SubmissionError(format!("cannot store `{}`: {e}", file.display())))?;
            stored.push((path.clone(), file));
        }
        for vertex in &mut self.graph.vertices {
            for op in &mut vertex.operators {
                if let OperatorImpl::Wasm { component, .. } = &mut op.implementation {
                    let file = stored
                        .iter()
                        .find(|(p, _)| p == component)
                        .map(|(_, f)| f.clone())
                        .ok_or_else(|| {
                            SubmissionError(format!(
                                "operator `{}` names component `{}`, which the submission does not carry",
                                op.id,
                                component.display()
                            ))
                        })?;
                    *component = file;
                }
            }
        }
        let options = JobOptions {
            checkpoints: self
                .checkpoints
                .as_ref()
                .map(|(dir, interval_ms)| CheckpointConfig {
                    dir: dir.clone(),
                    interval: Duration::from_millis(*interval_ms),
                    timeout: Duration::from_secs(600),
                    retained: 3,
                }),
            restart: if self.restart_attempts == 0 {
                RestartStrategy::None
            } else {
                RestartStrategy::FixedDelay {
                    attempts: self.restart_attempts,
                    delay: Duration::from_millis(self.restart_delay_ms),
                }
            },
            restore: self.restore.clone(),
            allow_non_restored_state: self.allow_non_restored_state,
            tenant: None,
            job_id: None,
            checkpoint_storage: None,
            checkpoint_store: None,
        };
        Ok((self.graph, options))
    }
}

fn component_paths(graph: &JobGraph) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for vertex in &graph.vertices {
        for op in &vertex.operators {
            if let OperatorImpl::Wasm { component, .. } = &op.implementation
                && !paths.contains(component)
            {
                paths.push(component.clone());
            }
        }
    }
    paths
}
