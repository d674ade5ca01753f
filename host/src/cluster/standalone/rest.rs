//! The JobManager's REST endpoint (Flink's WebMonitorEndpoint), with Flink's paths and field
//! names where they fit: what the CLI and the web UI read.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::jobmanager::JobManagerState;

pub(super) async fn serve(listener: TcpListener, state: Arc<JobManagerState>) {
    let app = Router::new()
        .route("/overview", get(overview))
        .route("/taskmanagers", get(task_managers))
        .route("/config", get(config))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the REST endpoint stopped: {e}");
    }
}

/// `GET /overview`: the cluster at a glance.
async fn overview(State(state): State<Arc<JobManagerState>>) -> Json<Value> {
    let tms = state.registry.task_managers();
    Json(json!({
        "taskmanagers": tms.len(),
        "slots-total": tms.iter().map(|t| t.slots.total).sum::<u32>(),
        "slots-available": tms.iter().map(|t| t.slots.free).sum::<u32>(),
        "weir-version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /taskmanagers`: every registered TaskManager.
async fn task_managers(State(state): State<Arc<JobManagerState>>) -> Json<Value> {
    let tms: Vec<Value> = state
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
async fn config(State(state): State<Arc<JobManagerState>>) -> Json<Value> {
    let c = &state.config;
    Json(json!({
        "weir-version": env!("CARGO_PKG_VERSION"),
        "heartbeat-interval-ms": c.heartbeat.interval.as_millis() as u64,
        "heartbeat-timeout-ms": c.heartbeat.timeout.as_millis() as u64,
    }))
}
