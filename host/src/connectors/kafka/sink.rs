//! The Kafka sink. At least once: librdkafka's producer, flushed at every checkpoint barrier.
//! Exactly once: a two-phase commit over checkpoints with Kafka transactions, spoken directly
//! ([`super::wire`]):
//!
//! - a subtask writes the records between barriers n-1 and n in one transaction, under a
//!   transactional id from a small pool of its own (`weir-<job>-<sink>-<subtask>-<slot>`), each
//!   transaction started by `InitProducerId`, which also aborts whatever a dead attempt left
//!   open under that id;
//! - at barrier n the records are flushed (acknowledged by all in-sync replicas) and the
//!   transaction, with its producer id and epoch, goes into the checkpoint (pre-commit); the
//!   next records go to a transaction under another slot;
//! - when checkpoint n completes, the subtask commits every transaction of checkpoints up to n
//!   (`EndTxn`); a committed transaction's slot is reused only once a checkpoint taken after
//!   the commit completes, so the latest checkpoint never names a transaction whose id has
//!   been re-initialized since (its producer id and epoch still commit it, harmlessly again);
//! - before every (re)start the JobMaster commits the transactions the restored checkpoint
//!   holds, by their stored producer id and epoch (they completed; their commit may not have
//!   happened), notes in the checkpoint's directory that it did (a second recovery from the
//!   same checkpoint must not commit them again: their ids have been re-initialized since),
//!   then aborts anything else open under the job's ids ([`recover`]).
//!
//! Readers see each record once with `isolation.level = read_committed`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use weir_framing::Record;

use super::wire::{
    self, BrokerConnection, OutgoingRecord, ProducerIdentity, TopicLayout, WireError,
};
use super::{Delivery, KafkaSinkSpec, partition_for_key, transactional_id};
use crate::connectors::external::{connector_runtime, on_own_runtime};
use crate::metrics::TaskMetrics;
use crate::state::OperatorSnapshot;
use crate::stream::{Barrier, Output, StreamError};

/// Records buffered per subtask before they are produced.
const BUFFER_BYTES: usize = 1 << 20;
/// Most transactions a subtask keeps waiting for their checkpoints to complete: past this,
/// checkpoints are not completing, and the job had better fail than pile them up.
const MAX_SLOTS: u32 = 16;

/// A transaction prepared at a checkpoint: what commits it, from any process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreparedTransaction {
    pub checkpoint: u64,
    pub transactional_id: String,
    pub producer: ProducerIdentity,
}

/// What a subtask of the exactly-once sink keeps in a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkState {
    /// Slots it had used: ids past these were never used by it.
    pub slots: u32,
    pub prepared: Vec<PreparedTransaction>,
}

/// Writes records to one topic.
pub struct KafkaSink {
    spec: KafkaSinkSpec,
    sink: String,
    subtask: u32,
    parallelism: u32,
    partitions: u32,
    round_robin: u32,
    runtime: tokio::runtime::Runtime,
    mode: Mode,
    metrics: Arc<TaskMetrics>,
}

enum Mode {
    AtLeastOnce(AtLeastOnce),
    ExactlyOnce(Box<Transactions>),
}

fn failed(sink: &str, subtask: u32, message: impl std::fmt::Display) -> StreamError {
    StreamError::Output(format!("sink `{sink}` (subtask {subtask}): {message}"))
}

impl KafkaSink {
    /// Opens subtask `subtask` of sink `sink` of job `job`; `epoch` is the first checkpoint
    /// this attempt will take (`None` without checkpoints: the exactly-once sink then commits
    /// one transaction when the job ends).
    pub fn open(
        spec: &KafkaSinkSpec,
        job: &str,
        sink: &str,
        subtask: u32,
        parallelism: u32,
        epoch: Option<u64>,
        metrics: Arc<TaskMetrics>,
    ) -> Result<Self, StreamError> {
        let runtime =
            connector_runtime().map_err(|e| failed(sink, subtask, format!("no runtime: {e}")))?;
        let (bootstrap, layout) = runtime
            .block_on(connect(spec))
            .map_err(|e| failed(sink, subtask, e))?;
        let partitions = layout.leaders.len() as u32;
        let mode = match spec.delivery {
            Delivery::AtLeastOnce => {
                drop(bootstrap);
                Mode::AtLeastOnce(AtLeastOnce::new(spec).map_err(|e| failed(sink, subtask, e))?)
            }
            Delivery::ExactlyOnce => Mode::ExactlyOnce(Box::new(Transactions {
                bootstrap,
                layout,
                leaders: HashMap::new(),
                open: None,
                pending: Vec::new(),
                free: BTreeSet::new(),
                cooling: Vec::new(),
                slots: 0,
                buffered: BTreeMap::new(),
                buffered_bytes: 0,
                job: job.to_string(),
                epoch,
            })),
        };
        Ok(KafkaSink {
            spec: spec.clone(),
            sink: sink.to_string(),
            subtask,
            parallelism,
            partitions,
            round_robin: subtask,
            runtime,
            mode,
            metrics,
        })
    }

    /// Keyed records go where Kafka's own clients put their key; the others round robin.
    fn partition_of(&mut self, key: Option<&[u8]>) -> i32 {
        match key {
            Some(key) => partition_for_key(key, self.partitions),
            None => {
                self.round_robin = self.round_robin.wrapping_add(1);
                (self.round_robin % self.partitions.max(1)) as i32
            }
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> StreamError {
        failed(&self.sink, self.subtask, message)
    }
}

/// The bootstrap connection and the topic's partitions, retried while the brokers cannot be
/// reached.
async fn connect(spec: &KafkaSinkSpec) -> Result<(BrokerConnection, TopicLayout), String> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut bootstrap = wire::bootstrap(&spec.brokers).await?;
            let layout = wire::topic_layout(&mut bootstrap, &spec.topic).await?;
            Ok::<_, WireError>((bootstrap, layout))
        };
        match attempt.await {
            Ok((bootstrap, layout)) if !layout.leaders.is_empty() => {
                return Ok((bootstrap, layout));
            }
            Ok(_) => return Err(format!("topic `{}` has no partitions", spec.topic)),
            Err(WireError::Broker {
                error: ResponseError::UnknownTopicOrPartition,
                ..
            }) => {
                return Err(format!(
                    "topic `{}` does not exist on {}",
                    spec.topic,
                    spec.brokers.join(",")
                ));
            }
            Err(e) if e.transient() && started.elapsed() < spec.connect_timeout() => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(format!(
                    "cannot reach the brokers {} (gave up after {:.1} s): {e}",
                    spec.brokers.join(","),
                    started.elapsed().as_secs_f64()
                ));
            }
        }
    }
}

/// Tries `call` again while it fails transiently (a coordinator moving or busy finishing this
/// id's previous transaction), for up to `timeout`.
async fn patiently<T, F: AsyncFnMut() -> Result<T, WireError>>(
    timeout: Duration,
    mut call: F,
) -> Result<T, WireError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match call().await {
            Err(e) if e.transient() && started.elapsed() < timeout => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// An open transaction of the exactly-once sink.
struct OpenTransaction {
    slot: u32,
    id: String,
    coordinator: BrokerConnection,
    producer: ProducerIdentity,
    sequences: HashMap<i32, i32>,
    added: BTreeSet<i32>,
}

/// A prepared transaction waiting for its checkpoint to complete.
struct Pending {
    slot: u32,
    prepared: PreparedTransaction,
    coordinator: BrokerConnection,
}

struct Transactions {
    bootstrap: BrokerConnection,
    layout: TopicLayout,
    leaders: HashMap<i32, BrokerConnection>,
    open: Option<OpenTransaction>,
    pending: Vec<Pending>,
    free: BTreeSet<u32>,
    /// Slots whose transaction committed, each reusable once the checkpoint given completes
    /// (the first taken after the commit).
    cooling: Vec<(u32, u64)>,
    slots: u32,
    buffered: BTreeMap<i32, Vec<OutgoingRecord>>,
    buffered_bytes: usize,
    job: String,
    /// The checkpoint the open transaction belongs to (`None`: no checkpoints).
    epoch: Option<u64>,
}

impl Transactions {
    /// Starts a transaction under a free slot (a new one if none is free).
    async fn begin(
        &mut self,
        spec: &KafkaSinkSpec,
        sink: &str,
        subtask: u32,
    ) -> Result<OpenTransaction, String> {
        let slot = match self.free.pop_first() {
            Some(slot) => slot,
            None if self.slots < MAX_SLOTS => {
                self.slots += 1;
                self.slots - 1
            }
            None => {
                return Err(format!(
                    "{MAX_SLOTS} transactions wait for their checkpoints to complete; \
                     checkpoints are not completing"
                ));
            }
        };
        let id = transactional_id(&self.job, sink, subtask, slot);
        let bootstrap = &mut self.bootstrap;
        let timeout = spec.connect_timeout();
        let mut coordinator = patiently(timeout, async || {
            wire::transaction_coordinator(bootstrap, &id).await
        })
        .await
        .map_err(|e| e.to_string())?;
        let producer = patiently(timeout, async || {
            wire::init_producer_id(&mut coordinator, &id, spec.transaction_timeout()).await
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(OpenTransaction {
            slot,
            id,
            coordinator,
            producer,
            sequences: HashMap::new(),
            added: BTreeSet::new(),
        })
    }

    /// Produces the buffered records into the open transaction (starting one if needed).
    async fn send(&mut self, spec: &KafkaSinkSpec, sink: &str, subtask: u32) -> Result<(), String> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            let open = self.begin(spec, sink, subtask).await?;
            self.open = Some(open);
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let new: Vec<i32> = self
            .buffered
            .keys()
            .filter(|p| !open.added.contains(p))
            .copied()
            .collect();
        if !new.is_empty() {
            let (coordinator, id, producer) = (&mut open.coordinator, &open.id, open.producer);
            patiently(spec.connect_timeout(), async || {
                wire::add_partitions(coordinator, id, producer, &spec.topic, new.clone()).await
            })
            .await
            .map_err(|e| e.to_string())?;
            open.added.extend(new);
        }
        let buffered = std::mem::take(&mut self.buffered);
        self.buffered_bytes = 0;
        let mut by_leader: BTreeMap<i32, BTreeMap<i32, Vec<OutgoingRecord>>> = BTreeMap::new();
        for (partition, records) in buffered {
            let leader = self.layout.leaders.get(&partition).copied().unwrap_or(-1);
            by_leader
                .entry(leader)
                .or_default()
                .insert(partition, records);
        }
        for (leader, batches) in by_leader {
            if !self.leaders.contains_key(&leader) {
                let address = self.layout.brokers.get(&leader).cloned().ok_or_else(|| {
                    format!("no address for broker {leader}, the leader of a partition")
                })?;
                let connection = BrokerConnection::connect(&address)
                    .await
                    .map_err(|e| e.to_string())?;
                self.leaders.insert(leader, connection);
            }
            let Some(connection) = self.leaders.get_mut(&leader) else {
                continue;
            };
            // A retry sends the same batches under the same sequence numbers (they advance
            // only on success), so a broker that stored them the first time drops them.
            let (id, producer, sequences) = (&open.id, open.producer, &mut open.sequences);
            patiently(spec.connect_timeout(), async || {
                wire::produce(
                    connection,
                    id,
                    producer,
                    &spec.topic,
                    &batches,
                    sequences,
                    spec.transaction_timeout().min(Duration::from_secs(60)),
                )
                .await
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Pre-commit: the open transaction, if it wrote anything, waits for `checkpoint`.
    fn prepare(&mut self, checkpoint: u64) {
        if let Some(open) = self.open.take() {
            if open.added.is_empty() {
                // Nothing written: the same transaction serves the next checkpoint.
                self.open = Some(open);
                return;
            }
            self.pending.push(Pending {
                slot: open.slot,
                prepared: PreparedTransaction {
                    checkpoint,
                    transactional_id: open.id,
                    producer: open.producer,
                },
                coordinator: open.coordinator,
            });
        }
    }

    async fn commit_up_to(&mut self, checkpoint: u64, timeout: Duration) -> Result<(), String> {
        let (reusable, cooling): (Vec<_>, Vec<_>) = self
            .cooling
            .drain(..)
            .partition(|&(_, after)| after <= checkpoint);
        self.cooling = cooling;
        self.free.extend(reusable.into_iter().map(|(slot, _)| slot));
        while let Some(at) = self
            .pending
            .iter()
            .position(|p| p.prepared.checkpoint <= checkpoint)
        {
            let pending = &mut self.pending[at];
            let (coordinator, prepared) = (&mut pending.coordinator, &pending.prepared);
            patiently(timeout, async || {
                wire::end_transaction(
                    coordinator,
                    &prepared.transactional_id,
                    prepared.producer,
                    true,
                )
                .await
            })
            .await
            .map_err(|e| e.to_string())?;
            let done = self.pending.remove(at);
            match self.epoch {
                Some(next) => self.cooling.push((done.slot, next)),
                None => {
                    self.free.insert(done.slot);
                }
            }
        }
        Ok(())
    }

    fn state(&self) -> SinkState {
        SinkState {
            slots: self.slots,
            prepared: self.pending.iter().map(|p| p.prepared.clone()).collect(),
        }
    }
}

impl Output for KafkaSink {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        let partition = self.partition_of(record.key);
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        match &mut self.mode {
            Mode::AtLeastOnce(producer) => {
                producer
                    .send(&self.spec.topic, partition, record, timestamp)
                    .map_err(|e| failed(&self.sink, self.subtask, e))?;
            }
            Mode::ExactlyOnce(t) => {
                t.buffered_bytes += record.value.len() + record.key.map_or(0, <[u8]>::len) + 16;
                t.buffered
                    .entry(partition)
                    .or_default()
                    .push(OutgoingRecord {
                        key: record.key.map(Bytes::copy_from_slice),
                        value: Bytes::copy_from_slice(record.value),
                        timestamp,
                    });
                if t.buffered_bytes >= BUFFER_BYTES {
                    let (spec, sink, subtask) = (&self.spec, &self.sink, self.subtask);
                    let result = self.runtime.block_on(t.send(spec, sink, subtask));
                    result.map_err(|e| failed(sink, subtask, e))?;
                }
            }
        }
        self.metrics.add_records_out(1);
        Ok(())
    }

    fn emit_watermark(&mut self, _: i64) -> Result<(), StreamError> {
        Ok(())
    }

    fn snapshot(
        &mut self,
        barrier: &Barrier,
        into: &mut Vec<OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        let (spec, sink, subtask) = (&self.spec, &self.sink, self.subtask);
        match &mut self.mode {
            Mode::AtLeastOnce(producer) => producer.flush().map_err(|e| failed(sink, subtask, e)),
            Mode::ExactlyOnce(t) => {
                let sent = self.runtime.block_on(t.send(spec, sink, subtask));
                sent.map_err(|e| failed(sink, subtask, e))?;
                t.prepare(barrier.id);
                t.epoch = Some(barrier.id + 1);
                let state = serde_json::to_vec(&t.state())
                    .map_err(|e| failed(sink, subtask, format!("cannot encode its state: {e}")))?;
                into.push(OperatorSnapshot {
                    operator: sink.clone(),
                    subtask,
                    parallelism: self.parallelism,
                    guest_state: state,
                    keyed: Default::default(),
                    timers: Default::default(),
                });
                Ok(())
            }
        }
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        let timeout = self.spec.transaction_timeout().min(Duration::from_secs(60));
        if let Mode::ExactlyOnce(t) = &mut self.mode {
            let result = self.runtime.block_on(t.commit_up_to(checkpoint, timeout));
            result
                .map_err(|e| self.error(format!("cannot commit checkpoint {checkpoint}: {e}")))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        let (spec, sink, subtask) = (&self.spec, &self.sink, self.subtask);
        match &mut self.mode {
            Mode::AtLeastOnce(producer) => producer.flush().map_err(|e| failed(sink, subtask, e)),
            Mode::ExactlyOnce(t) => {
                let timeout = spec.transaction_timeout().min(Duration::from_secs(60));
                let result = self.runtime.block_on(async {
                    t.send(spec, sink, subtask).await?;
                    // With checkpoints the final checkpoint, taken before this, covers every
                    // record; without, the run's one transaction commits now.
                    if t.epoch.is_none() {
                        t.prepare(0);
                        t.commit_up_to(0, timeout).await?;
                    }
                    Ok::<_, String>(())
                });
                result.map_err(|e| failed(sink, subtask, e))
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Remembers the first failed delivery, for the next flush to report.
struct DeliveryErrors(Mutex<Option<String>>);

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

/// The at-least-once mode: librdkafka's idempotent producer.
struct AtLeastOnce {
    producer: BaseProducer<DeliveryErrors>,
    flush_timeout: Duration,
}

impl AtLeastOnce {
    fn new(spec: &KafkaSinkSpec) -> Result<Self, String> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", spec.brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(DeliveryErrors(Mutex::new(None)))
            .map_err(|e| format!("cannot create the producer: {e}"))?;
        Ok(AtLeastOnce {
            producer,
            flush_timeout: spec.connect_timeout().max(Duration::from_secs(30)),
        })
    }

    fn send(
        &mut self,
        topic: &str,
        partition: i32,
        record: Record<'_>,
        timestamp: i64,
    ) -> Result<(), String> {
        let mut message = BaseRecord::to(topic)
            .payload(record.value)
            .partition(partition)
            .timestamp(timestamp);
        if let Some(key) = record.key {
            message = message.key(key);
        }
        loop {
            match self.producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: let deliveries drain it.
                    self.producer.poll(Duration::from_millis(10));
                    message = back;
                }
                Err((e, _)) => return Err(format!("cannot produce: {e}")),
            }
        }
        self.producer.poll(Duration::ZERO);
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        match self
            .producer
            .context()
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(format!("a record was not delivered: {e}")),
            None => Ok(()),
        }
    }

    /// Waits until every record sent so far is acknowledged.
    fn flush(&mut self) -> Result<(), String> {
        self.producer
            .flush(self.flush_timeout)
            .map_err(|e| format!("cannot flush: {e}"))?;
        self.check()
    }
}

/// What [`recover`] settled.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub committed: usize,
    pub aborted_ids: usize,
}

/// What a restore hands [`recover`]: each subtask's state in the restored checkpoint, and
/// where in that checkpoint's directory recovery notes what it committed.
pub struct RestoredSink {
    pub states: Vec<(u32, Vec<u8>)>,
    pub note: PathBuf,
}

/// Before a (re)start of job `job`, whose sink `sink` now runs at `parallelism`, from a
/// checkpoint (`None`: a fresh start): commits the transactions the checkpoint holds (it
/// completed), then aborts whatever else is open under the sink's ids (a failed attempt's
/// transactions of checkpoints that never completed), so no reader waits on them and none of
/// their records is ever seen.
pub fn recover(
    spec: &KafkaSinkSpec,
    job: &str,
    sink: &str,
    parallelism: u32,
    restored: Option<RestoredSink>,
) -> Result<Recovered, String> {
    let mut states: Vec<(u32, SinkState)> = Vec::new();
    let marker = restored.as_ref().map(|r| r.note.clone());
    for (subtask, bytes) in restored.map(|r| r.states).unwrap_or_default() {
        let state: SinkState = serde_json::from_slice(&bytes).map_err(|e| {
            format!("the state of its subtask {subtask} is not a Kafka sink's: {e}")
        })?;
        states.push((subtask, state));
    }
    if spec.delivery == Delivery::AtLeastOnce {
        return Ok(Recovered::default());
    }
    let timeout = spec.transaction_timeout().min(Duration::from_secs(60));
    let mut done: Vec<PreparedTransaction> = marker
        .as_ref()
        .and_then(|m| std::fs::read(m).ok())
        .and_then(|bytes| serde_json::from_slice::<Vec<PreparedTransaction>>(&bytes).ok())
        .unwrap_or_default();
    on_own_runtime(|| async {
        let (mut bootstrap, _) = connect(spec).await?;
        let mut recovered = Recovered::default();
        for (_, state) in &states {
            for prepared in &state.prepared {
                if done.contains(prepared) {
                    continue;
                }
                let id = &prepared.transactional_id;
                let committed = patiently(timeout, async || {
                    let mut coordinator = wire::transaction_coordinator(&mut bootstrap, id).await?;
                    wire::end_transaction(&mut coordinator, id, prepared.producer, true).await
                })
                .await;
                match committed {
                    Ok(()) => {
                        recovered.committed += 1;
                        done.push(prepared.clone());
                        if let Some(marker) = &marker {
                            // Best effort: without the note, a second recovery from this
                            // checkpoint meets a newer epoch, which a Kafka broker refuses
                            // with PRODUCER_FENCED (taken as committed, below).
                            let noted = serde_json::to_vec(&done).map_err(|e| e.to_string())?;
                            if let Err(e) = write_note(marker, &noted) {
                                eprintln!(
                                    "sink `{sink}`: cannot note committed transactions in `{}`: {e}",
                                    marker.display()
                                );
                            }
                        }
                    }
                    // The id has a newer epoch. This sink's own producers raise it only after
                    // the transaction committed (a slot is reused after a later checkpoint),
                    // so this is a restore from an older checkpoint than the latest: taken as
                    // committed. A broker that aborted the transaction for its timeout and
                    // raised the epoch answers the same; hence the warning.
                    Err(e)
                        if matches!(
                            e.response_error(),
                            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch)
                        ) =>
                    {
                        eprintln!(
                            "warning: sink `{sink}`: `{id}` has moved past the transaction of \
                             checkpoint {}; taking it as committed (unless the broker aborted \
                             it for its transaction timeout)",
                            prepared.checkpoint
                        );
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot commit the transaction of checkpoint {} (`{id}`), whose \
                             checkpoint completed: {e}",
                            prepared.checkpoint
                        ));
                    }
                }
            }
        }
        // Abort what is open under any id the sink may have used: every slot up to the first
        // never used (the broker gives a fresh id epoch 0), for every subtask of the old and
        // the new parallelism.
        // Subtasks past both parallelisms are probed too, up to the first that never wrote:
        // a run without a checkpoint to restore may have run wider than this one.
        let old_parallelism = states.iter().map(|(s, _)| s + 1).max().unwrap_or(0);
        let mut subtask = 0;
        loop {
            let mut used = false;
            for slot in 0..MAX_SLOTS {
                let id = transactional_id(job, sink, subtask, slot);
                let producer = patiently(timeout, async || {
                    let mut coordinator = wire::transaction_coordinator(&mut bootstrap, &id).await?;
                    wire::init_producer_id(&mut coordinator, &id, spec.transaction_timeout()).await
                })
                .await
                .map_err(|e| format!("cannot abort what `{id}` left open: {e}"))?;
                if producer.epoch == 0 {
                    break;
                }
                used = true;
                recovered.aborted_ids += 1;
            }
            subtask += 1;
            // No job runs wider than the largest max_parallelism.
            if (subtask >= parallelism.max(old_parallelism) && !used) || subtask >= 32_768 {
                break;
            }
        }
        Ok(recovered)
    })
    .map_err(|e| format!("no runtime: {e}"))?
}

/// Replaces `path` with `bytes` whole (a crash leaves the old note or the new one).
fn write_note(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("inprogress");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
