//! Timers per key, ordered by time, as Flink's `InternalTimerService` keeps them. Registering
//! the same (key, time) twice leaves one timer.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The host's processing time: milliseconds since the Unix epoch.
pub fn processing_time_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// The timers of one operator subtask.
#[derive(Debug, Default)]
pub struct TimerService {
    event_time: BTreeSet<(i64, Vec<u8>)>,
    processing_time: BTreeSet<(i64, Vec<u8>)>,
}

/// A copy of the timers, for a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSnapshot {
    pub event_time: Vec<(i64, Vec<u8>)>,
    pub processing_time: Vec<(i64, Vec<u8>)>,
}

impl TimerService {
    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<(i64, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event_time,
            TimeDomain::ProcessingTime => &mut self.processing_time,
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.event_time.len() + self.processing_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn register(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.set(domain).insert((timestamp, key.to_vec()));
    }

    pub fn delete(&mut self, domain: TimeDomain, key: &[u8], timestamp: i64) {
        self.set(domain).remove(&(timestamp, key.to_vec()));
    }

    /// Removes and returns the earliest timer of `domain` due at `time`, if any.
    pub fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Option<(i64, Vec<u8>)> {
        let set = self.set(domain);
        if set.first().is_some_and(|(ts, _)| *ts <= time) {
            set.pop_first()
        } else {
            None
        }
    }

    /// The earliest processing-time timer, for the task to schedule a wake-up.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.processing_time.first().map(|(ts, _)| *ts)
    }

    pub fn snapshot(&self) -> TimerSnapshot {
        TimerSnapshot {
            event_time: self.event_time.iter().cloned().collect(),
            processing_time: self.processing_time.iter().cloned().collect(),
        }
    }

    /// Adds the timers of `snapshot` whose keys satisfy `owned` (the key-group filter when
    /// rescaling).
    pub fn restore(&mut self, snapshot: &TimerSnapshot, owned: impl Fn(&[u8]) -> bool) {
        self.event_time.extend(
            snapshot
                .event_time
                .iter()
                .filter(|(_, k)| owned(k))
                .cloned(),
        );
        self.processing_time.extend(
            snapshot
                .processing_time
                .iter()
                .filter(|(_, k)| owned(k))
                .cloned(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_time_order_once() {
        let mut t = TimerService::default();
        t.register(TimeDomain::EventTime, b"b", 20);
        t.register(TimeDomain::EventTime, b"a", 10);
        t.register(TimeDomain::EventTime, b"a", 10);
        t.register(TimeDomain::ProcessingTime, b"a", 5);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.pop_due(TimeDomain::EventTime, 15),
            Some((10, b"a".to_vec()))
        );
        assert_eq!(t.pop_due(TimeDomain::EventTime, 15), None);
        t.delete(TimeDomain::EventTime, b"b", 20);
        assert_eq!(t.pop_due(TimeDomain::EventTime, 100), None);
        assert_eq!(t.next_processing_time(), Some(5));
    }
}
