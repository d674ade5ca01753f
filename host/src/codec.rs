//! The host's one binary codec for what it persists (checkpoint metadata and state files).
//! bincode is named only here, so a format-compatible replacement changes one file.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes that do not decode as the expected type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, config()).expect("encoding host state")
}

/// Encodes `value`, which may hold what the format cannot carry (a path that is not UTF-8).
pub fn try_encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a whole `T` from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError(format!("{} trailing bytes", bytes.len() - read)));
    }
    Ok(value)
}

/// Most memory a decode of bytes from a peer may claim (lengths in the bytes are claims).
const UNTRUSTED_LIMIT: usize = 1 << 30;

/// As [`decode`], for bytes from outside the process (an upload, an RPC message): a length
/// that claims more than 1 GiB in all is refused before it is allocated.
pub fn decode_untrusted<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<UNTRUSTED_LIMIT>();
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| CodecError(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError(format!("{} trailing bytes", bytes.len() - read)));
    }
    Ok(value)
}
