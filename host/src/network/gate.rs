//! Input gates and the local channels into them. A consumer task has one gate; every producer
//! subtask that sends to it holds a [`ChannelSender`] for its own channel. Buffers and events
//! of a channel arrive in the order they were sent; the gate interleaves channels in arrival
//! order. The queue is bounded by the producers' buffer pools (events are few and small).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::buffer::Buffer;
use super::remote::Subpartition;

/// Events that travel in a channel between buffers, in order with the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The producer's event-time watermark advanced.
    Watermark(i64),
    /// The producer went idle (`true`: its watermark stops counting until it is active again)
    /// or became active (`false`).
    WatermarkStatus { idle: bool },
    /// Checkpoint barrier `id`: everything before it belongs to checkpoint `id`, everything
    /// after to the next. `location` is where the checkpoint's state is written.
    Barrier {
        id: u64,
        location: std::sync::Arc<std::path::Path>,
    },
    /// The producer's input ended and its operators have closed: no records follow, only
    /// barriers until `EndOfPartition` (a job with checkpoints takes its final checkpoint
    /// between the two).
    EndOfData,
    /// The producer finished; nothing follows on this channel.
    EndOfPartition,
}

/// What a channel carries.
#[derive(Debug)]
pub enum ChannelItem {
    Buffer(Arc<Buffer>),
    Event(ChannelEvent),
    /// A remote channel broke (lost connection, refused request, protocol error); the message
    /// names the peer, the partition and the channel. Nothing follows.
    Failed(String),
}

struct GateQueue {
    items: VecDeque<(usize, ChannelItem)>,
    /// The consumer sleeps on the condvar: only then does a send wake it (a wake is a
    /// system call, and a costly one between the cores of a virtual machine).
    consumer_waiting: bool,
    /// The gate is gone: what is sent is dropped at once, returning its buffer (a remote
    /// channel's buffers hold the channel, whose sender holds this queue: queued, they would
    /// keep each other alive).
    closed: bool,
}

struct GateShared {
    queue: Mutex<GateQueue>,
    ready: Condvar,
}

fn lock(shared: &GateShared) -> MutexGuard<'_, GateQueue> {
    shared.queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// The receiving side of a consumer task.
pub struct InputGate {
    shared: Arc<GateShared>,
    channels: usize,
}

/// The sending side of one channel: straight into a gate in this process, or into the
/// subpartition queue a remote consumer's connection drains against credit.
#[derive(Clone)]
pub struct ChannelSender(Target);

#[derive(Clone)]
enum Target {
    Local {
        shared: Arc<GateShared>,
        channel: usize,
    },
    Remote(Arc<Subpartition>),
}

impl InputGate {
    /// A gate with `channels` channels.
    pub fn new(channels: usize) -> Self {
        InputGate {
            shared: Arc::new(GateShared {
                queue: Mutex::new(GateQueue {
                    items: VecDeque::new(),
                    consumer_waiting: false,
                    closed: false,
                }),
                ready: Condvar::new(),
            }),
            channels,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The sender of channel `channel`.
    pub fn sender(&self, channel: usize) -> ChannelSender {
        assert!(
            channel < self.channels,
            "channel {channel} of a gate with {}",
            self.channels
        );
        ChannelSender(Target::Local {
            shared: self.shared.clone(),
            channel,
        })
    }

    /// What makes senders of this gate's channels, for producers deployed after the consumer
    /// took its gate.
    pub fn senders(&self) -> GateSenders {
        GateSenders {
            shared: self.shared.clone(),
            channels: self.channels,
        }
    }

    /// The next item of any channel, waiting at most `timeout`.
    pub fn poll(&self, timeout: Duration) -> Option<(usize, ChannelItem)> {
        let mut queue = lock(&self.shared);
        if let Some(item) = queue.items.pop_front() {
            return Some(item);
        }
        queue.consumer_waiting = true;
        queue = self
            .shared
            .ready
            .wait_timeout(queue, timeout)
            .map(|(q, _)| q)
            .unwrap_or_else(|p| p.into_inner().0);
        queue.consumer_waiting = false;
        queue.items.pop_front()
    }

    /// Items queued and not yet taken.
    pub fn queued(&self) -> usize {
        lock(&self.shared).items.len()
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared);
        queue.closed = true;
        let items = std::mem::take(&mut queue.items);
        drop(queue);
        drop(items);
    }
}

/// Makes the senders of one gate's channels.
#[derive(Clone)]
pub struct GateSenders {
    shared: Arc<GateShared>,
    channels: usize,
}

impl GateSenders {
    /// The sender of channel `channel`, or `None` past the gate's channels.
    pub fn sender(&self, channel: usize) -> Option<ChannelSender> {
        (channel < self.channels).then(|| {
            ChannelSender(Target::Local {
                shared: self.shared.clone(),
                channel,
            })
        })
    }
}

impl ChannelSender {
    /// The sender into a subpartition served to a remote consumer.
    pub(crate) fn remote(subpartition: Arc<Subpartition>) -> Self {
        ChannelSender(Target::Remote(subpartition))
    }

    pub fn send(&self, item: ChannelItem) {
        match &self.0 {
            Target::Local { shared, channel } => {
                let mut queue = lock(shared);
                if queue.closed {
                    drop(queue);
                    drop(item);
                    return;
                }
                queue.items.push_back((*channel, item));
                let wake = queue.consumer_waiting;
                drop(queue);
                if wake {
                    shared.ready.notify_one();
                }
            }
            Target::Remote(subpartition) => subpartition.push(item),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_of_a_channel_keep_their_order() {
        let gate = InputGate::new(2);
        let (a, b) = (gate.sender(0), gate.sender(1));
        a.send(ChannelItem::Event(ChannelEvent::Watermark(1)));
        b.send(ChannelItem::Event(ChannelEvent::Watermark(7)));
        a.send(ChannelItem::Event(ChannelEvent::EndOfPartition));
        let got: Vec<_> = std::iter::from_fn(|| gate.poll(Duration::ZERO))
            .map(|(c, item)| match item {
                ChannelItem::Event(e) => (c, e),
                _ => unreachable!("only events sent"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, ChannelEvent::Watermark(1)),
                (1, ChannelEvent::Watermark(7)),
                (0, ChannelEvent::EndOfPartition)
            ]
        );
    }
}
