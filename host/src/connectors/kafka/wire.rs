//! Kafka requests made directly, with the `kafka-protocol` crate's messages: the transactional
//! producer of the exactly-once sink. librdkafka's transactional producer cannot tell its
//! producer id and epoch, nor resume a transaction prepared by a process that died, which is
//! what closes the window between a checkpoint's completion and its commit (Flink resumes such
//! a transaction by setting both in the Java client by reflection). So the sink speaks the
//! transaction protocol itself: InitProducerId, AddPartitionsToTxn, Produce (idempotent,
//! transactional record batches), EndTxn, each request answered before the next.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ApiVersionsRequest,
    ApiVersionsResponse, EndTxnRequest, EndTxnResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot reach broker {broker}: {error}")]
    Connect {
        broker: String,
        error: std::io::Error,
    },
    #[error("broker {broker}: {error}")]
    Io {
        broker: String,
        error: std::io::Error,
    },
    #[error("broker {broker} does not speak {api:?} in a version this client knows")]
    Unsupported { broker: String, api: ApiKey },
    #[error("broker {broker}: cannot encode or decode {api:?}: {message}")]
    Codec {
        broker: String,
        api: ApiKey,
        message: String,
    },
    #[error("{what}: {error}")]
    Broker { what: String, error: ResponseError },
    #[error("{0}")]
    Other(String),
}

impl WireError {
    /// The broker's error code, if it answered with one.
    pub fn response_error(&self) -> Option<ResponseError> {
        match self {
            WireError::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether trying again may succeed: the broker is away, or busy with this transaction.
    pub fn transient(&self) -> bool {
        match self {
            WireError::Connect { .. } | WireError::Io { .. } => true,
            WireError::Broker { error, .. } => {
                error.is_retriable() || *error == ResponseError::ConcurrentTransactions
            }
            _ => false,
        }
    }
}

/// The versions this client asks for: the oldest that carry what it needs, so that brokers
/// back to Kafka 2.5 answer them (and the shapes stay the pre-KIP-890 ones).
fn preferred(api: ApiKey) -> i16 {
    match api {
        ApiKey::ApiVersions => 0,
        ApiKey::Metadata => 9,
        ApiKey::FindCoordinator => 3,
        ApiKey::InitProducerId => 3,
        ApiKey::AddPartitionsToTxn => 3,
        ApiKey::Produce => 8,
        ApiKey::EndTxn => 3,
        // Not used by the sink; for tools and tests that read a log as it is.
        ApiKey::Fetch => 4,
        _ => 0,
    }
}

/// Longest a broker may take to answer one request before the connection counts as broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to one broker; requests are answered in order. A connection that failed
/// (the broker closed an idle one, say) is dialled again by the next request, so callers that
/// retry transient errors heal it.
pub struct BrokerConnection {
    address: String,
    stream: Option<TcpStream>,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
    read: BytesMut,
}

impl BrokerConnection {
    pub async fn connect(address: &str) -> Result<Self, WireError> {
        let mut connection = BrokerConnection {
            address: address.into(),
            stream: None,
            correlation: 0,
            versions: HashMap::new(),
            read: BytesMut::new(),
        };
        connection.dial().await?;
        Ok(connection)
    }

    /// Opens the TCP connection and learns the versions the broker speaks.
    async fn dial(&mut self) -> Result<(), WireError> {
        let connect_failed = |error| WireError::Connect {
            broker: self.address.clone(),
            error,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| {
                connect_failed(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                ))
            })?
            .map_err(connect_failed)?;
        let _ = stream.set_nodelay(true);
        self.stream = Some(stream);
        let answer: ApiVersionsResponse = self
            .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
            .await?;
        if let Some(error) = answer.error_code.err() {
            self.stream = None;
            return Err(WireError::Broker {
                what: format!("broker {}: ApiVersions", self.address),
                error,
            });
        }
        self.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` in the version this client prefers, if the broker speaks it.
    pub async fn request<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        request: &Req,
    ) -> Result<Resp, WireError> {
        if self.stream.is_none() {
            self.dial().await?;
        }
        let version = preferred(api);
        match self.versions.get(&(api as i16)) {
            Some(&(min, max)) if min <= version && version <= max => {}
            _ => {
                return Err(WireError::Unsupported {
                    broker: self.address.clone(),
                    api,
                });
            }
        }
        self.call(api, version, request).await
    }

    /// One request and its answer; on any I/O failure or timeout the connection is dropped
    /// (a half-read answer would leave the stream out of step).
    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, WireError> {
        let codec = |message: String| WireError::Codec {
            broker: self.address.clone(),
            api,
            message,
        };
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("weir")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, api.request_header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| codec(e.to_string()))?;
        let length = i32::try_from(frame.len() - 4).map_err(|e| codec(e.to_string()))?;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        let Some(stream) = self.stream.as_mut() else {
            return Err(WireError::Io {
                broker: self.address.clone(),
                error: std::io::Error::from(std::io::ErrorKind::NotConnected),
            });
        };
        let read = &mut self.read;
        let exchanged = tokio::time::timeout(REQUEST_TIMEOUT, async {
            stream.write_all(&frame).await?;
            let length = stream.read_i32().await?;
            let length = usize::try_from(length).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a response of length {length}"),
                )
            })?;
            read.clear();
            read.resize(length, 0);
            stream.read_exact(read).await?;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {REQUEST_TIMEOUT:?}"),
            ))
        });
        if let Err(error) = exchanged {
            self.stream = None;
            return Err(WireError::Io {
                broker: self.address.clone(),
                error,
            });
        }
        let mut body = self.read.split().freeze();
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        if header.correlation_id != self.correlation {
            self.stream = None;
            return Err(codec(format!(
                "response {} to request {}",
                header.correlation_id, self.correlation
            )));
        }
        Resp::decode(&mut body, version).map_err(|e| codec(e.to_string()))
    }
}

/// Connects to the first of `brokers` that answers.
pub async fn bootstrap(brokers: &[String]) -> Result<BrokerConnection, WireError> {
    let mut last = None;
    for broker in brokers {
        match BrokerConnection::connect(broker).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| WireError::Other("no brokers configured".into())))
}

/// Broker addresses by id and each partition's leader, of one topic.
pub struct TopicLayout {
    pub brokers: HashMap<i32, String>,
    pub leaders: BTreeMap<i32, i32>,
}

pub async fn topic_layout(
    connection: &mut BrokerConnection,
    topic: &str,
) -> Result<TopicLayout, WireError> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]));
    let answer: MetadataResponse = connection.request(ApiKey::Metadata, &request).await?;
    let brokers = answer
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", &*b.host, b.port)))
        .collect();
    let Some(found) = answer.topics.first() else {
        return Err(WireError::Other(format!("topic `{topic}`: no metadata")));
    };
    if let Some(error) = found.error_code.err() {
        return Err(WireError::Broker {
            what: format!("topic `{topic}`"),
            error,
        });
    }
    Ok(TopicLayout {
        brokers,
        leaders: found
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect(),
    })
}

/// The broker that coordinates `transactional_id`'s transactions.
pub async fn transaction_coordinator(
    bootstrap: &mut BrokerConnection,
    transactional_id: &str,
) -> Result<BrokerConnection, WireError> {
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(transactional_id.to_string()))
        .with_key_type(1);
    let answer: FindCoordinatorResponse =
        bootstrap.request(ApiKey::FindCoordinator, &request).await?;
    if let Some(error) = answer.error_code.err() {
        return Err(WireError::Broker {
            what: format!("finding the coordinator of `{transactional_id}`"),
            error,
        });
    }
    BrokerConnection::connect(&format!("{}:{}", &*answer.host, answer.port)).await
}

/// The producer id and epoch a transaction was written under: what commits it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
}

/// `InitProducerId`: fences every earlier producer of `transactional_id` and aborts its open
/// transaction (the broker answers `CONCURRENT_TRANSACTIONS` while it does; the caller tries
/// again).
pub async fn init_producer_id(
    coordinator: &mut BrokerConnection,
    transactional_id: &str,
    transaction_timeout: Duration,
) -> Result<ProducerIdentity, WireError> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        ))))
        .with_transaction_timeout_ms(
            i32::try_from(transaction_timeout.as_millis()).unwrap_or(i32::MAX),
        )
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let answer: InitProducerIdResponse = coordinator
        .request(ApiKey::InitProducerId, &request)
        .await?;
    if let Some(error) = answer.error_code.err() {
        return Err(WireError::Broker {
            what: format!("initializing transactional id `{transactional_id}`"),
            error,
        });
    }
    Ok(ProducerIdentity {
        id: answer.producer_id.0,
        epoch: answer.producer_epoch,
    })
}

/// `EndTxn`: commits (or aborts) the transaction `producer` has open under `transactional_id`.
pub async fn end_transaction(
    coordinator: &mut BrokerConnection,
    transactional_id: &str,
    producer: ProducerIdentity,
    commit: bool,
) -> Result<(), WireError> {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_producer_id(ProducerId(producer.id))
        .with_producer_epoch(producer.epoch)
        .with_committed(commit);
    let answer: EndTxnResponse = coordinator.request(ApiKey::EndTxn, &request).await?;
    match answer.error_code.err() {
        None => Ok(()),
        Some(error) => Err(WireError::Broker {
            what: format!(
                "{} the transaction of `{transactional_id}`",
                if commit { "committing" } else { "aborting" }
            ),
            error,
        }),
    }
}

/// `AddPartitionsToTxn` for `partitions` of `topic`.
pub async fn add_partitions(
    coordinator: &mut BrokerConnection,
    transactional_id: &str,
    producer: ProducerIdentity,
    topic: &str,
    partitions: Vec<i32>,
) -> Result<(), WireError> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_v3_and_below_producer_id(ProducerId(producer.id))
        .with_v3_and_below_producer_epoch(producer.epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions),
        ]);
    let answer: AddPartitionsToTxnResponse = coordinator
        .request(ApiKey::AddPartitionsToTxn, &request)
        .await?;
    if let Some(error) = answer.error_code.err() {
        return Err(WireError::Broker {
            what: format!("adding partitions of `{topic}` to `{transactional_id}`"),
            error,
        });
    }
    for topic_result in &answer.results_by_topic_v3_and_below {
        for p in &topic_result.results_by_partition {
            if let Some(error) = p.partition_error_code.err() {
                return Err(WireError::Broker {
                    what: format!(
                        "adding partition {} of `{topic}` to `{transactional_id}`",
                        p.partition_index
                    ),
                    error,
                });
            }
        }
    }
    Ok(())
}

/// Records of one batch, about: past this a partition's records go in another batch.
const MAX_BATCH_BYTES: usize = 512 << 10;

/// One record to produce.
pub struct OutgoingRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub timestamp: i64,
}

/// `Produce` of one transactional record batch per partition to their leader, waiting for
/// all in-sync replicas; `sequences` is each partition's next sequence number, advanced.
pub async fn produce(
    leader: &mut BrokerConnection,
    transactional_id: &str,
    producer: ProducerIdentity,
    topic: &str,
    batches: &BTreeMap<i32, Vec<OutgoingRecord>>,
    sequences: &mut HashMap<i32, i32>,
    timeout: Duration,
) -> Result<(), WireError> {
    let mut partition_data = Vec::new();
    for (&partition, records) in batches {
        let base = *sequences.get(&partition).unwrap_or(&0);
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer.id,
                producer_epoch: producer.epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: base.wrapping_add(i as i32),
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: Some(r.value.clone()),
                headers: Default::default(),
            })
            .collect();
        // Several record batches, each well under the brokers' default largest message
        // (`message.max.bytes`, 1 MiB); sequence numbers run on across them.
        let mut encoded = BytesMut::new();
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len() && (end == start || bytes < MAX_BATCH_BYTES) {
                bytes += records[end].value.as_ref().map_or(0, Bytes::len)
                    + records[end].key.as_ref().map_or(0, Bytes::len)
                    + 32;
                end += 1;
            }
            RecordBatchEncoder::encode(
                &mut encoded,
                &records[start..end],
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .map_err(|e| WireError::Codec {
                broker: leader.address().into(),
                api: ApiKey::Produce,
                message: e.to_string(),
            })?;
            start = end;
        }
        partition_data.push(
            PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(encoded.freeze())),
        );
    }
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        ))))
        .with_acks(-1)
        .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(partition_data),
        ]);
    let answer: ProduceResponse = leader.request(ApiKey::Produce, &request).await?;
    for topic_answer in &answer.responses {
        for p in &topic_answer.partition_responses {
            if let Some(error) = p.error_code.err() {
                return Err(WireError::Broker {
                    what: format!("producing to partition {} of `{topic}`", p.index),
                    error,
                });
            }
        }
    }
    for (&partition, records) in batches {
        let next = sequences.entry(partition).or_insert(0);
        *next = next.wrapping_add(records.len() as i32);
    }
    Ok(())
}
