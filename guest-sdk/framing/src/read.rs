//! Reading framed buffers: records one by one, whether they stand alone or sit in a block, and
//! counting them with the framing checked.

use std::fmt;

use crate::{FLAG_BLOCK, FLAG_KEY, FLAG_TIMESTAMP, LENGTH_PREFIX, Record};

const RECORD_FLAGS: u8 = FLAG_TIMESTAMP | FLAG_KEY;

/// A buffer that does not follow the framing. Carries the byte offset where the fault is, so a
/// corrupt buffer can be located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError {
    /// Byte offset of the record (or block) that is malformed.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: FramingFault,
}

/// The ways a buffer can break the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFault {
    /// The buffer ends inside a length prefix or record body.
    Truncated,
    /// The record body is too short for the fields its flags announce.
    BodyTooShort,
    /// Flag bits that this version does not define are set.
    UnknownFlags(u8),
    /// A block whose entries have no bytes, or whose body is not a whole number of entries.
    BadBlock,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match self.reason {
            FramingFault::Truncated => write!(f, "record at byte {at} is truncated"),
            FramingFault::BodyTooShort => {
                write!(f, "record at byte {at} is shorter than its flags announce")
            }
            FramingFault::UnknownFlags(flags) => {
                write!(f, "record at byte {at} has unknown flags {flags:#04x}")
            }
            FramingFault::BadBlock => write!(
                f,
                "block at byte {at} is not a whole number of non-empty entries"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// The shape of a block's entries, read from its header.
#[derive(Debug, Clone, Copy)]
struct BlockLayout {
    /// 8 when the entries have a timestamp, else 0.
    timestamp_len: usize,
    has_key: bool,
    /// 0 when the entries have no key.
    key_len: usize,
    stride: usize,
    /// Bytes of the block body before the first entry.
    header: usize,
}

impl BlockLayout {
    /// The record of one entry of a block of this layout.
    #[inline(always)]
    fn record<'a>(&self, entry: &'a [u8]) -> Record<'a> {
        let key_start = self.timestamp_len;
        let value_start = key_start + self.key_len;
        Record {
            value: &entry[value_start..],
            key: self.has_key.then(|| &entry[key_start..value_start]),
            timestamp: (key_start != 0).then(|| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&entry[..8]);
                i64::from_le_bytes(ts)
            }),
        }
    }
}

/// Reads a block header from `body` (the bytes after the length prefix) and checks that the
/// rest is a whole number of entries.
#[inline]
fn block_layout(body: &[u8]) -> Result<BlockLayout, FramingFault> {
    let flags = body[0];
    let mut at = 1;
    let read_u32 = |at: &mut usize| -> Result<usize, FramingFault> {
        let bytes = body.get(*at..*at + 4).ok_or(FramingFault::BodyTooShort)?;
        *at += 4;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    let key_len = if flags & FLAG_KEY != 0 {
        Some(read_u32(&mut at)?)
    } else {
        None
    };
    let value_len = read_u32(&mut at)?;
    let timestamp = flags & FLAG_TIMESTAMP != 0;
    let stride = usize::from(timestamp) * 8;
    let stride = stride
        .checked_add(key_len.unwrap_or(0))
        .and_then(|s| s.checked_add(value_len))
        .ok_or(FramingFault::BadBlock)?;
    if stride == 0 || !(body.len() - at).is_multiple_of(stride) {
        return Err(FramingFault::BadBlock);
    }
    Ok(BlockLayout {
        timestamp_len: usize::from(timestamp) * 8,
        has_key: key_len.is_some(),
        key_len: key_len.unwrap_or(0),
        stride,
        header: at,
    })
}

/// Iterates over the records of a framed buffer, the entries of blocks included. Stops after
/// the first error.
///
/// Hot loops call [`Records::next_with_bytes`] and ask [`Records::fault`] at the end: an
/// `Option<Result<Record, _>>` per record makes the compiler assemble the record's pointer
/// from byte-sized pieces on the stack (the error's fields overlap it), and reading it back
/// stalls on every record.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    fault: Option<FramingError>,
    /// Where the block being read ends; at or before `pos` outside a block.
    block_end: usize,
    block: BlockLayout,
}

/// Reads the records of `buf`.
#[inline]
pub fn records(buf: &[u8]) -> Records<'_> {
    Records {
        buf,
        pos: 0,
        fault: None,
        block_end: 0,
        block: BlockLayout {
            timestamp_len: 0,
            has_key: false,
            key_len: 0,
            stride: 1,
            header: 0,
        },
    }
}

impl<'a> Records<'a> {
    /// The next record, with its own framed bytes when it stands alone (so it can be passed on
    /// with one copy); `None` for those bytes when the record is an entry of a block. `None`
    /// at the end of the buffer and at a fault, which [`Records::fault`] then tells.
    #[inline(always)]
    pub fn next_with_bytes(&mut self) -> Option<(Record<'a>, Option<&'a [u8]>)> {
        loop {
            if self.pos < self.block_end {
                return Some((self.next_entry(), None));
            }
            if self.pos >= self.buf.len() || self.fault.is_some() {
                return None;
            }
            match read_item(self.buf, self.pos) {
                Ok((Item::Record(record, framed), end)) => {
                    self.pos = end;
                    return Some((record, Some(framed)));
                }
                Ok((Item::Block(block), end)) => {
                    self.block = block.layout;
                    self.pos = end - block.entries.len();
                    self.block_end = end;
                }
                Err(reason) => return self.fail(self.pos, reason),
            }
        }
    }

    /// Why reading stopped before the end of the buffer, if it did.
    #[inline]
    pub fn fault(&self) -> Option<&FramingError> {
        self.fault.as_ref()
    }

    /// The entry at `pos` of the block being read; its layout was checked with the header.
    #[inline(always)]
    fn next_entry(&mut self) -> Record<'a> {
        let start = self.pos;
        self.pos += self.block.stride;
        self.block.record(&self.buf[start..self.pos])
    }

    #[cold]
    fn fail<T>(&mut self, offset: usize, reason: FramingFault) -> Option<T> {
        self.fault = Some(FramingError { offset, reason });
        None
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, FramingError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_with_bytes() {
            Some((record, _)) => Some(Ok(record)),
            // Reported once; the iterator then ends.
            None => self.fault.take().map(|fault| {
                self.pos = self.buf.len();
                self.block_end = 0;
                Err(fault)
            }),
        }
    }
}

/// A run of records of one shape, as one block of a batch: what a loop over its entries needs
/// to handle them without the framing of each (see [`items`]).
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    entries: &'a [u8],
    layout: BlockLayout,
}

impl<'a> Block<'a> {
    /// Records in the block.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len() / self.layout.stride
    }

    /// True for a block without entries.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of each entry: timestamp (8 if any), key, value.
    #[inline]
    pub fn stride(&self) -> usize {
        self.layout.stride
    }

    /// Whether the entries carry a timestamp (their first 8 bytes).
    #[inline]
    pub fn has_timestamp(&self) -> bool {
        self.layout.timestamp_len != 0
    }

    /// The key length, if the entries have keys (after the timestamp).
    #[inline]
    pub fn key_len(&self) -> Option<usize> {
        self.layout.has_key.then_some(self.layout.key_len)
    }

    /// Where the value starts in an entry.
    #[inline]
    pub fn value_offset(&self) -> usize {
        self.layout.timestamp_len + self.layout.key_len
    }

    /// The entries' bytes, `stride` each.
    #[inline]
    pub fn entries(&self) -> &'a [u8] {
        self.entries
    }

    /// The record of `entry`, one of this block's entries.
    #[inline]
    pub fn record(&self, entry: &'a [u8]) -> Record<'a> {
        self.layout.record(entry)
    }

    /// The records of the block.
    #[inline]
    pub fn records(&self) -> Records<'a> {
        Records {
            buf: self.entries,
            pos: 0,
            fault: None,
            block_end: self.entries.len(),
            block: self.layout,
        }
    }
}

/// A record standing alone, or a block of records of one shape.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// A record with its framed bytes.
    Record(Record<'a>, &'a [u8]),
    /// A block.
    Block(Block<'a>),
}

/// Iterates over the items of a framed buffer: lone records and whole blocks, for loops that
/// treat a block's entries together. Stops at the first fault, which [`Items::fault`] tells.
#[derive(Debug, Clone)]
pub struct Items<'a> {
    buf: &'a [u8],
    pos: usize,
    fault: Option<FramingError>,
}

/// Reads the items of `buf`.
#[inline]
pub fn items(buf: &[u8]) -> Items<'_> {
    Items {
        buf,
        pos: 0,
        fault: None,
    }
}

impl<'a> Items<'a> {
    /// Why reading stopped before the end of the buffer, if it did.
    #[inline]
    pub fn fault(&self) -> Option<&FramingError> {
        self.fault.as_ref()
    }

    #[cold]
    fn fail(&mut self, offset: usize, reason: FramingFault) -> Option<Item<'a>> {
        self.fault = Some(FramingError { offset, reason });
        None
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    #[inline]
    fn next(&mut self) -> Option<Item<'a>> {
        if self.pos >= self.buf.len() || self.fault.is_some() {
            return None;
        }
        match read_item(self.buf, self.pos) {
            Ok((item, end)) => {
                self.pos = end;
                Some(item)
            }
            Err(reason) => self.fail(self.pos, reason),
        }
    }
}

/// The record or block that starts at `start` of `buf`, and where it ends.
#[inline(always)]
fn read_item(buf: &[u8], start: usize) -> Result<(Item<'_>, usize), FramingFault> {
    let rest = &buf[start..];
    let prefix = rest.get(..LENGTH_PREFIX).ok_or(FramingFault::Truncated)?;
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    // Checked: a length near u32::MAX must not wrap on a 32-bit target.
    let framed = LENGTH_PREFIX
        .checked_add(len)
        .and_then(|end| rest.get(..end))
        .ok_or(FramingFault::Truncated)?;
    let body = &framed[LENGTH_PREFIX..];
    let item = if body.first().is_some_and(|flags| flags & FLAG_BLOCK != 0) {
        check_flags(body[0] & !FLAG_BLOCK)?;
        let layout = block_layout(body)?;
        Item::Block(Block {
            entries: &body[layout.header..],
            layout,
        })
    } else {
        Item::Record(parse_body(body)?, framed)
    };
    Ok((item, start + framed.len()))
}

#[inline(always)]
fn check_flags(flags: u8) -> Result<(), FramingFault> {
    if flags & !RECORD_FLAGS != 0 {
        return Err(FramingFault::UnknownFlags(flags));
    }
    Ok(())
}

#[inline(always)]
fn parse_body(body: &[u8]) -> Result<Record<'_>, FramingFault> {
    let (&flags, mut rest) = body.split_first().ok_or(FramingFault::BodyTooShort)?;
    check_flags(flags)?;
    let timestamp = if flags & FLAG_TIMESTAMP != 0 {
        let (ts, tail) = rest
            .split_first_chunk::<8>()
            .ok_or(FramingFault::BodyTooShort)?;
        rest = tail;
        Some(i64::from_le_bytes(*ts))
    } else {
        None
    };
    let key = if flags & FLAG_KEY != 0 {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(FramingFault::BodyTooShort)?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(FramingFault::BodyTooShort);
        }
        let (key, tail) = tail.split_at(len);
        rest = tail;
        Some(key)
    } else {
        None
    };
    Ok(Record {
        value: rest,
        key,
        timestamp,
    })
}

/// Counts the records of a framed buffer without decoding them, checking the framing. Every
/// batch a guest returns passes through here, so it reads only the length prefix, the flags and
/// a key length per record, and a block's header (its entries are counted by division).
pub fn count_records(buf: &[u8]) -> Result<usize, FramingError> {
    count_keyed_records(buf).map(|(records, _)| records)
}

/// As [`count_records`], and how many of the records have a key: whether a batch can go to a
/// key-partitioned edge whole, without a look at each record.
pub fn count_keyed_records(buf: &[u8]) -> Result<(usize, usize), FramingError> {
    let mut pos = 0;
    let (mut count, mut keyed) = (0, 0);
    while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
        let fail = |reason| FramingError {
            offset: pos,
            reason,
        };
        let Some((prefix, rest)) = rest.split_first_chunk::<LENGTH_PREFIX>() else {
            return Err(fail(FramingFault::Truncated));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        let Some(body) = rest.get(..len) else {
            return Err(fail(FramingFault::Truncated));
        };
        let records = count_body(body).map_err(fail)?;
        count += records;
        if body[0] & FLAG_KEY != 0 {
            keyed += records;
        }
        pos += LENGTH_PREFIX + len;
    }
    Ok((count, keyed))
}

/// The checks of `parse_body` (or of a block header) without building records: how many
/// records `body` holds.
#[inline]
fn count_body(body: &[u8]) -> Result<usize, FramingFault> {
    let Some(&flags) = body.first() else {
        return Err(FramingFault::BodyTooShort);
    };
    if flags & FLAG_BLOCK != 0 {
        check_flags(flags & !FLAG_BLOCK)?;
        let layout = block_layout(body)?;
        return Ok((body.len() - layout.header) / layout.stride);
    }
    check_flags(flags)?;
    let mut need = 1;
    if flags & FLAG_TIMESTAMP != 0 {
        need += 8;
    }
    if flags & FLAG_KEY != 0 {
        let Some(len) = body.get(need..need + 4) else {
            return Err(FramingFault::BodyTooShort);
        };
        let key_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        need = need.saturating_add(4).saturating_add(key_len);
    }
    if body.len() < need {
        return Err(FramingFault::BodyTooShort);
    }
    Ok(1)
}

/// The record at `index` (block entries count one each), for error reports that show the
/// record a guest could not decode. `None` if the buffer has fewer records or is malformed
/// before it.
pub fn nth_record(buf: &[u8], index: usize) -> Option<Record<'_>> {
    records(buf).nth(index).and_then(Result::ok)
}
