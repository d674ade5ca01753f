//! The Kafka source's reader: librdkafka's consumer, partitions assigned by weir.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_framing::{BatchWriter, Record};

use super::{KafkaSourceSpec, MAX_OFFSET, StartFrom, partition_offset, position};
use crate::connectors::source::{SourceBatch, SourceError, SourceReader};

/// How long one `next_batch` waits for a first record before it returns none (the task then
/// takes its mail and calls again).
const POLL_WAIT: Duration = Duration::from_millis(50);

/// One assigned partition: the next offset to read and where to stop (`MAX_OFFSET`: never).
#[derive(Debug, Clone, Copy)]
struct PartitionCursor {
    partition: i32,
    next: u64,
    end: u64,
    /// The consumer's position when it last reached the partition's end (past transaction
    /// markers, which are never delivered).
    caught_up: u64,
}

/// A record polled but not yet in a batch.
struct Held {
    /// Order of arrival: the partition whose oldest staged record came first goes next.
    arrival: u64,
    partition: i32,
    offset: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: Option<i64>,
}

/// Reads a subtask's partitions of one topic.
pub struct KafkaSource {
    consumer: BaseConsumer,
    topic: String,
    cursors: VecDeque<PartitionCursor>,
    /// Records polled, by partition, not yet in a batch: librdkafka hands out partitions
    /// interleaved, and a batch holds one partition's records (the watermark generator follows
    /// each partition on its own).
    staged: BTreeMap<i32, VecDeque<Held>>,
    staged_bytes: usize,
    arrivals: u64,
}

fn failed(topic: &str, message: String) -> SourceError {
    SourceError::External {
        what: format!("kafka topic `{topic}`"),
        message,
    }
}

impl KafkaSource {
    /// Opens subtask `subtask`'s share: from `remaining` (a checkpoint's positions) or, on a
    /// fresh start, the topic's partitions `subtask` modulo `parallelism`.
    pub fn open(
        spec: &KafkaSourceSpec,
        remaining: Option<Vec<(u64, u64)>>,
        subtask: u32,
        parallelism: u32,
    ) -> Result<Self, SourceError> {
        let topic = spec.topic.clone();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", spec.brokers.join(","))
            // Partitions are assigned by weir and offsets live in checkpoints: no group
            // membership, no commits (the group id only names the client to the brokers).
            .set("group.id", format!("weir-{}", spec.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            // Offsets come from checkpoints or the partitions' ends; one that is no longer
            // there (retention deleted it) is an error, not a silent jump.
            .set("auto.offset.reset", "error")
            // librdkafka prefetches up to 100,000 messages per partition by default; a few
            // batches' worth keeps the consumer busy without holding gigabytes.
            .set("queued.min.messages", "20000")
            .set("queued.max.messages.kbytes", "32768")
            .set("socket.connection.setup.timeout.ms", "10000");
        for (key, value) in &spec.properties {
            config.set(key, value);
        }
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| failed(&topic, format!("cannot create the consumer: {e}")))?;
        let cursors = match remaining {
            Some(ranges) => ranges
                .into_iter()
                .map(|(from, to)| {
                    let (partition, next) = partition_offset(from);
                    PartitionCursor {
                        partition,
                        next,
                        end: partition_offset(to).1,
                        caught_up: 0,
                    }
                })
                .collect(),
            None => initial_cursors(&consumer, spec, subtask, parallelism)?,
        };
        let cursors: VecDeque<PartitionCursor> =
            cursors.into_iter().filter(|c| c.next < c.end).collect();
        let mut assignment = TopicPartitionList::new();
        for c in &cursors {
            assignment
                .add_partition_offset(&topic, c.partition, Offset::Offset(c.next as i64))
                .map_err(|e| failed(&topic, e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| failed(&topic, format!("cannot assign partitions: {e}")))?;
        Ok(KafkaSource {
            consumer,
            topic,
            cursors,
            staged: BTreeMap::new(),
            staged_bytes: 0,
            arrivals: 0,
        })
    }

    fn cursor(&mut self, partition: i32) -> Option<&mut PartitionCursor> {
        self.cursors.iter_mut().find(|c| c.partition == partition)
    }

    /// Drops the partitions read to their end: every record before it emitted, or the
    /// consumer past it with none of its records waiting in the stage.
    fn retire_finished(&mut self) {
        let staged = &self.staged;
        let mut retired = TopicPartitionList::new();
        self.cursors.retain(|c| {
            let waiting = staged.get(&c.partition).is_some_and(|q| !q.is_empty());
            let open = c.next < c.end && (c.caught_up < c.end || waiting);
            if !open {
                retired.add_partition(&self.topic, c.partition);
            }
            open
        });
        // No more fetching for them: their records would only be dropped.
        if retired.count() > 0 {
            let _ = self.consumer.pause(&retired);
        }
    }

    /// A partition reached the end of what is there now: its position (past any transaction
    /// markers, which are never delivered) is where a bounded read may be done.
    fn reached_end(&mut self, partition: i32) -> Result<(), SourceError> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| failed(&self.topic, e.to_string()))?;
        if let Some(elem) = positions.find_partition(&self.topic, partition)
            && let Offset::Offset(at) = elem.offset()
            && let Some(cursor) = self.cursor(partition)
        {
            cursor.caught_up = cursor.caught_up.max(at.max(0) as u64);
        }
        Ok(())
    }

    /// The next record from the consumer, or `None` after waiting `wait`.
    fn poll(&mut self, wait: Duration) -> Result<Option<Held>, SourceError> {
        loop {
            match self.consumer.poll(wait) {
                None => return Ok(None),
                Some(Ok(message)) => {
                    let Ok(offset) = u64::try_from(message.offset()) else {
                        continue;
                    };
                    if offset > MAX_OFFSET {
                        return Err(failed(
                            &self.topic,
                            format!("offset {offset} is past the largest weir tracks"),
                        ));
                    }
                    self.arrivals += 1;
                    return Ok(Some(Held {
                        arrival: self.arrivals,
                        partition: message.partition(),
                        offset,
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().unwrap_or_default().to_vec(),
                        timestamp: message.timestamp().to_millis(),
                    }));
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.reached_end(partition)?;
                    self.retire_finished();
                    if self.cursors.is_empty() {
                        return Ok(None);
                    }
                }
                Some(Err(e)) if fatal(&e) => {
                    return Err(failed(&self.topic, e.to_string()));
                }
                // Brokers away, connections lost: librdkafka reconnects by itself.
                Some(Err(e)) => {
                    eprintln!("kafka topic `{}`: {e} (retrying)", self.topic);
                    return Ok(None);
                }
            }
        }
    }
}

/// Whether a consumer error ends the source: librdkafka reports transient trouble (a broker
/// restarting) as errors too, and recovers from it.
fn fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match e {
        KafkaError::MessageConsumptionFatal(_) => true,
        KafkaError::MessageConsumption(code) => matches!(
            code,
            Code::UnknownTopicOrPartition
                | Code::UnknownPartition
                | Code::UnknownTopic
                | Code::AutoOffsetReset
                | Code::OffsetOutOfRange
                | Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::ClusterAuthorizationFailed
        ),
        _ => true,
    }
}

/// A fresh start's partitions for one subtask, from the topic's metadata (retried while the
/// brokers cannot be reached).
fn initial_cursors(
    consumer: &BaseConsumer,
    spec: &KafkaSourceSpec,
    subtask: u32,
    parallelism: u32,
) -> Result<VecDeque<PartitionCursor>, SourceError> {
    let topic = &spec.topic;
    let started = std::time::Instant::now();
    let metadata = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(m) => break m,
            Err(e) if started.elapsed() < spec.connect_timeout() => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(failed(
                    topic,
                    format!(
                        "cannot reach the brokers {} within {:?}: {e}",
                        spec.brokers.join(","),
                        spec.connect_timeout()
                    ),
                ));
            }
        }
    };
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(failed(topic, "the brokers did not describe it".into()));
    };
    if let Some(error) = found.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(error);
        return Err(failed(
            topic,
            match code {
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition => {
                    format!("the topic does not exist on {}", spec.brokers.join(","))
                }
                other => other.to_string(),
            },
        ));
    }
    let mut cursors = VecDeque::new();
    for p in found.partitions() {
        let partition = p.id();
        if partition.rem_euclid(parallelism.max(1) as i32) as u32 != subtask {
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| failed(topic, format!("partition {partition}: {e}")))?;
        let (low, high) = (low.max(0) as u64, high.max(0) as u64);
        cursors.push_back(PartitionCursor {
            partition,
            next: match spec.start_from {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
            },
            end: if spec.bounded { high } else { MAX_OFFSET },
            caught_up: 0,
        });
    }
    Ok(cursors)
}

fn staged_size(record: &Held) -> usize {
    record.value.len() + record.key.as_ref().map_or(0, Vec::len) + 16
}

impl SourceReader for KafkaSource {
    fn next_batch(
        &mut self,
        batch: &mut BatchWriter,
        max_bytes: usize,
    ) -> Result<SourceBatch, SourceError> {
        // Fill the stage; wait for a first record only when nothing is staged.
        let mut wait = if self.staged_bytes == 0 {
            POLL_WAIT
        } else {
            Duration::ZERO
        };
        while self.staged_bytes < max_bytes && !self.cursors.is_empty() {
            let Some(record) = self.poll(wait)? else {
                break;
            };
            wait = Duration::ZERO;
            self.staged_bytes += staged_size(&record);
            self.staged
                .entry(record.partition)
                .or_default()
                .push_back(record);
        }
        // The partition whose oldest staged record came first makes the batch: none waits
        // behind a busier one (its records would turn late, or hold the watermark back).
        let partition = self
            .staged
            .iter()
            .filter_map(|(&p, queue)| queue.front().map(|r| (r.arrival, p)))
            .min()
            .map(|(_, p)| p);
        let mut records = 0;
        if let Some(partition) = partition
            && let Some(mut queue) = self.staged.remove(&partition)
        {
            while let Some(record) = queue.pop_front() {
                if batch.len() >= max_bytes {
                    queue.push_front(record);
                    break;
                }
                self.staged_bytes -= staged_size(&record);
                let Some(cursor) = self.cursor(partition) else {
                    continue;
                };
                if record.offset >= cursor.end {
                    // Offsets come in order: the partition's bounded part is read.
                    cursor.next = cursor.end;
                    continue;
                }
                if record.offset < cursor.next {
                    continue;
                }
                cursor.next = record.offset + 1;
                batch.push(Record {
                    value: &record.value,
                    key: record.key.as_deref(),
                    timestamp: record.timestamp,
                });
                records += 1;
            }
            if !queue.is_empty() {
                self.staged.insert(partition, queue);
            }
        }
        let split_id = partition
            .and_then(|p| self.cursors.iter().find(|c| c.partition == p))
            .map_or(0, |c| position(c.partition, c.end));
        self.retire_finished();
        Ok(SourceBatch {
            records,
            more: !self.cursors.is_empty(),
            split: split_id,
        })
    }

    fn position(&self) -> Vec<(u64, u64)> {
        self.cursors
            .iter()
            .map(|c| (position(c.partition, c.next), position(c.partition, c.end)))
            .collect()
    }

    fn unfinished_splits(&self) -> Vec<u64> {
        self.cursors
            .iter()
            .map(|c| position(c.partition, c.end))
            .collect()
    }
}
