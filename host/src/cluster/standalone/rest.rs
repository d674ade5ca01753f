//! The JobManager's REST endpoint (Flink's WebMonitorEndpoint), with Flink's paths and field
//! names where they fit: what the CLI and the web UI read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::jobmanager::JobManagerState;
use crate::cluster::{JobRecord, JobStatus, MiniCluster};

#[derive(Clone)]
struct Rest {
    state: Arc<JobManagerState>,
    cluster: Arc<MiniCluster>,
    /// Savepoint (and stop) requests by trigger id, as Flink's asynchronous operations.
    triggers: Arc<std::sync::Mutex<HashMap<String, (Trigger, std::time::Instant)>>>,
}

/// How long the outcome of a savepoint request stays to be asked for (Flink's completed
/// operation cache keeps them five minutes): the table does not grow without end.
const TRIGGER_KEPT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Clone)]
enum Trigger {
    InProgress,
    Completed(String),
    Failed(String),
}

/// Largest job upload: its components (the Python SDK's are ~18 MB each).
const MAX_UPLOAD_BYTES: usize = 512 << 20;

pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<JobManagerState>,
    cluster: Arc<MiniCluster>,
) {
    let app = Router::new()
        .route("/overview", get(overview))
        .route("/taskmanagers", get(task_managers))
        .route("/config", get(config))
        .route("/jobs", get(jobs).post(submit))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job).patch(cancel))
        .route("/jobs/{id}/savepoints", post(trigger_savepoint))
        .route("/jobs/{id}/savepoints/{trigger}", get(savepoint_status))
        .route("/jobs/{id}/stop", post(stop))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(Rest {
            state,
            cluster,
            triggers: Default::default(),
        });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the REST endpoint stopped: {e}");
    }
}

/// Flink's name for a job's state.
fn state_name(status: &JobStatus) -> &'static str {
    match status {
        JobStatus::Running => "RUNNING",
        JobStatus::Finished { .. } => "FINISHED",
        JobStatus::Failed { .. } => "FAILED",
        JobStatus::Cancelled => "CANCELED",
    }
}

fn job_json(record: &JobRecord) -> Value {
    let mut value = json!({
        "jid": record.id,
        "name": record.name,
        "state": state_name(&record.status),
        "start-time": record.start_time_ms,
    });
    match &record.status {
        JobStatus::Failed { reason } => value["failure"] = json!(reason),
        JobStatus::Finished { restarts } => value["restarts"] = json!(restarts),
        _ => {}
    }
    value
}

/// `GET /overview`: the cluster at a glance.
async fn overview(State(rest): State<Rest>) -> Json<Value> {
    let tms = rest.state.registry.task_managers();
    let jobs = rest.cluster.jobs();
    let count = |name: &str| {
        jobs.iter()
            .filter(|j| state_name(&j.status) == name)
            .count()
    };
    Json(json!({
        "taskmanagers": tms.len(),
        "slots-total": tms.iter().map(|t| t.slots.total).sum::<u32>(),
        "slots-available": tms.iter().map(|t| t.slots.free).sum::<u32>(),
        "jobs-running": count("RUNNING"),
        "jobs-finished": count("FINISHED"),
        "jobs-cancelled": count("CANCELED"),
        "jobs-failed": count("FAILED"),
        "weir-version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /taskmanagers`: every registered TaskManager.
async fn task_managers(State(rest): State<Rest>) -> Json<Value> {
    let tms: Vec<Value> = rest
        .state
        .registry
        .task_managers()
        .into_iter()
        .map(|t| {
            json!({
                "id": t.resource_id,
                "dataPort": t.data_address,
                "timeSinceLastHeartbeat": t.last_heartbeat.elapsed().as_millis() as u64,
                "slotsNumber": t.slots.total,
                "freeSlots": t.slots.free,
                "hardware": {
                    "cpuCores": t.hardware.cpu_cores,
                    "networkBuffers": t.hardware.network_buffers,
                    "segmentBytes": t.hardware.segment_bytes,
                },
            })
        })
        .collect();
    Json(json!({ "taskmanagers": tms }))
}

/// `GET /config`: the cluster's settings a client may need (never the secret).
async fn config(State(rest): State<Rest>) -> Json<Value> {
    let c = &rest.state.config;
    Json(json!({
        "weir-version": env!("CARGO_PKG_VERSION"),
        "heartbeat-interval-ms": c.heartbeat.interval.as_millis() as u64,
        "heartbeat-timeout-ms": c.heartbeat.timeout.as_millis() as u64,
    }))
}

/// `GET /jobs`: every job the dispatcher knows, with its state.
async fn jobs(State(rest): State<Rest>) -> Json<Value> {
    let jobs: Vec<Value> = rest
        .cluster
        .jobs()
        .iter()
        .map(|r| json!({"id": r.id, "status": state_name(&r.status)}))
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /jobs/overview`: every job with its name, state and start time.
async fn jobs_overview(State(rest): State<Rest>) -> Json<Value> {
    let jobs: Vec<Value> = rest.cluster.jobs().iter().map(job_json).collect();
    Json(json!({ "jobs": jobs }))
}

#[derive(serde::Deserialize)]
struct PatchMode {
    mode: Option<String>,
}

/// `PATCH /jobs/:id?mode=cancel`: cancels a running job.
async fn cancel(
    State(rest): State<Rest>,
    Path(id): Path<String>,
    Query(query): Query<PatchMode>,
) -> (StatusCode, Json<Value>) {
    if query.mode.as_deref().unwrap_or("cancel") != "cancel" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": ["the only mode is `cancel`"]})),
        );
    }
    let cluster = rest.cluster.clone();
    let job = id.clone();
    // Cancelling calls TaskManagers and waits for their answers: off the async threads.
    let found = tokio::task::spawn_blocking(move || cluster.cancel_job(&job))
        .await
        .unwrap_or(false);
    if found {
        eprintln!("Cancelling job {id}");
        (StatusCode::ACCEPTED, Json(json!({})))
    } else if rest.cluster.jobs().iter().any(|r| r.id == id) {
        (
            StatusCode::CONFLICT,
            Json(json!({"errors": [format!("job {id} is not running")]})),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"errors": [format!("no job with id {id}")]})),
        )
    }
}

/// `GET /jobs/:id`: one job.
async fn job(State(rest): State<Rest>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    match rest.cluster.jobs().iter().find(|r| r.id == id) {
        Some(record) => (StatusCode::OK, Json(job_json(record))),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"errors": [format!("no job with id {id}")]})),
        ),
    }
}

/// `POST /jobs`: a job submission (see `JobSubmission`); answers with its id.
async fn submit(State(rest): State<Rest>, body: Bytes) -> (StatusCode, Json<Value>) {
    let id = crate::cluster::dispatcher::new_job_id();
    let store = rest.state.job_store.clone();
    let cluster = rest.cluster.clone();
    let job = id.clone();
    // Decoding and writing an upload takes a while: off the threads that answer heartbeats.
    let started =
        tokio::task::spawn_blocking(move || super::job_store::submit(&store, job, &body, &cluster))
            .await
            .unwrap_or_else(|e| Err(format!("the upload failed: {e}")));
    match started {
        Ok(id) => {
            eprintln!("Submitted job {id}");
            (StatusCode::ACCEPTED, Json(json!({"jobid": id})))
        }
        Err(message) => {
            eprintln!("Refused job {id}: {message}");
            (StatusCode::BAD_REQUEST, Json(json!({"errors": [message]})))
        }
    }
}

#[derive(serde::Deserialize)]
struct SavepointRequest {
    #[serde(rename = "target-directory", alias = "targetDirectory")]
    target_directory: Option<PathBuf>,
    /// (Stop) end the sources first, so the job finishes with every timer fired.
    #[serde(default)]
    drain: bool,
}

/// Starts a savepoint (`stop`: then stops the job) of job `id` on a thread of its own; the
/// trigger id to ask about it.
fn start_savepoint(rest: &Rest, id: &str, body: &[u8], stop: bool) -> (StatusCode, Json<Value>) {
    let error = |status, message: String| (status, Json(json!({"errors": [message]})));
    let request: SavepointRequest =
        match serde_json::from_slice(if body.is_empty() { b"{}" } else { body }) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
        };
    let Some(dir) = request.target_directory else {
        return error(
            StatusCode::BAD_REQUEST,
            "give the savepoint's `target-directory`".into(),
        );
    };
    let Some(control) = rest.cluster.job_control(id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no running job with id {id}"),
        );
    };
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    let trigger: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let triggers = rest.triggers.clone();
    {
        let mut table = triggers.lock().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, (state, at)| {
            matches!(state, Trigger::InProgress) || at.elapsed() < TRIGGER_KEPT
        });
        table.insert(
            trigger.clone(),
            (Trigger::InProgress, std::time::Instant::now()),
        );
    }
    let key = trigger.clone();
    // As Flink names them: the job id's first six digits, and a random part.
    let dir = dir.join(format!(
        "savepoint-{}-{}",
        &id[..id.len().min(6)],
        &trigger[..12]
    ));
    std::thread::spawn(move || {
        let outcome = if stop {
            control.stop(&dir, request.drain)
        } else {
            control.savepoint(&dir)
        };
        let state = match outcome {
            Ok(path) => Trigger::Completed(path.display().to_string()),
            Err(reason) => Trigger::Failed(reason),
        };
        triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (state, std::time::Instant::now()));
    });
    (StatusCode::ACCEPTED, Json(json!({"request-id": trigger})))
}

/// `POST /jobs/:id/savepoints` with `{"target-directory": DIR}`.
async fn trigger_savepoint(
    State(rest): State<Rest>,
    Path(id): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    start_savepoint(&rest, &id, &body, false)
}

/// `POST /jobs/:id/stop` with `{"targetDirectory": DIR, "drain": BOOL}`: a savepoint, then the
/// job ends.
async fn stop(
    State(rest): State<Rest>,
    Path(id): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    start_savepoint(&rest, &id, &body, true)
}

/// `GET /jobs/:id/savepoints/:trigger`: how a savepoint (or stop) request stands.
async fn savepoint_status(
    State(rest): State<Rest>,
    Path((_, trigger)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let state = rest
        .triggers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&trigger)
        .map(|(state, _)| state.clone());
    match state {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"errors": [format!("no savepoint request {trigger}")]})),
        ),
        Some(Trigger::InProgress) => (
            StatusCode::OK,
            Json(json!({"status": {"id": "IN_PROGRESS"}})),
        ),
        Some(Trigger::Completed(location)) => (
            StatusCode::OK,
            Json(json!({"status": {"id": "COMPLETED"}, "operation": {"location": location}})),
        ),
        Some(Trigger::Failed(reason)) => (
            StatusCode::OK,
            Json(
                json!({"status": {"id": "COMPLETED"}, "operation": {"failure-cause": {"stack-trace": reason}}}),
            ),
        ),
    }
}
