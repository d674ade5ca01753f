//! A map whose outputs are keyed by a field of their own: a map and a key_by in one pass.

use std::marker::PhantomData;

use weir_framing::{BatchWriter, Block, Item, Record};

use crate::codec::{Codec, SMALL_ENCODING};
use crate::functions::{Map, ZEROS};
use crate::operator::{
    BatchFailure, BatchHost, Context, Operator, OperatorError, block_outcome, encode_into,
    for_each_item, for_each_record_of,
};

/// A [`Map`] that keys each output by `key(&output)`. Built by [`Map::key_by`].
pub struct KeyedMap<F, G, I, O, K, CI, CO, CK> {
    map: Map<F, I, O, CI, CO>,
    key: G,
    key_codec: CK,
    /// Reused for keys whose codec has no short encoding.
    key_buf: Vec<u8>,
    _types: PhantomData<fn(&O) -> K>,
}

impl<F, I, O, CI, CO> Map<F, I, O, CI, CO> {
    /// Keys every output by `key(&output)`, encoded with `codec`, in the same pass over the
    /// batch: what Flink writes as `map(..)` followed by `keyBy(..)`, ready for a hash edge.
    ///
    /// ```
    /// use weir_sdk::prelude::*;
    /// use weir_sdk::testing::Harness;
    /// let pairs = map(|x: u64| (x % 10, 1u64)).input(Fixed).output(Fixed);
    /// let keyed = pairs.key_by(|&(k, _): &(u64, u64)| k, Fixed);
    /// let mut h = Harness::open(keyed, OperatorInfo::new("pairs")).unwrap();
    /// h.push(&23u64.to_le_bytes()).unwrap();
    /// let out = h.take_output();
    /// assert_eq!(out[0].key.as_deref(), Some(&3u64.to_le_bytes()[..]));
    /// ```
    pub fn key_by<K, G: FnMut(&O) -> K, CK: Codec<K>>(
        self,
        key: G,
        codec: CK,
    ) -> KeyedMap<F, G, I, O, K, CI, CO, CK> {
        KeyedMap {
            map: self,
            key,
            key_codec: codec,
            key_buf: Vec::new(),
            _types: PhantomData,
        }
    }
}

impl<F, G, I, O, K, CI, CO, CK> KeyedMap<F, G, I, O, K, CI, CO, CK>
where
    F: FnMut(I) -> O,
    G: FnMut(&O) -> K,
    CI: Codec<I>,
    CO: Codec<O>,
    CK: Codec<K>,
{
    /// Maps one record and emits the output with its key.
    #[inline(always)]
    fn map_one(&mut self, record: Record<'_>, out: &mut BatchWriter) -> Result<(), OperatorError> {
        let output = (self.map.f)(self.map.input.decode(record.value)?);
        let key = (self.key)(&output);
        let mut small = [0u8; SMALL_ENCODING];
        match self
            .key_codec
            .encode_small(&key, &mut small)
            .filter(|&len| len <= SMALL_ENCODING)
        {
            Some(len) => encode_into(
                out,
                &self.map.output,
                &output,
                Some(&small[..len]),
                record.timestamp,
            ),
            None => {
                self.key_buf.clear();
                self.key_codec.encode(&key, &mut self.key_buf)?;
                encode_into(
                    out,
                    &self.map.output,
                    &output,
                    Some(&self.key_buf),
                    record.timestamp,
                )
            }
        }
    }

    /// Maps every entry of `block` into an output block of keyed entries, when both codecs
    /// have one width; `None` if the output cannot be a block, else the outcome with the index
    /// in the block of a failing record.
    #[inline(always)]
    fn map_block(
        &mut self,
        block: Block<'_>,
        key_width: usize,
        width: usize,
        out: &mut BatchWriter,
    ) -> Option<Result<(), (usize, OperatorError)>> {
        let ts_len = if block.has_timestamp() { 8 } else { 0 };
        let value_at = block.value_offset();
        let like = Record {
            value: &ZEROS[..width],
            key: Some(&ZEROS[..key_width]),
            timestamp: block.has_timestamp().then_some(0),
        };
        let count = block.len();
        let region = out.reserve_entries(&like, count)?;
        let mut written = 0;
        let mut result = Ok(());
        let entries = block.entries().chunks_exact(block.stride());
        for (entry, slot) in entries.zip(region.chunks_exact_mut(ts_len + key_width + width)) {
            let step = self.map.input.decode(&entry[value_at..]).and_then(|value| {
                let output = (self.map.f)(value);
                let (key, value) = slot[ts_len..].split_at_mut(key_width);
                self.key_codec.encode_fixed(&(self.key)(&output), key)?;
                self.map.output.encode_fixed(&output, value)
            });
            if let Err(e) = step {
                result = Err((written, e));
                break;
            }
            if ts_len != 0 {
                slot[..8].copy_from_slice(&entry[..8]);
            }
            written += 1;
        }
        out.commit_entries(&like, count, written);
        Some(result)
    }
}

impl<F, G, I, O, K, CI, CO, CK> Operator for KeyedMap<F, G, I, O, K, CI, CO, CK>
where
    F: FnMut(I) -> O,
    G: FnMut(&O) -> K,
    CI: Codec<I>,
    CO: Codec<O>,
    CK: Codec<K>,
{
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        self.map_one(record, ctx.out)
    }

    fn process_batch(
        &mut self,
        batch: &[u8],
        _: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        for_each_item(batch, |item, out_index| {
            if let Item::Block(block) = item
                && block.key_len().is_none()
                && let (Some(key_width), Some(width)) =
                    (self.key_codec.fixed_width(), self.map.output.fixed_width())
                && let Some(done) = self.map_block(block, key_width, width, out)
            {
                return block_outcome(done, out_index);
            }
            for_each_record_of(item, out_index, |record, _| self.map_one(record, out))
        })
    }
}

#[cfg(test)]
mod tests {
    use weir_framing::{BatchWriter, OwnedRecord, Record};

    use crate::codec::Fixed;
    use crate::functions::map;
    use crate::operator::OperatorInfo;
    use crate::testing::Harness;

    #[test]
    fn blocks_and_lone_records_are_mapped_and_keyed_alike() {
        let mut writer = BatchWriter::new();
        let mut expected = Vec::new();
        for x in 0..500u64 {
            let ts = (x % 3 == 0).then_some(x as i64);
            writer.push(Record {
                value: &x.to_le_bytes(),
                key: None,
                timestamp: ts,
            });
            let mut value = (x % 7).to_le_bytes().to_vec();
            value.extend_from_slice(&(x * 2).to_le_bytes());
            expected.push(OwnedRecord {
                value,
                key: Some((x % 7).to_le_bytes().to_vec()),
                timestamp: ts,
            });
        }
        let pairs = map(|x: u64| (x % 7, x * 2)).input(Fixed).output(Fixed);
        let mut h = Harness::open(
            pairs.key_by(|&(k, _): &(u64, u64)| k, Fixed),
            OperatorInfo::new("keyed"),
        )
        .unwrap();
        h.push_batch(writer.as_bytes()).unwrap();
        assert_eq!(h.take_output(), expected);
        // Variable-width codecs take the per-record path and agree.
        let pairs = map(|x: u64| (x % 7, x * 2)).input(Fixed).output(Fixed);
        let mut general = Harness::open(
            pairs.key_by(|&(k, _): &(u64, u64)| k.to_string(), crate::codec::Text),
            OperatorInfo::new("general"),
        )
        .unwrap();
        general.push_batch(writer.as_bytes()).unwrap();
        let keys: Vec<Option<Vec<u8>>> = general.take_output().into_iter().map(|r| r.key).collect();
        let expected_keys: Vec<Option<Vec<u8>>> = (0..500u64)
            .map(|x| Some((x % 7).to_string().into_bytes()))
            .collect();
        assert_eq!(keys, expected_keys);
    }
}
