//! The serving side of data connections (Flink's PartitionRequestServerHandler and
//! PartitionRequestQueue): accepts connections from other TaskExecutors of the cluster,
//! authenticates them, and sends each requested subpartition's buffers against the credit its
//! receiver announces, events in order between them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::partition::{Next, Subpartition};
use super::wire::{self, Frame, Message};
use super::{Shared, handshake};
use crate::network::{ChannelEvent, ChannelItem};

/// One requested subpartition on a connection, and the credit its receiver has granted.
struct Reader {
    receiver: u64,
    sub: Arc<Subpartition>,
    credit: u32,
    starved_since: Option<Instant>,
}

/// What the read side hands the write side of one connection.
#[derive(Default)]
struct ConnectionState {
    readers: Vec<Reader>,
    /// Replies to send before any data (partition not found, errors).
    control: Vec<Message>,
    /// Where the next round of sending starts, so no reader starves another.
    next: usize,
    closed: bool,
}

struct Connection {
    peer: SocketAddr,
    state: Mutex<ConnectionState>,
    work: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one round of the write loop sends.
enum Outgoing {
    Message(Message),
    Buffer {
        receiver: u64,
        backlog: u32,
        buffer: Arc<crate::network::Buffer>,
    },
}

/// Most items taken from one reader per round.
const ROUND: usize = 8;

/// Accepts connections until the runtime shuts down.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, shared.clone()));
            }
            Err(e) => {
                eprintln!("warning: the data port cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(
        shared.config.peer_timeout,
        handshake::server(
            &mut stream,
            &shared.config.secret,
            handshake::Purpose::Data {
                segment_bytes: shared.segment_bytes,
            },
        ),
    )
    .await;
    match handshake {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("warning: refused a data connection from {peer}: {e}");
            return;
        }
        Err(_) => {
            eprintln!("warning: refused a data connection from {peer}: no handshake in time");
            return;
        }
    }
    let (reader, writer) = stream.into_split();
    let connection = Arc::new(Connection {
        peer,
        state: Mutex::new(ConnectionState::default()),
        work: Arc::new(Notify::new()),
    });
    let writing = tokio::spawn(write_loop(writer, connection.clone(), shared.clone()));
    if let Err(reason) = read_loop(reader, &connection, &shared).await {
        eprintln!("warning: data connection from {peer} closed: {reason}");
    }
    let readers = {
        let mut state = lock(&connection.state);
        state.closed = true;
        std::mem::take(&mut state.readers)
    };
    // The receivers are gone with the connection: their subpartitions will never be read.
    readers.iter().for_each(|r| r.sub.release());
    // The writer may be stuck on a peer that stopped reading; what it holds goes back to the
    // producers' pools as it is dropped.
    writing.abort();
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    connection: &Connection,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        let frame = wire::read_frame_within(
            &mut reader,
            shared.config.peer_timeout,
            shared.segment_bytes,
            None,
        )
        .await?;
        let message = match frame {
            None => return Ok(()),
            Some(Frame::Message(m)) => m,
            Some(Frame::Buffer { .. } | Frame::NoSegment { .. }) => {
                return Err("a client sent a buffer".into());
            }
        };
        match message {
            Message::PartitionRequest {
                receiver,
                partition,
                subpartition,
                credit,
            } => {
                let mut state = lock(&connection.state);
                match shared.registry.get(partition, subpartition) {
                    None => state.control.push(Message::PartitionNotFound { receiver }),
                    Some(sub) if sub.attach(connection.work.clone()) => {
                        state.readers.push(Reader {
                            receiver,
                            sub,
                            credit,
                            starved_since: None,
                        })
                    }
                    Some(_) => state.control.push(Message::Error {
                        receiver: Some(receiver),
                        message: format!(
                            "{partition} subpartition {subpartition} is already being consumed"
                        ),
                    }),
                }
            }
            Message::AddCredit { receiver, credit } => {
                let mut state = lock(&connection.state);
                if let Some(r) = state.readers.iter_mut().find(|r| r.receiver == receiver) {
                    r.credit = r.credit.saturating_add(credit);
                    if let Some(since) = r.starved_since.take() {
                        r.sub.metrics.add_credit_starved(since.elapsed());
                    }
                }
            }
            Message::CancelRequest { receiver } => {
                let mut state = lock(&connection.state);
                if let Some(at) = state.readers.iter().position(|r| r.receiver == receiver) {
                    let r = state.readers.remove(at);
                    r.sub.release();
                    shared.registry.remove(r.sub.id, r.sub.index);
                }
            }
            Message::Close => return Ok(()),
            Message::Ping => {}
            other => return Err(format!("unexpected message from a client: {other:?}")),
        }
        connection.work.notify_one();
    }
}

/// Takes what can be sent now: replies first, then up to [`ROUND`] items of each reader that
/// has something (a buffer only against credit). The flag says more may be ready at once: a
/// reader used its whole round (an event needs no credit, so a backlog of buffers alone does
/// not tell), or the connection is closing.
fn take_round(connection: &Connection, shared: &Shared) -> (Vec<Outgoing>, bool) {
    let mut state = lock(&connection.state);
    let mut out: Vec<Outgoing> = state.control.drain(..).map(Outgoing::Message).collect();
    let n = state.readers.len();
    let start = if n == 0 { 0 } else { state.next % n };
    let mut finished = Vec::new();
    let mut more = false;
    for k in 0..n {
        let at = (start + k) % n;
        let r = &mut state.readers[at];
        let mut taken = 0;
        let stopped = loop {
            if taken == ROUND {
                break false;
            }
            taken += 1;
            match r.sub.next(r.credit > 0) {
                Next::Item(ChannelItem::Buffer(buffer), backlog) => {
                    r.credit -= 1;
                    r.sub.metrics.add_bytes_out(buffer.len() as u64);
                    out.push(Outgoing::Buffer {
                        receiver: r.receiver,
                        backlog,
                        buffer,
                    });
                }
                Next::Item(ChannelItem::Event(event), backlog) => {
                    let last = event == ChannelEvent::EndOfPartition;
                    out.push(Outgoing::Message(Message::Event {
                        receiver: r.receiver,
                        backlog,
                        event,
                    }));
                    if last {
                        finished.push(at);
                        break true;
                    }
                }
                Next::Item(ChannelItem::Failed(message), _) => {
                    out.push(Outgoing::Message(Message::Error {
                        receiver: Some(r.receiver),
                        message,
                    }));
                    finished.push(at);
                    break true;
                }
                Next::NeedsCredit => {
                    r.starved_since.get_or_insert_with(Instant::now);
                    break true;
                }
                Next::Empty => break true,
                Next::Released => {
                    out.push(Outgoing::Message(Message::Error {
                        receiver: Some(r.receiver),
                        message: format!(
                            "{} subpartition {} was released by its producer's TaskExecutor \
                             (its job was cancelled there)",
                            r.sub.id, r.sub.index
                        ),
                    }));
                    finished.push(at);
                    break true;
                }
            }
        };
        more |= !stopped;
    }
    finished.sort_unstable();
    for at in finished.into_iter().rev() {
        let r = state.readers.remove(at);
        shared.registry.remove(r.sub.id, r.sub.index);
    }
    state.next = start + 1;
    let closed = state.closed;
    drop(state);
    (out, more || closed)
}

async fn write_loop(writer: OwnedWriteHalf, connection: Arc<Connection>, shared: Arc<Shared>) {
    let mut out = BufWriter::with_capacity(64 << 10, writer);
    let heartbeat = shared.config.heartbeat_interval();
    loop {
        let (round, again) = take_round(&connection, &shared);
        if round.is_empty() {
            if lock(&connection.state).closed {
                return;
            }
            if out.flush().await.is_err() {
                return;
            }
            if again {
                continue;
            }
            let ping = tokio::time::timeout(heartbeat, connection.work.notified())
                .await
                .is_err();
            if ping && wire::write_message(&mut out, &Message::Ping).await.is_err() {
                return;
            }
            continue;
        }
        for item in round {
            let written = match item {
                Outgoing::Message(m) => wire::write_message(&mut out, &m).await,
                // The buffer goes back to the producer's pool once written.
                Outgoing::Buffer {
                    receiver,
                    backlog,
                    buffer,
                } => wire::write_buffer(&mut out, receiver, backlog, buffer.bytes()).await,
            };
            if let Err(e) = written {
                eprintln!(
                    "warning: data connection to {}: cannot send: {e}",
                    connection.peer
                );
                return;
            }
        }
    }
}
