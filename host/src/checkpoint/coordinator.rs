//! The checkpoint coordinator of a running job (Flink's CheckpointCoordinator), on a thread of
//! its own:
//!
//! 1. every interval, when no checkpoint is in flight and no task has finished, it creates
//!    `chk-<n>/` and asks the source tasks to trigger checkpoint n (they snapshot their position
//!    and chains and send barrier n downstream); sources that have ended take part too;
//! 2. each task acknowledges with the handles of the state files it wrote;
//! 3. with every task's acknowledgement it writes `_metadata` (the checkpoint is complete),
//!    tells the tasks (transactional sinks commit) and deletes checkpoints beyond the retained
//!    count;
//! 4. a checkpoint not complete within the timeout, or declined by a task, is abandoned and its
//!    directory deleted;
//! 5. once every source has ended its input, it triggers the final checkpoint at once (not at
//!    the next interval): its barriers follow every record, so it covers all output; its
//!    completion lets the tasks finish. A final checkpoint abandoned three times in a row
//!    fails the job rather than leaving it waiting.
//!
//! The checkpoint a job was restored from is never deleted (Flink's NO_CLAIM mode): the job
//! does not own it, and a restart before the first new checkpoint needs it.
//!
//! Savepoints take the same path, written to a directory the requester names and never deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::storage::{
    CheckpointMetadata, SourceState, StateHandle, checkpoint_dirs, write_metadata,
};

/// Checkpointing of a job.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// `<dir>/<job>/chk-<n>/`.
    pub dir: PathBuf,
    pub interval: Duration,
    pub timeout: Duration,
    /// Complete checkpoints kept; older ones are deleted.
    pub retained: usize,
}

/// Where a job's completed checkpoints are recorded before anything hears that they completed
/// (Flink's CompletedCheckpointStore): with high availability, etcd, written only while this
/// JobManager leads, so a checkpoint a deposed leader finishes is never committed and the next
/// leader restores from the latest one recorded.
pub trait CompletedCheckpointStore: Send + Sync + std::fmt::Debug {
    /// Records checkpoint `id`, complete in `dir`, as the job's latest. An error means it may
    /// not have been recorded: the checkpoint then counts as not completed (its side effects
    /// stay uncommitted), but its files stay, since the record may have been written.
    fn add(&self, id: u64, dir: &Path) -> Result<(), String>;

    /// Whether checkpoints may be taken at all: not once this JobManager stopped leading.
    fn is_active(&self) -> bool {
        true
    }
}

/// A task's acknowledgement of a checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    pub checkpoint: u64,
    /// Where the task wrote its part: the acknowledgement counts only for the checkpoint
    /// written there.
    pub location: PathBuf,
    pub task: usize,
    pub handles: Vec<StateHandle>,
    pub sources: Vec<SourceState>,
    pub bytes: u64,
    /// How long the task's input was held back for this checkpoint's barriers to align.
    pub alignment: Duration,
}

/// What the coordinator hears.
pub enum CoordinatorEvent {
    Ack(Ack),
    Declined {
        checkpoint: u64,
        task: usize,
        reason: String,
    },
    /// A source task's input ended.
    EndOfInput(usize),
    TaskFinished(usize),
    /// Take a savepoint into `dir` and reply with it once complete.
    Savepoint {
        dir: PathBuf,
        reply: Sender<Result<PathBuf, String>>,
    },
    /// As `Savepoint`, and trigger no checkpoint after it: the job is about to stop, and no
    /// later checkpoint may commit output a restore from this savepoint would repeat. With
    /// `drain`, the sources are told to end their input, and the savepoint is the job's final
    /// checkpoint, taken once every source has ended (Flink's `stop --drain`).
    StopWithSavepoint {
        dir: PathBuf,
        reply: Sender<Result<PathBuf, String>>,
        drain: bool,
    },
    /// The stop-with-savepoint failed and the job goes on: periodic checkpoints resume.
    Resume,
    Stop,
}

/// What a task tells the coordinator, as it crosses between processes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TaskCheckpointEvent {
    Ack(Ack),
    Declined {
        checkpoint: u64,
        task: usize,
        reason: String,
    },
    EndOfInput(usize),
    TaskFinished(usize),
}

impl TaskCheckpointEvent {
    /// The task's part of a coordinator event; `None` for the job master's own (savepoint,
    /// stop).
    pub fn of(event: CoordinatorEvent) -> Option<Self> {
        Some(match event {
            CoordinatorEvent::Ack(ack) => TaskCheckpointEvent::Ack(ack),
            CoordinatorEvent::Declined {
                checkpoint,
                task,
                reason,
            } => TaskCheckpointEvent::Declined {
                checkpoint,
                task,
                reason,
            },
            CoordinatorEvent::EndOfInput(t) => TaskCheckpointEvent::EndOfInput(t),
            CoordinatorEvent::TaskFinished(t) => TaskCheckpointEvent::TaskFinished(t),
            CoordinatorEvent::Savepoint { .. }
            | CoordinatorEvent::StopWithSavepoint { .. }
            | CoordinatorEvent::Resume
            | CoordinatorEvent::Stop => return None,
        })
    }
}

impl From<TaskCheckpointEvent> for CoordinatorEvent {
    fn from(event: TaskCheckpointEvent) -> Self {
        match event {
            TaskCheckpointEvent::Ack(ack) => CoordinatorEvent::Ack(ack),
            TaskCheckpointEvent::Declined {
                checkpoint,
                task,
                reason,
            } => CoordinatorEvent::Declined {
                checkpoint,
                task,
                reason,
            },
            TaskCheckpointEvent::EndOfInput(t) => CoordinatorEvent::EndOfInput(t),
            TaskCheckpointEvent::TaskFinished(t) => CoordinatorEvent::TaskFinished(t),
        }
    }
}

/// A completed checkpoint, for reports and benchmarks.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    pub id: u64,
    pub dir: PathBuf,
    /// A savepoint: the user's, not the job's to restart from.
    pub savepoint: bool,
    pub duration: Duration,
    pub bytes: u64,
}

struct Pending {
    id: u64,
    dir: PathBuf,
    started: Instant,
    acks: BTreeMap<usize, Ack>,
    savepoint: Option<Sender<Result<PathBuf, String>>>,
    /// The final checkpoint: every source had ended when it was triggered.
    last: bool,
}

/// Final checkpoints abandoned in a row before the job fails.
const FINAL_CHECKPOINT_ATTEMPTS: u32 = 3;

/// Drives checkpoints of one job attempt; see the module docs.
pub struct Coordinator {
    pub config: CheckpointConfig,
    pub job: String,
    pub max_parallelism: u32,
    pub tasks: usize,
    /// Source tasks among them.
    pub sources: usize,
    /// Checkpoints retention never deletes: those the job was restored from.
    pub protected: Vec<PathBuf>,
    /// Checkpoint ids continue from the one restored.
    pub next_id: u64,
    pub completed: Arc<Mutex<Vec<CompletedCheckpoint>>>,
    /// The job's checkpoint statistics, across its attempts.
    pub stats: Arc<super::CheckpointStats>,
    /// Most bytes the job's retained checkpoints may take (a tenant's quota).
    pub storage_quota: Option<u64>,
    /// Where completed checkpoints are recorded first (with high availability).
    pub store: Option<Arc<dyn CompletedCheckpointStore>>,
}

/// Why the coordinator fails its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointFailure {
    /// The final checkpoint failed again and again.
    FinalCheckpoint(String),
    /// The retained checkpoints take more than the storage quota (restarting cannot help).
    StorageQuota(String),
}

/// Bytes of the files under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => bytes_under(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

impl Coordinator {
    pub fn job_dir(&self) -> PathBuf {
        self.config.dir.join(&self.job)
    }

    /// Runs until `Stop`. `trigger(n, dir)` asks the sources for checkpoint n, written to `dir`; `complete(n, last)`
    /// tells every task that n completed (`last`: it is the final checkpoint); `fail(reason)`
    /// fails the job.
    pub fn run(
        mut self,
        events: Receiver<CoordinatorEvent>,
        trigger: impl Fn(u64, &Path),
        complete: impl Fn(u64, bool),
        fail: impl Fn(CheckpointFailure),
    ) {
        let mut pending: Option<Pending> = None;
        let mut finished = 0usize;
        let mut ended_sources = std::collections::BTreeSet::new();
        let mut final_done = false;
        let mut final_failures = 0u32;
        let mut next_trigger = Instant::now() + self.config.interval;
        let mut savepoint_requests: Vec<(PathBuf, Sender<Result<PathBuf, String>>)> = Vec::new();
        // A stop-with-savepoint came: no periodic checkpoint from now on.
        let mut suspended = false;
        // A stop with drain: where the final checkpoint goes, and who waits for it.
        let mut drain_into: Option<(PathBuf, Sender<Result<PathBuf, String>>)> = None;
        loop {
            let now = Instant::now();
            if let Some(p) = &pending
                && now.duration_since(p.started) > self.config.timeout
            {
                let p = pending.take().expect("checked");
                final_failures += u32::from(p.last);
                self.abandon(p, "timed out");
            }
            let ending = ended_sources.len() >= self.sources;
            if ending && final_failures >= FINAL_CHECKPOINT_ATTEMPTS {
                fail(CheckpointFailure::FinalCheckpoint(format!(
                    "the final checkpoint of job `{}` failed {final_failures} times in a row; \
                     see the warnings above",
                    self.job
                )));
                final_failures = 0;
                final_done = true;
            }
            if pending.is_none() && finished == 0 && ending && !final_done {
                for (_, reply) in savepoint_requests.drain(..) {
                    let _ = reply.send(Err("the job is finishing".into()));
                }
                let (dir, reply) = match drain_into.take() {
                    Some((dir, reply)) => (dir, Some(reply)),
                    None => (self.job_dir().join(format!("chk-{}", self.next_id)), None),
                };
                pending = self.start(dir, reply, &trigger);
                match pending.as_mut() {
                    Some(p) => p.last = true,
                    None => final_failures += 1,
                }
            } else if pending.is_none() && finished == 0 && !ending {
                if let Some((dir, reply)) = savepoint_requests.pop() {
                    pending = self.start(dir, Some(reply), &trigger);
                } else if now >= next_trigger && !suspended {
                    let dir = self.job_dir().join(format!("chk-{}", self.next_id));
                    pending = self.start(dir, None, &trigger);
                    next_trigger = now + self.config.interval;
                }
            }
            let wait = next_trigger
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            match events.recv_timeout(wait.min(Duration::from_millis(50))) {
                Ok(CoordinatorEvent::Ack(ack)) => {
                    if let Some(p) = pending
                        .as_mut()
                        .filter(|p| p.id == ack.checkpoint && p.dir == ack.location)
                    {
                        self.stats.acknowledged(p.id, ack.bytes, ack.alignment);
                        p.acks.insert(ack.task, ack);
                        if p.acks.len() == self.tasks {
                            let p = pending.take().expect("checked");
                            let last = p.last;
                            let completed = self.finish(p, &complete);
                            final_done |= last && completed;
                            final_failures += u32::from(last && !completed);
                            if let Some(reason) = self.over_storage_quota() {
                                fail(CheckpointFailure::StorageQuota(reason));
                            }
                        }
                    }
                }
                Ok(CoordinatorEvent::Declined {
                    checkpoint,
                    task,
                    reason,
                }) => {
                    if pending.as_ref().is_some_and(|p| p.id == checkpoint) {
                        let p = pending.take().expect("checked");
                        final_failures += u32::from(p.last);
                        self.abandon(p, &format!("task {task} declined: {reason}"));
                    }
                }
                Ok(CoordinatorEvent::EndOfInput(task)) => {
                    ended_sources.insert(task);
                }
                Ok(CoordinatorEvent::TaskFinished(_)) => {
                    finished += 1;
                    if let Some(p) = pending.take() {
                        self.abandon(p, "a task finished before acknowledging");
                    }
                    for (_, reply) in savepoint_requests.drain(..) {
                        let _ = reply.send(Err("the job is finishing".into()));
                    }
                }
                Ok(CoordinatorEvent::Savepoint { dir, reply }) => {
                    if finished > 0 || ended_sources.len() >= self.sources {
                        let _ = reply.send(Err("the job is finishing".into()));
                    } else {
                        savepoint_requests.push((dir, reply));
                    }
                }
                Ok(CoordinatorEvent::StopWithSavepoint { dir, reply, drain }) => {
                    if finished > 0 || ended_sources.len() >= self.sources {
                        let _ = reply.send(Err("the job is finishing".into()));
                    } else {
                        suspended = true;
                        if drain {
                            drain_into = Some((dir, reply));
                        } else {
                            savepoint_requests.push((dir, reply));
                        }
                    }
                }
                Ok(CoordinatorEvent::Resume) => suspended = false,
                Ok(CoordinatorEvent::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(p) = pending.take() {
                        self.abandon(p, "the job stopped");
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn start(
        &mut self,
        dir: PathBuf,
        savepoint: Option<Sender<Result<PathBuf, String>>>,
        trigger: &impl Fn(u64, &Path),
    ) -> Option<Pending> {
        if self.store.as_ref().is_some_and(|s| !s.is_active()) {
            if let Some(reply) = savepoint {
                let _ = reply.send(Err("this JobManager no longer leads".into()));
            }
            return None;
        }
        let mut id = self.next_id;
        self.next_id += 1;
        let mut dir = dir;
        let created = if savepoint.is_some() {
            std::fs::create_dir_all(&dir)
        } else {
            // The id is claimed by creating its directory: one that exists is another's (a
            // JobManager that led before, or leads now), never written into or deleted by this
            // one, which takes the next id.
            std::fs::create_dir_all(self.job_dir()).and_then(|()| {
                loop {
                    match std::fs::create_dir(&dir) {
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            id = self.next_id;
                            self.next_id += 1;
                            dir = self.job_dir().join(format!("chk-{id}"));
                        }
                        other => break other,
                    }
                }
            })
        };
        if let Err(e) = created {
            eprintln!(
                "warning: cannot create checkpoint directory `{}`: {e}",
                dir.display()
            );
            if let Some(reply) = savepoint {
                let _ = reply.send(Err(e.to_string()));
            }
            return None;
        }
        self.stats
            .triggered(id, savepoint.is_some(), self.tasks, &dir);
        trigger(id, &dir);
        Some(Pending {
            id,
            dir,
            started: Instant::now(),
            acks: BTreeMap::new(),
            savepoint,
            last: false,
        })
    }

    fn abandon(&self, p: Pending, reason: &str) {
        eprintln!("warning: checkpoint {} abandoned: {reason}", p.id);
        self.stats.ended(p.id, Some(reason));
        let _ = std::fs::remove_dir_all(&p.dir);
        if let Some(reply) = p.savepoint {
            let _ = reply.send(Err(format!("savepoint abandoned: {reason}")));
        }
    }

    /// Why the retained checkpoints are over the storage quota, if they are.
    fn over_storage_quota(&self) -> Option<String> {
        let quota = self.storage_quota?;
        let held = bytes_under(&self.job_dir());
        (held > quota).then(|| {
            format!(
                "the checkpoints of job `{}` take {held} bytes, over its checkpoint storage \
                 quota of {quota} bytes",
                self.job
            )
        })
    }

    /// Completes `p`; whether it could.
    fn finish(&self, p: Pending, complete: &impl Fn(u64, bool)) -> bool {
        let bytes = p.acks.values().map(|a| a.bytes).sum();
        let metadata = CheckpointMetadata {
            job: self.job.clone(),
            checkpoint: p.id,
            savepoint: p.savepoint.is_some(),
            // A drained job's final savepoint is not the end of its input: its sources stopped
            // early, and a run restored from it reads on from there.
            final_checkpoint: p.last && p.savepoint.is_none(),
            max_parallelism: self.max_parallelism,
            operators: p
                .acks
                .values()
                .flat_map(|a| a.handles.iter().cloned())
                .collect(),
            sources: p
                .acks
                .values()
                .flat_map(|a| a.sources.iter().cloned())
                .collect(),
        };
        if let Err(e) = write_metadata(&p.dir, &metadata) {
            self.abandon(p, &format!("cannot write _metadata: {e}"));
            return false;
        }
        // A savepoint is not recorded: failover restores from checkpoints (but from the final
        // savepoint of a drained job, which commits).
        if let Some(store) = self
            .store
            .as_ref()
            .filter(|_| p.savepoint.is_none() || p.last)
            && let Err(e) = store.add(p.id, &p.dir)
        {
            let reason = format!("not recorded as completed: {e}");
            eprintln!("warning: checkpoint {} {reason}", p.id);
            self.stats.ended(p.id, Some(&reason));
            if let Some(reply) = p.savepoint {
                let _ = reply.send(Err(format!("savepoint {reason}")));
            }
            return false;
        }
        // A savepoint commits no side effects (as Flink since 1.15): failover restores from
        // checkpoints, and output committed on a savepoint would be replayed twice. The final
        // savepoint of a drained job does: nothing runs after it, and its tasks finish on it.
        if p.savepoint.is_none() || p.last {
            complete(p.id, p.last);
        }
        self.stats.ended(p.id, None);
        self.completed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(CompletedCheckpoint {
                id: p.id,
                dir: p.dir.clone(),
                savepoint: p.savepoint.is_some(),
                duration: p.started.elapsed(),
                bytes,
            });
        match p.savepoint {
            Some(reply) => {
                let _ = reply.send(Ok(p.dir));
            }
            None => self.retain(&self.job_dir()),
        }
        true
    }

    /// Keeps the newest `retained` complete checkpoints and deletes every `chk-<n>` older than
    /// the oldest of them, complete or not (savepoints live elsewhere).
    fn retain(&self, job_dir: &Path) {
        let dirs = checkpoint_dirs(job_dir);
        let complete: Vec<u64> = dirs
            .iter()
            .filter(|(_, d)| d.join(super::storage::METADATA).exists())
            .map(|(n, _)| *n)
            .collect();
        let Some(&oldest_kept) = complete.get(self.config.retained.max(1) - 1) else {
            return;
        };
        let protected: Vec<PathBuf> = self
            .protected
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .collect();
        for (n, dir) in dirs {
            let is_protected = std::fs::canonicalize(&dir).is_ok_and(|d| protected.contains(&d));
            if n < oldest_kept && !is_protected {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
