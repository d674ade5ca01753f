//! How typed values become record bytes and back.
//!
//! An operator names a codec for its input and its output; [`Bincode`] is the default. Use
//! [`Json`] to exchange records with operators written in other languages, [`Text`] for UTF-8
//! lines, [`Bytes`] for raw payloads, [`BincodeFixed`] where fixed-width integers matter (an
//! `u64` is always 8 bytes), and [`Fixed`] for numbers and pairs of numbers without serde.
//!
//! bincode is named only in this module, so a format-compatible replacement touches one place.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::OperatorError;

/// Encodes values of type `T` into record bytes and decodes them back.
///
/// ```
/// use weir_sdk::codec::{Codec, Text};
/// let mut buf = Vec::new();
/// Text.encode(&"hello".to_string(), &mut buf).unwrap();
/// assert_eq!(Text.decode(&buf).unwrap(), "hello");
/// ```
pub trait Codec<T> {
    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), OperatorError>;
    /// Decodes a whole record value. Trailing bytes are an error.
    fn decode(&self, bytes: &[u8]) -> Result<T, OperatorError>;
    /// Encodes `value` into the start of `out` and returns its length, if this codec gives
    /// the value a short encoding it can write without a `Vec` (fixed-width numbers); `None`
    /// sends the SDK to [`encode`](Codec::encode). The SDK's fast path for small records: the
    /// whole record is assembled on the stack and appended in one piece. A length over
    /// [`SMALL_ENCODING`] is treated as `None`.
    #[inline(always)]
    fn encode_small(&self, value: &T, out: &mut [u8; SMALL_ENCODING]) -> Option<usize> {
        let _ = (value, out);
        None
    }
    /// The width of every encoding, for codecs that encode all values of `T` in the same
    /// number of bytes (at most [`SMALL_ENCODING`]): maps then write a block of records
    /// straight into the output with [`encode_fixed`](Codec::encode_fixed).
    #[inline(always)]
    fn fixed_width(&self) -> Option<usize> {
        None
    }
    /// Writes `value` into `out`, which is exactly [`fixed_width`](Codec::fixed_width) bytes
    /// long. Called only when that is `Some`; the default goes through `encode_small`.
    #[inline(always)]
    fn encode_fixed(&self, value: &T, out: &mut [u8]) -> Result<(), OperatorError> {
        let mut small = [0u8; SMALL_ENCODING];
        match self.encode_small(value, &mut small) {
            Some(len) if len == out.len() => {
                out.copy_from_slice(&small[..len]);
                Ok(())
            }
            _ => Err(OperatorError::Failed(format!(
                "the codec promised encodings of {} bytes and broke that promise",
                out.len()
            ))),
        }
    }
}

/// The most bytes [`Codec::encode_small`] writes.
pub const SMALL_ENCODING: usize = 32;

/// serde values in bincode's standard (variable-length integer) encoding. The default codec.
///
/// ```
/// use weir_sdk::codec::{Bincode, Codec};
/// let mut buf = Vec::new();
/// Bincode.encode(&(7u32, "x".to_string()), &mut buf).unwrap();
/// assert_eq!(Bincode.decode(&buf).ok(), Some((7u32, "x".to_string())));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// serde values in bincode's fixed-width integer encoding: an `u64` is 8 little-endian bytes.
///
/// ```
/// use weir_sdk::codec::{BincodeFixed, Codec};
/// let mut buf = Vec::new();
/// BincodeFixed.encode(&1u64, &mut buf).unwrap();
/// assert_eq!(buf, 1u64.to_le_bytes());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BincodeFixed;

/// Fixed-width little-endian numbers and tuples of them, without serde: the fastest codec for
/// numeric records (as Flink's `LongSerializer`). Byte-compatible with [`BincodeFixed`] for the
/// same types.
///
/// ```
/// use weir_sdk::codec::{BincodeFixed, Codec, Fixed};
/// let mut a = Vec::new();
/// Fixed.encode(&(7u64, -1i64), &mut a).unwrap();
/// let mut b = Vec::new();
/// BincodeFixed.encode(&(7u64, -1i64), &mut b).unwrap();
/// assert_eq!(a, b);
/// assert_eq!(Fixed.decode(&a).ok(), Some((7u64, -1i64)));
/// assert!(<Fixed as Codec<u64>>::decode(&Fixed, &a[..3]).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixed;

/// Integers whose encodings sort as the numbers do: big-endian, the sign bit of signed ones
/// flipped. Keyed state orders a [`MapState`](crate::MapState)'s entries by the bytes of their
/// encoded map keys, so with [`Fixed`] (little-endian) or bincode, -1 sorts after 1 and 256
/// before 1; with `Ordered` the entries come in numeric order (Flink's sorted state keys need
/// the same care).
///
/// ```
/// use weir_sdk::codec::{Codec, Ordered};
/// let encode = |n: i64| { let mut b = Vec::new(); Ordered.encode(&n, &mut b).unwrap(); b };
/// assert!(encode(-5) < encode(-1) && encode(-1) < encode(0) && encode(1) < encode(256));
/// assert_eq!(Ordered.decode(&encode(-7)).ok(), Some(-7i64));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Ordered;

/// An integer [`Ordered`] encodes.
pub trait OrderedInteger: Sized {
    /// Appends the order-preserving bytes.
    fn put_ordered(&self, out: &mut Vec<u8>);
    /// Reads them back; `None` for a wrong length.
    fn get_ordered(bytes: &[u8]) -> Option<Self>;
}

macro_rules! ordered_integer {
    ($($t:ty => $flip:expr),*) => {$(
        impl OrderedInteger for $t {
            fn put_ordered(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&(*self ^ $flip).to_be_bytes());
            }
            fn get_ordered(bytes: &[u8]) -> Option<Self> {
                let bytes: [u8; std::mem::size_of::<$t>()] = bytes.try_into().ok()?;
                Some(<$t>::from_be_bytes(bytes) ^ $flip)
            }
        }
    )*};
}
ordered_integer!(
    u8 => 0, u16 => 0, u32 => 0, u64 => 0,
    i8 => i8::MIN, i16 => i16::MIN, i32 => i32::MIN, i64 => i64::MIN
);

impl<T: OrderedInteger> Codec<T> for Ordered {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        value.put_ordered(out);
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, OperatorError> {
        T::get_ordered(bytes).ok_or_else(|| {
            decode_failed(
                "ordered",
                format_args!("{} bytes are no integer of this width", bytes.len()),
            )
        })
    }
}

/// A type [`Fixed`] encodes: a number of a fixed width, or a pair of them.
pub trait FixedWidth: Sized {
    /// Encoded size in bytes.
    const WIDTH: usize;
    /// Appends the little-endian bytes.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads from exactly `WIDTH` bytes.
    fn get(bytes: &[u8]) -> Self;
    /// Writes the little-endian bytes into exactly `WIDTH` bytes. The default goes through
    /// `put`; the numbers and pairs of this crate write directly.
    fn write(&self, out: &mut [u8]) {
        let mut bytes = Vec::with_capacity(Self::WIDTH);
        self.put(&mut bytes);
        out.copy_from_slice(&bytes);
    }
}

macro_rules! fixed_width {
    ($($t:ty),*) => {$(
        impl FixedWidth for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn put(&self, out: &mut Vec<u8>) {
                weir_framing::append_array(out, &self.to_le_bytes());
            }
            #[inline(always)]
            fn get(bytes: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
            #[inline(always)]
            fn write(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
fixed_width!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

impl<A: FixedWidth, B: FixedWidth> FixedWidth for (A, B) {
    const WIDTH: usize = A::WIDTH + B::WIDTH;
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Self {
        (A::get(&bytes[..A::WIDTH]), B::get(&bytes[A::WIDTH..]))
    }
    #[inline(always)]
    fn write(&self, out: &mut [u8]) {
        self.0.write(&mut out[..A::WIDTH]);
        self.1.write(&mut out[A::WIDTH..]);
    }
}

impl<T: FixedWidth> Codec<T> for Fixed {
    #[inline(always)]
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        value.put(out);
        Ok(())
    }
    #[inline(always)]
    fn decode(&self, bytes: &[u8]) -> Result<T, OperatorError> {
        if bytes.len() != T::WIDTH {
            return Err(decode_failed(
                "fixed",
                format_args!("expected {} bytes, got {}", T::WIDTH, bytes.len()),
            ));
        }
        Ok(T::get(bytes))
    }
    #[inline(always)]
    fn fixed_width(&self) -> Option<usize> {
        (T::WIDTH <= SMALL_ENCODING).then_some(T::WIDTH)
    }
    #[inline(always)]
    fn encode_fixed(&self, value: &T, out: &mut [u8]) -> Result<(), OperatorError> {
        value.write(out);
        Ok(())
    }
    #[inline(always)]
    fn encode_small(&self, value: &T, out: &mut [u8; SMALL_ENCODING]) -> Option<usize> {
        let slot = out.get_mut(..T::WIDTH)?;
        value.write(slot);
        Some(T::WIDTH)
    }
}

/// serde values as JSON text, the codec to share records with operators in other languages.
///
/// ```
/// use weir_sdk::codec::{Codec, Json};
/// let mut buf = Vec::new();
/// Json.encode(&vec![1, 2], &mut buf).unwrap();
/// assert_eq!(buf, b"[1,2]");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// A `String` as its UTF-8 bytes, for text lines.
///
/// ```
/// use weir_sdk::codec::{Codec, Text};
/// assert!(Text.decode(&[0xff]).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

/// A `Vec<u8>` as itself.
///
/// ```
/// use weir_sdk::codec::{Bytes, Codec};
/// assert_eq!(Bytes.decode(b"raw").unwrap(), b"raw".to_vec());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

fn encode_failed(codec: &str, err: impl std::fmt::Display) -> OperatorError {
    OperatorError::Failed(format!("{codec} could not encode an output value: {err}"))
}

#[cold]
fn decode_failed(codec: &str, err: impl std::fmt::Display) -> OperatorError {
    OperatorError::Decode(format!("{codec}: {err}"))
}

fn bincode_encode<T: Serialize, C: bincode::config::Config>(
    value: &T,
    out: &mut Vec<u8>,
    config: C,
) -> Result<(), OperatorError> {
    bincode::serde::encode_into_std_write(value, out, config)
        .map(|_| ())
        .map_err(|e| encode_failed("bincode", e))
}

fn bincode_decode<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, OperatorError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| decode_failed("bincode", e))?;
    if read != bytes.len() {
        return Err(decode_failed(
            "bincode",
            format_args!("{} trailing bytes after the value", bytes.len() - read),
        ));
    }
    Ok(value)
}

impl<T: Serialize + DeserializeOwned> Codec<T> for Bincode {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        bincode_encode(value, out, bincode::config::standard())
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, OperatorError> {
        bincode_decode(bytes, bincode::config::standard())
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> for BincodeFixed {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        bincode_encode(
            value,
            out,
            bincode::config::standard().with_fixed_int_encoding(),
        )
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, OperatorError> {
        bincode_decode(bytes, bincode::config::standard().with_fixed_int_encoding())
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        serde_json::to_writer(out, value).map_err(|e| encode_failed("json", e))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, OperatorError> {
        serde_json::from_slice(bytes).map_err(|e| decode_failed("json", e))
    }
}

impl Codec<String> for Text {
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, OperatorError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| decode_failed("text", format_args!("not UTF-8: {e}")))
    }
}

impl Codec<Vec<u8>> for Bytes {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), OperatorError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, OperatorError> {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_rejects_trailing_bytes() {
        let mut buf = Vec::new();
        Bincode.encode(&5u8, &mut buf).unwrap();
        buf.push(0);
        let err = <Bincode as Codec<u8>>::decode(&Bincode, &buf).unwrap_err();
        assert!(matches!(err, OperatorError::Decode(m) if m.contains("1 trailing bytes")));
    }

    #[test]
    fn json_decode_error_names_the_codec() {
        let err = <Json as Codec<u32>>::decode(&Json, b"\"x\"").unwrap_err();
        assert!(matches!(err, OperatorError::Decode(m) if m.starts_with("json:")));
    }
}
