//! The JobManager's REST endpoint (Flink's WebMonitorEndpoint), with Flink's paths and field
//! names where they fit: what the CLI and the web UI read.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::jobmanager::JobManagerState;
use super::submission::JobSubmission;
use crate::cluster::{JobRecord, JobStatus, MiniCluster};

#[derive(Clone)]
struct Rest {
    state: Arc<JobManagerState>,
    cluster: Arc<MiniCluster>,
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
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(Rest { state, cluster });
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
    let refuse = |message: String| (StatusCode::BAD_REQUEST, Json(json!({"errors": [message]})));
    let submission = match JobSubmission::decode(&body) {
        Ok(s) => s,
        Err(e) => return refuse(e.to_string()),
    };
    let dir = rest
        .state
        .job_store
        .join(format!("upload-{}", rest.cluster.jobs().len() + 1));
    let (graph, options) = match submission.store(&dir) {
        Ok(stored) => stored,
        Err(e) => return refuse(e.to_string()),
    };
    match rest.cluster.start_job(graph, options) {
        Ok(id) => {
            eprintln!("Submitted job {id}");
            (StatusCode::ACCEPTED, Json(json!({"jobid": id})))
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"errors": [format!("cannot start the job: {e}")]})),
        ),
    }
}
