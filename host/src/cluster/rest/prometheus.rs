//! `GET /metrics` of the JobManager (or of `weir run --web-port`): the cluster's slots and
//! jobs, and per job its uptime, restarts, checkpoints and its tasks' IO metrics, labelled as
//! Flink's Prometheus reporter labels them.

use axum::extract::{Extension, State};
use axum::http::header::CONTENT_TYPE;

use super::{Caller, Rest};
use crate::checkpoint::stats::now_ms;
use crate::cluster::JobStatus;
use crate::metrics::prometheus::{self, Scrape, labels};

/// Cluster-wide, so the cluster's operator's (an admin tenant's, with tenants configured).
pub(super) async fn job_manager_metrics(
    State(rest): State<Rest>,
    Extension(caller): Extension<Caller>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !caller.is_admin() {
        return super::error(
            axum::http::StatusCode::FORBIDDEN,
            "the cluster's metrics are its operator's: use an admin tenant's token",
        )
        .into_response();
    }
    let text = tokio::task::spawn_blocking(move || scrape(&rest))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response()
}

fn scrape(rest: &Rest) -> String {
    let mut scrape = Scrape::default();
    let none = labels(&[]);
    let tms = rest.view.task_managers();
    scrape.gauge(
        "jobmanager_taskmanagers",
        "Registered TaskManagers.",
        &none,
        tms.len() as f64,
    );
    scrape.gauge(
        "jobmanager_task_slots",
        "Task slots of the registered TaskManagers.",
        &none,
        tms.iter().map(|t| f64::from(t.slots_total)).sum(),
    );
    scrape.gauge(
        "jobmanager_task_slots_available",
        "Task slots free now.",
        &none,
        tms.iter().map(|t| f64::from(t.slots_free)).sum(),
    );
    scrape.gauge(
        "jobmanager_memory_rss_bytes",
        "Resident memory of the JobManager process.",
        &none,
        prometheus::resident_memory_bytes() as f64,
    );
    let jobs = rest.cluster.jobs();
    for state in ["RUNNING", "FINISHED", "CANCELED", "FAILED"] {
        let n = jobs
            .iter()
            .filter(|j| super::state_name(&j.status) == state)
            .count();
        scrape.gauge(
            "jobmanager_jobs",
            "Jobs by state.",
            &labels(&[("state", state)]),
            n as f64,
        );
    }
    for record in jobs.iter().filter(|j| j.status == JobStatus::Running) {
        let Some(insight) = rest.cluster.job_insight(&record.id) else {
            continue;
        };
        let job = labels(&[("job_id", &record.id), ("job_name", &record.name)]);
        scrape.gauge(
            "job_uptime_seconds",
            "Time since the job was submitted.",
            &job,
            now_ms().saturating_sub(record.start_time_ms) as f64 / 1000.0,
        );
        scrape.gauge(
            "job_restarts",
            "Restarts of the job so far.",
            &job,
            f64::from(insight.restarts()),
        );
        let checkpoints = insight.checkpoints.summary();
        scrape.counter(
            "job_checkpoints_completed",
            "Checkpoints completed.",
            &job,
            checkpoints.completed as f64,
        );
        scrape.counter(
            "job_checkpoints_failed",
            "Checkpoints that failed.",
            &job,
            checkpoints.failed as f64,
        );
        if let Some(last) = &checkpoints.latest_completed {
            scrape.gauge(
                "job_last_checkpoint_duration_seconds",
                "End-to-end duration of the latest completed checkpoint.",
                &job,
                last.end_to_end_duration_ms as f64 / 1000.0,
            );
            scrape.gauge(
                "job_last_checkpoint_size_bytes",
                "State size of the latest completed checkpoint.",
                &job,
                last.state_size as f64,
            );
        }
        let plan = insight.plan();
        for (task, totals, _) in insight.tasks_now().tasks {
            let vertex = plan
                .and_then(|p| p.vertices.get(task.vertex))
                .map_or(task.name.clone(), |v| v.name.clone());
            let subtask = task.subtask.to_string();
            let task_labels = labels(&[
                ("job_id", &record.id),
                ("job_name", &record.name),
                ("task_name", &vertex),
                ("subtask_index", &subtask),
                ("tm_id", &task.task_manager),
            ]);
            scrape.task(&task_labels, &totals);
        }
    }
    scrape.encode()
}
