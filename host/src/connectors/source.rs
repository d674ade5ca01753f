//! Sources: a file's lines split by byte ranges, and a sequence of integers split by ranges.
//! Each subtask reads only its split.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use weir_framing::Record;

/// A source could not read its input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads one subtask's split of a source.
pub trait SourceReader: Send {
    /// Appends framed records to `batch` until it holds about `max_bytes`; `Ok(false)` once the
    /// split is exhausted (the batch may still hold the last records).
    fn next_batch(&mut self, batch: &mut Vec<u8>, max_bytes: usize) -> Result<bool, SourceError>;
}

/// The lines of a text file. Subtask i of p reads the lines that start in the i-th of p equal
/// byte ranges, so every line is read by exactly one subtask whatever the parallelism.
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    position: u64,
    end: u64,
    line: Vec<u8>,
}

impl FileSource {
    pub fn open(path: &Path, subtask: u32, parallelism: u32) -> Result<Self, SourceError> {
        let io = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let split = |i: u32| len * u64::from(i) / u64::from(parallelism.max(1));
        let (start, end) = (split(subtask), split(subtask + 1));
        let mut reader = BufReader::with_capacity(64 << 10, file);
        let mut position = start;
        if start > 0 {
            // The line that starts before our range belongs to the previous subtask: skip to
            // the first line starting at or after `start`.
            reader.seek(SeekFrom::Start(start - 1)).map_err(io)?;
            let mut skipped = Vec::new();
            position = start - 1 + reader.read_until(b'\n', &mut skipped).map_err(io)? as u64;
        }
        Ok(FileSource {
            path: path.to_path_buf(),
            reader,
            position,
            end,
            line: Vec::new(),
        })
    }
}

impl SourceReader for FileSource {
    fn next_batch(&mut self, batch: &mut Vec<u8>, max_bytes: usize) -> Result<bool, SourceError> {
        while batch.len() < max_bytes {
            if self.position >= self.end {
                return Ok(false);
            }
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| SourceError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(false);
            }
            self.position += n as u64;
            let mut line = self.line.as_slice();
            if let Some(rest) = line.strip_suffix(b"\n") {
                line = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            Record::value(line).write_to(batch);
        }
        Ok(true)
    }
}

/// The integers `0..count`; subtask i of p gets the i-th of p contiguous ranges. Values are
/// 8-byte little-endian (the SDK's `BincodeFixed` for `u64`/`i64`) or decimal text.
pub struct SequenceSource {
    next: u64,
    end: u64,
    text: bool,
}

impl SequenceSource {
    pub fn new(count: u64, text: bool, subtask: u32, parallelism: u32) -> Self {
        let split =
            |i: u32| (u128::from(count) * u128::from(i) / u128::from(parallelism.max(1))) as u64;
        SequenceSource {
            next: split(subtask),
            end: split(subtask + 1),
            text,
        }
    }
}

impl SourceReader for SequenceSource {
    fn next_batch(&mut self, batch: &mut Vec<u8>, max_bytes: usize) -> Result<bool, SourceError> {
        let mut digits = itoa_buffer();
        while batch.len() < max_bytes && self.next < self.end {
            if self.text {
                let s = format_u64(self.next, &mut digits);
                Record::value(s).write_to(batch);
            } else {
                Record::value(&self.next.to_le_bytes()).write_to(batch);
            }
            self.next += 1;
        }
        Ok(self.next < self.end)
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
            let mut batch = Vec::new();
            let more = source.next_batch(&mut batch, 64).unwrap();
            out.extend(weir_framing::records(&batch).map(|r| r.unwrap().value.to_vec()));
            if !more {
                return out;
            }
        }
    }

    #[test]
    fn file_splits_read_every_line_exactly_once() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let lines: Vec<String> = (0..200)
            .map(|i| format!("line {i} {}", "x".repeat(i % 17)))
            .collect();
        write!(file, "{}", lines.join("\r\n")).unwrap();
        for parallelism in [1, 2, 3, 7, 64] {
            let mut got = Vec::new();
            for subtask in 0..parallelism {
                got.extend(read_all(
                    FileSource::open(file.path(), subtask, parallelism).unwrap(),
                ));
            }
            let got: Vec<String> = got
                .into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect();
            assert_eq!(got, lines, "parallelism {parallelism}");
        }
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
