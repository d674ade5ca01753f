//! The weir record framing: one flat layout for records in guest batches, network buffers and
//! state files, so a buffer can move between them without re-encoding.
//!
//! Each record is length-prefixed, so a reader can skip, split or copy records without looking
//! at their values:
//!
//! ```text
//! length:     u32 LE   bytes that follow, excluding this field
//! flags:      u8       bit 0: has timestamp, bit 1: has key; other bits must be zero
//! timestamp:  i64 LE   present if bit 0
//! key length: u32 LE   present if bit 1, followed by the key bytes
//! value:               the rest of the record
//! ```
//!
//! A value-only record of 8 bytes takes 13 bytes. All integers are little-endian and unaligned.
//!
//! Records of one shape in a row (same flags, same key and value lengths) can share a block,
//! which frames them once: a stream of fixed-width values then costs its bytes and little more,
//! and counting or checking it reads one header per block. A reader sees the block's entries
//! as records like any other; [`BatchWriter`] makes blocks where they fit.
//!
//! ```text
//! length:     u32 LE   bytes that follow, excluding this field
//! flags:      u8       bit 2 (block) set; bits 0 and 1 as above, for every entry
//! key length: u32 LE   present if bit 1
//! value len:  u32 LE
//! entries:             each [timestamp i64 LE if bit 0][key][value]; at least one byte each,
//!                      and the rest of the block is a whole number of them
//! ```

#![deny(unsafe_code)]

mod read;
mod writer;

pub use read::{
    Block, FramingError, FramingFault, Item, Items, Records, count_keyed_records, count_records,
    items, nth_record, records,
};
pub use writer::{BatchWriter, MAX_BLOCK_ENTRIES_BYTES};

/// Flag bit: the record carries an event timestamp.
pub const FLAG_TIMESTAMP: u8 = 0b01;
/// Flag bit: the record carries a key.
pub const FLAG_KEY: u8 = 0b10;
/// Flag bit: a block of records of one shape, not a single record.
pub const FLAG_BLOCK: u8 = 0b100;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// A record borrowed from a buffer: value bytes, optional key bytes and optional event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's payload, encoded by the operator's codec.
    pub value: &'a [u8],
    /// The key used by hash partitioning and keyed state, if the record has one.
    pub key: Option<&'a [u8]>,
    /// Event time in milliseconds, if the record has one.
    pub timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record with only a value.
    #[inline]
    pub fn value(value: &'a [u8]) -> Self {
        Record {
            value,
            key: None,
            timestamp: None,
        }
    }

    /// Bytes this record takes in a buffer, length prefix included.
    #[inline]
    pub fn framed_len(&self) -> usize {
        LENGTH_PREFIX + self.body_len()
    }

    #[inline]
    fn body_len(&self) -> usize {
        1 + self.timestamp.map_or(0, |_| 8) + self.key.map_or(0, |k| 4 + k.len()) + self.value.len()
    }

    /// Appends this record to `buf` in the framing.
    ///
    /// # Panics
    /// If the record is larger than `u32::MAX` bytes; callers bound record sizes far below that.
    #[inline(always)]
    pub fn write_to(&self, buf: &mut Vec<u8>) {
        // The hot path of every operator: the fixed fields go to a stack array appended
        // whole, key and value through `extend_small`; no placeholder written and patched. A
        // short value-only record (most of them) is assembled whole on the stack and appended
        // in one piece.
        let body = u32::try_from(self.body_len()).expect("record larger than 4 GiB");
        if self.key.is_none() && self.value.len() <= SMALL {
            let mut record = [0u8; LENGTH_PREFIX + 1 + 8 + SMALL];
            record[..4].copy_from_slice(&body.to_le_bytes());
            let at = match self.timestamp {
                Some(ts) => {
                    record[4] = FLAG_TIMESTAMP;
                    record[5..13].copy_from_slice(&ts.to_le_bytes());
                    13
                }
                None => 5,
            };
            copy_small(&mut record[at..], self.value);
            let start = buf.len();
            append_array(buf, &record);
            buf.truncate(start + at + self.value.len());
            return;
        }
        buf.reserve(LENGTH_PREFIX + body as usize);
        let mut header = [0u8; LENGTH_PREFIX + 1 + 8 + 4];
        header[..4].copy_from_slice(&body.to_le_bytes());
        let mut at = 5;
        if let Some(ts) = self.timestamp {
            header[4] |= FLAG_TIMESTAMP;
            header[at..at + 8].copy_from_slice(&ts.to_le_bytes());
            at += 8;
        }
        if let Some(key) = self.key {
            header[4] |= FLAG_KEY;
            header[at..at + 4].copy_from_slice(&(key.len() as u32).to_le_bytes());
            at += 4;
        }
        let start = buf.len();
        append_array(buf, &header);
        buf.truncate(start + at);
        if let Some(key) = self.key {
            extend_small(buf, key);
        }
        extend_small(buf, self.value);
    }
}

/// Appends a fixed-size array with plain stores. `Vec::extend_from_slice` is not always inlined,
/// and out of line the length is no longer a constant: in a wasm guest the copy then becomes a
/// `memory.copy`, a call out of guest code that costs more than the record.
#[inline(always)]
pub fn append_array<const N: usize>(buf: &mut Vec<u8>, bytes: &[u8; N]) {
    buf.reserve(N);
    let len = buf.len();
    // SAFETY: `reserve` made room for N more bytes after `len`; the copy initialises exactly
    // those, from an array that cannot overlap the vector's buffer.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.as_mut_ptr().add(len), N);
        buf.set_len(len + N);
    }
}

/// The longest input `copy_small` and `extend_small` copy without a variable-length `memcpy`.
const SMALL: usize = 32;

/// Copies `src` to the start of `dst` (which must be at least as long) without a
/// variable-length copy for up to 32 bytes: a `memcpy` of unknown length is a call out of guest
/// code in wasm, several times the cost of the copy. Two overlapping fixed-size copies cover
/// every length in between.
#[inline(always)]
pub fn copy_small(dst: &mut [u8], src: &[u8]) {
    let len = src.len();
    if len > SMALL {
        dst[..len].copy_from_slice(src);
    } else if len >= 16 {
        dst[..16].copy_from_slice(&src[..16]);
        dst[len - 16..len].copy_from_slice(&src[len - 16..]);
    } else if len >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[len - 8..len].copy_from_slice(&src[len - 8..]);
    } else if len >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[len - 4..len].copy_from_slice(&src[len - 4..]);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Appends `bytes`, through a fixed-size array for up to 32 bytes (see [`copy_small`]):
/// appended whole, then the excess cut off again.
#[inline(always)]
pub fn extend_small(buf: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() > SMALL {
        buf.extend_from_slice(bytes);
        return;
    }
    let start = buf.len();
    let mut tmp = [0u8; SMALL];
    copy_small(&mut tmp, bytes);
    append_array(buf, &tmp);
    buf.truncate(start + bytes.len());
}

/// Copies `src` to the start of `dst` in pieces of at most 32 bytes (see [`copy_small`]): a
/// block entry of a few dozen bytes without a `memcpy` call in a wasm guest.
#[inline(always)]
pub fn copy_entry(dst: &mut [u8], src: &[u8]) {
    let mut at = 0;
    while src.len() - at > SMALL {
        copy_small(&mut dst[at..], &src[at..at + SMALL]);
        at += SMALL;
    }
    copy_small(&mut dst[at..], &src[at..]);
}

/// A record that owns its bytes, for tests and for the few places that keep records around.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct OwnedRecord {
    /// The record's payload.
    pub value: Vec<u8>,
    /// The record's key, if any.
    pub key: Option<Vec<u8>>,
    /// Event time in milliseconds, if any.
    pub timestamp: Option<i64>,
}

impl OwnedRecord {
    /// Borrows the record.
    pub fn as_record(&self) -> Record<'_> {
        Record {
            value: &self.value,
            key: self.key.as_deref(),
            timestamp: self.timestamp,
        }
    }
}

impl From<Record<'_>> for OwnedRecord {
    fn from(r: Record<'_>) -> Self {
        OwnedRecord {
            value: r.value.to_vec(),
            key: r.key.map(<[u8]>::to_vec),
            timestamp: r.timestamp,
        }
    }
}

/// A record whose value is being appended in place; see [`begin_record`].
#[derive(Debug, Clone, Copy)]
#[must_use = "finish the record with finish_record"]
pub struct OpenRecord {
    start: usize,
}

/// Starts a record in `buf` whose value the caller appends directly after this call, so a codec
/// can encode into the batch buffer without a temporary. Close it with [`finish_record`].
#[inline(always)]
pub fn begin_record(buf: &mut Vec<u8>, key: Option<&[u8]>, timestamp: Option<i64>) -> OpenRecord {
    let start = buf.len();
    append_array(buf, &[0; LENGTH_PREFIX]);
    let flags = if timestamp.is_some() {
        FLAG_TIMESTAMP
    } else {
        0
    } | if key.is_some() { FLAG_KEY } else { 0 };
    buf.push(flags);
    if let Some(ts) = timestamp {
        append_array(buf, &ts.to_le_bytes());
    }
    if let Some(key) = key {
        append_array(buf, &(key.len() as u32).to_le_bytes());
        extend_small(buf, key);
    }
    OpenRecord { start }
}

/// Writes the length prefix of a record started with [`begin_record`], now that its value has
/// been appended.
///
/// # Panics
/// If the record is larger than `u32::MAX` bytes; callers bound record sizes far below that.
#[inline(always)]
pub fn finish_record(buf: &mut [u8], record: OpenRecord) {
    let body = buf.len() - record.start - LENGTH_PREFIX;
    let body = u32::try_from(body).expect("record larger than 4 GiB");
    buf[record.start..record.start + LENGTH_PREFIX].copy_from_slice(&body.to_le_bytes());
}

/// Drops a record started with [`begin_record`] whose value could not be encoded.
#[inline]
pub fn abandon_record(buf: &mut Vec<u8>, record: OpenRecord) {
    buf.truncate(record.start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record<'static>> {
        vec![
            Record::value(b"plain"),
            Record {
                value: b"v",
                key: Some(b"key"),
                timestamp: Some(-42),
            },
            Record {
                value: b"",
                key: Some(b""),
                timestamp: None,
            },
            Record {
                value: &[0, 1, 2, 3, 4, 5, 6, 7],
                key: None,
                timestamp: Some(i64::MAX),
            },
        ]
    }

    #[test]
    fn records_round_trip_in_order() {
        let mut buf = Vec::new();
        for r in sample() {
            r.write_to(&mut buf);
        }
        let read: Vec<_> = records(&buf)
            .collect::<Result<_, _>>()
            .expect("valid buffer");
        assert_eq!(read, sample());
        assert_eq!(
            buf.len(),
            sample().iter().map(Record::framed_len).sum::<usize>()
        );
    }

    #[test]
    fn layout_matches_the_documented_examples() {
        let mut buf = Vec::new();
        Record::value(&[1, 2]).write_to(&mut buf);
        assert_eq!(buf, [3, 0, 0, 0, 0, 1, 2]);
        buf.clear();
        Record {
            value: &[0xaa],
            key: Some(b"k"),
            timestamp: Some(5),
        }
        .write_to(&mut buf);
        assert_eq!(
            buf,
            [
                15, 0, 0, 0, 3, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'k', 0xaa
            ]
        );
    }

    #[test]
    fn eight_byte_value_takes_thirteen_bytes() {
        assert_eq!(Record::value(&[0; 8]).framed_len(), 13);
    }

    #[test]
    fn truncated_buffer_reports_offset_of_broken_record() {
        let mut buf = Vec::new();
        Record::value(b"first").write_to(&mut buf);
        let second_at = buf.len();
        Record::value(b"second").write_to(&mut buf);
        buf.pop();
        let mut it = records(&buf);
        assert!(it.next().expect("first").is_ok());
        let err = it.next().expect("second").expect_err("truncated");
        assert_eq!(
            err,
            FramingError {
                offset: second_at,
                reason: FramingFault::Truncated
            }
        );
        assert!(it.next().is_none());
    }

    #[test]
    fn key_longer_than_body_is_rejected() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&6u32.to_le_bytes());
        buf.push(FLAG_KEY);
        buf.extend_from_slice(&100u32.to_le_bytes());
        buf.push(b'x');
        assert_eq!(
            count_records(&buf).expect_err("bad key length").reason,
            FramingFault::BodyTooShort
        );
    }

    #[test]
    fn counting_agrees_with_reading_on_every_truncation() {
        let mut buf = Vec::new();
        for r in sample() {
            r.write_to(&mut buf);
        }
        for end in 0..=buf.len() {
            let cut = &buf[..end];
            let read: Result<usize, FramingError> =
                records(cut).try_fold(0, |n, r| r.map(|_| n + 1));
            assert_eq!(count_records(cut), read, "cut at {end}");
        }
    }

    #[test]
    fn small_copies_append_exactly_the_bytes_at_every_length() {
        let source: Vec<u8> = (1..=48).collect();
        for len in 0..=source.len() {
            let mut buf = vec![0xee; 3];
            extend_small(&mut buf, &source[..len]);
            assert_eq!(&buf[..3], &[0xee; 3]);
            assert_eq!(&buf[3..], &source[..len], "length {len}");
        }
        let mut buf = vec![1];
        append_array(&mut buf, &[2, 3, 4]);
        assert_eq!(buf, [1, 2, 3, 4]);
        // Value-only records take write_to's short path up to 32 bytes: every length, with and
        // without a timestamp, reads back as written.
        for len in 0..=source.len() {
            for timestamp in [None, Some(-3)] {
                let record = Record {
                    value: &source[..len],
                    key: None,
                    timestamp,
                };
                let mut buf = vec![0xee];
                record.write_to(&mut buf);
                assert_eq!(buf.len(), 1 + record.framed_len());
                let read: Vec<_> = records(&buf[1..]).collect::<Result<_, _>>().unwrap();
                assert_eq!(read, [record], "length {len}");
            }
        }
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&1u32.to_le_bytes());
        buf.push(0x80);
        assert_eq!(
            count_records(&buf).expect_err("unknown flag").reason,
            FramingFault::UnknownFlags(0x80)
        );
    }

    #[test]
    fn record_built_in_place_equals_record_written_whole() {
        let whole = Record {
            value: b"value",
            key: Some(b"k"),
            timestamp: Some(7),
        };
        let mut expected = Vec::new();
        whole.write_to(&mut expected);
        let mut buf = Vec::new();
        let open = begin_record(&mut buf, whole.key, whole.timestamp);
        buf.extend_from_slice(whole.value);
        finish_record(&mut buf, open);
        assert_eq!(buf, expected);
        let open = begin_record(&mut buf, None, None);
        abandon_record(&mut buf, open);
        assert_eq!(buf, expected);
    }

    #[test]
    fn nth_record_finds_the_record_by_index() {
        let mut buf = Vec::new();
        for r in sample() {
            r.write_to(&mut buf);
        }
        assert_eq!(nth_record(&buf, 1), Some(sample()[1]));
        assert_eq!(nth_record(&buf, 9), None);
    }
}
