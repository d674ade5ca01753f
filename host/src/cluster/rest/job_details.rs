//! A job's details through REST, in Flink's shapes: its plan, its vertices with their subtasks'
//! metrics and back-pressure, its checkpoints and its exceptions.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Caller, Rest, error};
use crate::checkpoint::stats::{CheckpointRecord, now_ms};
use crate::cluster::insight::{JobInsight, JobPlan, TaskStatus, TasksNow, backpressure_level};

type Answer = (StatusCode, Json<Value>);
/// A handler's answer: an error answer short-cuts with `?`.
type Handled = Result<Answer, Answer>;

/// Job `id`'s insight, if `caller` may see the job.
fn insight_of(rest: &Rest, caller: &Caller, id: &str) -> Result<Arc<JobInsight>, Answer> {
    super::visible(rest, caller, id)
        .and_then(|_| rest.cluster.job_insight(id))
        .ok_or_else(|| super::no_job(id))
}

fn plan_of<'a>(insight: &'a JobInsight, id: &str) -> Result<&'a JobPlan, Answer> {
    insight.plan().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("job {id} has no plan yet (it is being submitted)"),
        )
    })
}

/// The tasks of a job now, asked of its TaskExecutors off the async threads.
async fn tasks_now(insight: &Arc<JobInsight>) -> TasksNow {
    let insight = insight.clone();
    tokio::task::spawn_blocking(move || insight.tasks_now())
        .await
        .unwrap_or_default()
}

/// Flink's plan: every vertex with its inputs and their ship strategies.
pub(super) fn plan_json(plan: &JobPlan, id: &str, name: &str) -> Value {
    let nodes: Vec<Value> = plan
        .vertices
        .iter()
        .map(|v| {
            let inputs: Vec<Value> = plan
                .edges
                .iter()
                .filter(|e| e.target == v.id)
                .enumerate()
                .map(|(num, e)| {
                    json!({"num": num, "id": e.source, "ship_strategy": e.ship_strategy,
                           "exchange": "pipelined_bounded"})
                })
                .collect();
            json!({
                "id": v.id,
                "parallelism": v.parallelism,
                "operator": v.operators.join(" -> "),
                "description": v.name,
                "inputs": inputs,
            })
        })
        .collect();
    json!({"jid": id, "name": name, "type": "STREAMING", "nodes": nodes})
}

/// `GET /jobs/:id/plan`.
pub(super) async fn plan(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Handled {
    let record = super::visible(&rest, &caller, &id).ok_or_else(|| super::no_job(&id))?;
    let insight = rest
        .cluster
        .job_insight(&id)
        .ok_or_else(|| super::no_job(&id))?;
    let plan = plan_of(&insight, &id)?;
    Ok((
        StatusCode::OK,
        Json(json!({"plan": plan_json(plan, &id, &record.name)})),
    ))
}

fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Running => "RUNNING",
        TaskStatus::Finished => "FINISHED",
        TaskStatus::Canceled => "CANCELED",
        TaskStatus::Failed => "FAILED",
    }
}

/// A vertex's status from its subtasks': failed if one failed, running while one runs.
fn vertex_status(statuses: &[TaskStatus]) -> &'static str {
    if statuses.is_empty() {
        "CREATED"
    } else if statuses.contains(&TaskStatus::Failed) {
        "FAILED"
    } else if statuses.contains(&TaskStatus::Running) {
        "RUNNING"
    } else if statuses.contains(&TaskStatus::Canceled) {
        "CANCELED"
    } else {
        "FINISHED"
    }
}

/// One subtask's line of a vertex.
fn subtask_json(now: &TasksNow, t: usize) -> Value {
    let (task, m, r) = &now.tasks[t];
    let end = task.end_time.unwrap_or_else(now_ms);
    json!({
        "subtask": task.subtask,
        "status": status_name(task.status),
        "attempt": now.attempt,
        "taskmanager-id": task.task_manager,
        "start-time": task.start_time,
        "end-time": task.end_time.map_or(-1, |e| e as i64),
        "duration": end.saturating_sub(task.start_time),
        "metrics": {
            "read-records": m.records_in,
            "write-records": m.records_out,
            "read-bytes": m.bytes_in,
            "write-bytes": m.bytes_out,
            "accumulated-busy-time": m.busy.as_millis() as u64,
            "accumulated-idle-time": m.idle.as_millis() as u64,
            "accumulated-backpressured-time": m.backpressured.as_millis() as u64,
            "recordsInPerSecond": r.records_in_per_second,
            "recordsOutPerSecond": r.records_out_per_second,
            "busyTimeMsPerSecond": r.busy_ms_per_second,
            "idleTimeMsPerSecond": r.idle_ms_per_second,
            "backPressuredTimeMsPerSecond": r.backpressured_ms_per_second,
        },
    })
}

/// Vertex `v` of `plan`, its subtasks and their sums (the highest back-pressure and busy time
/// of a subtask stand for the vertex, as Flink's UI shows them).
pub(super) fn vertex_json(plan: &JobPlan, now: &TasksNow, v: usize) -> Value {
    let vertex = &plan.vertices[v];
    let mine: Vec<usize> = (0..now.tasks.len())
        .filter(|&t| now.tasks[t].0.vertex == v)
        .collect();
    let statuses: Vec<TaskStatus> = mine.iter().map(|&t| now.tasks[t].0.status).collect();
    let sum = |f: &dyn Fn(usize) -> f64| mine.iter().map(|&t| f(t)).sum::<f64>();
    let max = |f: &dyn Fn(usize) -> f64| mine.iter().map(|&t| f(t)).fold(0.0, f64::max);
    let backpressured = max(&|t| now.tasks[t].2.backpressured_ms_per_second);
    json!({
        "id": vertex.id,
        "name": vertex.name,
        "parallelism": vertex.parallelism,
        "status": vertex_status(&statuses),
        "now": now_ms(),
        "metrics": {
            "read-records": sum(&|t| now.tasks[t].1.records_in as f64) as u64,
            "write-records": sum(&|t| now.tasks[t].1.records_out as f64) as u64,
            "read-bytes": sum(&|t| now.tasks[t].1.bytes_in as f64) as u64,
            "write-bytes": sum(&|t| now.tasks[t].1.bytes_out as f64) as u64,
            "recordsInPerSecond": sum(&|t| now.tasks[t].2.records_in_per_second),
            "recordsOutPerSecond": sum(&|t| now.tasks[t].2.records_out_per_second),
            "busyTimeMsPerSecond": max(&|t| now.tasks[t].2.busy_ms_per_second),
            "backPressuredTimeMsPerSecond": backpressured,
        },
        "backpressure-level": backpressure_level(backpressured / 1000.0),
        "subtasks": mine.iter().map(|&t| subtask_json(now, t)).collect::<Vec<_>>(),
    })
}

/// Job `id`'s insight and the index of its vertex `vid`, if `caller` may see the job.
fn vertex_of(
    rest: &Rest,
    caller: &Caller,
    id: &str,
    vid: &str,
) -> Result<(Arc<JobInsight>, usize), Answer> {
    let insight = insight_of(rest, caller, id)?;
    let v = plan_of(&insight, id)?
        .vertex(vid)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no vertex with id {vid}")))?;
    Ok((insight, v))
}

/// `GET /jobs/:id/vertices/:vid`.
pub(super) async fn vertex(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path((id, vid)): Path<(String, String)>,
) -> Handled {
    let (insight, v) = vertex_of(&rest, &caller, &id, &vid)?;
    let now = tasks_now(&insight).await;
    let plan = insight.plan().expect("checked above");
    Ok((StatusCode::OK, Json(vertex_json(plan, &now, v))))
}

/// `GET /jobs/:id/vertices/:vid/backpressure`: Flink's fields, the ratio being back-pressured
/// milliseconds per second over 1000, measured where writers wait for a buffer or for credit.
pub(super) async fn backpressure(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path((id, vid)): Path<(String, String)>,
) -> Handled {
    let (insight, v) = vertex_of(&rest, &caller, &id, &vid)?;
    let now = tasks_now(&insight).await;
    let mut highest = 0.0f64;
    let subtasks: Vec<Value> = now
        .tasks
        .iter()
        .filter(|(t, _, _)| t.vertex == v)
        .map(|(t, _, r)| {
            let ratio = r.backpressured_ms_per_second / 1000.0;
            highest = highest.max(ratio);
            json!({
                "subtask": t.subtask,
                "attempt-number": now.attempt,
                "backpressure-level": backpressure_level(ratio),
                "ratio": ratio,
                "idleRatio": r.idle_ms_per_second / 1000.0,
                "busyRatio": r.busy_ms_per_second / 1000.0,
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({
            "status": "ok",
            "backpressure-level": backpressure_level(highest),
            "end-timestamp": now_ms(),
            "subtasks": subtasks,
        })),
    ))
}

/// `GET /jobs/:id/vertices/:vid/watermarks`: each subtask's `currentInputWatermark` (the
/// watermark its operators have reached, milliseconds; `i64::MIN` before the first), as
/// Flink's metric list.
pub(super) async fn watermarks(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path((id, vid)): Path<(String, String)>,
) -> Handled {
    let (insight, v) = vertex_of(&rest, &caller, &id, &vid)?;
    let now = tasks_now(&insight).await;
    let metrics: Vec<Value> = now
        .tasks
        .iter()
        .filter(|(t, _, _)| t.vertex == v)
        .map(|(t, m, _)| {
            json!({
                "id": format!("{}.currentInputWatermark", t.subtask),
                "value": m.watermark.to_string(),
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(Value::Array(metrics))))
}

fn checkpoint_json(r: &CheckpointRecord) -> Value {
    json!({
        "id": r.id,
        "status": r.status,
        "is_savepoint": r.savepoint,
        "trigger_timestamp": r.trigger_timestamp,
        "latest_ack_timestamp": r.trigger_timestamp + r.end_to_end_duration_ms,
        "end_to_end_duration": r.end_to_end_duration_ms,
        "state_size": r.state_size,
        "alignment_duration": r.alignment_ms,
        "num_subtasks": r.tasks,
        "num_acknowledged_subtasks": r.acknowledged,
        "external_path": r.path.display().to_string(),
        "failure_message": r.failure,
    })
}

/// `GET /jobs/:id/checkpoints`: counts, the latest of each kind, and the recent history.
pub(super) async fn checkpoints(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Handled {
    let insight = insight_of(&rest, &caller, &id)?;
    let s = insight.checkpoints.summary();
    Ok((
        StatusCode::OK,
        Json(json!({
            "counts": {
                "restored": s.restored,
                "total": s.triggered,
                "in_progress": s.in_progress,
                "completed": s.completed,
                "failed": s.failed,
            },
            "latest": {
                "completed": s.latest_completed.as_ref().map(checkpoint_json),
                "failed": s.latest_failed.as_ref().map(checkpoint_json),
                "restored": s.latest_restored.as_ref().map(|r| json!({
                    "id": r.id,
                    "restore_timestamp": r.restore_timestamp,
                    "external_path": r.path.display().to_string(),
                })),
            },
            "history": s.history.iter().map(checkpoint_json).collect::<Vec<_>>(),
        })),
    ))
}

/// `GET /jobs/:id/exceptions`: the root cause (the newest failure) and the history, each with
/// the task, subtask and TaskManager it happened on.
pub(super) async fn exceptions(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Handled {
    let insight = insight_of(&rest, &caller, &id)?;
    let history = insight.exceptions();
    let entries: Vec<Value> = history
        .iter()
        .map(|e| {
            json!({
                "exceptionName": "JobFailure",
                "stacktrace": e.exception,
                "timestamp": e.timestamp,
                "taskName": e.task_name,
                "vertex": e.vertex,
                "subtask": e.subtask,
                "taskManagerId": e.task_manager,
                "attempt": e.attempt,
            })
        })
        .collect();
    let root = history.first();
    Ok((
        StatusCode::OK,
        Json(json!({
            "root-exception": root.map(|e| e.exception.clone()),
            "timestamp": root.map(|e| e.timestamp),
            "exceptionHistory": {"entries": entries, "truncated": false},
        })),
    ))
}

/// The vertices of job `id` with their sums, for `GET /jobs/:id` and the web UI's graph.
pub(super) async fn vertices_of(insight: &Arc<JobInsight>) -> Vec<Value> {
    let Some(plan) = insight.plan() else {
        return Vec::new();
    };
    let now = tasks_now(insight).await;
    (0..plan.vertices.len())
        .map(|v| vertex_json(plan, &now, v))
        .collect()
}
