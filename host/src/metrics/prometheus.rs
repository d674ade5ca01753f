//! Metrics in the Prometheus text format (Flink's PrometheusReporter), written on each scrape
//! from what the process knows then: a registry of labelled families is filled and encoded by
//! `prometheus-client`, so the exposition format (escaping, types, `_total` suffixes) is the
//! crate's, not ours.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::TaskMetricsSnapshot;

pub type Labels = Vec<(String, String)>;
type GaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;
type CounterFamily = Family<Labels, Counter<f64, AtomicU64>>;

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One scrape's worth of metrics.
pub struct Scrape {
    registry: Registry,
    gauges: Vec<(&'static str, GaugeFamily)>,
    counters: Vec<(&'static str, CounterFamily)>,
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape {
            registry: Registry::with_prefix("weir"),
            gauges: Vec::new(),
            counters: Vec::new(),
        }
    }
}

impl Scrape {
    fn gauge_family(&mut self, name: &'static str, help: &str) -> GaugeFamily {
        if let Some((_, f)) = self.gauges.iter().find(|(n, _)| *n == name) {
            return f.clone();
        }
        let family = GaugeFamily::default();
        self.registry.register(name, help, family.clone());
        self.gauges.push((name, family.clone()));
        family
    }

    fn counter_family(&mut self, name: &'static str, help: &str) -> CounterFamily {
        if let Some((_, f)) = self.counters.iter().find(|(n, _)| *n == name) {
            return f.clone();
        }
        let family = CounterFamily::default();
        self.registry.register(name, help, family.clone());
        self.counters.push((name, family.clone()));
        family
    }

    /// Sets gauge `name{labels}` to `value`.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &Labels, value: f64) {
        self.gauge_family(name, help)
            .get_or_create(labels)
            .set(value);
    }

    /// Sets counter `name_total{labels}` to `value` (a total kept elsewhere, read now).
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &Labels, value: f64) {
        self.counter_family(name, help)
            .get_or_create(labels)
            .inc_by(value);
    }

    /// A task's IO metrics under `labels` (job, task, subtask, TaskManager).
    pub fn task(&mut self, labels: &Labels, m: &TaskMetricsSnapshot) {
        self.counter(
            "task_records_in",
            "Records the task read.",
            labels,
            m.records_in as f64,
        );
        self.counter(
            "task_records_out",
            "Records the task wrote.",
            labels,
            m.records_out as f64,
        );
        self.counter(
            "task_bytes_in",
            "Bytes the task received from other TaskManagers.",
            labels,
            m.bytes_in as f64,
        );
        self.counter(
            "task_bytes_out",
            "Bytes the task sent to other TaskManagers.",
            labels,
            m.bytes_out as f64,
        );
        self.counter(
            "task_busy_seconds",
            "Time the task thread spent working.",
            labels,
            m.busy.as_secs_f64(),
        );
        self.counter(
            "task_idle_seconds",
            "Time the task thread waited for input.",
            labels,
            m.idle.as_secs_f64(),
        );
        self.counter(
            "task_backpressured_seconds",
            "Time the task thread waited for an output buffer or for credit.",
            labels,
            m.backpressured.as_secs_f64(),
        );
        self.gauge(
            "task_guest_memory_bytes",
            "Linear memory of the task's guest instances.",
            labels,
            m.guest_memory_bytes as f64,
        );
    }

    /// A network buffer pool of `total` buffers, `in_use` of them in use, under `labels`.
    pub fn network(&mut self, labels: &Labels, total: usize, in_use: usize) {
        self.gauge(
            "network_buffers_total",
            "Network buffers of the TaskManager.",
            labels,
            total as f64,
        );
        self.gauge(
            "network_buffers_in_use",
            "Network buffers in use now.",
            labels,
            in_use as f64,
        );
        let usage = if total == 0 {
            0.0
        } else {
            in_use as f64 / total as f64
        };
        self.gauge(
            "network_pool_usage",
            "Share of the network buffers in use.",
            labels,
            usage,
        );
    }

    /// The text to answer the scrape with.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The content type of the text `Scrape::encode` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A task's name (`vertex (subtask/parallelism)`) as the vertex's name and the 0-based
/// subtask index.
pub fn split_task_name(name: &str) -> (String, String) {
    if let Some((vertex, rest)) = name.rsplit_once(" (")
        && let Some((subtask, _)) = rest.split_once('/')
        && let Ok(n) = subtask.parse::<u32>()
    {
        return (vertex.to_string(), n.saturating_sub(1).to_string());
    }
    (name.to_string(), "0".to_string())
}

/// Resident memory of this process, from `/proc/self/statm` (0 where there is none).
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_out_once_with_their_labels_and_counters_end_in_total() {
        let mut scrape = Scrape::default();
        let a = labels(&[("job_id", "j1"), ("task_name", "count \"x\"")]);
        let b = labels(&[("job_id", "j1"), ("task_name", "sink")]);
        scrape.task(
            &a,
            &TaskMetricsSnapshot {
                records_in: 5,
                ..TaskMetricsSnapshot::default()
            },
        );
        scrape.task(&b, &TaskMetricsSnapshot::default());
        let text = scrape.encode();
        assert_eq!(
            text.matches("# TYPE weir_task_records_in counter").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains(
                "weir_task_records_in_total{job_id=\"j1\",task_name=\"count \\\"x\\\"\"} 5"
            ),
            "{text}"
        );
        assert!(text.contains("task_name=\"sink\""), "{text}");
    }
}
