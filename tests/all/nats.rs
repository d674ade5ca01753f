//! The NATS JetStream source and sink against a real server: exactly-once word counts through
//! a failure, messages delivered again after a crash counted once, records of a completed
//! checkpoint published again after a crash stored once, and the errors a user meets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_framing::{BatchWriter, Record};
use weir_host::connectors::SourceReader;
use weir_host::connectors::nats::{self, NatsSink, NatsSinkSpec, NatsSource, NatsSourceSpec};
use weir_host::metrics::TaskMetrics;
use weir_host::stream::{Barrier, Output};

use crate::checkpoint::{cluster, expected_lines, failure_of, graph, input, options, wordcount};
use crate::servers::Nats;

/// Every message of stream `name`, as text, sorted.
fn stored(server: &Nats, name: &str) -> Vec<String> {
    let (rt, js) = server.jetstream();
    let mut out: Vec<String> = rt.block_on(async {
        let mut stream = js.get_stream(name).await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for sequence in 1..=last {
            if let Ok(m) = stream.get_raw_message(sequence).await {
                out.push(String::from_utf8_lossy(&m.payload).into_owned());
            }
        }
        out
    });
    out.sort();
    out
}

fn nats_wordcount(server: &Nats, fail_at: Option<u64>) -> String {
    let text = wordcount(Path::new("unused"), Path::new("unused"), 200, fail_at);
    let (_, rest) = text.split_once("[[operator]]").expect("operators");
    let (operators, _) = rest.split_once("[[sink]]").expect("a sink");
    let last = if fail_at.is_some() { "fail" } else { "count" };
    format!(
        "name = \"wc\"\n[[source]]\nid = \"lines\"\nkind = \"nats\"\nurl = \"{url}\"\n\
         stream = \"LINES\"\nack_wait = \"2s\"\nstop_at = \"latest\"\nparallelism = 2\n\
         [[operator]]{operators}\n\
         [[sink]]\nid = \"counts\"\nkind = \"nats\"\nurl = \"{url}\"\nsubject = \"counts\"\n\
         input = \"{last}\"\nedge = \"rebalance\"\nparallelism = 2\n",
        url = server.url()
    )
}

fn lines_of(dir: &Path, copies: usize) -> (Vec<String>, String) {
    let (_, text) = input(dir, copies);
    (text.lines().map(str::to_string).collect(), text)
}

#[test]
fn word_counts_from_nats_to_nats_are_exactly_once_through_a_failure() {
    let server = Nats::start();
    server.create_stream("LINES", "lines");
    server.create_stream("COUNTS", "counts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines, text) = lines_of(dir.path(), 60);
    server.publish("lines", &lines);
    let words: u64 = crate::support::independent_word_count(&text).values().sum();
    let job = graph(&nats_wordcount(&server, Some(words / 3)), 2);
    let result = cluster()
        .run_job(&job, &options(&dir.path().join("chk"), 20))
        .expect("job");
    assert_eq!(result.restarts, 1, "the guest failed once");
    assert_eq!(stored(&server, "COUNTS"), expected_lines(&text));
}

fn source_spec(server: &Nats) -> NatsSourceSpec {
    NatsSourceSpec {
        url: server.url(),
        user: None,
        password: None,
        stream: "NUMBERS".into(),
        consumer: "reader".into(),
        subject: None,
        ack_wait_ms: 500,
        bounded: true,
        connect_timeout_ms: 10_000,
    }
}

fn read_some(source: &mut NatsSource, at_least: usize) -> Vec<String> {
    let mut out = Vec::new();
    let started = Instant::now();
    while out.len() < at_least {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "too few records"
        );
        let mut batch = BatchWriter::new();
        let read = source.next_batch(&mut batch, 1 << 16).expect("batch");
        out.extend(
            weir_framing::records(batch.as_bytes())
                .map(|r| String::from_utf8(r.expect("record").value.to_vec()).expect("utf-8")),
        );
        if !read.more {
            break;
        }
    }
    out
}

/// A subtask read messages, checkpoint 1 covered some of them and completed, and the process
/// died before acknowledging them, with more read after the barrier. After `ack_wait` the
/// server delivers all the unacknowledged ones again: those checkpoint 1 covers are skipped
/// (the restored state has them), the rest are read again, so every message counts once.
#[test]
fn messages_delivered_again_after_a_crash_count_once() {
    let server = Nats::start();
    server.create_stream("NUMBERS", "numbers");
    // More than one pull takes (1000), so something is read after the barrier.
    let numbers: Vec<String> = (0..2500).map(|i| i.to_string()).collect();
    server.publish("numbers", &numbers);
    let spec = source_spec(&server);
    let mut first = NatsSource::open(&spec, None, true).expect("open");
    let mut counted = read_some(&mut first, 100);
    first.barrier(1);
    let covered = first.position();
    assert!(!covered.is_empty(), "checkpoint 1 covers what was read");
    let lost = read_some(&mut first, 1);
    assert!(!lost.is_empty());
    drop(first);
    // The restore: checkpoint 1's state, and its position as the skip list.
    let mut second = NatsSource::open(&spec, Some(covered), true).expect("reopen");
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "not finished");
        let mut batch = BatchWriter::new();
        let read = second.next_batch(&mut batch, 1 << 16).expect("batch");
        counted.extend(
            weir_framing::records(batch.as_bytes())
                .map(|r| String::from_utf8(r.expect("record").value.to_vec()).expect("utf-8")),
        );
        if !read.more {
            break;
        }
        // Checkpoints complete as it reads, acknowledging what it emitted.
        second.barrier(2);
        second.notify_checkpoint_complete(2).expect("ack");
    }
    counted.sort_by_key(|n| n.parse::<u32>().expect("number"));
    assert_eq!(counted, numbers);
}

fn sink_spec(server: &Nats) -> NatsSinkSpec {
    NatsSinkSpec {
        url: server.url(),
        user: None,
        password: None,
        subject: "out".into(),
        connect_timeout_ms: 10_000,
    }
}

/// Checkpoint 1 completed; subtask 0 published its records (and noted so in the checkpoint),
/// subtask 1 died first. The restore publishes subtask 1's records of checkpoint 1 under their
/// ids and notes it; a second restore publishes nothing; records after checkpoint 1 never
/// appear.
#[test]
fn a_completed_checkpoints_records_are_stored_once_after_a_crash() {
    let server = Nats::start();
    server.create_stream("OUT", "out");
    let spec = sink_spec(&server);
    let metrics = Arc::new(TaskMetrics::default());
    // Checkpoint 1's directory: a subtask that published notes it there.
    let chk = tempfile::tempdir().expect("tempdir");
    let mut states = Vec::new();
    let mut sinks = Vec::new();
    for subtask in 0..2 {
        let mut sink =
            NatsSink::open(&spec, "job", "out", subtask, 2, true, metrics.clone()).expect("open");
        for word in ["a", "b"] {
            sink.collect(Record::value(format!("{word}{subtask}").as_bytes()))
                .expect("record");
        }
        let mut at_1 = Vec::new();
        sink.snapshot(&Barrier::new(1, chk.path()), &mut at_1)
            .expect("write ahead");
        states.push((subtask, at_1.remove(0).guest_state));
        sink.collect(Record::value(b"after")).expect("record");
        sinks.push(sink);
    }
    sinks[0].notify_checkpoint_complete(1).expect("publish");
    drop(sinks);
    assert_eq!(stored(&server, "OUT"), ["a0", "b0"]);
    let now = nats::republish(&spec, "job", "out", chk.path(), states.clone()).expect("republish");
    assert_eq!(now, 2, "subtask 1's two records were new");
    assert_eq!(stored(&server, "OUT"), ["a0", "a1", "b0", "b1"]);
    assert_eq!(
        nats::republish(&spec, "job", "out", chk.path(), states).expect("again"),
        0
    );
}

#[test]
fn missing_streams_subjects_and_servers_are_named() {
    let server = Nats::start();
    let url = server.url();
    let err = failure_of(&format!(
        "name = \"n\"\n[[source]]\nid = \"in\"\nkind = \"nats\"\nurl = \"{url}\"\nstream = \"NOPE\"\n\
         [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"in\"\n"
    ));
    assert!(
        err.contains("nats stream `NOPE`: the stream cannot be found"),
        "{err}"
    );
    let err = failure_of(&format!(
        "name = \"n\"\n[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 3\nformat = \"text\"\n\
         [[sink]]\nid = \"out\"\nkind = \"nats\"\nurl = \"{url}\"\nsubject = \"nowhere\"\ninput = \"in\"\n"
    ));
    assert!(
        err.contains("sink `out` (subtask 0): no stream takes subject `nowhere`"),
        "{err}"
    );
    let closed = crate::servers::free_port();
    let err = failure_of(&format!(
        "name = \"n\"\n[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 3\nformat = \"text\"\n\
         [[sink]]\nid = \"out\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:{closed}\"\n\
         subject = \"x\"\nconnect_timeout = \"1s\"\ninput = \"in\"\n"
    ));
    assert!(
        err.contains(&format!(
            "cannot connect to NATS at nats://127.0.0.1:{closed}"
        )),
        "{err}"
    );
    let err = parse_err(
        "name = \"n\"\n[[source]]\nid = \"in\"\nkind = \"sequence\"\ncount = 3\n\
         [[sink]]\nid = \"out\"\nkind = \"nats\"\nurl = \"nats://u:secret@127.0.0.1:1\"\n\
         subject = \"x\"\ninput = \"in\"\n",
    );
    assert!(err.contains("the `url` holds a password"), "{err}");
}

fn parse_err(manifest: &str) -> String {
    match weir_host::job::parse_manifest(manifest, &Default::default())
        .expect("manifest")
        .job_graph(None)
    {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}
