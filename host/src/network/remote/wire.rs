//! The data connection's wire format. A frame is a little-endian `u32` length (of what
//! follows), a kind byte, and the kind's fields; a buffer frame carries the buffer's bytes
//! after its fields, read straight into a network segment. A frame longer than a buffer and
//! its header is refused from its length alone, before anything is allocated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::PartitionId;
use crate::network::{ChannelEvent, NetworkBufferPool};

/// The first bytes of every connection.
pub(crate) const MAGIC: [u8; 4] = *b"WEIR";
/// The protocol version; both sides must speak the same one.
/// 2: RPC calls name the slot allocation they act in.
/// 3: a job's registration names its id and tenant (its log's directory); watermark status
/// events.
pub(crate) const VERSION: u16 = 3;
/// Room for a frame's length, kind and fields besides a buffer's bytes.
pub(crate) const FRAME_OVERHEAD: usize = 64;
/// Most bytes of a frame that is not a buffer (an error's text is cut to 1 KiB; a barrier's
/// location is a path, at most 4 KiB on Linux), whatever the buffer size.
const CONTROL_BYTES: usize = 8 << 10;
/// Size of a handshake nonce and MAC.
pub(crate) const NONCE_BYTES: usize = 32;

const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const PROOF: u8 = 3;
const PARTITION_REQUEST: u8 = 10;
const ADD_CREDIT: u8 = 11;
const CANCEL_REQUEST: u8 = 12;
const CLOSE: u8 = 13;
const BUFFER: u8 = 20;
const EVENT: u8 = 21;
const PARTITION_NOT_FOUND: u8 = 22;
const ERROR: u8 = 23;
const PING: u8 = 30;

/// Every frame but a buffer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// Client, first: who it is and the buffer size it uses.
    Hello {
        version: u16,
        segment_bytes: u32,
        nonce: [u8; NONCE_BYTES],
    },
    /// Server: its nonce, and its proof of the secret over both nonces.
    Challenge {
        nonce: [u8; NONCE_BYTES],
        mac: [u8; NONCE_BYTES],
    },
    /// Client: its proof of the secret over both nonces.
    Proof {
        mac: [u8; NONCE_BYTES],
    },
    /// Client: send subpartition `subpartition` of `partition` to `receiver`, which grants
    /// `credit` buffers.
    PartitionRequest {
        receiver: u64,
        partition: PartitionId,
        subpartition: u32,
        credit: u32,
    },
    AddCredit {
        receiver: u64,
        credit: u32,
    },
    /// Client: the receiver is gone; release what it requested.
    CancelRequest {
        receiver: u64,
    },
    Close,
    /// Server: an event of the receiver's channel, and the buffers queued behind it.
    Event {
        receiver: u64,
        backlog: u32,
        event: ChannelEvent,
    },
    /// Server: the partition is not (yet) produced here; ask again later.
    PartitionNotFound {
        receiver: u64,
    },
    /// Either side: what went wrong, for one receiver or (`None`) the whole connection.
    Error {
        receiver: Option<u64>,
        message: String,
    },
    /// Either side, when it has sent nothing for a while: it is still there.
    Ping,
}

/// A frame read from the wire.
#[derive(Debug)]
pub(crate) enum Frame {
    Message(Message),
    /// A buffer for `receiver`, its bytes in a segment of the reader's pool.
    Buffer {
        receiver: u64,
        backlog: u32,
        data: Segment,
    },
    /// A buffer for `receiver` that found no free segment: its bytes were read and dropped.
    NoSegment {
        receiver: u64,
    },
}

/// A network segment on loan from the pool: back to it when dropped, unless taken (so a frame
/// abandoned half-read, by an error or a cancelled read, loses no memory).
#[derive(Debug)]
pub(crate) struct Segment {
    data: Option<Vec<u8>>,
    pool: Arc<NetworkBufferPool>,
}

impl Segment {
    pub(crate) fn len(&self) -> usize {
        self.data.as_ref().map_or(0, Vec::len)
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }

    /// The bytes, no longer returned on drop: whoever takes them returns them.
    pub(crate) fn take(mut self) -> Vec<u8> {
        self.data.take().unwrap_or_default()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.pool.give_back(data);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a frame declares {len} bytes, more than the {max} a buffer and its header take")]
    Oversized { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// Most bytes a frame may declare for buffers of `segment_bytes`.
fn max_frame(segment_bytes: usize) -> usize {
    segment_bytes.max(CONTROL_BYTES) + FRAME_OVERHEAD
}

/// Reads one frame; `None` at a clean end of stream. A buffer frame (allowed only with a
/// `pool`) holds at most one segment's bytes, read into a segment of `pool`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    segment_bytes: usize,
    pool: Option<&Arc<NetworkBufferPool>>,
) -> Result<Option<Frame>, WireError> {
    let max = max_frame(segment_bytes);
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(WireError::Oversized { len, max });
    }
    if len == 0 {
        return Err(malformed("an empty frame"));
    }
    let kind = reader.read_u8().await?;
    if kind == BUFFER {
        let Some(pool) = pool else {
            return Err(malformed("a buffer where none is expected"));
        };
        if len < 13 {
            return Err(malformed("a buffer frame shorter than its header"));
        }
        let bytes = len - 13;
        if bytes > segment_bytes {
            return Err(malformed(format!(
                "a buffer of {bytes} bytes, more than the {segment_bytes} of a network buffer"
            )));
        }
        let receiver = reader.read_u64_le().await?;
        let backlog = reader.read_u32_le().await?;
        let Some(data) = pool.take_segment() else {
            // Read past it: the connection stays usable for the other channels.
            let mut rest = (&mut *reader).take(bytes as u64);
            let skipped = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
            if skipped < bytes as u64 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            return Ok(Some(Frame::NoSegment { receiver }));
        };
        let mut data = Segment {
            data: Some(data),
            pool: pool.clone(),
        };
        let buf = data.data.as_mut().expect("just filled");
        let got = (&mut *reader).take(bytes as u64).read_to_end(buf).await?;
        if got < bytes {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        return Ok(Some(Frame::Buffer {
            receiver,
            backlog,
            data,
        }));
    }
    let mut body = vec![0u8; len - 1];
    reader.read_exact(&mut body).await?;
    decode(kind, &body).map(|m| Some(Frame::Message(m)))
}

/// Reads one frame as [`read_frame`] does, failing if none starts within `timeout` (a peer
/// that sends nothing, not even a heartbeat, has stopped answering).
pub(crate) async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: std::time::Duration,
    segment_bytes: usize,
    pool: Option<&Arc<NetworkBufferPool>>,
) -> Result<Option<Frame>, String> {
    tokio::time::timeout(timeout, read_frame(reader, segment_bytes, pool))
        .await
        .map_err(|_| format!("the peer sent nothing for {timeout:?} (it stopped answering)"))?
        .map_err(|e| e.to_string())
}

/// Writes a message frame.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(64);
    frame.extend_from_slice(&[0; 4]);
    encode(message, &mut frame);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    writer.write_all(&frame).await
}

/// Writes a buffer frame: header, then the buffer's bytes as they are.
pub(crate) async fn write_buffer<W: AsyncWrite + Unpin>(
    writer: &mut W,
    receiver: u64,
    backlog: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = [0u8; 17];
    header[..4].copy_from_slice(&((13 + data.len()) as u32).to_le_bytes());
    header[4] = BUFFER;
    header[5..13].copy_from_slice(&receiver.to_le_bytes());
    header[13..17].copy_from_slice(&backlog.to_le_bytes());
    writer.write_all(&header).await?;
    writer.write_all(data).await
}

fn encode(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Hello {
            version,
            segment_bytes,
            nonce,
        } => {
            out.push(HELLO);
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&segment_bytes.to_le_bytes());
            out.extend_from_slice(nonce);
        }
        Message::Challenge { nonce, mac } => {
            out.push(CHALLENGE);
            out.extend_from_slice(nonce);
            out.extend_from_slice(mac);
        }
        Message::Proof { mac } => {
            out.push(PROOF);
            out.extend_from_slice(mac);
        }
        Message::PartitionRequest {
            receiver,
            partition,
            subpartition,
            credit,
        } => {
            out.push(PARTITION_REQUEST);
            out.extend_from_slice(&receiver.to_le_bytes());
            out.extend_from_slice(&partition.job.to_le_bytes());
            out.extend_from_slice(&partition.edge.to_le_bytes());
            out.extend_from_slice(&partition.producer.to_le_bytes());
            out.extend_from_slice(&subpartition.to_le_bytes());
            out.extend_from_slice(&credit.to_le_bytes());
        }
        Message::AddCredit { receiver, credit } => {
            out.push(ADD_CREDIT);
            out.extend_from_slice(&receiver.to_le_bytes());
            out.extend_from_slice(&credit.to_le_bytes());
        }
        Message::CancelRequest { receiver } => {
            out.push(CANCEL_REQUEST);
            out.extend_from_slice(&receiver.to_le_bytes());
        }
        Message::Close => out.push(CLOSE),
        Message::Event {
            receiver,
            backlog,
            event,
        } => {
            out.push(EVENT);
            out.extend_from_slice(&receiver.to_le_bytes());
            out.extend_from_slice(&backlog.to_le_bytes());
            encode_event(event, out);
        }
        Message::PartitionNotFound { receiver } => {
            out.push(PARTITION_NOT_FOUND);
            out.extend_from_slice(&receiver.to_le_bytes());
        }
        Message::Error { receiver, message } => {
            out.push(ERROR);
            match receiver {
                Some(r) => {
                    out.push(1);
                    out.extend_from_slice(&r.to_le_bytes());
                }
                None => out.push(0),
            }
            // Longer messages are cut: a frame must stay under the smallest buffer size.
            let mut end = message.len().min(1024);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&message.as_bytes()[..end]);
        }
        Message::Ping => out.push(PING),
    }
}

fn encode_event(event: &ChannelEvent, out: &mut Vec<u8>) {
    match event {
        ChannelEvent::Watermark(w) => {
            out.push(0);
            out.extend_from_slice(&w.to_le_bytes());
        }
        ChannelEvent::Barrier { id, location } => {
            out.push(1);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&path_bytes(location));
        }
        ChannelEvent::EndOfData => out.push(2),
        ChannelEvent::EndOfPartition => out.push(3),
        ChannelEvent::WatermarkStatus { idle } => {
            out.push(4);
            out.push(u8::from(*idle));
        }
    }
}

/// A path as bytes: as the OS has it on Unix (a checkpoint directory need not be UTF-8 there;
/// TaskExecutors of one cluster share the platform), as UTF-8 elsewhere.
#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> Result<PathBuf, WireError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> Result<PathBuf, WireError> {
    std::str::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| malformed("a barrier whose location is not UTF-8"))
}

/// Reads fixed-size fields off a frame body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(malformed("a frame shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn array(&mut self) -> Result<[u8; NONCE_BYTES], WireError> {
        Ok(self.take(NONCE_BYTES)?.try_into().expect("nonce size"))
    }
    fn end(self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed("a frame longer than its fields"))
        }
    }
}

fn decode(kind: u8, body: &[u8]) -> Result<Message, WireError> {
    let mut f = Fields(body);
    let message = match kind {
        HELLO => {
            if f.take(4)? != MAGIC {
                return Err(malformed("not a weir data connection (bad magic)"));
            }
            Message::Hello {
                version: f.u16()?,
                segment_bytes: f.u32()?,
                nonce: f.array()?,
            }
        }
        CHALLENGE => Message::Challenge {
            nonce: f.array()?,
            mac: f.array()?,
        },
        PROOF => Message::Proof { mac: f.array()? },
        PARTITION_REQUEST => Message::PartitionRequest {
            receiver: f.u64()?,
            partition: PartitionId {
                job: f.u64()?,
                edge: f.u32()?,
                producer: f.u32()?,
            },
            subpartition: f.u32()?,
            credit: f.u32()?,
        },
        ADD_CREDIT => Message::AddCredit {
            receiver: f.u64()?,
            credit: f.u32()?,
        },
        CANCEL_REQUEST => Message::CancelRequest { receiver: f.u64()? },
        CLOSE => Message::Close,
        EVENT => {
            let receiver = f.u64()?;
            let backlog = f.u32()?;
            let event = match f.u8()? {
                0 => ChannelEvent::Watermark(f.u64()? as i64),
                1 => {
                    let id = f.u64()?;
                    let location = path_from_bytes(f.0)?;
                    f.0 = &[];
                    ChannelEvent::Barrier {
                        id,
                        location: Arc::<Path>::from(location),
                    }
                }
                2 => ChannelEvent::EndOfData,
                3 => ChannelEvent::EndOfPartition,
                4 => ChannelEvent::WatermarkStatus {
                    idle: match f.u8()? {
                        0 => false,
                        1 => true,
                        other => return Err(malformed(format!("watermark status {other}"))),
                    },
                },
                other => return Err(malformed(format!("unknown event kind {other}"))),
            };
            Message::Event {
                receiver,
                backlog,
                event,
            }
        }
        PARTITION_NOT_FOUND => Message::PartitionNotFound { receiver: f.u64()? },
        ERROR => {
            let receiver = match f.u8()? {
                0 => None,
                _ => Some(f.u64()?),
            };
            let message = String::from_utf8_lossy(f.0).into_owned();
            f.0 = &[];
            Message::Error { receiver, message }
        }
        PING => Message::Ping,
        other => return Err(malformed(format!("unknown frame kind {other}"))),
    };
    f.end()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(message: Message) -> Message {
        let mut bytes = Vec::new();
        write_message(&mut bytes, &message).await.unwrap();
        match read_frame(&mut bytes.as_slice(), 1024, None).await {
            Ok(Some(Frame::Message(m))) => m,
            other => panic!("{other:?}"),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn every_message_survives_the_wire() {
        let partition = PartitionId {
            job: 0xfeed,
            edge: 2,
            producer: 3,
        };
        let messages = [
            Message::Hello {
                version: VERSION,
                segment_bytes: 32768,
                nonce: [7; NONCE_BYTES],
            },
            Message::Challenge {
                nonce: [1; NONCE_BYTES],
                mac: [2; NONCE_BYTES],
            },
            Message::Proof {
                mac: [3; NONCE_BYTES],
            },
            Message::PartitionRequest {
                receiver: 9,
                partition,
                subpartition: 1,
                credit: 4,
            },
            Message::AddCredit {
                receiver: 9,
                credit: 2,
            },
            Message::CancelRequest { receiver: 9 },
            Message::Close,
            Message::Event {
                receiver: 9,
                backlog: 5,
                event: ChannelEvent::Barrier {
                    id: 12,
                    location: Arc::from(Path::new("/tmp/chk-12")),
                },
            },
            Message::Event {
                receiver: 9,
                backlog: 0,
                event: ChannelEvent::Watermark(-5),
            },
            Message::Event {
                receiver: 9,
                backlog: 0,
                event: ChannelEvent::WatermarkStatus { idle: true },
            },
            Message::PartitionNotFound { receiver: 9 },
            Message::Error {
                receiver: Some(9),
                message: "gone".into(),
            },
            Message::Ping,
        ];
        for m in messages {
            assert_eq!(block_on(round_trip(m.clone())), m);
        }
    }

    #[test]
    fn a_buffer_frame_lands_in_the_given_segment_and_a_long_one_is_refused_unread() {
        let mut bytes = Vec::new();
        block_on(write_buffer(&mut bytes, 4, 2, b"records")).unwrap();
        let pool = NetworkBufferPool::new(16, 1);
        let frame = block_on(read_frame(&mut bytes.as_slice(), 16, Some(&pool)));
        match frame {
            Ok(Some(Frame::Buffer {
                receiver: 4,
                backlog: 2,
                data,
            })) => {
                assert_eq!(data.bytes(), b"records");
                assert_eq!(pool.stats().in_use, 1);
            }
            other => panic!("{other:?}"),
        }
        // Dropped with the frame, the segment is back.
        assert_eq!(pool.stats().in_use, 0);
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.push(BUFFER);
        let err = block_on(read_frame(&mut huge.as_slice(), 16, Some(&pool))).unwrap_err();
        assert!(matches!(err, WireError::Oversized { .. }), "{err}");
        assert_eq!(
            pool.stats().high_water,
            1,
            "no segment is taken for a refused frame"
        );
        // A buffer longer than a segment is refused, however small the frame limit's share.
        let mut long = Vec::new();
        block_on(write_buffer(&mut long, 4, 0, &[1; 17])).unwrap();
        let err = block_on(read_frame(&mut long.as_slice(), 16, Some(&pool))).unwrap_err();
        assert!(err.to_string().contains("more than the 16"), "{err}");
        // A frame cut off in its bytes gives its segment back.
        let mut cut = Vec::new();
        block_on(write_buffer(&mut cut, 4, 0, b"records")).unwrap();
        cut.truncate(cut.len() - 3);
        assert!(block_on(read_frame(&mut cut.as_slice(), 16, Some(&pool))).is_err());
        assert_eq!(pool.stats().in_use, 0);
        // With the pool exhausted, the frame is read past and named.
        let held = pool.take_segment();
        let frame = block_on(read_frame(&mut bytes.as_slice(), 16, Some(&pool)));
        assert!(
            matches!(frame, Ok(Some(Frame::NoSegment { receiver: 4 }))),
            "{frame:?}"
        );
        drop(held);
    }
}
