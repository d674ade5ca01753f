//! The JobManager's job store (Flink's JobGraphStore, on local disk): each submitted job, while
//! it runs, as `<store>/<job id>/` holding its submission and its components. A JobManager that
//! starts finds the jobs a previous one left running there and runs them again, under the same
//! ids, from their latest complete checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::submission::JobSubmission;
use crate::cluster::{JobOptions, MiniCluster};
use crate::job::JobGraph;

const SUBMISSION: &str = "submission.bin";

/// Keeps `submission` (the bytes as uploaded) under `<store>/<id>/` and starts its job; the
/// directory goes when the job ends.
pub(super) fn submit(
    store: &Path,
    id: String,
    bytes: &[u8],
    cluster: &Arc<MiniCluster>,
) -> Result<String, String> {
    let submission = JobSubmission::decode(bytes).map_err(|e| e.to_string())?;
    let dir = store.join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let (graph, options) = match submission.store(&dir) {
        Ok(stored) => stored,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.to_string());
        }
    };
    // Written last and atomically: a directory without it is an upload that never finished.
    let temp = dir.join(format!("{SUBMISSION}.partial"));
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, dir.join(SUBMISSION)))
        .map_err(|e| format!("cannot keep the job in `{}`: {e}", dir.display()))?;
    start(dir, id, graph, options, cluster)
}

fn start(
    dir: PathBuf,
    id: String,
    graph: JobGraph,
    options: JobOptions,
    cluster: &Arc<MiniCluster>,
) -> Result<String, String> {
    let owner = cluster.clone();
    cluster
        .start_job_as(
            id,
            graph,
            options,
            Box::new(move |_| {
                owner.forget_components_under(&dir);
                let _ = std::fs::remove_dir_all(&dir);
            }),
        )
        .map_err(|e| format!("cannot start the job: {e}"))
}

/// Runs again every job the store holds (a previous JobManager's, which never ended): from its
/// latest complete checkpoint if it took one, else from the start.
pub(super) fn recover(store: &Path, cluster: &Arc<MiniCluster>) {
    let Ok(entries) = std::fs::read_dir(store) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        let Ok(bytes) = std::fs::read(dir.join(SUBMISSION)) else {
            // An upload that never finished, or not ours.
            if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            continue;
        };
        let recovered = JobSubmission::decode(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|s| s.store(&dir).map_err(|e| e.to_string()));
        let (graph, mut options) = match recovered {
            Ok(job) => job,
            Err(e) => {
                eprintln!(
                    "warning: cannot recover job {id} from `{}`: {e}",
                    dir.display()
                );
                continue;
            }
        };
        if let Some(config) = &options.checkpoints {
            let job_dir = config.dir.join(&graph.name);
            let complete = crate::checkpoint::storage::checkpoint_dirs(&job_dir)
                .iter()
                .any(|(_, d)| d.join("_metadata").exists());
            if complete {
                options.restore = Some(job_dir);
            }
        }
        match start(dir, id.clone(), graph, options, cluster) {
            Ok(_) => eprintln!("Recovered JobGraph {id}"),
            Err(e) => eprintln!("warning: cannot recover job {id}: {e}"),
        }
    }
}
