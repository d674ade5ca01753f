//! Checkpoint statistics of a job across its attempts (Flink's CheckpointStatsTracker): what
//! the REST endpoint, the web UI and the metrics report. The coordinator of each attempt writes
//! them; readers copy them out.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Checkpoints kept in the history (Flink's `web.checkpoints.history` default).
const HISTORY: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed,
}

/// One checkpoint or savepoint, as the history shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckpointRecord {
    pub id: u64,
    pub status: CheckpointStatus,
    pub savepoint: bool,
    /// Milliseconds since the Unix epoch.
    pub trigger_timestamp: u64,
    /// From trigger to the last acknowledgement (so far, while in progress).
    pub end_to_end_duration_ms: u64,
    /// Bytes of state written.
    pub state_size: u64,
    /// The longest any task waited for its barriers to align.
    pub alignment_ms: u64,
    pub acknowledged: usize,
    pub tasks: usize,
    pub path: PathBuf,
    pub failure: Option<String>,
}

/// The checkpoint a job (attempt) was restored from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoredCheckpoint {
    pub id: u64,
    pub path: PathBuf,
    pub restore_timestamp: u64,
}

/// A copy of the statistics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CheckpointSummary {
    pub triggered: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub restored: u64,
    /// Newest first.
    pub history: Vec<CheckpointRecord>,
    pub latest_completed: Option<CheckpointRecord>,
    pub latest_failed: Option<CheckpointRecord>,
    pub latest_restored: Option<RestoredCheckpoint>,
}

#[derive(Debug, Default)]
pub struct CheckpointStats {
    state: Mutex<CheckpointSummary>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CheckpointStats {
    fn with<T>(&self, f: impl FnOnce(&mut CheckpointSummary) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn summary(&self) -> CheckpointSummary {
        self.with(|s| s.clone())
    }

    /// Checkpoint `id` was triggered, to be acknowledged by `tasks` tasks.
    pub fn triggered(&self, id: u64, savepoint: bool, tasks: usize, path: &Path) {
        self.with(|s| {
            s.triggered += 1;
            s.in_progress += 1;
            s.history.insert(
                0,
                CheckpointRecord {
                    id,
                    status: CheckpointStatus::InProgress,
                    savepoint,
                    trigger_timestamp: now_ms(),
                    end_to_end_duration_ms: 0,
                    state_size: 0,
                    alignment_ms: 0,
                    acknowledged: 0,
                    tasks,
                    path: path.to_path_buf(),
                    failure: None,
                },
            );
            s.history.truncate(HISTORY);
        });
    }

    /// A task acknowledged checkpoint `id` with `bytes` of state after aligning for
    /// `alignment`.
    pub fn acknowledged(&self, id: u64, bytes: u64, alignment: Duration) {
        self.with(|s| {
            if let Some(r) = s.history.iter_mut().find(|r| r.id == id) {
                r.acknowledged += 1;
                r.state_size += bytes;
                r.alignment_ms = r.alignment_ms.max(alignment.as_millis() as u64);
                r.end_to_end_duration_ms = now_ms().saturating_sub(r.trigger_timestamp);
            }
        });
    }

    /// Checkpoint `id` ended: completed, or failed for `failure`.
    pub fn ended(&self, id: u64, failure: Option<&str>) {
        self.with(|s| {
            s.in_progress = s.in_progress.saturating_sub(1);
            let Some(r) = s.history.iter_mut().find(|r| r.id == id) else {
                return;
            };
            r.end_to_end_duration_ms = now_ms().saturating_sub(r.trigger_timestamp);
            match failure {
                None => {
                    r.status = CheckpointStatus::Completed;
                    let r = r.clone();
                    s.completed += 1;
                    s.latest_completed = Some(r);
                }
                Some(reason) => {
                    r.status = CheckpointStatus::Failed;
                    r.failure = Some(reason.to_string());
                    let r = r.clone();
                    s.failed += 1;
                    s.latest_failed = Some(r);
                }
            }
        });
    }

    /// An attempt ended with checkpoints in flight: they will not complete.
    pub fn abandon_in_progress(&self, reason: &str) {
        let open: Vec<u64> = self.with(|s| {
            s.history
                .iter()
                .filter(|r| r.status == CheckpointStatus::InProgress)
                .map(|r| r.id)
                .collect()
        });
        open.into_iter().for_each(|id| self.ended(id, Some(reason)));
    }

    /// The job (an attempt of it) was restored from checkpoint `id` at `path`.
    pub fn restored(&self, id: u64, path: &Path) {
        self.with(|s| {
            s.restored += 1;
            s.latest_restored = Some(RestoredCheckpoint {
                id,
                path: path.to_path_buf(),
                restore_timestamp: now_ms(),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_latest_and_a_bounded_history_follow_the_checkpoints() {
        let stats = CheckpointStats::default();
        stats.triggered(1, false, 2, Path::new("/c/chk-1"));
        stats.acknowledged(1, 100, Duration::from_millis(3));
        stats.acknowledged(1, 50, Duration::from_millis(7));
        stats.ended(1, None);
        stats.triggered(2, false, 2, Path::new("/c/chk-2"));
        stats.ended(2, Some("timed out"));
        stats.triggered(3, true, 2, Path::new("/s/savepoint-1"));
        let s = stats.summary();
        assert_eq!(
            (s.triggered, s.in_progress, s.completed, s.failed),
            (3, 1, 1, 1)
        );
        let done = s.latest_completed.expect("completed");
        assert_eq!(
            (
                done.id,
                done.state_size,
                done.alignment_ms,
                done.acknowledged
            ),
            (1, 150, 7, 2)
        );
        assert_eq!(
            s.latest_failed.expect("failed").failure.as_deref(),
            Some("timed out")
        );
        assert_eq!(
            s.history.iter().map(|r| r.id).collect::<Vec<_>>(),
            [3, 2, 1]
        );
        stats.abandon_in_progress("the attempt failed");
        assert_eq!(stats.summary().failed, 2);
        for id in 4..30 {
            stats.triggered(id, false, 1, Path::new("/c"));
        }
        assert_eq!(stats.summary().history.len(), HISTORY);
        stats.restored(1, Path::new("/c/chk-1"));
        assert_eq!(stats.summary().latest_restored.expect("restored").id, 1);
    }
}
