//! The Nexmark benchmark's events, from the `nexmark` crate's generator: a source of JSON
//! lines (`{"Bid":{...}}`, as the crate serializes its `Event` with serde_json) stamped with
//! each event's time, and the same lines written to a file. With `base_time` pinned, the n-th
//! event is always the same (each is generated from its number), so a run is reproducible and
//! a subtask's split of event numbers, and a checkpointed position, resume exactly.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use weir_framing::{BatchWriter, Record};

use super::source::{SourceBatch, SourceError, SourceReader, initial_split};

/// 2015-07-15 00:00:00 UTC, the base time of Flink's Nexmark runs.
pub const DEFAULT_BASE_TIME: u64 = 1_436_918_400_000;

/// The generator's default configuration, its first event at `base_time`.
fn config(base_time: u64) -> NexmarkConfig {
    NexmarkConfig {
        base_time,
        ..NexmarkConfig::default()
    }
}

/// Event `n` as its JSON line, and its time.
fn event_line(base_time: u64, n: u64, line: &mut Vec<u8>) -> i64 {
    let event = EventGenerator::new(config(base_time))
        .with_offset(n)
        .next()
        .expect("the generator never ends");
    line.clear();
    // An event always serializes: its fields are numbers and strings.
    let _ = serde_json::to_writer(&mut *line, &event);
    event.timestamp() as i64
}

/// Writes events `0..count` as JSON lines to `path`.
pub fn write_events(path: &Path, count: u64, base_time: u64) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let generator = EventGenerator::new(config(base_time));
    for event in generator.take(count as usize) {
        serde_json::to_writer(&mut out, &event).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Events `0..count` of the generator, split by event numbers across subtasks as a sequence
/// is; each record is an event's JSON line, stamped with its time.
pub struct NexmarkSource {
    base_time: u64,
    ranges: VecDeque<(u64, u64)>,
    /// The generator positioned at the front range's next event.
    generator: Option<EventGenerator>,
    line: Vec<u8>,
}

impl NexmarkSource {
    pub fn new(count: u64, base_time: u64, subtask: u32, parallelism: u32) -> Self {
        Self::from_ranges(vec![initial_split(count, subtask, parallelism)], base_time)
    }

    pub fn from_ranges(ranges: Vec<(u64, u64)>, base_time: u64) -> Self {
        NexmarkSource {
            base_time,
            ranges: ranges.into_iter().filter(|(a, b)| a < b).collect(),
            generator: None,
            line: Vec::new(),
        }
    }
}

impl SourceReader for NexmarkSource {
    fn next_batch(
        &mut self,
        batch: &mut BatchWriter,
        max_bytes: usize,
    ) -> Result<SourceBatch, SourceError> {
        let Some(&(start, end)) = self.ranges.front() else {
            return Ok(SourceBatch {
                records: 0,
                more: false,
                split: 0,
            });
        };
        let base_time = self.base_time;
        let generator = self
            .generator
            .get_or_insert_with(|| EventGenerator::new(config(base_time)).with_offset(start));
        let mut next = start;
        let mut records = 0;
        while batch.len() < max_bytes && next < end {
            let event = generator.next().expect("the generator never ends");
            self.line.clear();
            let _ = serde_json::to_writer(&mut self.line, &event);
            batch.push(Record {
                value: &self.line,
                key: None,
                timestamp: Some(event.timestamp() as i64),
            });
            next += 1;
            records += 1;
        }
        if next >= end {
            self.ranges.pop_front();
            self.generator = None;
        } else if let Some(front) = self.ranges.front_mut() {
            front.0 = next;
        }
        Ok(SourceBatch {
            records,
            more: !self.ranges.is_empty(),
            split: end,
        })
    }

    fn position(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().copied().collect()
    }

    fn unfinished_splits(&self) -> Vec<u64> {
        self.ranges.iter().map(|&(_, end)| end).collect()
    }
}

/// Event `n`'s JSON line, for tests.
pub fn event_json(base_time: u64, n: u64) -> (String, i64) {
    let mut line = Vec::new();
    let time = event_line(base_time, n, &mut line);
    (String::from_utf8_lossy(&line).into_owned(), time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut source: NexmarkSource) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        loop {
            let mut batch = BatchWriter::new();
            let read = source.next_batch(&mut batch, 2_000).unwrap();
            out.extend(weir_framing::records(batch.as_bytes()).map(|r| {
                let r = r.unwrap();
                (
                    String::from_utf8(r.value.to_vec()).unwrap(),
                    r.timestamp.unwrap(),
                )
            }));
            if !read.more {
                return out;
            }
        }
    }

    #[test]
    fn splits_and_a_resumed_position_give_the_files_lines_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.json");
        write_events(&file, 500, DEFAULT_BASE_TIME).unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 500);
        assert!(
            lines[0].starts_with("{\"Person\":{\"id\":1000,"),
            "{}",
            lines[0]
        );
        assert!(
            lines[4].starts_with("{\"Bid\":{\"auction\":"),
            "{}",
            lines[4]
        );
        for parallelism in [1, 3] {
            let mut got = Vec::new();
            for s in 0..parallelism {
                got.extend(read_all(NexmarkSource::new(
                    500,
                    DEFAULT_BASE_TIME,
                    s,
                    parallelism,
                )));
            }
            let got_lines: Vec<String> = got.iter().map(|(l, _)| l.clone()).collect();
            assert_eq!(got_lines, lines, "parallelism {parallelism}");
            assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "times in order");
            assert_eq!(got[0].1, DEFAULT_BASE_TIME as i64);
        }
        // A position taken after one batch resumes where it stopped.
        let mut source = NexmarkSource::new(500, DEFAULT_BASE_TIME, 0, 1);
        let mut batch = BatchWriter::new();
        let first = source.next_batch(&mut batch, 2_000).unwrap().records as usize;
        let rest = read_all(NexmarkSource::from_ranges(
            source.position(),
            DEFAULT_BASE_TIME,
        ));
        assert_eq!(rest.len(), 500 - first);
        assert_eq!(rest[0].0, lines[first]);
        assert_eq!(event_json(DEFAULT_BASE_TIME, 7).0, lines[7]);
    }
}
