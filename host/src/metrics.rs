//! Task metrics, as Flink's task IO metrics: records in and out, and where the task thread's
//! time went (busy, idle waiting for input, back-pressured waiting for buffers). Counters are
//! atomics written by the task thread and read by whoever reports them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod prometheus;

/// The metrics of one task (one subtask of a vertex).
#[derive(Debug, Default)]
pub struct TaskMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    idle_ns: AtomicU64,
    backpressured_ns: AtomicU64,
    total_ns: AtomicU64,
    /// Bytes of buffers received from and sent to other TaskExecutors.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Time this task's remote subpartitions had buffers to send and no credit for them.
    credit_starved_ns: AtomicU64,
    remote_channels: Mutex<Vec<Arc<RemoteChannelGauge>>>,
    /// Linear memory of the task's guest instances now.
    guest_memory: Arc<AtomicU64>,
    /// The task's event-time watermark, biased by 2^63 so that the default, 0, is `i64::MIN`
    /// (no watermark yet) and the order of values is kept.
    watermark: AtomicU64,
}

/// Buffers in flight on one remote input channel: credit announced and not yet used, plus
/// buffers received and not yet processed.
#[derive(Debug)]
pub struct RemoteChannelGauge {
    pub channel: usize,
    pub peer: String,
    in_flight: AtomicU64,
    high_water: AtomicU64,
}

impl RemoteChannelGauge {
    pub fn set_in_flight(&self, n: u64) {
        self.in_flight.store(n, Ordering::Relaxed);
        self.high_water.fetch_max(n, Ordering::Relaxed);
    }
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }
}

/// A copy of a task's metrics at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskMetricsSnapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub busy: Duration,
    pub idle: Duration,
    pub backpressured: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub credit_starved: Duration,
    pub guest_memory_bytes: u64,
    /// The watermark the task's operators have reached (Flink's `currentInputWatermark`);
    /// `i64::MIN` before the first.
    pub watermark: i64,
}

impl TaskMetricsSnapshot {
    /// Milliseconds per second the task spent back-pressured (Flink's `backPressuredTimeMsPerSecond`).
    pub fn backpressured_ms_per_s(&self) -> f64 {
        per_second(self.backpressured, self.total())
    }
    pub fn busy_ms_per_s(&self) -> f64 {
        per_second(self.busy, self.total())
    }
    pub fn idle_ms_per_s(&self) -> f64 {
        per_second(self.idle, self.total())
    }
    fn total(&self) -> Duration {
        self.busy + self.idle + self.backpressured
    }
}

fn per_second(part: Duration, total: Duration) -> f64 {
    if total.is_zero() {
        0.0
    } else {
        part.as_secs_f64() / total.as_secs_f64() * 1000.0
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl TaskMetrics {
    pub fn add_records_in(&self, n: u64) {
        self.records_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_records_out(&self, n: u64) {
        self.records_out.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_idle(&self, d: Duration) {
        self.idle_ns.fetch_add(nanos(d), Ordering::Relaxed);
    }
    pub fn add_backpressured(&self, d: Duration) {
        self.backpressured_ns.fetch_add(nanos(d), Ordering::Relaxed);
    }
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_credit_starved(&self, d: Duration) {
        self.credit_starved_ns
            .fetch_add(nanos(d), Ordering::Relaxed);
    }
    /// The gauge the task's guest instances add their linear memory to.
    pub fn guest_memory_gauge(&self) -> Arc<AtomicU64> {
        self.guest_memory.clone()
    }
    /// A gauge for a remote input channel of this task.
    pub fn add_remote_channel(&self, channel: usize, peer: &str) -> Arc<RemoteChannelGauge> {
        let gauge = Arc::new(RemoteChannelGauge {
            channel,
            peer: peer.to_string(),
            in_flight: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
        });
        self.remote_channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(gauge.clone());
        gauge
    }
    /// The gauges of this task's remote input channels.
    pub fn remote_channels(&self) -> Vec<Arc<RemoteChannelGauge>> {
        self.remote_channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// The task's watermark advanced (it only moves forward).
    pub fn set_watermark(&self, watermark: i64) {
        self.watermark
            .fetch_max((watermark as u64) ^ (1 << 63), Ordering::Relaxed);
    }
    /// The task's wall time so far; busy time is what idle and back-pressure leave of it.
    pub fn set_elapsed(&self, d: Duration) {
        self.total_ns.store(nanos(d), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TaskMetricsSnapshot {
        let idle = Duration::from_nanos(self.idle_ns.load(Ordering::Relaxed));
        let backpressured = Duration::from_nanos(self.backpressured_ns.load(Ordering::Relaxed));
        let total = Duration::from_nanos(self.total_ns.load(Ordering::Relaxed));
        TaskMetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            busy: total.saturating_sub(idle + backpressured),
            idle,
            backpressured,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            credit_starved: Duration::from_nanos(self.credit_starved_ns.load(Ordering::Relaxed)),
            guest_memory_bytes: self.guest_memory.load(Ordering::Relaxed),
            watermark: (self.watermark.load(Ordering::Relaxed) ^ (1 << 63)) as i64,
        }
    }
}
