//! Network buffers: fixed-size segments from one bounded pool per TaskExecutor
//! ([`NetworkBufferPool`]), handed out through a pool per result partition
//! ([`LocalBufferPool`]) that caps how many a partition, and each of its channels, may hold.
//!
//! A [`Buffer`] returns its segment when the last reference to it drops (a broadcast buffer is
//! shared by every channel). A writer that asks for a buffer when its partition is at its cap,
//! or the network pool is empty, waits: that wait is backpressure, and it is bounded memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{CancelFlag, Cancelled};

/// How long a writer waiting for a buffer sleeps before it looks again: segments returned to
/// the network pool by other partitions do not notify it, and the cancel flag is checked too.
const BUFFER_POLL: Duration = Duration::from_millis(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Pool counters stay consistent under every panic point, so a poisoned lock is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The TaskExecutor's bounded supply of network memory.
#[derive(Debug)]
pub struct NetworkBufferPool {
    segment_size: usize,
    total: usize,
    free: Mutex<Vec<Vec<u8>>>,
    allocated: AtomicUsize,
    in_use: AtomicUsize,
    high_water: AtomicUsize,
}

/// A snapshot of pool usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BufferPoolStats {
    pub segment_size: usize,
    pub total: usize,
    pub in_use: usize,
    pub high_water: usize,
}

impl NetworkBufferPool {
    /// A pool of `total` segments of `segment_size` bytes, allocated as they are first needed.
    pub fn new(segment_size: usize, total: usize) -> Arc<Self> {
        Arc::new(NetworkBufferPool {
            segment_size,
            total,
            free: Mutex::new(Vec::new()),
            allocated: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
        })
    }

    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    pub fn stats(&self) -> BufferPoolStats {
        BufferPoolStats {
            segment_size: self.segment_size,
            total: self.total,
            in_use: self.in_use.load(Ordering::Relaxed),
            high_water: self.high_water.load(Ordering::Relaxed),
        }
    }

    fn try_take(&self) -> Option<Vec<u8>> {
        let segment = match lock(&self.free).pop() {
            Some(s) => s,
            None => {
                // Claim an allocation slot without overshooting the total.
                let claimed = self
                    .allocated
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < self.total).then_some(n + 1)
                    })
                    .is_ok();
                if !claimed {
                    return None;
                }
                Vec::with_capacity(self.segment_size)
            }
        };
        let in_use = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        self.high_water.fetch_max(in_use, Ordering::Relaxed);
        Some(segment)
    }

    /// A free segment outside any partition's cap, for a remote input channel receiving a
    /// buffer it granted credit for; `None` when the pool is exhausted (the job's reservation
    /// should make that impossible).
    pub(crate) fn take_segment(&self) -> Option<Vec<u8>> {
        self.try_take()
    }

    pub(crate) fn give_back(&self, mut segment: Vec<u8>) {
        segment.clear();
        lock(&self.free).push(segment);
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

struct LocalState {
    outstanding: usize,
    per_channel: Vec<usize>,
    /// Writers asleep in `request`, the channel the last of them waits for, and whether that
    /// channel's cap (not the partition's or the network's) is what it waits on.
    waiting: usize,
    wanted: usize,
    channel_bound: bool,
}

/// The buffers of one result partition: at most `max_buffers` in flight in all, and at most
/// `max_per_channel` queued on any one channel, so one slow consumer cannot take them all.
pub struct LocalBufferPool {
    network: Arc<NetworkBufferPool>,
    max_buffers: usize,
    max_per_channel: usize,
    state: Mutex<LocalState>,
    returned: Condvar,
}

impl std::fmt::Debug for LocalBufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBufferPool")
            .field("max_buffers", &self.max_buffers)
            .field("max_per_channel", &self.max_per_channel)
            .finish()
    }
}

/// Channel index a broadcast buffer is charged to: it is shared by all channels.
const SHARED: usize = usize::MAX;

impl LocalBufferPool {
    pub fn new(
        network: Arc<NetworkBufferPool>,
        channels: usize,
        max_buffers: usize,
        max_per_channel: usize,
    ) -> Arc<Self> {
        Arc::new(LocalBufferPool {
            network,
            max_buffers: max_buffers.max(1),
            max_per_channel: max_per_channel.max(1),
            state: Mutex::new(LocalState {
                outstanding: 0,
                per_channel: vec![0; channels],
                waiting: 0,
                wanted: SHARED,
                channel_bound: false,
            }),
            returned: Condvar::new(),
        })
    }

    pub fn segment_size(&self) -> usize {
        self.network.segment_size()
    }

    /// A buffer for `channel` (`None`: shared by all channels), waiting while the partition or
    /// the channel is at its cap or the network pool is empty. Returns the time spent waiting,
    /// which is back-pressured time.
    pub fn request(
        self: &Arc<Self>,
        channel: Option<usize>,
        cancel: &CancelFlag,
    ) -> Result<(Buffer, Duration), Cancelled> {
        let started = Instant::now();
        let channel = channel.unwrap_or(SHARED);
        let mut state = lock(&self.state);
        loop {
            let channel_full =
                channel != SHARED && state.per_channel[channel] >= self.max_per_channel;
            if !channel_full
                && state.outstanding < self.max_buffers
                && let Some(segment) = self.network.try_take()
            {
                state.outstanding += 1;
                if channel != SHARED {
                    state.per_channel[channel] += 1;
                }
                let waited = started.elapsed();
                return Ok((
                    Buffer {
                        data: segment,
                        owner: Some((self.clone() as Arc<dyn Recycler>, channel)),
                    },
                    waited,
                ));
            }
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            // Local returns notify the condvar; the network pool does not, hence the timeout.
            state.waiting += 1;
            state.wanted = channel;
            state.channel_bound = channel_full;
            state = self
                .returned
                .wait_timeout(state, BUFFER_POLL)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
            state.waiting -= 1;
        }
    }
}

/// Where a buffer's segment goes when the buffer is dropped: the pool (or remote channel) that
/// lent it, told which of its channels the buffer was charged to.
pub(crate) trait Recycler: Send + Sync {
    fn recycle(&self, segment: Vec<u8>, channel: usize);
}

impl Recycler for LocalBufferPool {
    fn recycle(&self, segment: Vec<u8>, channel: usize) {
        self.network.give_back(segment);
        let mut state = lock(&self.state);
        state.outstanding -= 1;
        if channel != SHARED {
            state.per_channel[channel] -= 1;
        }
        // A writer waiting for its channel wakes once three quarters of the channel's buffers
        // are back, not at every one: each wake is a system call and a switch between threads
        // (costly between the cores of a VM), and a writer that refills one buffer per wake
        // spends its time waking up, and its consumer's time waking it (P2 at parallelism 1:
        // with half, the consumer spent a sixth of its time in futex wakes).
        let wake = state.waiting > 0
            && state.outstanding < self.max_buffers
            && (!state.channel_bound
                || state.per_channel[state.wanted] + (self.max_per_channel * 3).div_ceil(4)
                    <= self.max_per_channel);
        drop(state);
        if wake {
            self.returned.notify_all();
        }
    }
}

/// A network buffer: a segment filled with framed records (possibly starting or ending inside
/// one: records may span buffers).
pub struct Buffer {
    data: Vec<u8>,
    owner: Option<(Arc<dyn Recycler>, usize)>,
}

impl Buffer {
    /// A buffer outside any pool, for tests.
    pub fn unpooled(data: Vec<u8>) -> Self {
        Buffer { data, owner: None }
    }

    /// A buffer holding `data`, whose segment goes back to `owner` (for `channel`) when dropped.
    pub(crate) fn lent(data: Vec<u8>, owner: Arc<dyn Recycler>, channel: usize) -> Self {
        Buffer {
            data,
            owner: Some((owner, channel)),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub(crate) fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.data.len())
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some((pool, channel)) = self.owner.take() {
            pool.recycle(std::mem::take(&mut self.data), channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_blocks_until_its_buffer_returns() {
        let network = NetworkBufferPool::new(64, 4);
        let local = LocalBufferPool::new(network.clone(), 2, 3, 1);
        let cancel = CancelFlag::default();
        let (first, _) = local.request(Some(0), &cancel).unwrap();
        // Channel 0 is at its cap of 1; channel 1 is not.
        let (_second, _) = local.request(Some(1), &cancel).unwrap();
        let waiter = {
            let local = local.clone();
            let cancel = cancel.clone();
            std::thread::spawn(move || local.request(Some(0), &cancel).map(|(_, waited)| waited))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        let waited = waiter.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(network.stats().high_water <= 3);
    }

    #[test]
    fn a_writer_blocked_on_its_channel_proceeds_once_buffers_come_back() {
        let network = NetworkBufferPool::new(64, 16);
        let local = LocalBufferPool::new(network, 2, 9, 4);
        let cancel = CancelFlag::default();
        let mut held: Vec<Buffer> = (0..4)
            .map(|_| local.request(Some(0), &cancel).unwrap().0)
            .collect();
        let other = local.request(Some(1), &cancel).unwrap().0;
        let waiter = {
            let local = local.clone();
            let cancel = cancel.clone();
            std::thread::spawn(move || local.request(Some(0), &cancel).map(|(b, _)| b))
        };
        std::thread::sleep(Duration::from_millis(20));
        // A return on another channel does not help channel 0; three of its own do.
        drop(other);
        held.truncate(1);
        let buffer = waiter.join().unwrap().unwrap();
        drop(buffer);
        drop(held);
        assert_eq!(local.request(Some(0), &cancel).map(|_| ()), Ok(()));
    }

    #[test]
    fn the_network_pool_bounds_every_partition_together() {
        let network = NetworkBufferPool::new(64, 2);
        let a = LocalBufferPool::new(network.clone(), 1, 10, 10);
        let b = LocalBufferPool::new(network.clone(), 1, 10, 10);
        let cancel = CancelFlag::default();
        let held = [
            a.request(None, &cancel).unwrap(),
            b.request(None, &cancel).unwrap(),
        ];
        let cancel_later = cancel.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            cancel_later.cancel();
        });
        assert_eq!(a.request(None, &cancel).err(), Some(Cancelled));
        canceller.join().unwrap();
        assert_eq!(network.stats().in_use, 2);
        drop(held);
        assert_eq!(network.stats().in_use, 0);
    }
}
