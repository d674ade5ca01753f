//! The Kafka source and sink against a real Kafka-protocol broker: exactly-once word counts
//! through a failure, the window between a checkpoint's completion and its commit, positions
//! re-dealt at another parallelism, and the errors a user meets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_framing::{BatchWriter, Record};
use weir_host::connectors::kafka::{
    self, Delivery, KafkaSink, KafkaSinkSpec, KafkaSource, KafkaSourceSpec, RestoredSink, StartFrom,
};
use weir_host::connectors::{SourceReader, redistribute};
use weir_host::metrics::TaskMetrics;
use weir_host::stream::{Barrier, Output};

use crate::checkpoint::{cluster, expected_lines, failure_of, graph, input, options, wordcount};
use crate::servers::Kafka;

/// Every committed record of `topic`, as text, sorted: the log read as it is (read
/// uncommitted, with the transaction markers) and each transactional record kept only if a
/// commit marker of its producer follows it. Done here rather than by a client's
/// `read_committed`, because tansu 0.6 hands aborted records to such readers too. Fails if a
/// transaction is left open.
fn committed(kafka: &Kafka, topic: &str) -> Vec<String> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::RecordBatchDecoder;
    use weir_host::connectors::kafka::wire;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut broker = wire::bootstrap(&[kafka.brokers()]).await.expect("broker");
        let layout = wire::topic_layout(&mut broker, topic)
            .await
            .expect("layout");
        let mut out = Vec::new();
        for &partition in layout.leaders.keys() {
            let mut offset = 0i64;
            let mut open: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            loop {
                let request = FetchRequest::default()
                    .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                    .with_max_wait_ms(100)
                    .with_max_bytes(64 << 20)
                    .with_isolation_level(0)
                    .with_topics(vec![
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.into())))
                            .with_partitions(vec![
                                FetchPartition::default()
                                    .with_partition(partition)
                                    .with_fetch_offset(offset)
                                    .with_partition_max_bytes(64 << 20),
                            ]),
                    ]);
                let answer: FetchResponse = broker
                    .request(ApiKey::Fetch, &request)
                    .await
                    .expect("fetch");
                let data = &answer.responses[0].partitions[0];
                assert_eq!(data.error_code, 0, "fetching {topic}/{partition}");
                let mut records = data.records.clone().unwrap_or_default();
                let mut last = None;
                for set in RecordBatchDecoder::decode_all(&mut records).expect("batches") {
                    for r in set.records {
                        last = Some(r.offset);
                        if r.offset < offset {
                            continue;
                        }
                        let text = || {
                            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                                .into_owned()
                        };
                        if r.control {
                            // A marker's key: version (int16), then 0 abort or 1 commit.
                            let key = r.key.clone().unwrap_or_default();
                            let pending = open.remove(&r.producer_id).unwrap_or_default();
                            if key.get(3) == Some(&1) {
                                out.extend(pending);
                            }
                        } else if r.transactional {
                            open.entry(r.producer_id).or_default().push(text());
                        } else {
                            out.push(text());
                        }
                    }
                }
                match last {
                    Some(at) => offset = at + 1,
                    None => break,
                }
                if offset >= data.high_watermark {
                    break;
                }
            }
            let left: usize = open.values().map(Vec::len).sum();
            assert_eq!(
                left, 0,
                "{topic}/{partition}: open transactions hold {left} records"
            );
        }
        out.sort();
        out
    })
}

fn kafka_source(kafka: &Kafka, topic: &str) -> String {
    format!(
        "[[source]]\nid = \"lines\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
         stop_at = \"latest\"\n",
        kafka.brokers()
    )
}

fn kafka_sink(kafka: &Kafka, topic: &str, input: &str, delivery: &str) -> String {
    format!(
        "[[sink]]\nid = \"counts\"\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
         delivery = \"{delivery}\"\ninput = \"{input}\"\nedge = \"rebalance\"\nparallelism = 2\n",
        kafka.brokers()
    )
}

/// The checkpoint tests' word count, reading `lines` from Kafka and writing through `sink`
/// (a function of the last operator's id).
fn from_kafka(kafka: &Kafka, fail_at: Option<u64>, sink: impl Fn(&str) -> String) -> String {
    let text = wordcount(Path::new("unused"), Path::new("unused"), 200, fail_at);
    let (_, rest) = text.split_once("[[operator]]").expect("operators");
    let (operators, _) = rest.split_once("[[sink]]").expect("a sink");
    let last = if fail_at.is_some() { "fail" } else { "count" };
    format!(
        "name = \"wc\"\n{}\n[[operator]]{operators}\n{}",
        kafka_source(kafka, "lines"),
        sink(last)
    )
}

fn kafka_wordcount(kafka: &Kafka, fail_at: Option<u64>, delivery: &str) -> String {
    from_kafka(kafka, fail_at, |last| {
        kafka_sink(kafka, "counts", last, delivery)
    })
}

fn passage_lines(dir: &Path, copies: usize) -> (Vec<String>, String) {
    let (_, text) = input(dir, copies);
    (text.lines().map(str::to_string).collect(), text)
}

#[test]
fn word_counts_from_kafka_to_kafka_are_exactly_once_through_a_failure() {
    let kafka = Kafka::start();
    kafka.create_topic("lines", 3);
    kafka.create_topic("counts", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines, text) = passage_lines(dir.path(), 100);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    kafka.produce("lines", 3, &lines);
    let words: u64 = crate::support::independent_word_count(&text).values().sum();
    let job = graph(&kafka_wordcount(&kafka, Some(words / 3), "exactly-once"), 2);
    let result = cluster()
        .run_job(&job, &options(&dir.path().join("chk"), 20))
        .expect("job");
    assert_eq!(result.restarts, 1, "the guest failed once");
    assert_eq!(committed(&kafka, "counts"), expected_lines(&text));
}

/// The word count from a Kafka topic into PostgreSQL, end to end, through a failure.
#[test]
fn word_counts_from_kafka_into_postgres_are_exactly_once_through_a_failure() {
    let kafka = Kafka::start();
    let pg = crate::servers::Postgres::start();
    pg.execute("CREATE TABLE counts (word text NOT NULL, n bigint NOT NULL)");
    kafka.create_topic("lines", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines, text) = passage_lines(dir.path(), 60);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    kafka.produce("lines", 3, &lines);
    let words: u64 = crate::support::independent_word_count(&text).values().sum();
    let manifest = from_kafka(&kafka, Some(words / 3), |last| {
        crate::postgres::postgres_sink(&pg, "counts", last, 2)
    });
    let result = cluster()
        .run_job(&graph(&manifest, 2), &options(&dir.path().join("chk"), 100))
        .expect("job");
    assert_eq!(result.restarts, 1, "the guest failed once");
    assert_eq!(
        crate::postgres::table_lines(&pg, "counts"),
        expected_lines(&text)
    );
}

/// The shipped example (`examples/wordcount/kafka-to-postgres.toml`) as a user runs it.
#[test]
fn the_kafka_to_postgres_example_counts_every_word_exactly() {
    let kafka = Kafka::start();
    let pg = crate::servers::Postgres::start();
    pg.execute("CREATE TABLE word_counts (word text NOT NULL, n bigint NOT NULL)");
    kafka.create_topic("lines", 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines, text) = passage_lines(dir.path(), 40);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    kafka.produce("lines", 4, &lines);
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount/kafka-to-postgres.toml"),
    )
    .expect("example")
    .replace(
        "../../target/wasm32-wasip2/release/wordcount.wasm",
        crate::guests::WORDCOUNT,
    );
    let password_file = pg.password_file.display().to_string();
    let graph = crate::job::manifest(
        dir.path(),
        &example,
        &[
            ("brokers", &kafka.brokers()),
            ("topic", "lines"),
            ("postgres", &pg.url()),
            ("password_file", &password_file),
        ],
    )
    .expect("manifest")
    .job_graph(None)
    .expect("graph");
    cluster()
        .run_job(&graph, &options(&dir.path().join("chk"), 100))
        .expect("job");
    assert_eq!(
        pg.rows("SELECT word, n FROM word_counts"),
        expected_lines(&text)
    );
}

#[test]
fn at_least_once_without_failures_writes_each_record_once() {
    let kafka = Kafka::start();
    kafka.create_topic("lines", 2);
    kafka.create_topic("counts", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines, text) = passage_lines(dir.path(), 10);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    kafka.produce("lines", 2, &lines);
    let job = graph(&kafka_wordcount(&kafka, None, "at-least-once"), 2);
    cluster()
        .run_job(&job, &options(&dir.path().join("chk"), 50))
        .expect("job");
    assert_eq!(committed(&kafka, "counts"), expected_lines(&text));
}

fn sink_spec(kafka: &Kafka, topic: &str) -> KafkaSinkSpec {
    KafkaSinkSpec {
        brokers: vec![kafka.brokers()],
        topic: topic.into(),
        delivery: Delivery::ExactlyOnce,
        transaction_timeout_ms: 60_000,
        connect_timeout_ms: 10_000,
    }
}

/// What the JobMaster hands a restore: the sink's state in one checkpoint, as the tasks
/// snapshotted it, and a note file in that checkpoint's directory.
fn checkpoint_of(dir: &Path, snapshots: &[weir_host::state::OperatorSnapshot]) -> RestoredSink {
    RestoredSink {
        states: snapshots
            .iter()
            .map(|s| (s.subtask, s.guest_state.clone()))
            .collect(),
        note: dir.join("out.kafka-committed"),
    }
}

/// The window Flink closes by resuming a transaction by producer id and epoch: checkpoint 1
/// completed, so its transactions must be committed; subtask 0 heard so and committed, subtask
/// 1 died before it did (and librdkafka could not have resumed its transaction). Recovery from
/// checkpoint 1 commits both by the producer ids and epochs the checkpoint holds (subtask 0's
/// again, harmlessly), aborts checkpoint 2's transactions, and a second recovery from the same
/// checkpoint changes nothing.
#[test]
fn recovery_commits_a_completed_checkpoints_transaction_that_a_dead_process_prepared() {
    let kafka = Kafka::start();
    kafka.create_topic("out", 2);
    let spec = sink_spec(&kafka, "out");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(TaskMetrics::default());
    let mut at_1 = Vec::new();
    let mut sinks = Vec::new();
    for subtask in 0..2 {
        let mut sink = KafkaSink::open(&spec, "job", "out", subtask, 2, Some(1), metrics.clone())
            .expect("open");
        for word in ["a", "b", "c"] {
            sink.collect(Record::value(format!("{word}{subtask}").as_bytes()))
                .expect("record");
        }
        sink.snapshot(&Barrier::in_memory(1), &mut at_1)
            .expect("pre-commit 1");
        sink.collect(Record::value(format!("d{subtask}").as_bytes()))
            .expect("record");
        sink.snapshot(&Barrier::in_memory(2), &mut Vec::new())
            .expect("pre-commit 2");
        sink.collect(Record::value(b"never")).expect("record");
        sinks.push(sink);
    }
    sinks[0].notify_checkpoint_complete(1).expect("commit 1");
    drop(sinks);
    assert_eq!(at_1.len(), 2, "each subtask's state is in the checkpoint");
    let recovered = kafka::recover(
        &spec,
        "job",
        "out",
        2,
        Some(checkpoint_of(dir.path(), &at_1)),
    )
    .expect("recover");
    assert_eq!(recovered.committed, 2);
    assert_eq!(
        committed(&kafka, "out"),
        ["a0", "a1", "b0", "b1", "c0", "c1"]
    );
    let again = kafka::recover(
        &spec,
        "job",
        "out",
        2,
        Some(checkpoint_of(dir.path(), &at_1)),
    )
    .expect("again");
    assert_eq!(again.committed, 0, "already committed: {again:?}");
    assert_eq!(
        committed(&kafka, "out"),
        ["a0", "a1", "b0", "b1", "c0", "c1"]
    );
}

fn source_spec(kafka: &Kafka, topic: &str) -> KafkaSourceSpec {
    KafkaSourceSpec {
        brokers: vec![kafka.brokers()],
        topic: topic.into(),
        start_from: StartFrom::Earliest,
        bounded: true,
        properties: Vec::new(),
        connect_timeout_ms: 10_000,
    }
}

fn read_batch(source: &mut KafkaSource, max_bytes: usize) -> (Vec<String>, bool) {
    let mut batch = BatchWriter::new();
    let read = source.next_batch(&mut batch, max_bytes).expect("batch");
    let records = weir_framing::records(batch.as_bytes())
        .map(|r| String::from_utf8(r.expect("record").value.to_vec()).expect("utf-8"))
        .collect();
    (records, read.more)
}

#[test]
fn source_positions_resume_exactly_at_another_parallelism() {
    let kafka = Kafka::start();
    kafka.create_topic("numbers", 5);
    let numbers: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    kafka.produce("numbers", 5, &refs);
    let spec = source_spec(&kafka, "numbers");
    let mut read = Vec::new();
    let mut old = Vec::new();
    for subtask in 0..2 {
        let mut source = KafkaSource::open(&spec, None, subtask, 2).expect("open");
        let started = Instant::now();
        while read.len() < 40 * (subtask as usize + 1) {
            assert!(started.elapsed() < Duration::from_secs(30), "no records");
            read.extend(read_batch(&mut source, 200).0);
        }
        old.push((subtask, source.position()));
    }
    for subtask in 0..3 {
        let remaining = redistribute(&old, subtask, 3, 2);
        let mut source = KafkaSource::open(&spec, Some(remaining), subtask, 3).expect("reopen");
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < Duration::from_secs(30), "not finished");
            let (records, more) = read_batch(&mut source, 1 << 16);
            read.extend(records);
            if !more {
                break;
            }
        }
    }
    read.sort_by_key(|n| n.parse::<u32>().expect("number"));
    assert_eq!(read, numbers);
}

#[test]
fn missing_topics_and_unreachable_brokers_are_named() {
    let kafka = Kafka::start();
    kafka.create_topic("present", 1);
    let sink = "[[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"lines\"\n";
    let err = failure_of(&format!(
        "name = \"k\"\n{}{sink}",
        kafka_source(&kafka, "absent")
    ));
    assert!(
        err.contains("kafka topic `absent`: the topic does not exist on"),
        "{err}"
    );
    let err = failure_of(&format!(
        "name = \"k\"\n{}{}",
        kafka_source(&kafka, "present"),
        kafka_sink(&kafka, "absent", "lines", "exactly-once").replace("parallelism = 2", "")
    ));
    assert!(
        err.contains("sink `counts` (subtask 0): topic `absent` does not exist on"),
        "{err}"
    );
    let closed = crate::servers::free_port();
    let err = failure_of(&format!(
        "name = \"k\"\n[[source]]\nid = \"lines\"\nkind = \"sequence\"\ncount = 3\nformat = \"text\"\n\
         [[sink]]\nid = \"out\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:{closed}\"\ntopic = \"t\"\n\
         connect_timeout = \"1s\"\ninput = \"lines\"\n"
    ));
    assert!(
        err.contains(&format!(
            "cannot reach the brokers 127.0.0.1:{closed} (gave up after"
        )),
        "{err}"
    );
}
