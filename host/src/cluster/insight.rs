//! A job as seen from outside, while it runs and after it ends (Flink's ExecutionGraphInfo and
//! its archived copy): the plan, the current attempt's tasks with where they run and how they
//! stand, the exceptions that failed attempts, and the checkpoint statistics. The job master
//! writes it; the REST endpoint, the web UI and the metrics read it. Rates (records per
//! second, busy and back-pressured time per second) are taken over the interval between two
//! reads, as Flink's meters and time-per-second gauges measure over a recent window rather
//! than since the start.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::gateways::TaskExecutorGateway;
use crate::checkpoint::CheckpointStats;
use crate::checkpoint::stats::now_ms;
use crate::job::{JobGraph, Partitioning, VertexInput, VertexOutput};
use crate::metrics::TaskMetricsSnapshot;
use crate::runtime::TaskFailure;

/// Exceptions kept in a job's history (Flink's `web.exception-history-size` default).
const EXCEPTION_HISTORY: usize = 16;
/// Rates are refreshed at most this often; closer reads get the last ones.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// The job graph as the REST plan and the web UI draw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobPlan {
    pub vertices: Vec<PlanVertex>,
    pub edges: Vec<PlanEdge>,
    /// Operator instances running a guest, and the linear memory each may grow to (unset: the
    /// cluster's default), for a tenant's memory quota.
    #[serde(skip)]
    pub guest_instances: u64,
    #[serde(skip)]
    pub memory_per_instance: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanVertex {
    /// 32 hex digits, stable for the same graph (Flink's JobVertexID).
    pub id: String,
    pub name: String,
    pub parallelism: u32,
    /// The chained operators' node ids, head first.
    pub operators: Vec<String>,
    pub source: bool,
    pub sink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanEdge {
    pub source: String,
    pub target: String,
    /// Flink's names: FORWARD, REBALANCE, HASH, BROADCAST.
    pub ship_strategy: &'static str,
}

impl JobPlan {
    pub fn of(graph: &JobGraph) -> Self {
        let ids: Vec<String> = graph
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| vertex_id(&graph.name, i, &v.name))
            .collect();
        JobPlan {
            vertices: graph
                .vertices
                .iter()
                .zip(&ids)
                .map(|(v, id)| PlanVertex {
                    id: id.clone(),
                    name: v.name.clone(),
                    parallelism: v.parallelism,
                    operators: v.node_ids.clone(),
                    source: matches!(v.input, VertexInput::Source(_)),
                    sink: matches!(v.output, VertexOutput::Sink(_)),
                })
                .collect(),
            edges: graph
                .edges
                .iter()
                .map(|e| PlanEdge {
                    source: ids[e.source].clone(),
                    target: ids[e.target].clone(),
                    ship_strategy: match e.partitioning {
                        Partitioning::Forward => "FORWARD",
                        Partitioning::Rebalance => "REBALANCE",
                        Partitioning::Hash => "HASH",
                        Partitioning::Broadcast => "BROADCAST",
                    },
                })
                .collect(),
            guest_instances: crate::cluster::standalone::admission::guest_instances(graph),
            memory_per_instance: graph.limits.memory_bytes,
        }
    }

    /// The index of vertex `id`.
    pub fn vertex(&self, id: &str) -> Option<usize> {
        self.vertices.iter().position(|v| v.id == id)
    }
}

fn vertex_id(job: &str, index: usize, name: &str) -> String {
    let hash = crate::wasm::content_hash(format!("{job}\u{0}{index}\u{0}{name}").as_bytes());
    hash.chars()
        .filter(char::is_ascii_hexdigit)
        .take(32)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Running,
    Finished,
    Canceled,
    Failed,
}

/// A task of the current (or last) attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskInsight {
    pub index: usize,
    pub vertex: usize,
    pub subtask: u32,
    pub name: String,
    /// The resource id of the TaskManager (TaskExecutor) that runs it.
    pub task_manager: String,
    pub status: TaskStatus,
    pub start_time: u64,
    pub end_time: Option<u64>,
}

/// An exception that failed an attempt (or the job), for `GET /jobs/:id/exceptions`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExceptionRecord {
    pub timestamp: u64,
    pub exception: String,
    /// The failing task, when a task failed: `vertex (subtask/parallelism)`.
    pub task_name: Option<String>,
    pub vertex: Option<String>,
    pub subtask: Option<u32>,
    pub task_manager: Option<String>,
    /// The attempt (0 first) that failed.
    pub attempt: u32,
}

/// A task's metrics now and its rates over the last window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TaskRates {
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    pub busy_ms_per_second: f64,
    pub idle_ms_per_second: f64,
    pub backpressured_ms_per_second: f64,
}

#[derive(Clone)]
struct Sample {
    at: Instant,
    totals: TaskMetricsSnapshot,
    rates: TaskRates,
}

struct Attempt {
    id: u64,
    number: u32,
    task_executors: Vec<Arc<dyn TaskExecutorGateway>>,
    tasks: Vec<TaskInsight>,
    /// The tasks' metrics when the attempt ended (its TaskExecutors have forgotten it).
    final_metrics: Option<BTreeMap<usize, TaskMetricsSnapshot>>,
}

#[derive(Default)]
struct State {
    attempt: Option<Attempt>,
    exceptions: Vec<ExceptionRecord>,
    samples: HashMap<(u64, usize), Sample>,
    restarts: u32,
}

#[derive(Default)]
pub struct JobInsight {
    plan: OnceLock<JobPlan>,
    pub checkpoints: Arc<CheckpointStats>,
    state: Mutex<State>,
}

impl std::fmt::Debug for JobInsight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobInsight")
            .field("plan", &self.plan.get())
            .finish()
    }
}

/// A copy of a job's tasks and metrics at one moment.
#[derive(Debug, Clone, Default)]
pub struct TasksNow {
    /// The attempt's number (0 first).
    pub attempt: u32,
    pub tasks: Vec<(TaskInsight, TaskMetricsSnapshot, TaskRates)>,
}

impl JobInsight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_plan(&self, graph: &JobGraph) {
        let _ = self.plan.set(JobPlan::of(graph));
    }

    pub fn plan(&self) -> Option<&JobPlan> {
        self.plan.get()
    }

    /// Attempt `number` (id `id` on its TaskExecutors) runs `tasks`.
    pub(super) fn attempt_started(
        &self,
        id: u64,
        number: u32,
        task_executors: Vec<Arc<dyn TaskExecutorGateway>>,
        tasks: Vec<TaskInsight>,
    ) {
        let mut state = self.lock();
        state.samples.clear();
        state.restarts = number;
        state.attempt = Some(Attempt {
            id,
            number,
            task_executors,
            tasks,
            final_metrics: None,
        });
    }

    /// Task `index` of the current attempt ended with `result`.
    pub(super) fn task_ended(&self, index: usize, result: &Result<(), TaskFailure>) {
        let mut state = self.lock();
        let Some(task) = state
            .attempt
            .as_mut()
            .and_then(|a| a.tasks.iter_mut().find(|t| t.index == index))
        else {
            return;
        };
        task.status = match result {
            Ok(()) => TaskStatus::Finished,
            Err(TaskFailure::Cancelled { .. }) => TaskStatus::Canceled,
            Err(_) => TaskStatus::Failed,
        };
        task.end_time = Some(now_ms());
    }

    /// The current attempt ended; its tasks' last metrics stay to be shown.
    pub(super) fn attempt_ended(&self, metrics: Vec<(usize, TaskMetricsSnapshot)>) {
        let mut state = self.lock();
        if let Some(attempt) = state.attempt.as_mut() {
            attempt.task_executors.clear();
            attempt.final_metrics = Some(metrics.into_iter().collect());
            let now = now_ms();
            for task in &mut attempt.tasks {
                if task.status == TaskStatus::Running {
                    task.status = TaskStatus::Canceled;
                    task.end_time = Some(now);
                }
            }
        }
    }

    /// Attempt `attempt` (or its deployment) failed with `exception`; `task` names the task
    /// that failed, if one did.
    pub(super) fn record_exception(&self, attempt: u32, exception: String, task: Option<&str>) {
        let mut state = self.lock();
        let found = task.and_then(|name| {
            state
                .attempt
                .as_ref()
                .and_then(|a| a.tasks.iter().find(|t| t.name == name))
                .cloned()
        });
        let vertex = found.as_ref().and_then(|t| {
            self.plan
                .get()
                .and_then(|p| p.vertices.get(t.vertex))
                .map(|v| v.name.clone())
        });
        state.exceptions.insert(
            0,
            ExceptionRecord {
                timestamp: now_ms(),
                exception,
                task_name: task.map(str::to_string),
                vertex,
                subtask: found.as_ref().map(|t| t.subtask),
                task_manager: found.map(|t| t.task_manager),
                attempt,
            },
        );
        state.exceptions.truncate(EXCEPTION_HISTORY);
    }

    /// Newest first.
    pub fn exceptions(&self) -> Vec<ExceptionRecord> {
        self.lock().exceptions.clone()
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.lock().restarts
    }

    /// The tasks of the current (or last) attempt with their metrics and rates; asks the
    /// TaskExecutors that run them (an RPC each on a standalone cluster), so call it off any
    /// async thread.
    pub fn tasks_now(&self) -> TasksNow {
        let (id, number, task_executors, tasks, final_metrics) = {
            let state = self.lock();
            let Some(a) = state.attempt.as_ref() else {
                return TasksNow::default();
            };
            (
                a.id,
                a.number,
                a.task_executors.clone(),
                a.tasks.clone(),
                a.final_metrics.clone(),
            )
        };
        let metrics: BTreeMap<usize, TaskMetricsSnapshot> = match final_metrics {
            Some(m) => m,
            None => task_executors
                .iter()
                .flat_map(|te| te.task_metrics(id))
                .map(|(index, _, m)| (index, m))
                .collect(),
        };
        let now = Instant::now();
        let mut state = self.lock();
        let tasks = tasks
            .into_iter()
            .map(|task| {
                let totals = metrics.get(&task.index).copied().unwrap_or_default();
                let rates = rates(&mut state.samples, (id, task.index), now, totals);
                (task, totals, rates)
            })
            .collect();
        TasksNow {
            attempt: number,
            tasks,
        }
    }
}

/// The rates of a task over the window since its last sample (the first read gives the
/// averages since the task started).
fn rates(
    samples: &mut HashMap<(u64, usize), Sample>,
    key: (u64, usize),
    now: Instant,
    totals: TaskMetricsSnapshot,
) -> TaskRates {
    if let Some(last) = samples.get(&key)
        && now.duration_since(last.at) < RATE_WINDOW
    {
        return last.rates;
    }
    let rates = match samples.get(&key) {
        Some(last) => {
            let seconds = now.duration_since(last.at).as_secs_f64().max(1e-3);
            let per_second = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
            let busy = totals.busy.saturating_sub(last.totals.busy);
            let idle = totals.idle.saturating_sub(last.totals.idle);
            let bp = totals
                .backpressured
                .saturating_sub(last.totals.backpressured);
            // Shares of the task's own time in the window, as milliseconds per second.
            let spent = (busy + idle + bp).as_secs_f64();
            let share = |d: Duration| {
                if spent == 0.0 {
                    0.0
                } else {
                    d.as_secs_f64() / spent * 1000.0
                }
            };
            TaskRates {
                records_in_per_second: per_second(totals.records_in, last.totals.records_in),
                records_out_per_second: per_second(totals.records_out, last.totals.records_out),
                busy_ms_per_second: share(busy),
                idle_ms_per_second: share(idle),
                backpressured_ms_per_second: share(bp),
            }
        }
        None => {
            let seconds = (totals.busy + totals.idle + totals.backpressured).as_secs_f64();
            let per_second = |n: u64| {
                if seconds > 0.0 {
                    n as f64 / seconds
                } else {
                    0.0
                }
            };
            TaskRates {
                records_in_per_second: per_second(totals.records_in),
                records_out_per_second: per_second(totals.records_out),
                busy_ms_per_second: totals.busy_ms_per_s(),
                idle_ms_per_second: totals.idle_ms_per_s(),
                backpressured_ms_per_second: totals.backpressured_ms_per_s(),
            }
        }
    };
    samples.insert(
        key,
        Sample {
            at: now,
            totals,
            rates,
        },
    );
    rates
}

/// Flink's back-pressure level of a ratio of back-pressured time.
pub fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(records: u64, busy: u64, idle: u64, bp: u64) -> TaskMetricsSnapshot {
        TaskMetricsSnapshot {
            records_in: records,
            records_out: records,
            busy: Duration::from_millis(busy),
            idle: Duration::from_millis(idle),
            backpressured: Duration::from_millis(bp),
            ..TaskMetricsSnapshot::default()
        }
    }

    #[test]
    fn rates_are_taken_over_the_window_since_the_last_sample() {
        let mut samples = HashMap::new();
        let start = Instant::now();
        // First read: averages since the start (all busy so far).
        let first = rates(&mut samples, (1, 0), start, snapshot(100, 1000, 0, 0));
        assert_eq!(first.busy_ms_per_second, 1000.0);
        // Within the window: the same rates.
        let again = rates(
            &mut samples,
            (1, 0),
            start + Duration::from_millis(100),
            snapshot(500, 1000, 0, 900),
        );
        assert_eq!(again, first);
        // A second later: 1000 records, and 900 of its 1000 ms back-pressured.
        let later = rates(
            &mut samples,
            (1, 0),
            start + Duration::from_secs(1),
            snapshot(1100, 1050, 50, 900),
        );
        assert!(
            (later.records_in_per_second - 1000.0).abs() < 1e-6,
            "{later:?}"
        );
        assert!((later.backpressured_ms_per_second - 900.0).abs() < 1e-6);
        assert!((later.busy_ms_per_second - 50.0).abs() < 1e-6);
        assert_eq!(
            backpressure_level(later.backpressured_ms_per_second / 1000.0),
            "high"
        );
        assert_eq!(backpressure_level(0.10), "ok");
        assert_eq!(backpressure_level(0.3), "low");
    }

    #[test]
    fn vertex_ids_are_32_hex_digits_and_differ_by_vertex() {
        let a = vertex_id("wc", 0, "source");
        let b = vertex_id("wc", 1, "source");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a, vertex_id("wc", 0, "source"));
    }
}
