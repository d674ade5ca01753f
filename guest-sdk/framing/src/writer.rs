//! Writing batches: records of one shape in a row go into a block, so they cost their bytes
//! and no framing of their own.

use crate::{
    Block, FLAG_BLOCK, FLAG_KEY, FLAG_TIMESTAMP, LENGTH_PREFIX, Record, SMALL, append_array,
    copy_small, extend_small, records,
};

/// Most bytes of entries in one block. Keeps a block within a network segment most of the
/// time (one that spans segments is reassembled by the receiver, a copy) and bounds what the
/// conversion of a lone record into a block moves.
pub const MAX_BLOCK_ENTRIES_BYTES: usize = 4096;

/// The layout of a record too long (or too short) to go into a block.
const NO_LAYOUT: u32 = u32::MAX;
/// No block open, or no lone record to open one with; equal to no record's layout.
const CLOSED: u32 = u32::MAX - 1;

/// A record's shape as one number: flags, key length and value length (each at most
/// [`SMALL`]); records with equal layouts can share a block. `NO_LAYOUT` for records that
/// never go into a block: longer ones (their framing is a small part of them) and empty ones
/// (an entry needs at least one byte to be counted).
#[inline(always)]
fn layout_of(record: &Record<'_>) -> u32 {
    let key_len = record.key.map_or(0, <[u8]>::len);
    let value_len = record.value.len();
    if key_len > SMALL || value_len > SMALL {
        return NO_LAYOUT;
    }
    if record.timestamp.is_none() && key_len == 0 && value_len == 0 {
        return NO_LAYOUT;
    }
    let flags = u32::from(record.timestamp.is_some()) | (u32::from(record.key.is_some()) << 1);
    flags | ((key_len as u32) << 8) | ((value_len as u32) << 16)
}

/// The layout of the entries of `block`, as [`layout_of`] gives it for one of its records.
#[inline]
fn block_layout_of(block: &Block<'_>) -> u32 {
    let key_len = block.key_len().unwrap_or(0);
    let value_len = block.stride() - block.value_offset();
    if key_len > SMALL || value_len > SMALL {
        return NO_LAYOUT;
    }
    let flags = u32::from(block.has_timestamp()) | (u32::from(block.key_len().is_some()) << 1);
    flags | ((key_len as u32) << 8) | ((value_len as u32) << 16)
}

/// Bytes of one entry of a block of records like `record`.
#[inline(always)]
fn entry_len(record: &Record<'_>) -> usize {
    record.timestamp.map_or(0, |_| 8) + record.key.map_or(0, <[u8]>::len) + record.value.len()
}

/// Builds a framed batch. Records go in as they come; a record of the same layout as the one
/// before it (same flags, key and value lengths, each up to 32 bytes) joins it in a block, so
/// a stream of fixed-width values is written, read, counted and copied as little more than the
/// values themselves. The bytes are a valid batch after every call.
#[derive(Debug, Default, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    /// Start of the open block (its length prefix); meaningful unless `block_layout` is `CLOSED`.
    block_start: usize,
    block_layout: u32,
    /// Bytes of entries in the open block.
    block_entries: usize,
    /// Start of the last record, when it was written alone and could open a block.
    last_start: usize,
    last_layout: u32,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        BatchWriter {
            buf: Vec::new(),
            block_start: 0,
            block_layout: CLOSED,
            block_entries: 0,
            last_start: 0,
            last_layout: CLOSED,
        }
    }

    /// An empty batch with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut writer = BatchWriter::new();
        writer.buf.reserve(bytes);
        writer
    }

    /// Continues a framed batch already in `buf`; new records start after it.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        BatchWriter {
            buf,
            ..BatchWriter::new()
        }
    }

    /// The framed batch written so far.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Empties the batch, keeping its allocation.
    #[inline]
    pub fn clear(&mut self) {
        self.buf.clear();
        self.block_layout = CLOSED;
        self.last_layout = CLOSED;
    }

    /// The batch's bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The buffer, for writing framed bytes directly (a record encoded in place, records copied
    /// whole). What follows starts a new block.
    #[inline]
    pub fn raw(&mut self) -> &mut Vec<u8> {
        self.block_layout = CLOSED;
        self.last_layout = CLOSED;
        &mut self.buf
    }

    /// Appends already framed records.
    #[inline]
    pub fn push_framed(&mut self, framed: &[u8]) {
        crate::extend_small(self.raw(), framed);
    }

    /// Appends a record: to the open block when it has the block's layout, else on its own
    /// (and a second record like it turns the two into a block).
    #[inline(always)]
    pub fn push(&mut self, record: Record<'_>) {
        let layout = layout_of(&record);
        if layout == self.block_layout
            && self.block_entries + entry_len(&record) <= MAX_BLOCK_ENTRIES_BYTES
        {
            self.append_entry(&record);
            return;
        }
        self.push_outside_block(record, layout);
    }

    /// Appends `record` as an entry of the open block and updates the block's length prefix.
    #[inline(always)]
    fn append_entry(&mut self, record: &Record<'_>) {
        let start = self.buf.len();
        let len = entry_len(record);
        if record.timestamp.is_none() && record.key.is_none() {
            let mut entry = [0u8; SMALL];
            copy_small(&mut entry, record.value);
            append_array(&mut self.buf, &entry);
            self.buf.truncate(start + len);
        } else {
            // Piece by piece: a zeroed stack array for the whole entry would be a `memset`
            // call in a wasm guest.
            if let Some(ts) = record.timestamp {
                append_array(&mut self.buf, &ts.to_le_bytes());
            }
            if let Some(key) = record.key {
                extend_small(&mut self.buf, key);
            }
            extend_small(&mut self.buf, record.value);
        }
        self.block_entries += len;
        self.set_block_length();
    }

    #[inline(always)]
    fn set_block_length(&mut self) {
        let body = (self.buf.len() - self.block_start - LENGTH_PREFIX) as u32;
        if let Some(prefix) = self
            .buf
            .get_mut(self.block_start..self.block_start + LENGTH_PREFIX)
        {
            prefix.copy_from_slice(&body.to_le_bytes());
        }
    }

    /// A record that does not extend the open block: it opens a block with the lone record
    /// before it when the two share a layout, opens a new block when the open one is full,
    /// and is written alone otherwise.
    #[inline(never)]
    fn push_outside_block(&mut self, record: Record<'_>, layout: u32) {
        if layout != NO_LAYOUT && layout == self.last_layout {
            let Some(Ok(previous)) = records(&self.buf[self.last_start..]).next() else {
                unreachable!("the last record was written by this writer")
            };
            // Copied out before the buffer is cut back to where the lone record began.
            let mut copy = [0u8; 2 * SMALL];
            let key_len = previous.key.map_or(0, <[u8]>::len);
            copy_small(&mut copy, previous.key.unwrap_or_default());
            copy_small(&mut copy[key_len..], previous.value);
            let (key, value) = copy[..key_len + previous.value.len()].split_at(key_len);
            let previous = Record {
                value,
                key: previous.key.map(|_| key),
                timestamp: previous.timestamp,
            };
            self.buf.truncate(self.last_start);
            self.open_block(&previous, layout);
            self.append_entry(&record);
            return;
        }
        if layout != NO_LAYOUT && layout == self.block_layout {
            // The open block is full.
            self.open_block(&record, layout);
            return;
        }
        self.block_layout = CLOSED;
        self.last_start = self.buf.len();
        self.last_layout = layout;
        record.write_to(&mut self.buf);
    }

    /// Room for `count` more records shaped like `like` (same flags, key and value lengths) at
    /// the end of a block: the open block when it has their layout, else a new one. The caller
    /// writes entries (timestamp, key, value; [`BatchWriter::entry_len_of`] bytes each) into
    /// the returned bytes from the start and then calls [`BatchWriter::commit_entries`] with how
    /// many it wrote, before anything else touches the batch. `None` for records that never go
    /// into blocks (a key or value over 32 bytes, or nothing at all).
    ///
    /// This is the loop of maps and filters over a block: no layout check or length update per
    /// record.
    pub fn reserve_entries(&mut self, like: &Record<'_>, count: usize) -> Option<&mut [u8]> {
        let layout = layout_of(like);
        // Checked: on a 32-bit target a huge block of short entries could wrap the size.
        let bytes = count.checked_mul(entry_len(like))?;
        if layout == NO_LAYOUT {
            return None;
        }
        if layout != self.block_layout {
            self.open_empty_block(like, layout);
        }
        self.last_layout = CLOSED;
        let start = self.buf.len();
        self.buf.resize(start.checked_add(bytes)?, 0);
        Some(&mut self.buf[start..])
    }

    /// Ends a [`BatchWriter::reserve_entries`]: keeps the first `written` of the reserved
    /// entries.
    pub fn commit_entries(&mut self, like: &Record<'_>, reserved: usize, written: usize) {
        let stride = entry_len(like);
        let end = self.buf.len() - (reserved - written.min(reserved)) * stride;
        self.buf.truncate(end);
        self.block_entries += written.min(reserved) * stride;
        if self.block_entries == 0 {
            // Nothing went in: no empty block left behind.
            self.buf.truncate(self.block_start);
            self.block_layout = CLOSED;
            return;
        }
        self.set_block_length();
    }

    /// Appends `entry`, an entry of `block` (see [`crate::items`]), as an entry of the open
    /// block when it has `block`'s layout, else of a new one: a record moved from one batch to
    /// another (a partitioner's channel) without being decoded.
    #[inline(always)]
    pub fn push_entry(&mut self, block: &Block<'_>, entry: &[u8]) {
        let layout = block_layout_of(block);
        if layout == NO_LAYOUT {
            return self.push(block.record(entry));
        }
        if layout != self.block_layout || self.block_entries + entry.len() > MAX_BLOCK_ENTRIES_BYTES
        {
            self.open_empty_block(&block.record(entry), layout);
        }
        // In 32-byte pieces: no `memset` of the room first, no `memcpy` call of unknown length.
        let mut pieces = entry.chunks_exact(SMALL);
        for piece in &mut pieces {
            let mut array = [0u8; SMALL];
            array.copy_from_slice(piece);
            append_array(&mut self.buf, &array);
        }
        extend_small(&mut self.buf, pieces.remainder());
        self.block_entries += entry.len();
        self.set_block_length();
    }

    /// Bytes of one block entry of a record like `record`.
    #[inline]
    pub fn entry_len_of(record: &Record<'_>) -> usize {
        entry_len(record)
    }

    /// Writes a block header for records like `first` and `first` as its first entry.
    fn open_block(&mut self, first: &Record<'_>, layout: u32) {
        self.open_empty_block(first, layout);
        self.append_entry(first);
    }

    /// Writes a block header for records like `like`; the block starts empty.
    fn open_empty_block(&mut self, like: &Record<'_>, layout: u32) {
        let first = like;
        self.block_start = self.buf.len();
        let flags = FLAG_BLOCK
            | if first.timestamp.is_some() {
                FLAG_TIMESTAMP
            } else {
                0
            }
            | if first.key.is_some() { FLAG_KEY } else { 0 };
        self.buf.extend_from_slice(&[0; LENGTH_PREFIX]);
        self.buf.push(flags);
        if let Some(key) = first.key {
            self.buf
                .extend_from_slice(&(key.len() as u32).to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(first.value.len() as u32).to_le_bytes());
        self.block_layout = layout;
        self.block_entries = 0;
        self.last_layout = CLOSED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FramingFault, count_records};

    fn read(bytes: &[u8]) -> Vec<Record<'_>> {
        records(bytes)
            .collect::<Result<_, _>>()
            .expect("valid batch")
    }

    #[test]
    fn records_of_one_layout_share_a_block_and_read_back_in_order() {
        let values: Vec<[u8; 8]> = (0u64..1000).map(u64::to_le_bytes).collect();
        let mut writer = BatchWriter::new();
        for value in &values {
            writer.push(Record::value(value));
        }
        let expected: Vec<_> = values.iter().map(|v| Record::value(v)).collect();
        assert_eq!(read(writer.as_bytes()), expected);
        assert_eq!(count_records(writer.as_bytes()), Ok(1000));
        // Two blocks of at most 4096 bytes of values, a 9-byte header each.
        assert_eq!(writer.len(), 8000 + 2 * 9);
    }

    #[test]
    fn every_mix_of_layouts_reads_back_exactly_as_written() {
        const LONG: [u8; 40] = [7; 40];
        let shapes: Vec<Record<'static>> = vec![
            Record::value(b"12345678"),
            Record::value(b"abc"),
            Record {
                value: b"v1",
                key: Some(b"key"),
                timestamp: Some(-5),
            },
            Record {
                value: b"",
                key: Some(b"k"),
                timestamp: None,
            },
            Record {
                value: b"",
                key: None,
                timestamp: Some(9),
            },
            Record::value(b""),
            Record::value(&LONG),
        ];
        // Runs of 1, 2 and 3 of each shape, in an order where each shape follows each other.
        let mut expected = Vec::new();
        for run in 1..=3 {
            for a in &shapes {
                for b in &shapes {
                    expected.extend(std::iter::repeat_n(*a, run));
                    expected.push(*b);
                }
            }
        }
        let mut writer = BatchWriter::new();
        for (i, record) in expected.iter().enumerate() {
            writer.push(*record);
            // A valid batch after every call.
            assert_eq!(count_records(writer.as_bytes()), Ok(i + 1));
        }
        assert_eq!(read(writer.as_bytes()), expected);
    }

    #[test]
    fn a_block_matches_the_documented_example() {
        let mut writer = BatchWriter::new();
        writer.push(Record::value(&[1]));
        writer.push(Record::value(&[2]));
        assert_eq!(
            writer.as_bytes(),
            [7, 0, 0, 0, FLAG_BLOCK, 1, 0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn raw_writes_end_the_open_block() {
        let mut writer = BatchWriter::new();
        writer.push(Record::value(&[1; 8]));
        writer.push(Record::value(&[2; 8]));
        let mut lone = Vec::new();
        Record::value(&[3; 8]).write_to(&mut lone);
        writer.push_framed(&lone);
        writer.push(Record::value(&[4; 8]));
        writer.push(Record::value(&[5; 8]));
        let values: Vec<u8> = read(writer.as_bytes()).iter().map(|r| r.value[0]).collect();
        assert_eq!(values, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn malformed_blocks_are_rejected_with_their_offset() {
        let mut writer = BatchWriter::new();
        writer.push(Record::value(b"x"));
        let block_at = writer.len();
        writer.push(Record::value(&[1; 8]));
        writer.push(Record::value(&[2; 8]));
        let good = writer.into_vec();
        // The block's body one byte short of a whole entry.
        let mut short = good.clone();
        short.pop();
        let len = u32::from_le_bytes(short[block_at..block_at + 4].try_into().unwrap()) - 1;
        short[block_at..block_at + 4].copy_from_slice(&len.to_le_bytes());
        let err = count_records(&short).expect_err("partial entry");
        assert_eq!((err.offset, err.reason), (block_at, FramingFault::BadBlock));
        let mut it = records(&short);
        assert!(it.next().expect("lone record").is_ok());
        assert_eq!(
            it.next().expect("block").map_err(|e| e.reason),
            Err(FramingFault::BadBlock)
        );
        // Entries of zero bytes cannot be counted.
        let mut empty = good[..block_at].to_vec();
        empty.extend_from_slice(&[5, 0, 0, 0, FLAG_BLOCK, 0, 0, 0, 0]);
        assert_eq!(
            count_records(&empty).map_err(|e| e.reason),
            Err(FramingFault::BadBlock)
        );
        // Unknown flags beside the block flag.
        let mut flags = good.clone();
        flags[block_at + 4] |= 0x40;
        assert_eq!(
            count_records(&flags).map_err(|e| e.reason),
            Err(FramingFault::UnknownFlags(0x40))
        );
        // A header cut short.
        let cut = [
            &good[..block_at],
            &[3, 0, 0, 0, FLAG_BLOCK | FLAG_KEY, 1, 0],
        ]
        .concat();
        assert_eq!(
            count_records(&cut).map_err(|e| e.reason),
            Err(FramingFault::BodyTooShort)
        );
    }

    #[test]
    fn counting_agrees_with_reading_on_every_truncation_of_blocks() {
        let mut writer = BatchWriter::new();
        for i in 0u8..6 {
            writer.push(Record {
                value: &[i; 3],
                key: Some(&[i; 2]),
                timestamp: Some(i64::from(i)),
            });
        }
        writer.push(Record::value(b"tail"));
        let bytes = writer.as_bytes();
        for end in 0..=bytes.len() {
            let cut = &bytes[..end];
            let read: Result<usize, _> = records(cut).try_fold(0, |n, r| r.map(|_| n + 1));
            assert_eq!(count_records(cut), read, "cut at {end}");
        }
    }

    #[test]
    fn block_entries_carry_no_framed_bytes_of_their_own() {
        let mut writer = BatchWriter::new();
        writer.push(Record::value(b"alone"));
        writer.push(Record::value(&[1; 8]));
        writer.push(Record::value(&[2; 8]));
        let mut it = records(writer.as_bytes());
        let (first, framed) = it.next_with_bytes().unwrap();
        assert_eq!(first.value, b"alone");
        assert_eq!(framed.map(<[u8]>::len), Some(first.framed_len()));
        for _ in 0..2 {
            assert_eq!(it.next_with_bytes().unwrap().1, None);
        }
        assert!(it.next_with_bytes().is_none());
    }

    #[test]
    fn reserved_entries_extend_or_open_blocks_and_keep_only_what_was_written() {
        let like = Record {
            value: &[0; 4],
            key: None,
            timestamp: Some(0),
        };
        let mut writer = BatchWriter::new();
        writer.push(Record::value(b"lone"));
        // A new block: three entries reserved, two written.
        let region = writer.reserve_entries(&like, 3).expect("blockable");
        assert_eq!(region.len(), 3 * 12);
        for (i, entry) in region.chunks_exact_mut(12).take(2).enumerate() {
            entry[..8].copy_from_slice(&(i as i64).to_le_bytes());
            entry[8..].copy_from_slice(&[i as u8; 4]);
        }
        writer.commit_entries(&like, 3, 2);
        // The same layout pushed after it joins that block.
        writer.push(Record {
            value: &[9; 4],
            key: None,
            timestamp: Some(9),
        });
        // Nothing written into a new block leaves no block behind.
        let before = writer.len();
        writer
            .reserve_entries(&Record::value(&[0; 2]), 5)
            .expect("blockable");
        writer.commit_entries(&Record::value(&[0; 2]), 5, 0);
        assert_eq!(writer.len(), before);
        assert!(
            writer
                .reserve_entries(&Record::value(&[0; 40]), 1)
                .is_none()
        );
        // A size that does not fit in usize is refused, the batch unchanged.
        let before = writer.as_bytes().to_vec();
        assert!(writer.reserve_entries(&like, usize::MAX / 4).is_none());
        assert_eq!(writer.as_bytes(), before);
        let got: Vec<(Vec<u8>, Option<i64>)> = read(writer.as_bytes())
            .iter()
            .map(|r| (r.value.to_vec(), r.timestamp))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"lone".to_vec(), None),
                (vec![0; 4], Some(0)),
                (vec![1; 4], Some(1)),
                (vec![9; 4], Some(9)),
            ]
        );
        // Items: the lone record, then one block of all three entries.
        let items: Vec<_> = crate::items(writer.as_bytes()).collect();
        assert_eq!(items.len(), 2);
        let crate::Item::Block(block) = items[1] else {
            panic!("a block")
        };
        assert_eq!(
            (block.len(), block.stride(), block.value_offset()),
            (3, 12, 8)
        );
        assert!(block.has_timestamp() && block.key_len().is_none());
        let entries: Vec<_> = block.records().map(Result::unwrap).collect();
        assert_eq!(entries, read(writer.as_bytes())[1..]);
    }

    #[test]
    fn entries_copy_whole_at_every_length() {
        let source: Vec<u8> = (1..=100).collect();
        for len in 0..=source.len() {
            let mut dst = vec![0u8; len + 3];
            crate::copy_entry(&mut dst, &source[..len]);
            assert_eq!(&dst[..len], &source[..len]);
            assert_eq!(&dst[len..], &[0, 0, 0]);
        }
    }
}
