//! Savepoints and stops through REST, as Flink's asynchronous operations: a request starts the
//! work on a thread of its own and answers with a trigger id; the outcome is asked for by it.

use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Caller, Rest, TRIGGER_KEPT, Trigger};
use crate::cluster::standalone::confine::confine;

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
fn start_savepoint(
    rest: &Rest,
    caller: &Caller,
    id: &str,
    body: &[u8],
    stop: bool,
) -> (StatusCode, Json<Value>) {
    let error = |status, message: String| (status, Json(json!({"errors": [message]})));
    if super::visible(rest, caller, id).is_none() {
        return super::no_job(id);
    }
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
    let dir = match caller.tenant().filter(|t| !t.admin) {
        Some(tenant) => match confine(tenant, "the savepoint directory", &dir) {
            Ok(dir) => dir,
            Err(e) => return error(StatusCode::FORBIDDEN, e.to_string()),
        },
        None => dir,
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
            format!("{id}/{trigger}"),
            (Trigger::InProgress, std::time::Instant::now()),
        );
    }
    // Kept under the job's id with it: asked for under another job, it is not there.
    let key = format!("{id}/{trigger}");
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
pub(super) async fn trigger_savepoint(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    start_savepoint(&rest, &caller, &id, &body, false)
}

/// `POST /jobs/:id/stop` with `{"targetDirectory": DIR, "drain": BOOL}`: a savepoint, then the
/// job ends.
pub(super) async fn stop(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    start_savepoint(&rest, &caller, &id, &body, true)
}

/// `GET /jobs/:id/savepoints/:trigger`: how a savepoint (or stop) request stands.
pub(super) async fn savepoint_status(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
    Path((id, trigger)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    if super::visible(&rest, &caller, &id).is_none() {
        return super::no_job(&id);
    }
    let state = rest
        .triggers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&format!("{id}/{trigger}"))
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
