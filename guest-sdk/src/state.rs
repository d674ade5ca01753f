//! Typed handles to keyed state that the host owns and checkpoints.
//!
//! A handle is declared once in `open` and then read and written while handling a record or
//! timer; every access is scoped to the key of that record or timer. The host groups the state by
//! key group, so it follows its keys when a job is rescaled.

use std::marker::PhantomData;

use crate::codec::{Bincode, Codec, SMALL_ENCODING};
use crate::host::StateId;
use crate::operator::{Context, HostRef, OperatorError};

/// One value of type `T` per key.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
///
/// struct Count { count: Option<ValueState<u64>> }
/// impl ProcessFunction for Count {
///     type In = String;
///     type Out = u64;
///     fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
///         self.count = Some(ctx.value_state("count"));
///         Ok(())
///     }
///     fn process_element(&mut self, _: String, ctx: &mut ProcessContext<'_, '_, u64>) -> Result<(), OperatorError> {
///         let state = self.count.as_ref().expect("opened");
///         let n = state.get(ctx)?.unwrap_or(0) + 1;
///         state.set(ctx, &n)?;
///         ctx.emit(&n)
///     }
/// }
///
/// let mut h = Harness::open(keyed_process(Count { count: None }).input(Text), OperatorInfo::new("count")).unwrap();
/// h.push_keyed(b"a", b"x").unwrap();
/// h.push_keyed(b"a", b"y").unwrap();
/// h.push_keyed(b"b", b"z").unwrap();
/// assert_eq!(h.take_values::<u64>(&Bincode).unwrap(), vec![1, 2, 1]);
/// ```
pub struct ValueState<T, C = Bincode> {
    id: StateId,
    codec: C,
    _value: PhantomData<fn(T) -> T>,
}

impl<T> ValueState<T> {
    pub(crate) fn new(id: StateId) -> Self {
        ValueState {
            id,
            codec: Bincode,
            _value: PhantomData,
        }
    }
}

impl<T, C: Codec<T>> ValueState<T, C> {
    /// The same state with values encoded by `codec`.
    pub fn with_codec<D: Codec<T>>(self, codec: D) -> ValueState<T, D> {
        ValueState {
            id: self.id,
            codec,
            _value: PhantomData,
        }
    }

    /// The value of the current key, if any.
    #[inline]
    pub fn get(&self, ctx: &mut Context<'_>) -> Result<Option<T>, OperatorError> {
        let key = ctx.require_key("read keyed state")?;
        if let HostRef::Cached(cache) = &mut ctx.host {
            return match cache.value_ref(self.id, key) {
                Some(bytes) => self.codec.decode(bytes).map(Some).map_err(state_corrupt),
                None => Ok(None),
            };
        }
        let mut result = Ok(None);
        ctx.host.api().value_with(self.id, key, &mut |bytes| {
            if let Some(bytes) = bytes {
                result = self.codec.decode(bytes).map(Some).map_err(state_corrupt);
            }
        });
        result
    }

    /// Sets the value of the current key.
    #[inline]
    pub fn set(&self, ctx: &mut Context<'_>, value: &T) -> Result<(), OperatorError> {
        let key = ctx.require_key("write keyed state")?;
        match &mut ctx.host {
            HostRef::Cached(cache) => {
                let mut small = [0u8; SMALL_ENCODING];
                match self
                    .codec
                    .encode_small(value, &mut small)
                    .filter(|&len| len <= SMALL_ENCODING)
                {
                    // Fixed-width values go from the stack straight into the slot.
                    Some(len) => {
                        cache.write(self.id, key, Some(&small[..len]));
                        Ok(())
                    }
                    None => cache.set_with(self.id, key, |out| self.codec.encode(value, out)),
                }
            }
            HostRef::Dyn(host) => {
                host.value_set_with(self.id, key, &mut |out| self.codec.encode(value, out))
            }
        }
    }

    /// Removes the value of the current key.
    pub fn clear(&self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let key = ctx.require_key("clear keyed state")?;
        ctx.host.api().value_clear(self.id, key);
        Ok(())
    }
}

/// Marks the entry types of a [`MapState`] without owning any.
type Entries<K, V> = fn(K, V) -> (K, V);

/// A map from `K` to `V` per key.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
///
/// /// Remembers every distinct value seen per key and emits how many there are.
/// struct Distinct { seen: Option<MapState<String, ()>> }
/// impl ProcessFunction for Distinct {
///     type In = String;
///     type Out = u64;
///     fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
///         self.seen = Some(ctx.map_state("seen"));
///         Ok(())
///     }
///     fn process_element(&mut self, v: String, ctx: &mut ProcessContext<'_, '_, u64>) -> Result<(), OperatorError> {
///         let seen = self.seen.as_ref().expect("opened");
///         seen.put(ctx, &v, &())?;
///         let n = seen.entries(ctx)?.len() as u64;
///         ctx.emit(&n)
///     }
/// }
/// let mut h = Harness::open(keyed_process(Distinct { seen: None }).input(Text), OperatorInfo::new("d")).unwrap();
/// for v in ["x", "y", "x"] { h.push_keyed(b"k", v.as_bytes()).unwrap(); }
/// assert_eq!(h.take_values::<u64>(&Bincode).unwrap(), vec![1, 2, 2]);
/// ```
pub struct MapState<K, V, C = Bincode> {
    id: StateId,
    codec: C,
    _entries: PhantomData<Entries<K, V>>,
}

impl<K, V> MapState<K, V> {
    pub(crate) fn new(id: StateId) -> Self {
        MapState {
            id,
            codec: Bincode,
            _entries: PhantomData,
        }
    }
}

impl<K, V, C: Codec<K> + Codec<V>> MapState<K, V, C> {
    /// The same state with map keys and values encoded by `codec`.
    pub fn with_codec<D: Codec<K> + Codec<V>>(self, codec: D) -> MapState<K, V, D> {
        MapState {
            id: self.id,
            codec,
            _entries: PhantomData,
        }
    }

    fn encode_key(&self, map_key: &K) -> Result<Vec<u8>, OperatorError> {
        let mut bytes = Vec::new();
        self.codec.encode(map_key, &mut bytes)?;
        Ok(bytes)
    }

    /// The value under `map_key` for the current key.
    pub fn get(&self, ctx: &mut Context<'_>, map_key: &K) -> Result<Option<V>, OperatorError> {
        let key = ctx.require_key("read keyed state")?;
        let mk = self.encode_key(map_key)?;
        match ctx.host.api().map_get(self.id, key, &mk) {
            Some(bytes) => Codec::<V>::decode(&self.codec, &bytes)
                .map(Some)
                .map_err(state_corrupt),
            None => Ok(None),
        }
    }

    /// Inserts or replaces the value under `map_key` for the current key.
    pub fn put(&self, ctx: &mut Context<'_>, map_key: &K, value: &V) -> Result<(), OperatorError> {
        let key = ctx.require_key("write keyed state")?;
        let mk = self.encode_key(map_key)?;
        let mut bytes = Vec::new();
        self.codec.encode(value, &mut bytes)?;
        ctx.host.api().map_put(self.id, key, &mk, &bytes);
        Ok(())
    }

    /// Removes `map_key` for the current key.
    pub fn remove(&self, ctx: &mut Context<'_>, map_key: &K) -> Result<(), OperatorError> {
        let key = ctx.require_key("write keyed state")?;
        let mk = self.encode_key(map_key)?;
        ctx.host.api().map_remove(self.id, key, &mk);
        Ok(())
    }

    /// Every entry for the current key, ordered by encoded map key.
    pub fn entries(&self, ctx: &mut Context<'_>) -> Result<Vec<(K, V)>, OperatorError> {
        let key = ctx.require_key("read keyed state")?;
        ctx.host
            .api()
            .map_entries(self.id, key)
            .into_iter()
            .map(|(k, v)| {
                let k = Codec::<K>::decode(&self.codec, &k).map_err(state_corrupt)?;
                let v = Codec::<V>::decode(&self.codec, &v).map_err(state_corrupt)?;
                Ok((k, v))
            })
            .collect()
    }

    /// Removes every entry for the current key.
    pub fn clear(&self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let key = ctx.require_key("clear keyed state")?;
        ctx.host.api().map_clear(self.id, key);
        Ok(())
    }
}

/// Stored state that no longer decodes is the operator's (or its codec's) fault, not the input's.
fn state_corrupt(err: OperatorError) -> OperatorError {
    OperatorError::State(format!("stored keyed state does not decode: {err}"))
}
