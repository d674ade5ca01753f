//! Keyed reduce: a running aggregate per key, kept in keyed state.

use std::marker::PhantomData;

use weir_framing::{BatchWriter, Block, Item, Record};

use crate::cache::CachedHost;
use crate::codec::{Bincode, Codec, SMALL_ENCODING};
use crate::functions::ZEROS;
use crate::host::{StateId, StateKind};
use crate::operator::{
    BatchFailure, BatchHost, Context, HostRef, OpenContext, Operator, OperatorError, block_outcome,
    encode_into, for_each_item, for_each_record_of,
};

/// Folds each key's values into an accumulator kept in keyed state. Built by [`reduce`].
pub struct Reduce<F, T, C = Bincode> {
    f: F,
    codec: C,
    state: Option<StateId>,
    /// Reused for accumulators whose codec has no short encoding.
    encoded: Vec<u8>,
    _types: PhantomData<fn(T, T) -> T>,
}

/// Combines every value with the accumulator of its key, `f(accumulator, value)`, and emits the
/// new accumulator with the record's key and timestamp; a key's first value is its first
/// accumulator. As Flink's `KeyedStream::reduce`: the accumulators are keyed state, so they
/// are checkpointed and follow their keys when the job is rescaled. Values, accumulators and
/// output share one codec (default [`Bincode`], changed with `.codec(..)`). Records need a key.
///
/// Inside a component a record costs one lookup in the state cache, read and write together.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
/// let mut h = Harness::open(reduce(|sum: u64, x: u64| sum + x).codec(Fixed), OperatorInfo::new("sum")).unwrap();
/// for (key, x) in [("a", 1u64), ("b", 10), ("a", 2)] {
///     h.push_keyed(key.as_bytes(), &x.to_le_bytes()).unwrap();
/// }
/// assert_eq!(h.take_values::<u64>(&Fixed).unwrap(), vec![1, 10, 3]);
/// ```
pub fn reduce<T, F: FnMut(T, T) -> T>(f: F) -> Reduce<F, T> {
    Reduce {
        f,
        codec: Bincode,
        state: None,
        encoded: Vec::new(),
        _types: PhantomData,
    }
}

impl<F, T, C> Reduce<F, T, C> {
    /// Encodes values, accumulators and output with `codec`.
    pub fn codec<D: Codec<T>>(self, codec: D) -> Reduce<F, T, D> {
        Reduce {
            f: self.f,
            codec,
            state: self.state,
            encoded: self.encoded,
            _types: PhantomData,
        }
    }
}

fn state_corrupt(err: OperatorError) -> OperatorError {
    OperatorError::State(format!("stored accumulator does not decode: {err}"))
}

impl<F, T, C> Reduce<F, T, C>
where
    F: FnMut(T, T) -> T,
    C: Codec<T>,
{
    /// `value` folded into the accumulator stored as `stored`, or the first accumulator.
    #[inline(always)]
    fn fold(&mut self, stored: Option<&[u8]>, value: T) -> Result<T, OperatorError> {
        match stored {
            Some(bytes) => Ok((self.f)(
                self.codec.decode(bytes).map_err(state_corrupt)?,
                value,
            )),
            None => Ok(value),
        }
    }

    /// The new accumulator of `key`, stored: one cache lookup inside a component.
    #[inline(always)]
    fn accumulate(
        &mut self,
        state: StateId,
        key: &[u8],
        value: T,
        ctx: &mut Context<'_>,
    ) -> Result<T, OperatorError> {
        match &mut ctx.host {
            HostRef::Cached(cache) => {
                let slot = cache.slot_index(state, key);
                let acc = self.fold(cache.value_at(slot), value)?;
                let mut small = [0u8; SMALL_ENCODING];
                match self
                    .codec
                    .encode_small(&acc, &mut small)
                    .filter(|&len| len <= SMALL_ENCODING)
                {
                    Some(len) => cache.write_at(slot, state, key, &small[..len]),
                    None => {
                        self.encoded.clear();
                        self.codec.encode(&acc, &mut self.encoded)?;
                        cache.write_at(slot, state, key, &self.encoded);
                    }
                }
                Ok(acc)
            }
            HostRef::Dyn(host) => {
                let acc = self.fold(host.value_get(state, key).as_deref(), value)?;
                self.encoded.clear();
                self.codec.encode(&acc, &mut self.encoded)?;
                host.value_set(state, key, &self.encoded);
                Ok(acc)
            }
        }
    }
}

impl<F, T, C> Operator for Reduce<F, T, C>
where
    F: FnMut(T, T) -> T,
    C: Codec<T>,
{
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.state = Some(ctx.host.declare_state("reduce", StateKind::Value));
        Ok(())
    }

    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let (Some(state), Some(key)) = (self.state, record.key) else {
            return Err(OperatorError::Failed(match self.state {
                None => "reduce called before open".into(),
                Some(_) => "reduce got a record without a key (add a key_by before it)".into(),
            }));
        };
        let value = self.codec.decode(record.value)?;
        let acc = self.accumulate(state, key, value, ctx)?;
        encode_into(ctx.out, &self.codec, &acc, Some(key), record.timestamp)
    }

    fn process_batch(
        &mut self,
        batch: &[u8],
        host: &mut BatchHost<'_>,
        out: &mut BatchWriter,
    ) -> Result<(), BatchFailure> {
        // A block of keyed entries, in a component, with a codec of one width: each entry's
        // accumulator is written straight into an output block.
        for_each_item(batch, |item, out_index| {
            if let Item::Block(block) = item
                && let (Some(state), Some(width)) = (self.state, self.codec.fixed_width())
                && let HostRef::Cached(cache) = &mut host.0
                && let Some(done) = self.reduce_block(block, state, width, cache, out)
            {
                return block_outcome(done, out_index);
            }
            for_each_record_of(item, out_index, |record, _| {
                let mut ctx =
                    Context::with_host(host.0.reborrow(), out, record.key, record.timestamp);
                self.process(record, &mut ctx)
            })
        })
    }
}

impl<F, T, C> Reduce<F, T, C>
where
    F: FnMut(T, T) -> T,
    C: Codec<T>,
{
    /// Folds every entry of `block` into its key's accumulator and writes the accumulators,
    /// `width` bytes each with the entries' keys and timestamps, into an output block; `None`
    /// if the block has no keys or the output cannot be a block, else the outcome with the
    /// index in the block of a failing record.
    #[inline(always)]
    fn reduce_block(
        &mut self,
        block: Block<'_>,
        state: StateId,
        width: usize,
        cache: &mut CachedHost,
        out: &mut BatchWriter,
    ) -> Option<Result<(), (usize, OperatorError)>> {
        let key_len = block.key_len()?;
        let ts_len = if block.has_timestamp() { 8 } else { 0 };
        let value_at = block.value_offset();
        let like = Record {
            value: &ZEROS[..width],
            key: Some(ZEROS.get(..key_len)?),
            timestamp: block.has_timestamp().then_some(0),
        };
        let count = block.len();
        let region = out.reserve_entries(&like, count)?;
        let mut written = 0;
        let mut result = Ok(());
        let entries = block.entries().chunks_exact(block.stride());
        for (entry, slot) in entries.zip(region.chunks_exact_mut(value_at + width)) {
            let key = &entry[ts_len..value_at];
            let step = self.codec.decode(&entry[value_at..]).and_then(|value| {
                let i = cache.slot_index(state, key);
                let acc = self.fold(cache.value_at(i), value)?;
                self.codec.encode_fixed(&acc, &mut slot[value_at..])?;
                cache.write_at(i, state, key, &slot[value_at..]);
                Ok(())
            });
            if let Err(e) = step {
                result = Err((written, e));
                break;
            }
            weir_framing::copy_entry(slot, &entry[..value_at]);
            written += 1;
        }
        out.commit_entries(&like, count, written);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OperatorInfo;
    use crate::codec::Fixed;
    use crate::testing::Harness;

    #[test]
    fn each_key_folds_its_own_values_and_keeps_key_and_timestamp() {
        let mut h = Harness::open(
            reduce(|acc: u64, x: u64| acc * 10 + x).codec(Fixed),
            OperatorInfo::new("r"),
        )
        .unwrap();
        let mut writer = weir_framing::BatchWriter::new();
        let input = [
            (b"k1", 1u64, 5i64),
            (b"k2", 2, 6),
            (b"k1", 3, 7),
            (b"k1", 4, 8),
        ];
        for (key, x, ts) in input {
            writer.push(Record {
                value: &x.to_le_bytes(),
                key: Some(key),
                timestamp: Some(ts),
            });
        }
        h.push_batch(writer.as_bytes()).unwrap();
        let out: Vec<(Vec<u8>, u64, i64)> = h
            .take_output()
            .into_iter()
            .map(|r| {
                let sum = u64::from_le_bytes(r.value[..].try_into().unwrap());
                (r.key.unwrap(), sum, r.timestamp.unwrap())
            })
            .collect();
        assert_eq!(
            out,
            vec![
                (b"k1".to_vec(), 1, 5),
                (b"k2".to_vec(), 2, 6),
                (b"k1".to_vec(), 13, 7),
                (b"k1".to_vec(), 134, 8),
            ]
        );
    }

    #[test]
    fn a_record_without_a_key_fails_clearly() {
        let mut h = Harness::open(
            reduce(|a: u64, b: u64| a + b).codec(Fixed),
            OperatorInfo::new("r"),
        )
        .unwrap();
        let err = h.push(&1u64.to_le_bytes()).unwrap_err();
        assert!(err.to_string().contains("without a key"), "{err}");
    }
}
