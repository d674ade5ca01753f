//! Sources: a file's lines split by byte ranges, and a sequence of integers split by ranges.
//! Each subtask reads only its split.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use weir_framing::{BatchWriter, Record};

/// A source could not read its input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read `{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// An external system's source (a Kafka topic, say) failed.
    #[error("{what}: {message}")]
    External { what: String, message: String },
}

/// Reads one subtask's split of a source.
pub trait SourceReader: Send {
    /// Appends framed records to `batch` until it holds about `max_bytes`, and says how many
    /// (so the task counts its input without another pass) and whether more follow (the batch
    /// may still hold the last records when none do).
    fn next_batch(
        &mut self,
        batch: &mut BatchWriter,
        max_bytes: usize,
    ) -> Result<SourceBatch, SourceError>;

    /// What is left to read, as ranges (bytes of a file, numbers of a sequence): the source's
    /// checkpointed position. A reader made from these ranges continues where this one is.
    fn position(&self) -> Vec<(u64, u64)>;

    /// The splits left to read, by id (stable while reading: the end of a split's range).
    fn unfinished_splits(&self) -> Vec<u64>;

    /// Checkpoint `checkpoint`'s barrier: what was read before it is covered by it. Called
    /// just before [`position`](Self::position) is taken for that checkpoint.
    fn barrier(&mut self, checkpoint: u64) {
        let _ = checkpoint;
    }

    /// Checkpoint `checkpoint` completed: a source that acknowledges what it read (a message
    /// queue) does so for what that checkpoint covers.
    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), SourceError> {
        let _ = checkpoint;
        Ok(())
    }
}

/// What one [`SourceReader::next_batch`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceBatch {
    /// Records appended.
    pub records: u64,
    /// False once the reader is exhausted.
    pub more: bool,
    /// The split the records came from (each batch comes from one).
    pub split: u64,
}

/// The range of `0..len` that subtask `subtask` of `parallelism` starts with.
pub fn initial_split(len: u64, subtask: u32, parallelism: u32) -> (u64, u64) {
    let at = |i: u32| (u128::from(len) * u128::from(i) / u128::from(parallelism.max(1))) as u64;
    (at(subtask), at(subtask + 1))
}

/// Deals the remaining ranges of all old subtasks to `parallelism` new ones: subtask i keeps
/// old subtask i's ranges when the parallelism is unchanged; otherwise ranges go round robin.
pub fn redistribute(
    old: &[(u32, Vec<(u64, u64)>)],
    subtask: u32,
    parallelism: u32,
    old_parallelism: u32,
) -> Vec<(u64, u64)> {
    if parallelism == old_parallelism {
        return old
            .iter()
            .filter(|(s, _)| *s == subtask)
            .flat_map(|(_, r)| r.iter().copied())
            .collect();
    }
    let mut all: Vec<(u64, u64)> = old.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    all.sort_unstable();
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 % parallelism == subtask)
        .map(|(_, r)| r)
        .collect()
}

/// The lines of a text file. A range holds the lines that start in it, so the initial splits
/// (equal byte ranges, one per subtask) read every line exactly once whatever the parallelism,
/// and a checkpointed position (the next line's offset) resumes exactly.
///
/// A subtask with several ranges (after rescaling) reads them in turn, a batch from each, as a
/// Flink source reader interleaves its splits: each range is a split whose event time the
/// watermark generator follows on its own, and reading them side by side keeps the splits'
/// event times close.
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    ranges: VecDeque<FileRange>,
    /// The offset the reader is at, if known: a range that goes on from there needs no seek.
    at: Option<u64>,
    line: Vec<u8>,
}

/// Lines left to read: those starting in `position..end`; once `begun`, `position` is the
/// start of a line.
#[derive(Debug, Clone, Copy)]
struct FileRange {
    position: u64,
    end: u64,
    begun: bool,
}

impl FileSource {
    /// Subtask `subtask`'s initial split of the file.
    pub fn open(path: &Path, subtask: u32, parallelism: u32) -> Result<Self, SourceError> {
        let len = std::fs::metadata(path)
            .map_err(|error| SourceError::Io {
                path: path.to_path_buf(),
                error,
            })?
            .len();
        Self::open_ranges(path, vec![initial_split(len, subtask, parallelism)])
    }

    /// Reads the lines starting in `ranges`.
    pub fn open_ranges(path: &Path, ranges: Vec<(u64, u64)>) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|error| SourceError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(FileSource {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 << 10, file),
            ranges: ranges
                .into_iter()
                .filter(|(start, end)| start < end)
                .map(|(position, end)| FileRange {
                    position,
                    end,
                    begun: false,
                })
                .collect(),
            at: None,
            line: Vec::new(),
        })
    }

    fn io(&self, error: std::io::Error) -> SourceError {
        SourceError::Io {
            path: self.path.clone(),
            error,
        }
    }

    /// Moves to the first line starting at or after `start`.
    fn begin(&mut self, start: u64) -> Result<u64, SourceError> {
        if start == 0 {
            self.reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| self.io(e))?;
            return Ok(0);
        }
        self.reader
            .seek(SeekFrom::Start(start - 1))
            .map_err(|e| self.io(e))?;
        let mut skipped = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut skipped)
            .map_err(|e| self.io(e))?;
        Ok(start - 1 + n as u64)
    }

    /// Puts the reader at the range's next line.
    fn enter(&mut self, range: &mut FileRange) -> Result<(), SourceError> {
        if !range.begun {
            range.position = self.begin(range.position)?;
            range.begun = true;
        } else if self.at != Some(range.position) {
            self.reader
                .seek(SeekFrom::Start(range.position))
                .map_err(|e| self.io(e))?;
        }
        self.at = Some(range.position);
        Ok(())
    }
}

impl SourceReader for FileSource {
    fn next_batch(
        &mut self,
        batch: &mut BatchWriter,
        max_bytes: usize,
    ) -> Result<SourceBatch, SourceError> {
        let Some(mut range) = self.ranges.pop_front() else {
            return Ok(SourceBatch {
                records: 0,
                more: false,
                split: 0,
            });
        };
        self.enter(&mut range)?;
        let mut records = 0;
        while batch.len() < max_bytes && range.position < range.end {
            // A line whole in the reader's buffer goes into the batch from there; only one that
            // runs past the buffer is gathered first (one copy fewer per line).
            let buffered = self.reader.fill_buf().map_err(|error| SourceError::Io {
                path: self.path.clone(),
                error,
            })?;
            if buffered.is_empty() {
                range.position = range.end;
                break;
            }
            let n = match memchr::memchr(b'\n', buffered) {
                Some(newline) => {
                    batch.push(Record::value(without_line_end(&buffered[..=newline])));
                    self.reader.consume(newline + 1);
                    newline + 1
                }
                None => {
                    self.line.clear();
                    let n = self
                        .reader
                        .read_until(b'\n', &mut self.line)
                        .map_err(|e| self.io(e))?;
                    batch.push(Record::value(without_line_end(&self.line)));
                    n
                }
            };
            range.position += n as u64;
            self.at = Some(range.position);
            records += 1;
        }
        let split = range.end;
        if range.position < range.end {
            self.ranges.push_back(range);
        }
        Ok(SourceBatch {
            records,
            more: !self.ranges.is_empty(),
            split,
        })
    }

    fn position(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|r| (r.position, r.end)).collect()
    }

    fn unfinished_splits(&self) -> Vec<u64> {
        self.ranges.iter().map(|r| r.end).collect()
    }
}

/// The integers of its ranges, in order; subtask i of p starts with the i-th of p contiguous
/// ranges of `0..count`. Values are 8-byte little-endian (the SDK's `BincodeFixed` for
/// `u64`/`i64`) or decimal text.
pub struct SequenceSource {
    ranges: VecDeque<(u64, u64)>,
    text: bool,
    /// Each record's timestamp is its number (milliseconds).
    timestamps: bool,
}

impl SequenceSource {
    pub fn new(count: u64, text: bool, subtask: u32, parallelism: u32) -> Self {
        Self::from_ranges(vec![initial_split(count, subtask, parallelism)], text)
    }

    pub fn from_ranges(ranges: Vec<(u64, u64)>, text: bool) -> Self {
        SequenceSource {
            ranges: ranges.into_iter().filter(|(a, b)| a < b).collect(),
            text,
            timestamps: false,
        }
    }

    /// Records carry their number as their event time, in milliseconds.
    pub fn with_timestamps(mut self, timestamps: bool) -> Self {
        self.timestamps = timestamps;
        self
    }
}

impl SourceReader for SequenceSource {
    fn next_batch(
        &mut self,
        batch: &mut BatchWriter,
        max_bytes: usize,
    ) -> Result<SourceBatch, SourceError> {
        let mut digits = itoa_buffer();
        let mut records = 0;
        let split = self.ranges.front().map_or(0, |&(_, end)| end);
        while batch.len() < max_bytes {
            let Some((next, end)) = self.ranges.front_mut() else {
                break;
            };
            if self.text || self.timestamps {
                let value = if self.text {
                    format_u64(*next, &mut digits)
                } else {
                    digits[..8].copy_from_slice(&next.to_le_bytes());
                    &digits[..8]
                };
                batch.push(Record {
                    value,
                    key: None,
                    timestamp: self.timestamps.then_some(*next as i64),
                });
                *next += 1;
                records += 1;
            } else {
                // The hot loop of every benchmark: 8-byte values appended to a block.
                let room = (max_bytes - batch.len()).div_ceil(8) as u64;
                let n = room.min(*end - *next);
                for x in *next..*next + n {
                    batch.push(Record::value(&x.to_le_bytes()));
                }
                *next += n;
                records += n;
            }
            if *next >= *end {
                // One split per batch, so the watermark generator knows whose records these
                // are.
                self.ranges.pop_front();
                break;
            }
        }
        Ok(SourceBatch {
            records,
            more: !self.ranges.is_empty(),
            split,
        })
    }

    fn position(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().copied().collect()
    }

    fn unfinished_splits(&self) -> Vec<u64> {
        self.ranges.iter().map(|&(_, end)| end).collect()
    }
}

/// A line without its `\n` or `\r\n`.
fn without_line_end(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(rest) => rest.strip_suffix(b"\r").unwrap_or(rest),
        None => line,
    }
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(mut source: impl SourceReader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut batch = BatchWriter::new();
            let read = source.next_batch(&mut batch, 64).unwrap();
            let before = out.len();
            out.extend(weir_framing::records(batch.as_bytes()).map(|r| r.unwrap().value.to_vec()));
            assert_eq!(read.records as usize, out.len() - before);
            if !read.more {
                return out;
            }
        }
    }

    /// Every subtask's initial split of `path`, read in turn: the lines, in order.
    fn read_splits(path: &Path, parallelism: u32) -> Vec<String> {
        (0..parallelism)
            .flat_map(|subtask| read_all(FileSource::open(path, subtask, parallelism).unwrap()))
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn file_splits_read_every_line_exactly_once() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let lines: Vec<String> = (0..200)
            .map(|i| format!("line {i} {}", "x".repeat(i % 17)))
            .collect();
        write!(file, "{}", lines.join("\r\n")).unwrap();
        for parallelism in [1, 2, 3, 7, 64] {
            assert_eq!(
                read_splits(file.path(), parallelism),
                lines,
                "parallelism {parallelism}"
            );
        }
    }

    #[test]
    fn lines_longer_than_the_read_buffer_or_across_its_end_arrive_whole() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Lines of every length around the buffer's size, one far longer than it, the last
        // without a line end.
        let mut lines: Vec<String> = (0..40)
            .map(|i| format!("{i}:{}", "y".repeat(i * 7919 % 70_000)))
            .collect();
        lines.insert(20, "z".repeat(700_000));
        write!(file, "{}", lines.join("\n")).unwrap();
        for parallelism in [1, 3] {
            assert_eq!(
                read_splits(file.path(), parallelism),
                lines,
                "parallelism {parallelism}"
            );
        }
    }

    #[test]
    fn a_position_resumes_exactly_even_at_another_parallelism() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let lines: Vec<String> = (0..500).map(|i| format!("{i}")).collect();
        writeln!(file, "{}", lines.join("\n")).unwrap();
        // Two subtasks read one batch each, then "checkpoint".
        let mut read = Vec::new();
        let mut old = Vec::new();
        for subtask in 0..2 {
            let mut source = FileSource::open(file.path(), subtask, 2).unwrap();
            let mut batch = BatchWriter::new();
            source.next_batch(&mut batch, 100).unwrap();
            read.extend(
                weir_framing::records(batch.as_bytes())
                    .map(|r| String::from_utf8(r.unwrap().value.to_vec()).unwrap()),
            );
            old.push((subtask, source.position()));
        }
        for subtask in 0..3 {
            let source =
                FileSource::open_ranges(file.path(), redistribute(&old, subtask, 3, 2)).unwrap();
            read.extend(
                read_all(source)
                    .into_iter()
                    .map(|l| String::from_utf8(l).unwrap()),
            );
        }
        read.sort_by_key(|l| l.parse::<u32>().unwrap());
        assert_eq!(read, lines);
    }

    #[test]
    fn sequence_splits_cover_the_range_once() {
        for parallelism in [1, 3, 4] {
            let mut got = Vec::new();
            for subtask in 0..parallelism {
                got.extend(read_all(SequenceSource::new(
                    1000,
                    false,
                    subtask,
                    parallelism,
                )));
            }
            let got: Vec<u64> = got
                .iter()
                .map(|v| u64::from_le_bytes(v.as_slice().try_into().unwrap()))
                .collect();
            assert_eq!(got, (0..1000).collect::<Vec<_>>());
        }
        let text = read_all(SequenceSource::new(12, true, 0, 1));
        assert_eq!(text[10], b"10");
    }
}
