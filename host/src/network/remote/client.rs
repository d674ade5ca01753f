//! The consuming side of data connections (Flink's RemoteInputChannel, CreditBasedPartition-
//! RequestClientHandler and PartitionRequestClientFactory): one connection per peer
//! TaskExecutor, shared by every remote channel that reads from it; each channel requests its
//! subpartition, receives buffers into segments it granted credit for, and puts them into its
//! gate like a local channel would. When the task drops a buffer, its credit goes back to the
//! sender.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::wire::{self, Frame, Message, Segment};
use super::{PartitionId, Shared, handshake};
use crate::metrics::{RemoteChannelGauge, TaskMetrics};
use crate::network::buffer::{Buffer, Recycler};
use crate::network::{ChannelEvent, ChannelItem, ChannelSender};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A remote channel to open: where its subpartition is produced and where its items go.
#[derive(Debug, Clone)]
pub struct RemoteChannelSpec {
    /// The producer TaskExecutor's data address.
    pub peer: String,
    pub partition: PartitionId,
    pub subpartition: u32,
    /// The channel's index in its gate.
    pub channel: usize,
    /// The consumer task, for errors.
    pub task: String,
}

/// The buffers of one gate's remote channels (Flink's exclusive and floating buffers): each
/// channel owns `exclusive`, and the gate lends `floating` more to channels with a backlog.
/// Memory a gate's remote channels can hold is at most `capacity` buffers.
#[derive(Debug)]
pub struct RemoteGateBuffers {
    exclusive: usize,
    floating: Mutex<usize>,
    capacity: usize,
    in_flight: AtomicUsize,
    high_water: AtomicUsize,
}

impl RemoteGateBuffers {
    pub fn new(channels: usize, exclusive: usize, floating: usize) -> Arc<Self> {
        Arc::new(RemoteGateBuffers {
            exclusive: exclusive.max(1),
            floating: Mutex::new(floating),
            capacity: channels * exclusive.max(1) + floating,
            in_flight: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
        })
    }

    /// Buffers the gate's channels may hold at once: exclusive ones and every floating one.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most buffers that were ever in flight at once (credit granted and not yet used, plus
    /// buffers received and not yet processed).
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    fn take_floating(&self, wanted: usize) -> usize {
        let mut free = lock(&self.floating);
        let n = wanted.min(*free);
        *free -= n;
        n
    }

    fn return_floating(&self, n: usize) {
        *lock(&self.floating) += n;
    }

    fn change_in_flight(&self, before: usize, after: usize) {
        if after > before {
            let now = self.in_flight.fetch_add(after - before, Ordering::Relaxed) + after - before;
            self.high_water.fetch_max(now, Ordering::Relaxed);
        } else {
            self.in_flight.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}

/// A channel's buffers: `held` = `in_use` + `given` + `unannounced`.
struct Credit {
    held: usize,
    /// Received and not yet dropped by the task.
    in_use: usize,
    /// Announced to the sender and not yet used.
    given: usize,
    /// Free and not yet announced.
    unannounced: usize,
    /// The sender's backlog with its last buffer.
    backlog: usize,
    first_request: Instant,
    backoff: Duration,
}

/// What the connection's writer sends for a channel.
enum Outbound {
    Request(u64),
    Credit(u64),
    Cancel(u64),
}

pub(crate) struct RemoteInputChannel {
    receiver: u64,
    spec: RemoteChannelSpec,
    job: u64,
    sender: ChannelSender,
    gate: Arc<RemoteGateBuffers>,
    credit: Mutex<Credit>,
    shared: Arc<Shared>,
    metrics: Arc<TaskMetrics>,
    gauge: Arc<RemoteChannelGauge>,
    outbox: UnboundedSender<Outbound>,
    closed: AtomicBool,
}

impl RemoteInputChannel {
    fn describe(&self) -> String {
        format!(
            "remote input channel {} of task {} ({} subpartition {} from {})",
            self.spec.channel,
            self.spec.task,
            self.spec.partition,
            self.spec.subpartition,
            self.spec.peer
        )
    }

    /// Updates the gauges after a change that began with `before` buffers in flight.
    fn account(&self, before: usize, credit: &Credit) {
        let after = credit.given + credit.in_use;
        self.gate.change_in_flight(before, after);
        self.gauge.set_in_flight(after as u64);
    }

    /// Moves unannounced credit to given; the number to announce.
    fn take_unannounced(&self) -> u32 {
        let mut c = lock(&self.credit);
        if self.closed.load(Ordering::Relaxed) {
            return 0;
        }
        let before = c.given + c.in_use;
        let n = c.unannounced;
        c.given += n;
        c.unannounced = 0;
        self.account(before, &c);
        n as u32
    }

    fn on_buffer(self: &Arc<Self>, data: Segment, backlog: u32) -> Result<(), String> {
        let mut c = lock(&self.credit);
        if self.closed.load(Ordering::Relaxed) {
            // Sent against credit given before the channel closed; the segment goes back.
            return Ok(());
        }
        if c.given == 0 {
            return Err(format!(
                "{}: the peer sent a buffer without credit",
                self.describe()
            ));
        }
        let before = c.given + c.in_use;
        c.given -= 1;
        c.in_use += 1;
        c.backlog = backlog as usize;
        // Floating buffers for the backlog the credit already granted does not cover.
        let uncovered = c.backlog.saturating_sub(c.given + c.unannounced);
        let extra = if uncovered > 0 {
            self.gate.take_floating(uncovered)
        } else {
            0
        };
        c.held += extra;
        c.unannounced += extra;
        self.account(before, &c);
        drop(c);
        self.metrics.add_bytes_in(data.len() as u64);
        let owner: Arc<dyn Recycler> = self.clone();
        self.sender.send(ChannelItem::Buffer(Arc::new(Buffer::lent(
            data.take(),
            owner,
            0,
        ))));
        if extra > 0 {
            let _ = self.outbox.send(Outbound::Credit(self.receiver));
        }
        Ok(())
    }

    /// The producer is not there (yet): take the credit back and ask again after a backoff,
    /// or fail once the request timeout has passed.
    fn on_not_found(self: &Arc<Self>) {
        let mut c = lock(&self.credit);
        let before = c.given + c.in_use;
        c.unannounced += c.given;
        c.given = 0;
        self.account(before, &c);
        let waited = c.first_request.elapsed();
        let timeout = self.shared.config.partition_request_timeout;
        if waited >= timeout {
            drop(c);
            self.fail(format!(
                "the producer's TaskExecutor does not have the partition after {:.1} s of asking",
                waited.as_secs_f64()
            ));
            return;
        }
        let delay = c.backoff.min(timeout - waited);
        c.backoff = (c.backoff * 2).min(Duration::from_secs(1));
        drop(c);
        let channel = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !channel.closed.load(Ordering::Relaxed) {
                let _ = channel.outbox.send(Outbound::Request(channel.receiver));
            }
        });
    }

    /// Stops the channel: it announces no more credit, and what credit it had and did not use
    /// is dropped (floating buffers back to the gate). `false` if it was closed already.
    fn close(&self) -> bool {
        let mut c = lock(&self.credit);
        if self.closed.swap(true, Ordering::Relaxed) {
            return false;
        }
        let before = c.given + c.in_use;
        let unused = c.given + c.unannounced;
        self.gate
            .return_floating(c.held.saturating_sub(self.gate.exclusive).min(unused));
        c.held -= unused;
        c.given = 0;
        c.unannounced = 0;
        self.account(before, &c);
        true
    }

    /// Ends the channel with an error the consumer task fails with.
    fn fail(&self, reason: String) {
        if self.close() {
            self.sender.send(ChannelItem::Failed(format!(
                "{}: {reason}",
                self.describe()
            )));
        }
    }
}

impl Recycler for RemoteInputChannel {
    fn recycle(&self, segment: Vec<u8>, _channel: usize) {
        self.shared.pool.give_back(segment);
        let mut c = lock(&self.credit);
        let before = c.given + c.in_use;
        c.in_use -= 1;
        let mut announce = false;
        if self.closed.load(Ordering::Relaxed) {
            // Floating buffers first go back to the gate.
            if c.held > self.gate.exclusive {
                self.gate.return_floating(1);
            }
            c.held -= 1;
        } else if c.held > self.gate.exclusive && c.backlog == 0 {
            // A floating buffer the channel no longer needs goes back to the gate.
            c.held -= 1;
            self.gate.return_floating(1);
        } else {
            c.unannounced += 1;
            announce = c.unannounced == 1;
        }
        self.account(before, &c);
        drop(c);
        if announce && !self.closed.load(Ordering::Relaxed) {
            let _ = self.outbox.send(Outbound::Credit(self.receiver));
        }
    }
}

/// One connection to a peer TaskExecutor and the channels reading over it.
struct ClientConnection {
    peer: String,
    outbox: UnboundedSender<Outbound>,
    channels: Mutex<HashMap<u64, Arc<RemoteInputChannel>>>,
    /// Why the connection broke, once it has.
    broken: Mutex<Option<String>>,
    /// Closes the connection from this side.
    close: tokio::sync::Notify,
}

impl ClientConnection {
    fn channel(&self, receiver: u64) -> Option<Arc<RemoteInputChannel>> {
        lock(&self.channels).get(&receiver).cloned()
    }

    fn remove(&self, receiver: u64) {
        lock(&self.channels).remove(&receiver);
    }

    /// Fails every channel on the connection, and any that registers later.
    fn break_with(&self, reason: String) {
        *lock(&self.broken) = Some(reason.clone());
        let channels: Vec<_> = lock(&self.channels).drain().map(|(_, c)| c).collect();
        for c in channels {
            c.fail(format!(
                "the connection to {} was lost: {reason}",
                self.peer
            ));
        }
    }

    /// Closes the connection from this side, failing its channels now.
    fn close(&self, reason: &str) {
        self.break_with(reason.to_string());
        self.close.notify_one();
    }
}

/// The connections of one TaskExecutor to its peers, by peer address.
pub(crate) struct ConnectionManager {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    connections: Mutex<HashMap<String, Arc<ClientConnection>>>,
    next_receiver: AtomicU64,
}

impl ConnectionManager {
    /// Connections made on `runtime`'s network threads.
    pub(crate) fn new(shared: Arc<Shared>, runtime: tokio::runtime::Handle) -> Self {
        ConnectionManager {
            shared,
            runtime,
            connections: Mutex::new(HashMap::new()),
            next_receiver: AtomicU64::new(0),
        }
    }

    /// Opens a remote channel: its subpartition is requested now (the connection to its peer
    /// is made first if there is none) and its items go to `sender`.
    pub(crate) fn open_channel(
        self: &Arc<Self>,
        spec: RemoteChannelSpec,
        job: u64,
        sender: ChannelSender,
        gate: Arc<RemoteGateBuffers>,
        metrics: Arc<TaskMetrics>,
    ) {
        let shared = &self.shared;
        let connection = {
            let mut connections = lock(&self.connections);
            connections
                .entry(spec.peer.clone())
                .or_insert_with(|| {
                    let (tx, rx) = unbounded_channel();
                    let connection = Arc::new(ClientConnection {
                        peer: spec.peer.clone(),
                        outbox: tx,
                        channels: Mutex::new(HashMap::new()),
                        broken: Mutex::new(None),
                        close: tokio::sync::Notify::new(),
                    });
                    self.runtime.spawn(run_connection(
                        connection.clone(),
                        rx,
                        shared.clone(),
                        Arc::downgrade(self),
                    ));
                    connection
                })
                .clone()
        };
        let exclusive = gate.exclusive;
        let gauge = metrics.add_remote_channel(spec.channel, &spec.peer);
        let receiver = self.next_receiver.fetch_add(1, Ordering::Relaxed);
        let channel = Arc::new(RemoteInputChannel {
            receiver,
            spec,
            job,
            sender,
            gate,
            credit: Mutex::new(Credit {
                held: exclusive,
                in_use: 0,
                given: 0,
                unannounced: exclusive,
                backlog: 0,
                first_request: Instant::now(),
                backoff: Duration::from_millis(20),
            }),
            shared: shared.clone(),
            metrics,
            gauge,
            outbox: connection.outbox.clone(),
            closed: AtomicBool::new(false),
        });
        lock(&connection.channels).insert(receiver, channel.clone());
        if let Some(reason) = lock(&connection.broken).clone() {
            connection.remove(receiver);
            channel.fail(format!(
                "the connection to {} was lost: {reason}",
                connection.peer
            ));
            return;
        }
        let _ = connection.outbox.send(Outbound::Request(receiver));
    }

    /// Cancels the remote channels of `job`: their producers are told to release them.
    pub(crate) fn release_job(&self, job: u64) {
        let connections: Vec<_> = lock(&self.connections).values().cloned().collect();
        for connection in connections {
            let ended: Vec<_> = {
                let mut channels = lock(&connection.channels);
                let ids: Vec<u64> = channels
                    .iter()
                    .filter(|(_, c)| c.job == job)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter().filter_map(|id| channels.remove(id)).collect()
            };
            for channel in ended {
                channel.close();
                let _ = connection.outbox.send(Outbound::Cancel(channel.receiver));
            }
        }
    }

    /// Closes every connection, failing the channels on them as a lost connection does.
    pub(crate) fn close_all(&self, reason: &str) {
        let connections: Vec<_> = lock(&self.connections).drain().map(|(_, c)| c).collect();
        for connection in connections {
            connection.close(reason);
        }
    }

    fn forget(&self, connection: &Arc<ClientConnection>) {
        let mut connections = lock(&self.connections);
        if connections
            .get(&connection.peer)
            .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            connections.remove(&connection.peer);
        }
    }
}

async fn run_connection(
    connection: Arc<ClientConnection>,
    outbox: UnboundedReceiver<Outbound>,
    shared: Arc<Shared>,
    manager: std::sync::Weak<ConnectionManager>,
) {
    let result = connect_and_run(&connection, outbox, &shared).await;
    if let Some(manager) = manager.upgrade() {
        manager.forget(&connection);
    }
    let reason = match result {
        Ok(()) => "the peer closed it".to_string(),
        Err(reason) => reason,
    };
    connection.break_with(reason);
}

async fn connect_and_run(
    connection: &Arc<ClientConnection>,
    outbox: UnboundedReceiver<Outbound>,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let timeout = shared.config.peer_timeout;
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(&connection.peer))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(
        timeout,
        handshake::client(
            &mut stream,
            &shared.config.secret,
            handshake::Purpose::Data {
                segment_bytes: shared.segment_bytes,
            },
        ),
    )
    .await
    .map_err(|_| format!("no handshake within {timeout:?}"))?
    .map_err(|e| format!("handshake failed: {e}"))?;
    let (reader, writer) = stream.into_split();
    tokio::select! {
        r = read_loop(reader, connection, shared) => r,
        r = write_loop(writer, connection, outbox, shared) => r,
        _ = connection.close.notified() => Err(lock(&connection.broken)
            .clone()
            .unwrap_or_else(|| "closed by this TaskExecutor".into())),
    }
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    connection: &Arc<ClientConnection>,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let pool = shared.pool.clone();
    loop {
        let frame = wire::read_frame_within(
            &mut reader,
            shared.config.peer_timeout,
            shared.segment_bytes,
            Some(&pool),
        )
        .await?;
        match frame {
            None => return Ok(()),
            Some(Frame::Buffer {
                receiver,
                backlog,
                data,
            }) => {
                // No channel: it was cancelled while its buffer was on the way (the segment
                // goes back as `data` drops).
                if let Some(channel) = connection.channel(receiver) {
                    channel.on_buffer(data, backlog)?;
                }
            }
            Some(Frame::NoSegment { receiver }) => {
                if let Some(channel) = connection.channel(receiver) {
                    connection.remove(receiver);
                    channel.fail(
                        "no network buffer was free for a buffer it had granted credit for \
                         (this TaskExecutor's pool is exhausted)"
                            .into(),
                    );
                }
            }
            Some(Frame::Message(Message::Event {
                receiver, event, ..
            })) => {
                if let Some(channel) = connection.channel(receiver) {
                    let last = event == ChannelEvent::EndOfPartition;
                    channel.sender.send(ChannelItem::Event(event));
                    if last {
                        channel.close();
                        connection.remove(receiver);
                    }
                }
            }
            Some(Frame::Message(Message::PartitionNotFound { receiver })) => {
                if let Some(channel) = connection.channel(receiver) {
                    channel.on_not_found();
                    if channel.closed.load(Ordering::Relaxed) {
                        connection.remove(receiver);
                    }
                }
            }
            Some(Frame::Message(Message::Error {
                receiver: Some(receiver),
                message,
            })) => {
                if let Some(channel) = connection.channel(receiver) {
                    connection.remove(receiver);
                    channel.fail(format!("the producer's TaskExecutor reports: {message}"));
                }
            }
            Some(Frame::Message(Message::Error {
                receiver: None,
                message,
            })) => return Err(format!("the peer reports: {message}")),
            Some(Frame::Message(Message::Ping)) => {}
            Some(Frame::Message(other)) => {
                return Err(format!("unexpected message from the server: {other:?}"));
            }
        }
    }
}

async fn write_loop(
    writer: OwnedWriteHalf,
    connection: &Arc<ClientConnection>,
    mut outbox: UnboundedReceiver<Outbound>,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let mut out = BufWriter::with_capacity(8 << 10, writer);
    let heartbeat = shared.config.heartbeat_interval();
    let failed = |e: std::io::Error| format!("cannot send: {e}");
    loop {
        let first = match tokio::time::timeout(heartbeat, outbox.recv()).await {
            Ok(Some(item)) => item,
            // The manager is gone: the TaskExecutor is shutting down.
            Ok(None) => return Ok(()),
            Err(_) => {
                wire::write_message(&mut out, &Message::Ping)
                    .await
                    .map_err(failed)?;
                out.flush().await.map_err(failed)?;
                continue;
            }
        };
        let mut next = Some(first);
        while let Some(item) = next {
            let message = match item {
                Outbound::Request(receiver) => {
                    connection
                        .channel(receiver)
                        .map(|c| Message::PartitionRequest {
                            receiver,
                            partition: c.spec.partition,
                            subpartition: c.spec.subpartition,
                            credit: c.take_unannounced(),
                        })
                }
                Outbound::Credit(receiver) => connection
                    .channel(receiver)
                    .map(|c| c.take_unannounced())
                    .filter(|&n| n > 0)
                    .map(|credit| Message::AddCredit { receiver, credit }),
                Outbound::Cancel(receiver) => Some(Message::CancelRequest { receiver }),
            };
            if let Some(message) = message {
                wire::write_message(&mut out, &message)
                    .await
                    .map_err(failed)?;
            }
            next = outbox.try_recv().ok();
        }
        out.flush().await.map_err(failed)?;
    }
}
