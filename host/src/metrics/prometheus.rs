//! Metrics in the Prometheus text exposition format (Flink's PrometheusReporter), written on
//! each scrape from what the process knows then: a registry of labelled families is filled
//! and encoded by the `prometheus` crate (its text format 0.0.4 is what every Prometheus and
//! `promtool` reads), so escaping and types are the crate's, not ours.

use prometheus::core::Collector;
use prometheus::{CounterVec, Encoder, GaugeVec, Opts, Registry, TextEncoder};

use super::TaskMetricsSnapshot;

pub type Labels = Vec<(String, String)>;

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One scrape's worth of metrics. A family's label names are those of its first series.
pub struct Scrape {
    registry: Registry,
    gauges: Vec<(&'static str, GaugeVec)>,
    counters: Vec<(&'static str, CounterVec)>,
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape {
            registry: Registry::new(),
            gauges: Vec::new(),
            counters: Vec::new(),
        }
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("weir_{name}"), help)
}

fn names(labels: &Labels) -> Vec<&str> {
    labels.iter().map(|(k, _)| k.as_str()).collect()
}

fn values(labels: &Labels) -> Vec<&str> {
    labels.iter().map(|(_, v)| v.as_str()).collect()
}

impl Scrape {
    fn register(&self, collector: impl Collector + 'static) {
        // Names are fixed and distinct: registering cannot clash.
        let _ = self.registry.register(Box::new(collector));
    }

    /// Sets gauge `weir_<name>{labels}` to `value`.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &Labels, value: f64) {
        let family = match self.gauges.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f.clone(),
            None => {
                let Ok(family) = GaugeVec::new(opts(name, help), &names(labels)) else {
                    return;
                };
                self.register(family.clone());
                self.gauges.push((name, family.clone()));
                family
            }
        };
        if let Ok(gauge) = family.get_metric_with_label_values(&values(labels)) {
            gauge.set(value);
        }
    }

    /// Sets counter `weir_<name>_total{labels}` to `value` (a total kept elsewhere, read now).
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &Labels, value: f64) {
        let family = match self.counters.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f.clone(),
            None => {
                let Ok(family) =
                    CounterVec::new(opts(&format!("{name}_total"), help), &names(labels))
                else {
                    return;
                };
                self.register(family.clone());
                self.counters.push((name, family.clone()));
                family
            }
        };
        if let Ok(counter) = family.get_metric_with_label_values(&values(labels)) {
            counter.inc_by(value.max(0.0));
        }
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
        if m.watermark > i64::MIN {
            self.gauge(
                "task_current_input_watermark_milliseconds",
                "The event-time watermark the task's operators have reached.",
                labels,
                m.watermark as f64,
            );
        }
    }

    /// A network buffer pool of `total` buffers, `in_use` of them in use, under `labels`.
    pub fn network(&mut self, labels: &Labels, total: usize, in_use: usize) {
        self.gauge(
            "network_buffers",
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
        let mut text = Vec::new();
        // Writing to memory cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8(text).unwrap_or_default()
    }
}

/// The content type of the text `Scrape::encode` writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
            text.matches("# TYPE weir_task_records_in_total counter")
                .count(),
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
