//! The REST endpoint (Flink's WebMonitorEndpoint), with Flink's paths and field names where
//! they fit: what the CLI, the web UI and Prometheus read. The same endpoint serves a
//! standalone JobManager and, with `weir run --web-port`, the embedded mini-cluster; what
//! differs between them (the TaskManagers, the settings, whether jobs can be uploaded) comes
//! through [`ClusterView`].

mod embedded;
mod job_details;
mod prometheus;
mod savepoints;
mod ui;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use embedded::EmbeddedView;

pub use crate::cluster::standalone::tenants::Caller;
use crate::cluster::{JobRecord, JobStatus, MiniCluster};
use crate::network::BufferPoolStats;

/// A TaskManager as the REST endpoint lists it.
#[derive(Debug, Clone)]
pub struct TaskManagerView {
    pub id: String,
    pub data_address: String,
    /// Where its Prometheus metrics are scraped, if it serves them.
    pub metrics_address: Option<String>,
    /// The tenant it is reserved for; `None`: shared.
    pub tenant: Option<String>,
    pub time_since_last_heartbeat_ms: u64,
    pub slots_total: u32,
    pub slots_free: u32,
    pub cpu_cores: u32,
    pub network_buffers: usize,
    pub segment_bytes: usize,
}

/// What a TaskManager uses now.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ResourceUsage {
    pub network: BufferPoolStats,
    /// Resident memory of its process.
    pub rss_bytes: u64,
}

/// Why an upload was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a job, or one that cannot be kept or started (400).
    BadRequest(String),
    /// Over the tenant's quota (403).
    Forbidden(String),
    /// This JobManager cannot take jobs now: it no longer leads (503).
    Unavailable(String),
}

/// What the REST endpoint needs of a cluster beyond its jobs.
pub trait ClusterView: Send + Sync + 'static {
    /// Who presents `token` (`None`: no `Authorization: Bearer`); `None` if nobody: the call
    /// is refused with 401. With no tenants configured everyone is [`Caller::Open`].
    fn authenticate(&self, token: Option<&str>) -> Option<Caller> {
        let _ = token;
        Some(Caller::Open)
    }
    /// Whether `token` is the metrics scraper's (`metrics.token`), which reads `/metrics` only.
    fn scrapes_metrics(&self, token: &str) -> bool {
        let _ = token;
        false
    }
    fn task_managers(&self) -> Vec<TaskManagerView>;
    /// What TaskManager `id` uses now (it may be asked over RPC: call off async threads).
    fn task_manager_usage(&self, id: &str) -> Option<ResourceUsage>;
    /// The settings a client may need (never a secret).
    fn config(&self) -> Value;
    /// Takes a job upload from `caller` as job `id`; the id it runs under, or why not.
    fn submit(
        &self,
        id: String,
        body: &[u8],
        cluster: &Arc<MiniCluster>,
        caller: &Caller,
    ) -> Result<String, Refusal>;
}

#[derive(Clone)]
struct Rest {
    view: Arc<dyn ClusterView>,
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

/// A JSON error answer, as Flink's: `{"errors": [message]}`.
fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"errors": [message.into()]})))
}

/// The endpoint's routes over `cluster`.
pub fn router(cluster: Arc<MiniCluster>, view: Arc<dyn ClusterView>) -> Router {
    let state = Rest {
        view,
        cluster,
        triggers: Default::default(),
    };
    Router::new()
        .route("/", get(ui::index))
        .route("/web/{file}", get(ui::asset))
        .route("/metrics", get(prometheus::job_manager_metrics))
        .route("/overview", get(overview))
        .route("/taskmanagers", get(task_managers))
        .route("/taskmanagers/{id}", get(task_manager))
        .route("/config", get(config))
        .route("/jobs", get(jobs).post(submit))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job).patch(cancel))
        .route("/jobs/{id}/execution-result", get(execution_result))
        .route("/jobs/{id}/plan", get(job_details::plan))
        .route("/jobs/{id}/vertices/{vid}", get(job_details::vertex))
        .route(
            "/jobs/{id}/vertices/{vid}/backpressure",
            get(job_details::backpressure),
        )
        .route(
            "/jobs/{id}/vertices/{vid}/watermarks",
            get(job_details::watermarks),
        )
        .route("/jobs/{id}/checkpoints", get(job_details::checkpoints))
        .route("/jobs/{id}/exceptions", get(job_details::exceptions))
        .route("/jobs/{id}/savepoints", post(savepoints::trigger_savepoint))
        .route(
            "/jobs/{id}/savepoints/{trigger}",
            get(savepoints::savepoint_status),
        )
        .route("/jobs/{id}/stop", post(savepoints::stop))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such resource") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(state)
}

/// Every call but the web UI's static files names its caller by `Authorization: Bearer
/// <token>`; one nobody presents is refused with 401 before any handler runs.
async fn authenticate(
    State(rest): State<Rest>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    if path == "/" || path.starts_with("/web/") {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    if path == "/metrics"
        && token
            .as_deref()
            .is_some_and(|t| rest.view.scrapes_metrics(t))
    {
        request.extensions_mut().insert(Caller::Open);
        return next.run(request).await;
    }
    let view = rest.view.clone();
    // Reads the tenants file: off the async threads.
    let caller = tokio::task::spawn_blocking(move || view.authenticate(token.as_deref()))
        .await
        .ok()
        .flatten();
    match caller {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => (
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            error(
                StatusCode::UNAUTHORIZED,
                "no valid token: send `Authorization: Bearer <token>`",
            ),
        )
            .into_response(),
    }
}

/// The jobs `caller` may see: another tenant's are not there at all.
fn visible_jobs(rest: &Rest, caller: &Caller) -> impl Iterator<Item = JobRecord> {
    let caller = caller.clone();
    rest.cluster
        .jobs()
        .into_iter()
        .filter(move |r| caller.may_see(r.owner.as_deref()))
}

/// Job `id` as `caller` may see it.
fn visible(rest: &Rest, caller: &Caller, id: &str) -> Option<JobRecord> {
    visible_jobs(rest, caller).find(|r| r.id == id)
}

fn no_job(id: &str) -> (StatusCode, Json<Value>) {
    error(StatusCode::NOT_FOUND, format!("no job with id {id}"))
}

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve(listener: TcpListener, cluster: Arc<MiniCluster>, view: Arc<dyn ClusterView>) {
    if let Err(e) = axum::serve(listener, router(cluster, view)).await {
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
async fn overview(State(rest): State<Rest>, Extension(caller): Extension<Caller>) -> Json<Value> {
    let tms = rest.view.task_managers();
    let jobs: Vec<JobRecord> = visible_jobs(&rest, &caller).collect();
    let count = |name: &str| {
        jobs.iter()
            .filter(|j| state_name(&j.status) == name)
            .count()
    };
    Json(json!({
        "taskmanagers": tms.len(),
        "slots-total": tms.iter().map(|t| t.slots_total).sum::<u32>(),
        "slots-available": tms.iter().map(|t| t.slots_free).sum::<u32>(),
        "jobs-running": count("RUNNING"),
        "jobs-finished": count("FINISHED"),
        "jobs-cancelled": count("CANCELED"),
        "jobs-failed": count("FAILED"),
        "weir-version": env!("CARGO_PKG_VERSION"),
    }))
}

fn task_manager_json(t: &TaskManagerView) -> Value {
    json!({
        "id": t.id,
        "dataPort": t.data_address,
        "metricsAddress": t.metrics_address,
        "tenant": t.tenant,
        "timeSinceLastHeartbeat": t.time_since_last_heartbeat_ms,
        "slotsNumber": t.slots_total,
        "freeSlots": t.slots_free,
        "hardware": {
            "cpuCores": t.cpu_cores,
            "networkBuffers": t.network_buffers,
            "segmentBytes": t.segment_bytes,
        },
    })
}

/// `GET /taskmanagers`: every registered TaskManager.
async fn task_managers(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let tms: Vec<Value> = rest
        .view
        .task_managers()
        .iter()
        .map(|t| seen_by(&caller, task_manager_json(t)))
        .collect();
    Json(json!({ "taskmanagers": tms }))
}

/// A TaskManager as `caller` may see it: which tenant it is reserved for, and where its
/// metrics (every tenant's tasks') are scraped, are the cluster operator's to know.
fn seen_by(caller: &Caller, mut tm: Value) -> Value {
    if !caller.is_admin() {
        tm["tenant"] = Value::Null;
        tm["metricsAddress"] = Value::Null;
    }
    tm
}

/// `GET /taskmanagers/:id`: one TaskManager, with its slots, memory and network buffers now.
async fn task_manager(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    let Some(tm) = rest.view.task_managers().into_iter().find(|t| t.id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no TaskManager with id {id}"),
        );
    };
    let view = rest.view.clone();
    let asked = id.clone();
    let usage = tokio::task::spawn_blocking(move || view.task_manager_usage(&asked))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut answer = seen_by(&caller, task_manager_json(&tm));
    answer["memory"] = json!({ "rssBytes": usage.rss_bytes });
    answer["network"] = json!({
        "segmentSize": usage.network.segment_size,
        "totalSegments": usage.network.total,
        "usedSegments": usage.network.in_use,
        "highWaterSegments": usage.network.high_water,
    });
    (StatusCode::OK, Json(answer))
}

/// `GET /config`: the cluster's settings a client may need (never the secret).
async fn config(State(rest): State<Rest>) -> Json<Value> {
    let mut config = rest.view.config();
    config["weir-version"] = json!(env!("CARGO_PKG_VERSION"));
    Json(config)
}

/// `GET /jobs`: every job the dispatcher knows, with its state.
async fn jobs(State(rest): State<Rest>, Extension(caller): Extension<Caller>) -> Json<Value> {
    let jobs: Vec<Value> = visible_jobs(&rest, &caller)
        .map(|r| json!({"id": r.id, "status": state_name(&r.status)}))
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /jobs/overview`: every job with its name, state and start time.
async fn jobs_overview(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let jobs: Vec<Value> = visible_jobs(&rest, &caller).map(|r| job_json(&r)).collect();
    Json(json!({ "jobs": jobs }))
}

#[derive(serde::Deserialize)]
struct PatchMode {
    mode: Option<String>,
}

/// `PATCH /jobs/:id?mode=cancel`: cancels a running job.
async fn cancel(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<PatchMode>,
) -> (StatusCode, Json<Value>) {
    if visible(&rest, &caller, &id).is_none() {
        return no_job(&id);
    }
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

/// `GET /jobs/:id`: one job, with its plan and its vertices' metrics now (what the web UI's
/// job page draws).
async fn job(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    let Some(record) = visible(&rest, &caller, &id) else {
        return no_job(&id);
    };
    let mut answer = job_json(&record);
    if let Some(insight) = rest.cluster.job_insight(&id) {
        if let Some(plan) = insight.plan() {
            answer["plan"] = job_details::plan_json(plan, &id, &record.name);
        }
        answer["vertices"] = json!(job_details::vertices_of(&insight).await);
        answer["restarts"] = json!(insight.restarts());
    }
    (StatusCode::OK, Json(answer))
}

/// `GET /jobs/:id/execution-result`: whether the job ended, and how (what a client waiting for
/// its end polls: it asks no TaskManager).
async fn execution_result(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    let Some(record) = visible(&rest, &caller, &id) else {
        return no_job(&id);
    };
    let (application_status, failure) = match &record.status {
        JobStatus::Running => {
            return (
                StatusCode::OK,
                Json(json!({"status": {"id": "IN_PROGRESS"}})),
            );
        }
        JobStatus::Finished { .. } => ("SUCCEEDED", None),
        JobStatus::Cancelled => ("CANCELED", None),
        JobStatus::Failed { reason } => ("FAILED", Some(reason.clone())),
    };
    let mut result = json!({"id": id, "application-status": application_status});
    if let Some(reason) = failure {
        result["failure-cause"] = json!({ "stack-trace": reason });
    }
    (
        StatusCode::OK,
        Json(json!({"status": {"id": "COMPLETED"}, "job-execution-result": result})),
    )
}

/// `POST /jobs`: a job submission (see `JobSubmission`) by the caller, within its quota;
/// answers with its id.
async fn submit(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let id = crate::cluster::dispatcher::new_job_id();
    let view = rest.view.clone();
    let cluster = rest.cluster.clone();
    let job = id.clone();
    // Decoding and writing an upload takes a while: off the threads that answer heartbeats.
    let started = tokio::task::spawn_blocking(move || view.submit(job, &body, &cluster, &caller))
        .await
        .unwrap_or_else(|e| Err(Refusal::BadRequest(format!("the upload failed: {e}"))));
    match started {
        Ok(id) => {
            eprintln!("Submitted job {id}");
            (StatusCode::ACCEPTED, Json(json!({"jobid": id})))
        }
        Err(Refusal::BadRequest(message)) => {
            eprintln!("Refused job {id}: {message}");
            error(StatusCode::BAD_REQUEST, message)
        }
        Err(Refusal::Forbidden(message)) => {
            eprintln!("Refused job {id}: {message}");
            error(StatusCode::FORBIDDEN, message)
        }
        Err(Refusal::Unavailable(message)) => {
            eprintln!("Refused job {id}: {message}");
            error(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}
