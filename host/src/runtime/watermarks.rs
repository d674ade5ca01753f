//! Watermark generation (Flink's `WatermarkStrategy` run by the source operator, per split):
//! placed in a chain right after the node whose output carries event time (the source, for
//! timestamps of its own, or the operator that assigns them), it watches the timestamps of the
//! records that pass and, after each batch, emits the watermark they allow.
//!
//! In a source task the generator keeps one clock per source split: the task tells it, through
//! a [`SplitCursor`], which split the batch in flight came from and which splits are still
//! being read. The task's watermark is the least over its unfinished, non-idle splits, so a
//! split read later (the ranges a rescaled subtask took over, read in turn) holds the watermark
//! back instead of finding its records late. A split with no record for the idle timeout stops
//! holding it back; when every split is idle the task tells the next tasks it is idle, and
//! rejoins with its next record. Elsewhere the generator has one clock.
//!
//! Watermarks from upstream are dropped (the generator's own replace them), except the end of
//! event time, which passes: Flink's `TimestampsAndWatermarksOperator` does the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_framing::Record;

pub use crate::job::WatermarkStrategy;
use crate::metrics::TaskMetrics;
use crate::state::OperatorSnapshot;
use crate::stream::{Barrier, Output, StreamError};

/// Which source split the batch in flight came from, and which are still being read; shared by
/// a source task and the generator in its chain.
#[derive(Debug, Clone, Default)]
pub struct SplitCursor(Arc<Mutex<Splits>>);

#[derive(Debug, Default)]
struct Splits {
    current: u64,
    unfinished: Vec<u64>,
}

impl SplitCursor {
    /// The batch about to enter the chain came from split `current`; `unfinished` are the
    /// splits the reader has left (including `current` unless it just ended).
    pub fn set(&self, current: u64, unfinished: &[u64]) {
        let mut splits = self.lock();
        splits.current = current;
        splits.unfinished.clear();
        splits.unfinished.extend_from_slice(unfinished);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Splits> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The split of the batch in flight.
    fn current(&self) -> u64 {
        self.lock().current
    }

    fn unfinished(&self) -> Vec<u64> {
        self.lock().unfinished.clone()
    }
}

/// One split's progress in event time.
#[derive(Debug, Clone, Copy)]
struct SplitClock {
    /// Largest timestamp seen.
    max_timestamp: i64,
    /// Processing time of its last record.
    last_record_at: i64,
}

/// The generator: an [`Output`] in the chain, in front of the rest of it.
pub struct WatermarkGenerator {
    next: Box<dyn Output>,
    strategy: WatermarkStrategy,
    /// `None` outside a source task: one clock, split 0.
    cursor: Option<SplitCursor>,
    clocks: HashMap<u64, SplitClock>,
    /// The split whose records pass now.
    current: u64,
    /// The last watermark emitted.
    emitted: i64,
    idle: bool,
    /// Processing time, as last told (records are stamped with it for idleness).
    now: i64,
    /// When the generator started: a split that has sent nothing counts as idle once it has
    /// been quiet this long (Flink's `WatermarksWithIdleness` does the same).
    started: i64,
    metrics: Arc<TaskMetrics>,
}

impl WatermarkGenerator {
    pub fn new(
        next: Box<dyn Output>,
        strategy: WatermarkStrategy,
        cursor: Option<SplitCursor>,
        metrics: Arc<TaskMetrics>,
    ) -> Self {
        let now = crate::state::processing_time_now();
        WatermarkGenerator {
            next,
            strategy,
            cursor,
            clocks: HashMap::new(),
            current: 0,
            emitted: i64::MIN,
            idle: false,
            now,
            started: now,
            metrics,
        }
    }

    fn observe(&mut self, timestamp: Option<i64>) {
        let now = self.now;
        let clock = self.clocks.entry(self.current).or_insert(SplitClock {
            max_timestamp: i64::MIN,
            last_record_at: now,
        });
        clock.last_record_at = now;
        if let Some(t) = timestamp {
            clock.max_timestamp = clock.max_timestamp.max(t);
        }
    }

    /// Rejoins after idleness: the next tasks count this one again before its records reach
    /// them.
    fn wake(&mut self) -> Result<(), StreamError> {
        if self.idle {
            self.idle = false;
            self.next.emit_watermark_status(false)?;
        }
        Ok(())
    }

    /// The splits that count now: unfinished ones (a source task) or the one clock.
    fn counted_splits(&self) -> Vec<u64> {
        match &self.cursor {
            Some(cursor) => cursor.unfinished(),
            None => vec![0],
        }
    }

    /// Emits the watermark the splits allow, if it moved on; goes idle if every split is.
    fn emit_due(&mut self) -> Result<(), StreamError> {
        let delay = i64::try_from(self.strategy.out_of_orderness_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let idle_after = self
            .strategy
            .idle_timeout_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let splits = self.counted_splits();
        if splits.is_empty() {
            // Before the first batch, or after the last: the end of input says the rest.
            return Ok(());
        }
        let mut least: Option<i64> = None;
        let mut all_idle = true;
        for split in splits {
            let clock = self.clocks.get(&split);
            let idle = match (clock, idle_after) {
                (Some(c), Some(after)) => self.now.saturating_sub(c.last_record_at) >= after,
                // A split that has sent nothing yet holds the watermark back until it has, or
                // until it has been quiet as long as an idle one.
                (None, Some(after)) => self.now.saturating_sub(self.started) >= after,
                (_, None) => false,
            };
            if idle {
                continue;
            }
            all_idle = false;
            let watermark = clock.map_or(i64::MIN, |c| {
                if c.max_timestamp == i64::MIN {
                    i64::MIN
                } else {
                    c.max_timestamp.saturating_sub(delay)
                }
            });
            least = Some(least.map_or(watermark, |l| l.min(watermark)));
        }
        if all_idle && idle_after.is_some() {
            if !self.idle {
                self.idle = true;
                self.next.emit_watermark_status(true)?;
            }
            return Ok(());
        }
        if let Some(watermark) = least
            && watermark > self.emitted
        {
            self.wake()?;
            self.emitted = watermark;
            self.metrics.set_watermark(watermark);
            self.next.emit_watermark(watermark)?;
        }
        Ok(())
    }
}

impl Output for WatermarkGenerator {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.wake()?;
        if let Some(cursor) = &self.cursor {
            self.current = cursor.current();
        }
        self.observe(record.timestamp);
        self.next.collect(record)
    }

    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        self.wake()?;
        if let Some(cursor) = &self.cursor {
            self.current = cursor.current();
        }
        let mut any = false;
        let mut max = i64::MIN;
        for record in weir_framing::records(batch) {
            let record =
                record.map_err(|e| StreamError::Output(format!("malformed batch: {e}")))?;
            any = true;
            if let Some(t) = record.timestamp {
                max = max.max(t);
            }
        }
        if any {
            self.observe((max > i64::MIN).then_some(max));
        }
        self.next.collect_batch(batch)
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        if watermark == i64::MAX && self.emitted < i64::MAX {
            self.wake()?;
            self.emitted = i64::MAX;
            self.metrics.set_watermark(watermark);
            return self.next.emit_watermark(watermark);
        }
        Ok(())
    }

    fn emit_watermark_status(&mut self, _idle: bool) -> Result<(), StreamError> {
        // The generator decides this task's idleness itself.
        Ok(())
    }

    fn advance_processing_time(&mut self, now: i64) -> Result<(), StreamError> {
        self.now = now;
        self.emit_due()?;
        self.next.advance_processing_time(now)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.emit_due()?;
        self.next.flush()
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        self.next.snapshot(barrier, into)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        self.next.notify_checkpoint_complete(checkpoint)
    }

    fn end_input(&mut self) -> Result<(), StreamError> {
        self.next.end_input()
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.next.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::output::CollectingOutput;

    fn generator(
        out_of_orderness_ms: u64,
        idle_timeout_ms: Option<u64>,
        cursor: Option<SplitCursor>,
    ) -> (WatermarkGenerator, CollectingOutput) {
        let output = CollectingOutput::new();
        let generator = WatermarkGenerator::new(
            Box::new(output.clone()),
            WatermarkStrategy {
                out_of_orderness_ms,
                idle_timeout_ms,
            },
            cursor,
            Arc::default(),
        );
        (generator, output)
    }

    fn batch(timestamps: &[i64]) -> Vec<u8> {
        let mut batch = Vec::new();
        for &t in timestamps {
            Record {
                value: b"x",
                key: None,
                timestamp: Some(t),
            }
            .write_to(&mut batch);
        }
        batch
    }

    #[test]
    fn the_watermark_trails_the_largest_timestamp_by_the_bound_and_never_goes_back() {
        let (mut g, out) = generator(4_000, None, None);
        g.collect_batch(&batch(&[10_000, 12_000, 11_000])).unwrap();
        g.flush().unwrap();
        g.collect_batch(&batch(&[9_000])).unwrap();
        g.flush().unwrap();
        g.collect_batch(&batch(&[20_000])).unwrap();
        g.flush().unwrap();
        // Upstream watermarks are the generator's to replace, but the end of time passes.
        g.emit_watermark(50_000).unwrap();
        g.emit_watermark(i64::MAX).unwrap();
        assert_eq!(out.lock().watermarks, vec![7_999, 15_999, i64::MAX]);
        assert_eq!(out.lock().records.len(), 5);
    }

    #[test]
    fn the_least_unfinished_split_holds_the_watermark_back() {
        let cursor = SplitCursor::default();
        let (mut g, out) = generator(0, None, Some(cursor.clone()));
        // Split 1 is read first, far ahead; split 2 has sent nothing yet.
        cursor.set(1, &[1, 2]);
        g.collect_batch(&batch(&[100_000])).unwrap();
        g.flush().unwrap();
        assert!(out.lock().watermarks.is_empty());
        cursor.set(2, &[1, 2]);
        g.collect_batch(&batch(&[5_000])).unwrap();
        g.flush().unwrap();
        // Split 2 ends: split 1 alone counts.
        cursor.set(2, &[1]);
        g.flush().unwrap();
        assert_eq!(out.lock().watermarks, vec![4_999, 99_999]);
    }

    #[test]
    fn records_one_at_a_time_count_for_their_split_and_a_silent_generator_goes_idle() {
        let cursor = SplitCursor::default();
        let (mut g, out) = generator(0, Some(1_000), Some(cursor.clone()));
        g.advance_processing_time(0).unwrap();
        g.started = 0;
        cursor.set(7, &[7]);
        g.collect(Record {
            value: b"x",
            key: None,
            timestamp: Some(40),
        })
        .unwrap();
        g.flush().unwrap();
        assert_eq!(out.lock().watermarks, vec![39]);
        // A generator that never sees a record goes idle after the timeout.
        let (mut silent, out) = generator(0, Some(1_000), None);
        silent.started = 0;
        silent.advance_processing_time(999).unwrap();
        assert!(out.lock().statuses.is_empty());
        silent.advance_processing_time(1_000).unwrap();
        assert_eq!(out.lock().statuses, vec![true]);
    }

    #[test]
    fn a_quiet_split_stops_counting_and_an_all_quiet_task_goes_idle_until_its_next_record() {
        let cursor = SplitCursor::default();
        let (mut g, out) = generator(0, Some(1_000), Some(cursor.clone()));
        g.advance_processing_time(0).unwrap();
        cursor.set(1, &[1, 2]);
        g.collect_batch(&batch(&[500])).unwrap();
        cursor.set(2, &[1, 2]);
        g.collect_batch(&batch(&[300])).unwrap();
        g.flush().unwrap();
        assert_eq!(out.lock().watermarks, vec![299]);
        // Split 1 goes on; split 2 is quiet past the timeout and stops holding it back.
        g.advance_processing_time(800).unwrap();
        cursor.set(1, &[1, 2]);
        g.collect_batch(&batch(&[900])).unwrap();
        g.advance_processing_time(1_500).unwrap();
        assert_eq!(out.lock().watermarks, vec![299, 899]);
        // Both quiet: idle, once; a record makes the task active again before it passes.
        g.advance_processing_time(5_000).unwrap();
        g.advance_processing_time(6_000).unwrap();
        assert_eq!(out.lock().statuses, vec![true]);
        g.collect_batch(&batch(&[950])).unwrap();
        assert_eq!(out.lock().statuses, vec![true, false]);
        g.flush().unwrap();
        assert_eq!(out.lock().watermarks, vec![299, 899, 949]);
    }
}
