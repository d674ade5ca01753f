//! Mutual authentication of a data connection on the cluster's shared secret: each side sends
//! a fresh nonce and proves it knows the secret with an HMAC-SHA256 over both nonces, so the
//! secret never crosses the wire and a recorded proof is worthless on another connection. The
//! role is part of the MAC, so a proof cannot be reflected back to its sender.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ClusterSecret;
use super::wire::{self, Frame, Message, NONCE_BYTES, VERSION, WireError};

type HmacSha256 = Hmac<Sha256>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Wire(String),
    #[error("the peer closed the connection during the handshake")]
    Closed,
    #[error("the peer sent {0} where the handshake expects another message")]
    Unexpected(String),
    #[error("the peer speaks data protocol version {theirs}, this TaskExecutor {VERSION}")]
    Version { theirs: u16 },
    #[error("the peer uses {theirs}-byte network buffers, this TaskExecutor {ours}")]
    SegmentSize { theirs: u32, ours: u32 },
    #[error("the peer speaks {theirs}, this port serves {ours}")]
    WrongPort {
        theirs: &'static str,
        ours: &'static str,
    },
    #[error("the peer does not know the cluster secret")]
    BadProof,
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    #[error("no random nonce: {0}")]
    Random(String),
}

impl From<WireError> for HandshakeError {
    fn from(e: WireError) -> Self {
        HandshakeError::Wire(e.to_string())
    }
}

fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(n)
}

fn keyed(secret: &ClusterSecret, role: &[u8], first: &[u8], second: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.bytes()).expect("HMAC takes keys of any size");
    mac.update(role);
    mac.update(first);
    mac.update(second);
    mac
}

fn prove(secret: &ClusterSecret, role: &[u8], first: &[u8], second: &[u8]) -> [u8; NONCE_BYTES] {
    keyed(secret, role, first, second)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a proof in constant time.
fn verify(secret: &ClusterSecret, role: &[u8], first: &[u8], second: &[u8], mac: &[u8]) -> bool {
    keyed(secret, role, first, second).verify_slice(mac).is_ok()
}

/// What a connection is for: the data port (whose peers must use one buffer size), or the
/// cluster's RPC. The purpose is part of every proof, so one cannot stand in for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Data { segment_bytes: usize },
    Rpc,
}

impl Purpose {
    /// The roles' MAC prefixes: (server, client).
    fn roles(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Purpose::Data { .. } => (b"weir-data-server", b"weir-data-client"),
            Purpose::Rpc => (b"weir-rpc-server", b"weir-rpc-client"),
        }
    }

    /// What the hello carries: the buffer size, or 0 for RPC.
    fn parameter(self) -> u32 {
        match self {
            Purpose::Data { segment_bytes } => segment_bytes as u32,
            Purpose::Rpc => 0,
        }
    }

    fn segment_bytes(self) -> usize {
        self.parameter() as usize
    }
}

async fn next_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    segment_bytes: usize,
) -> Result<Message, HandshakeError> {
    match wire::read_frame(stream, segment_bytes, None).await? {
        None => Err(HandshakeError::Closed),
        Some(Frame::Message(Message::Error { message, .. })) => {
            Err(HandshakeError::Refused(message))
        }
        Some(Frame::Message(m)) => Ok(m),
        Some(Frame::Buffer { .. } | Frame::NoSegment { .. }) => {
            Err(HandshakeError::Unexpected("a buffer".into()))
        }
    }
}

/// The connecting side.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    purpose: Purpose,
) -> Result<(), HandshakeError> {
    let (server_role, client_role) = purpose.roles();
    let segment_bytes = purpose.segment_bytes();
    let ours = nonce()?;
    let hello = Message::Hello {
        version: VERSION,
        segment_bytes: purpose.parameter(),
        nonce: ours,
    };
    wire::write_message(stream, &hello)
        .await
        .map_err(WireError::from)?;
    let (theirs, mac) = match next_message(stream, segment_bytes).await? {
        Message::Challenge { nonce, mac } => (nonce, mac),
        other => return Err(HandshakeError::Unexpected(format!("{other:?}"))),
    };
    if !verify(secret, server_role, &ours, &theirs, &mac) {
        return Err(HandshakeError::BadProof);
    }
    let proof = Message::Proof {
        mac: prove(secret, client_role, &theirs, &ours),
    };
    wire::write_message(stream, &proof)
        .await
        .map_err(WireError::from)?;
    Ok(())
}

/// The accepting side: on failure it tells the peer why (unless the peer failed the proof)
/// and the caller closes the connection.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    purpose: Purpose,
) -> Result<(), HandshakeError> {
    let (server_role, client_role) = purpose.roles();
    let segment_bytes = purpose.segment_bytes();
    let (version, their_segment, theirs) = match next_message(stream, segment_bytes).await? {
        Message::Hello {
            version,
            segment_bytes,
            nonce,
        } => (version, segment_bytes, nonce),
        other => return Err(HandshakeError::Unexpected(format!("{other:?}"))),
    };
    let name = |p: u32| if p == 0 { "RPC" } else { "the data protocol" };
    let refusal = if version != VERSION {
        Some(HandshakeError::Version { theirs: version })
    } else if (their_segment == 0) != (segment_bytes == 0) {
        Some(HandshakeError::WrongPort {
            theirs: name(their_segment),
            ours: name(segment_bytes as u32),
        })
    } else if their_segment as usize != segment_bytes {
        Some(HandshakeError::SegmentSize {
            theirs: their_segment,
            ours: segment_bytes as u32,
        })
    } else {
        None
    };
    if let Some(refusal) = refusal {
        let message = Message::Error {
            receiver: None,
            message: refusal.to_string(),
        };
        let _ = wire::write_message(stream, &message).await;
        return Err(refusal);
    }
    let ours = nonce()?;
    let challenge = Message::Challenge {
        nonce: ours,
        mac: prove(secret, server_role, &theirs, &ours),
    };
    wire::write_message(stream, &challenge)
        .await
        .map_err(WireError::from)?;
    match next_message(stream, segment_bytes).await? {
        Message::Proof { mac } if verify(secret, client_role, &ours, &theirs, &mac) => Ok(()),
        Message::Proof { .. } => Err(HandshakeError::BadProof),
        other => Err(HandshakeError::Unexpected(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client_secret: &[u8], server_secret: &[u8]) -> (bool, bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let cs = ClusterSecret::new(client_secret.to_vec());
            let ss = ClusterSecret::new(server_secret.to_vec());
            let purpose = Purpose::Data {
                segment_bytes: 1024,
            };
            let (c, s) = tokio::join!(
                async {
                    let r = client(&mut a, &cs, purpose).await;
                    drop(a);
                    r
                },
                async {
                    let r = server(&mut b, &ss, purpose).await;
                    drop(b);
                    r
                }
            );
            (c.is_ok(), s.is_ok())
        })
    }

    #[test]
    fn only_peers_with_the_same_secret_get_through() {
        assert_eq!(run(b"cluster-a", b"cluster-a"), (true, true));
        let (client_ok, server_ok) = run(b"cluster-b", b"cluster-a");
        assert!(!client_ok && !server_ok);
    }
}
