//! Typed operators built from closures: map, filter, flat-map, key-by.
//!
//! Each builder decodes the input value with its input codec and encodes what it produces with
//! its output codec; both default to [`Bincode`] and are changed with `.input(..)` and
//! `.output(..)`. Timestamps travel with the record; `map` and `flat_map` drop the key (their
//! output is no longer keyed), `filter` keeps the record as it is, `key_by` sets the key.

use std::marker::PhantomData;

use weir_framing::{BatchWriter, Block, Item, Record};

use crate::codec::SMALL_ENCODING;
use crate::codec::{Bincode, Codec};
use crate::operator::{
    BatchFailure, BatchHost, Context, Operator, OperatorError, block_outcome, encode_into,
    for_each_item, for_each_record_of,
};

/// Collects the values a [`flat_map`] closure produces.
pub struct Emitter<'a, 'b, T> {
    ctx: &'a mut Context<'b>,
    codec: &'a dyn Codec<T>,
    error: Option<OperatorError>,
}

impl<T> Emitter<'_, '_, T> {
    /// Emits one value, with the input record's timestamp. An encoding failure fails the
    /// operator once the closure returns.
    pub fn emit(&mut self, value: &T) {
        if self.error.is_some() {
            return;
        }
        let ts = self.ctx.timestamp();
        if let Err(e) = self.ctx.emit_encoded(self.codec, value, None, ts) {
            self.error = Some(e);
        }
    }
}

macro_rules! codec_builders {
    ($name:ident { $($field:ident),* } in $in:ident out $out:ident) => {
        impl<F, I, O, CI, CO> $name<F, I, O, CI, CO> {
            /// Decodes input values with `codec`.
            pub fn input<D: Codec<I>>(self, codec: D) -> $name<F, I, O, D, CO> {
                $name { $($field: self.$field,)* $in: codec, $out: self.$out, _types: PhantomData }
            }
            /// Encodes output values with `codec`.
            pub fn output<D: Codec<O>>(self, codec: D) -> $name<F, I, O, CI, D> {
                $name { $($field: self.$field,)* $in: self.$in, $out: codec, _types: PhantomData }
            }
        }
    };
}

/// One output value per input value. Built by [`map`].
pub struct Map<F, I, O, CI = Bincode, CO = Bincode> {
    pub(crate) f: F,
    pub(crate) input: CI,
    pub(crate) output: CO,
    _types: PhantomData<fn(I) -> O>,
}
codec_builders!(Map { f } in input out output);

/// Applies `f` to every value.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let mut h = Harness::open(map(|x: u64| x * 3 + 1), OperatorInfo::new("triple")).unwrap();
/// h.push_value(&Bincode, &2u64).unwrap();
/// assert_eq!(h.take_values::<u64>(&Bincode).unwrap(), vec![7]);
/// ```
pub fn map<I, O, F: FnMut(I) -> O>(f: F) -> Map<F, I, O> {
    Map {
        f,
        input: Bincode,
        output: Bincode,
        _types: PhantomData,
    }
}

impl<F, I, O, CI, CO> Operator for Map<F, I, O, CI, CO>
where
    F: FnMut(I) -> O,
    CI: Codec<I>,
    CO: Codec<O>,
{
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let value = self.input.decode(record.value)?;
        let out = (self.f)(value);
        ctx.emit_encoded(&self.output, &out, None, record.timestamp)
    }

    fn process_batch(
        &mut self,
        batch: &[u8],
        _: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        // No context per record: a map needs no host. A block of unkeyed records with an
        // output codec of one width is mapped straight into an output block.
        for_each_item(batch, |item, out_index| {
            if let Item::Block(block) = item
                && block.key_len().is_none()
                && let Some(width) = self.output.fixed_width()
                && let Some(done) = self.map_block(block, width, out)
            {
                return block_outcome(done, out_index);
            }
            for_each_record_of(item, out_index, |record, _| {
                let value = self.input.decode(record.value)?;
                encode_into(out, &self.output, &(self.f)(value), None, record.timestamp)
            })
        })
    }
}

/// Bytes a block entry of a fixed-width output is shaped from, never read.
pub(crate) const ZEROS: [u8; SMALL_ENCODING] = [0; SMALL_ENCODING];

impl<F, I, O, CI, CO> Map<F, I, O, CI, CO>
where
    F: FnMut(I) -> O,
    CI: Codec<I>,
    CO: Codec<O>,
{
    /// Maps every entry of `block` into entries of an output block, `width` bytes of value
    /// each (timestamps kept); `None` if the output cannot be a block, else the outcome with
    /// the index in the block of a failing record.
    #[inline(always)]
    fn map_block(
        &mut self,
        block: Block<'_>,
        width: usize,
        out: &mut BatchWriter,
    ) -> Option<Result<(), (usize, OperatorError)>> {
        let ts_len = if block.has_timestamp() { 8 } else { 0 };
        let like = Record {
            value: &ZEROS[..width],
            key: None,
            timestamp: block.has_timestamp().then_some(0),
        };
        let count = block.len();
        let region = out.reserve_entries(&like, count)?;
        let mut written = 0;
        let mut result = Ok(());
        let entries = block.entries().chunks_exact(block.stride());
        for (entry, slot) in entries.zip(region.chunks_exact_mut(ts_len + width)) {
            let value = match self.input.decode(&entry[ts_len..]) {
                Ok(value) => value,
                Err(e) => {
                    result = Err((written, e));
                    break;
                }
            };
            if ts_len != 0 {
                slot[..8].copy_from_slice(&entry[..8]);
            }
            if let Err(e) = self
                .output
                .encode_fixed(&(self.f)(value), &mut slot[ts_len..])
            {
                result = Err((written, e));
                break;
            }
            written += 1;
        }
        out.commit_entries(&like, count, written);
        Some(result)
    }
}

/// One output value per input value, or a failure. Built by [`try_map`].
pub struct TryMap<F, I, O, CI = Bincode, CO = Bincode> {
    f: F,
    input: CI,
    output: CO,
    _types: PhantomData<fn(I) -> O>,
}
codec_builders!(TryMap { f } in input out output);

/// Applies `f` to every value; an `Err` fails the subtask with that reason. Return
/// [`OperatorError::Decode`] for input the operator cannot interpret.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let parse = try_map(|s: String| s.trim().parse::<i64>().map_err(|e| OperatorError::Decode(format!("`{s}`: {e}"))));
/// let mut h = Harness::open(parse.input(Text), OperatorInfo::new("parse")).unwrap();
/// h.push(b"42").unwrap();
/// assert_eq!(h.take_values::<i64>(&Bincode).unwrap(), vec![42]);
/// assert!(h.push(b"x").is_err());
/// ```
pub fn try_map<I, O, F: FnMut(I) -> Result<O, OperatorError>>(f: F) -> TryMap<F, I, O> {
    TryMap {
        f,
        input: Bincode,
        output: Bincode,
        _types: PhantomData,
    }
}

impl<F, I, O, CI, CO> Operator for TryMap<F, I, O, CI, CO>
where
    F: FnMut(I) -> Result<O, OperatorError>,
    CI: Codec<I>,
    CO: Codec<O>,
{
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let value = self.input.decode(record.value)?;
        let out = (self.f)(value)?;
        ctx.emit_encoded(&self.output, &out, None, record.timestamp)
    }
}

/// Keeps the records whose value passes a predicate. Built by [`filter`].
pub struct Filter<F, I, CI = Bincode> {
    f: F,
    input: CI,
    _types: PhantomData<fn(&I)>,
}

/// Keeps the records for which `f` returns `true`, unchanged (key and timestamp included).
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let mut h = Harness::open(filter(|x: &u64| x % 2 == 0), OperatorInfo::new("even")).unwrap();
/// for x in 0..5u64 { h.push_value(&Bincode, &x).unwrap(); }
/// assert_eq!(h.take_values::<u64>(&Bincode).unwrap(), vec![0, 2, 4]);
/// ```
pub fn filter<I, F: FnMut(&I) -> bool>(f: F) -> Filter<F, I> {
    Filter {
        f,
        input: Bincode,
        _types: PhantomData,
    }
}

impl<F, I, CI> Filter<F, I, CI> {
    /// Decodes input values with `codec`.
    pub fn input<D: Codec<I>>(self, codec: D) -> Filter<F, I, D> {
        Filter {
            f: self.f,
            input: codec,
            _types: PhantomData,
        }
    }
}

impl<F, I, CI> Operator for Filter<F, I, CI>
where
    F: FnMut(&I) -> bool,
    CI: Codec<I>,
{
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let value = self.input.decode(record.value)?;
        if (self.f)(&value) {
            ctx.emit_record(record);
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: &[u8],
        _: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        // No context per record: a filter needs no host. A kept record is one copy of its
        // framed bytes, or of its entry into an output block.
        for_each_item(batch, |item, out_index| {
            if let Item::Block(block) = item
                && let Some(done) = self.filter_block(block, out)
            {
                return block_outcome(done, out_index);
            }
            for_each_record_of(item, out_index, |record, framed| {
                if (self.f)(&self.input.decode(record.value)?) {
                    match framed {
                        Some(framed) => out.push_framed(framed),
                        None => out.push(record),
                    }
                }
                Ok(())
            })
        })
    }
}

impl<F, I, CI> Filter<F, I, CI>
where
    F: FnMut(&I) -> bool,
    CI: Codec<I>,
{
    /// Copies the entries of `block` that pass into an output block; `None` if they cannot go
    /// into one, else the outcome with the index in the block of a failing record.
    #[inline(always)]
    fn filter_block(
        &mut self,
        block: Block<'_>,
        out: &mut BatchWriter,
    ) -> Option<Result<(), (usize, OperatorError)>> {
        let like = block.records().next()?.ok()?;
        let count = block.len();
        let stride = block.stride();
        let value_at = block.value_offset();
        let region = out.reserve_entries(&like, count)?;
        let mut kept = 0;
        let mut result = Ok(());
        for (i, entry) in block.entries().chunks_exact(stride).enumerate() {
            match self.input.decode(&entry[value_at..]) {
                Ok(value) => {
                    if (self.f)(&value) {
                        weir_framing::copy_entry(&mut region[kept * stride..], entry);
                        kept += 1;
                    }
                }
                Err(e) => {
                    result = Err((i, e));
                    break;
                }
            }
        }
        out.commit_entries(&like, count, kept);
        Some(result)
    }
}

/// Zero or more output values per input value. Built by [`flat_map`].
pub struct FlatMap<F, I, O, CI = Bincode, CO = Bincode> {
    f: F,
    input: CI,
    output: CO,
    _types: PhantomData<fn(I) -> O>,
}
codec_builders!(FlatMap { f } in input out output);

/// Calls `f` with every value and an [`Emitter`] for what it produces.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let words = flat_map(|line: String, out: &mut Emitter<String>| {
///     for w in line.split_whitespace() { out.emit(&w.to_string()); }
/// });
/// let mut h = Harness::open(words.input(Text).output(Text), OperatorInfo::new("split")).unwrap();
/// h.push(b"to be").unwrap();
/// assert_eq!(h.take_values(&Text).unwrap(), vec!["to", "be"]);
/// ```
pub fn flat_map<I, O, F: FnMut(I, &mut Emitter<'_, '_, O>)>(f: F) -> FlatMap<F, I, O> {
    FlatMap {
        f,
        input: Bincode,
        output: Bincode,
        _types: PhantomData,
    }
}

impl<F, I, O, CI, CO> Operator for FlatMap<F, I, O, CI, CO>
where
    F: FnMut(I, &mut Emitter<'_, '_, O>),
    CI: Codec<I>,
    CO: Codec<O>,
{
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let value = self.input.decode(record.value)?;
        let mut emitter = Emitter {
            ctx,
            codec: &self.output,
            error: None,
        };
        (self.f)(value, &mut emitter);
        emitter.error.map_or(Ok(()), Err)
    }
}

/// Sets each record's key from its value. Built by [`key_by`].
pub struct KeyBy<F, I, K, CI = Bincode, CK = Bincode> {
    f: F,
    input: CI,
    key: CK,
    /// Reused so that keying a record allocates nothing.
    key_buf: Vec<u8>,
    _types: PhantomData<fn(&I) -> K>,
}

/// Keys every record by `f(value)`, encoded with the key codec; the value bytes pass through
/// unchanged. A following hash partitioning and keyed state use the key bytes.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let by_word = key_by(|w: &String| w.clone()).input(Text).key(Text);
/// let mut h = Harness::open(by_word, OperatorInfo::new("key")).unwrap();
/// h.push(b"owl").unwrap();
/// let out = h.take_output();
/// assert_eq!(out[0].key.as_deref(), Some(&b"owl"[..]));
/// ```
pub fn key_by<I, K, F: FnMut(&I) -> K>(f: F) -> KeyBy<F, I, K> {
    KeyBy {
        f,
        input: Bincode,
        key: Bincode,
        key_buf: Vec::new(),
        _types: PhantomData,
    }
}

impl<F, I, K, CI, CK> KeyBy<F, I, K, CI, CK> {
    /// Decodes input values with `codec`.
    pub fn input<D: Codec<I>>(self, codec: D) -> KeyBy<F, I, K, D, CK> {
        KeyBy {
            f: self.f,
            input: codec,
            key: self.key,
            key_buf: self.key_buf,
            _types: PhantomData,
        }
    }
    /// Encodes keys with `codec`.
    pub fn key<D: Codec<K>>(self, codec: D) -> KeyBy<F, I, K, CI, D> {
        KeyBy {
            f: self.f,
            input: self.input,
            key: codec,
            key_buf: self.key_buf,
            _types: PhantomData,
        }
    }
}

impl<F, I, K, CI, CK> Operator for KeyBy<F, I, K, CI, CK>
where
    F: FnMut(&I) -> K,
    CI: Codec<I>,
    CK: Codec<K>,
{
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let value = self.input.decode(record.value)?;
        let key = (self.f)(&value);
        self.key_buf.clear();
        self.key.encode(&key, &mut self.key_buf)?;
        ctx.emit_record(Record {
            value: record.value,
            key: Some(&self.key_buf),
            timestamp: record.timestamp,
        });
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: &[u8],
        _: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        // No context per record: keying needs no host. A block whose keys have one width
        // (a Fixed key codec) becomes a block of keyed entries directly.
        for_each_item(batch, |item, out_index| {
            if let Item::Block(block) = item
                && let Some(width) = self.key.fixed_width()
                && let Some(done) = self.key_block(block, width, out)
            {
                return block_outcome(done, out_index);
            }
            for_each_record_of(item, out_index, |record, _| {
                let value = self.input.decode(record.value)?;
                let key = (self.f)(&value);
                self.key_buf.clear();
                self.key.encode(&key, &mut self.key_buf)?;
                out.push(Record {
                    value: record.value,
                    key: Some(&self.key_buf),
                    timestamp: record.timestamp,
                });
                Ok(())
            })
        })
    }
}

impl<F, I, K, CI, CK> KeyBy<F, I, K, CI, CK>
where
    F: FnMut(&I) -> K,
    CI: Codec<I>,
    CK: Codec<K>,
{
    /// Keys every entry of `block` into an output block of entries with `width`-byte keys;
    /// `None` if the output cannot be a block, else the outcome with the index in the block
    /// of a failing record.
    #[inline(always)]
    fn key_block(
        &mut self,
        block: Block<'_>,
        width: usize,
        out: &mut BatchWriter,
    ) -> Option<Result<(), (usize, OperatorError)>> {
        let ts_len = if block.has_timestamp() { 8 } else { 0 };
        let value_at = block.value_offset();
        let value_len = block.stride() - value_at;
        let like = Record {
            value: ZEROS.get(..value_len)?,
            key: Some(&ZEROS[..width]),
            timestamp: block.has_timestamp().then_some(0),
        };
        let count = block.len();
        let region = out.reserve_entries(&like, count)?;
        let mut written = 0;
        let mut result = Ok(());
        let entries = block.entries().chunks_exact(block.stride());
        for (entry, slot) in entries.zip(region.chunks_exact_mut(ts_len + width + value_len)) {
            let value_bytes = &entry[value_at..];
            let value = match self.input.decode(value_bytes) {
                Ok(value) => value,
                Err(e) => {
                    result = Err((written, e));
                    break;
                }
            };
            if ts_len != 0 {
                slot[..8].copy_from_slice(&entry[..8]);
            }
            let (key, rest) = slot[ts_len..].split_at_mut(width);
            if let Err(e) = self.key.encode_fixed(&(self.f)(&value), key) {
                result = Err((written, e));
                break;
            }
            weir_framing::copy_small(rest, value_bytes);
            written += 1;
        }
        out.commit_entries(&like, count, written);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use weir_framing::{OwnedRecord, Record};

    use crate::codec::{Bincode, Fixed};
    use crate::functions::{filter, map};
    use crate::operator::OperatorInfo;
    use crate::testing::Harness;

    fn framed(records: &[Record<'_>]) -> Vec<u8> {
        let mut batch = Vec::new();
        for r in records {
            r.write_to(&mut batch);
        }
        batch
    }

    /// Values of every width the fast paths special-case, with and without key and timestamp.
    fn mixed_records(values: &[Vec<u8>]) -> Vec<Record<'_>> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                value: v,
                key: (i % 3 == 1).then_some(&v[..v.len().min(5)]),
                timestamp: (i % 2 == 0).then_some(i as i64 * 1000 - 7),
            })
            .collect()
    }

    #[test]
    fn a_filter_over_a_batch_passes_on_exactly_the_records_it_keeps() {
        let values: Vec<Vec<u8>> = (0..40u8).map(|n| vec![n; usize::from(n)]).collect();
        let records = mixed_records(&values);
        let mut h = Harness::open(
            filter(|v: &Vec<u8>| !v.len().is_multiple_of(3)).input(crate::codec::Bytes),
            OperatorInfo::new("f"),
        )
        .unwrap();
        h.push_batch(&framed(&records)).unwrap();
        let expected: Vec<OwnedRecord> = records
            .iter()
            .filter(|r| !r.value.len().is_multiple_of(3))
            .map(|r| OwnedRecord::from(*r))
            .collect();
        assert_eq!(h.take_output(), expected);
    }

    #[test]
    fn fixed_width_output_is_framed_as_the_general_path_frames_it() {
        let values: Vec<Vec<u8>> = (0..10u64)
            .map(|n| (n * 977).to_le_bytes().to_vec())
            .collect();
        let records: Vec<Record<'_>> = mixed_records(&values);
        // The fast path (Fixed, on the stack) and the general one (Bincode's fixed-width
        // cousin goes through encode) must produce the same records.
        let mut fast = Harness::open(
            map(|x: u64| (x, x + 1)).input(Fixed).output(Fixed),
            OperatorInfo::new("fast"),
        )
        .unwrap();
        fast.push_batch(&framed(&records)).unwrap();
        let mut general = Harness::open(
            map(|x: u64| (x, x + 1))
                .input(Fixed)
                .output(crate::codec::BincodeFixed),
            OperatorInfo::new("general"),
        )
        .unwrap();
        general.push_batch(&framed(&records)).unwrap();
        let fast = fast.take_output();
        assert_eq!(fast, general.take_output());
        let expected: Vec<OwnedRecord> = records
            .iter()
            .map(|r| {
                let x = u64::from_le_bytes(r.value.try_into().unwrap());
                let mut value = x.to_le_bytes().to_vec();
                value.extend_from_slice(&(x + 1).to_le_bytes());
                OwnedRecord {
                    value,
                    key: None,
                    timestamp: r.timestamp,
                }
            })
            .collect();
        assert_eq!(fast, expected);
    }

    /// 1,000 timestamped 8-byte values in blocks, as a source writes them.
    fn blocked(values: impl Iterator<Item = u64>) -> (Vec<u8>, Vec<OwnedRecord>) {
        let mut writer = weir_framing::BatchWriter::new();
        let records: Vec<OwnedRecord> = values
            .map(|x| OwnedRecord {
                value: x.to_le_bytes().to_vec(),
                key: None,
                timestamp: Some(x as i64 - 500),
            })
            .collect();
        for r in &records {
            writer.push(r.as_record());
        }
        (writer.into_vec(), records)
    }

    #[test]
    fn maps_and_filters_over_blocks_see_every_entry_with_its_timestamp() {
        let (batch, records) = blocked(0..1000);
        let mut evens = Harness::open(
            filter(|x: &u64| x.is_multiple_of(2)).input(Fixed),
            OperatorInfo::new("even"),
        )
        .unwrap();
        evens.push_batch(&batch).unwrap();
        let kept: Vec<OwnedRecord> = records.iter().step_by(2).cloned().collect();
        assert_eq!(evens.take_output(), kept);
        let mut triple = Harness::open(
            map(|x: u64| x * 3).input(Fixed).output(Fixed),
            OperatorInfo::new("triple"),
        )
        .unwrap();
        triple.push_batch(&batch).unwrap();
        let tripled: Vec<OwnedRecord> = records
            .iter()
            .map(|r| OwnedRecord {
                value: (u64::from_le_bytes(r.value[..].try_into().unwrap()) * 3)
                    .to_le_bytes()
                    .to_vec(),
                ..r.clone()
            })
            .collect();
        assert_eq!(triple.take_output(), tripled);
    }

    #[test]
    fn key_by_over_blocks_keys_every_entry_as_record_by_record() {
        let (batch, records) = blocked(0..1000);
        let key_of = |x: &u64| x % 7;
        let mut h = Harness::open(
            crate::functions::key_by(key_of).input(Fixed).key(Fixed),
            OperatorInfo::new("k"),
        )
        .unwrap();
        h.push_batch(&batch).unwrap();
        let expected: Vec<OwnedRecord> = records
            .iter()
            .map(|r| OwnedRecord {
                key: Some(
                    key_of(&u64::from_le_bytes(r.value[..].try_into().unwrap()))
                        .to_le_bytes()
                        .to_vec(),
                ),
                ..r.clone()
            })
            .collect();
        assert_eq!(h.take_output(), expected);
    }

    #[test]
    fn a_failing_entry_of_a_block_is_reported_with_its_index() {
        let (batch, _) = blocked(0..1000);
        let mut h = Harness::open(
            crate::functions::try_map(|x: u64| {
                if x == 700 {
                    Err(crate::OperatorError::Failed("seven hundred".into()))
                } else {
                    Ok(x)
                }
            })
            .input(Fixed)
            .output(Fixed),
            OperatorInfo::new("m"),
        )
        .unwrap();
        let failure = h.push_batch(&batch).unwrap_err();
        assert_eq!(failure.record_index, 700);
        assert_eq!(h.take_output().len(), 700);
    }

    #[test]
    fn a_record_a_map_or_filter_cannot_decode_inside_a_block_is_reported_with_its_index() {
        let mut writer = weir_framing::BatchWriter::new();
        writer.push(Record::value(&7u32.to_le_bytes()));
        writer.push(Record::value(&8u32.to_le_bytes()));
        for x in 0..100u64 {
            writer.push(Record::value(&x.to_le_bytes()));
        }
        let mut m = Harness::open(
            map(|x: u32| x + 1).input(Fixed).output(Fixed),
            OperatorInfo::new("m"),
        )
        .unwrap();
        let failure = m.push_batch(writer.as_bytes()).unwrap_err();
        assert_eq!(failure.record_index, 2);
        assert_eq!(m.take_values::<u32>(&Fixed).unwrap(), vec![8, 9]);
        let mut f = Harness::open(
            filter(|x: &u32| *x > 7).input(Fixed),
            OperatorInfo::new("f"),
        )
        .unwrap();
        let failure = f.push_batch(writer.as_bytes()).unwrap_err();
        assert_eq!(failure.record_index, 2);
        assert_eq!(f.take_values::<u32>(&Fixed).unwrap(), vec![8]);
    }

    #[test]
    fn a_failing_record_in_a_batch_is_reported_with_its_index() {
        let values: Vec<Vec<u8>> = vec![1u64.to_le_bytes().to_vec(), vec![1, 2, 3]];
        let mut h = Harness::open(
            map(|x: u64| x).input(Fixed).output(Bincode),
            OperatorInfo::new("m"),
        )
        .unwrap();
        let failure = h.push_batch(&framed(&mixed_records(&values))).unwrap_err();
        assert_eq!(failure.record_index, 1);
        assert_eq!(h.take_output().len(), 1);
    }
}
