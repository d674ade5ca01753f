//! Jobs spread over TaskExecutors that share nothing but loopback TCP: every edge between
//! subtasks in different TaskExecutors crosses a data connection with credit-based flow
//! control, and the results are exactly those of one TaskExecutor.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_host::cluster::{JobFailure, MiniCluster, MiniClusterConfig, RestartStrategy};
use weir_host::metrics::TaskMetrics;
use weir_host::network::{
    Buffer, ChannelEvent, ChannelItem, ClusterSecret, InputGate, NetworkBufferPool, NetworkConfig,
    NetworkEnvironment, PartitionId, RemoteChannelSpec, RemoteGateBuffers,
};
use weir_host::runtime::task_executor::TaskExecutorConfig;

use crate::checkpoint::{
    committed_lines, expected_lines, graph, input, options, waiting, wordcount,
};
use crate::job::{lines, manifest, slow_job, wordcount_graph};
use crate::support::*;

/// `task_executors` TaskExecutors of `slots` slots each.
fn spread(task_executors: usize, slots: u32) -> MiniCluster {
    spread_with(task_executors, slots, TaskExecutorConfig::default())
}

fn spread_with(task_executors: usize, slots: u32, config: TaskExecutorConfig) -> MiniCluster {
    let config = MiniClusterConfig {
        task_executor: TaskExecutorConfig { slots, ..config },
        task_executors,
        ..MiniClusterConfig::default()
    };
    MiniCluster::new(config, runtime().clone())
}

/// Every network buffer of every TaskExecutor is back in its pool (within a few seconds: the
/// network threads let go of buffers of a broken connection on their own time).
fn assert_buffers_returned(cluster: &MiniCluster) {
    let started = Instant::now();
    for te in cluster.task_executors() {
        while te.network().stats().in_use > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "buffers not returned: {:?}",
                te.network().stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(te.network_environment().registered_subpartitions(), 0);
    }
}

/// The last count of every word in a word count's output.
fn final_counts(output: &std::path::Path) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    for line in lines(output) {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        last.insert(word.to_string(), count.parse::<u64>().expect("count"));
    }
    last
}

#[test]
fn wordcount_across_two_task_executors_equals_an_independent_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text: String = (0..40).map(|_| passage()).collect();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let expected = independent_word_count(&text);
    // Parallelism 2 on two one-slot TaskExecutors; parallelism 4 on two of two slots.
    for (slots, parallelism) in [(1, 2), (2, 4)] {
        let cluster = spread(2, slots);
        let output = dir.path().join(format!("counts-{parallelism}.txt"));
        let graph = wordcount_graph(dir.path(), &input, &output, parallelism);
        let result = cluster.run(&graph).expect("job");
        assert_eq!(final_counts(&output), expected, "parallelism {parallelism}");
        assert_eq!(lines(&output).len() as u64, expected.values().sum::<u64>());
        let bytes_in: u64 = result.tasks.iter().map(|(_, m)| m.bytes_in).sum();
        let bytes_out: u64 = result.tasks.iter().map(|(_, m)| m.bytes_out).sum();
        assert!(bytes_in > 0, "no buffer crossed the network");
        assert_eq!(bytes_in, bytes_out, "every byte sent arrived");
        for te in cluster.task_executors() {
            assert_eq!(te.network_environment().registered_subpartitions(), 0);
            assert_eq!(te.network().stats().in_use, 0);
            assert_eq!(te.free_slots(), slots);
        }
    }
}

#[test]
fn a_slow_consumer_across_the_network_backpressures_its_producer_within_its_credit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = manifest(dir.path(), &slow_job(100_000, 2_000), &[])
        .expect("manifest")
        .job_graph(Some(2))
        .expect("graph");
    // Small buffers, so the records far outnumber what the buffers and credit can hold.
    let small = TaskExecutorConfig {
        segment_bytes: 4 << 10,
        ..TaskExecutorConfig::default()
    };
    let cluster = spread_with(2, 1, small);
    let handle = cluster.submit(&graph).expect("submit");
    // The live metrics (with the remote channels' gauges) from the TaskExecutors.
    let metrics: Vec<(String, Arc<TaskMetrics>)> = cluster
        .task_executors()
        .iter()
        .flat_map(|te| te.task_metrics(handle.id()))
        .map(|(_, name, m)| (name, m))
        .collect();
    assert_eq!(metrics.len(), 4);
    let result = handle.wait().expect("job");
    let network = &cluster.task_executor().config().network;
    let credit = network.exclusive_buffers_per_channel + network.floating_buffers_per_gate;
    let per_channel = cluster.task_executor().config().buffers_per_channel;
    for (name, m) in &result.tasks {
        if name.starts_with("numbers") {
            // Half its records go to the other TaskExecutor's slow subtask.
            assert!(
                m.backpressured_ms_per_s() > 300.0,
                "{name} back-pressured {} ms/s",
                m.backpressured_ms_per_s()
            );
            assert!(
                !m.credit_starved.is_zero(),
                "{name} never waited for credit"
            );
        }
    }
    let mut remote_channels = 0;
    for (name, m) in &metrics {
        let gauges = m.remote_channels();
        remote_channels += gauges.len();
        let most: u64 = gauges.iter().map(|g| g.high_water()).sum();
        // One remote channel per slow subtask: its exclusive buffers and the gate's floating
        // ones are all the memory in flight it may ever hold.
        assert!(
            most as usize <= credit * gauges.len().max(1),
            "{name}: {most} buffers in flight, credit for {credit}"
        );
        assert!(
            gauges
                .iter()
                .all(|g| g.in_flight() == 0 || g.high_water() > 0)
        );
    }
    assert_eq!(
        remote_channels, 2,
        "each slow subtask reads one remote channel"
    );
    for te in cluster.task_executors() {
        let stats = te.network().stats();
        // The local producer's partition (two channels) and one remote gate's credit.
        assert!(
            stats.high_water <= 2 * per_channel + 1 + credit,
            "{stats:?}"
        );
        assert_eq!(stats.in_use, 0);
    }
}

#[test]
fn a_job_across_two_task_executors_recovers_from_a_guest_failure_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 100);
    let out = dir.path().join("out");
    let words: u64 = independent_word_count(&text).values().sum();
    // Barriers align across the hash edge (half of it remote) and the rebalance edge to the
    // sink; the restart restores both TaskExecutors' subtasks from the same checkpoint.
    let job = graph(&wordcount(&input, &out, 200, Some(words / 3)), 2);
    let cluster = spread(2, 1);
    let result = cluster
        .run_job(&job, &options(&dir.path().join("chk"), 20))
        .expect("job");
    assert_eq!(result.restarts, 1);
    assert_eq!(committed_lines(&out), expected_lines(&text));
    // Nothing of the failed attempt stays behind: no buffer, no subpartition.
    assert_buffers_returned(&cluster);
}

#[test]
fn a_lost_connection_fails_the_job_naming_the_peer_and_a_restart_ends_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, text) = input(dir.path(), 60);
    let chk = dir.path().join("chk");

    // Without restarts, the failure is the job's, and it names the peer it lost.
    let cluster = spread(2, 1);
    let peer = cluster.task_executors()[1]
        .network_environment()
        .data_address()
        .expect("data port");
    let job = graph(
        &waiting(&wordcount(&input, &dir.path().join("a"), 50, None), 2),
        2,
    );
    let mut opts = options(&chk.join("a"), 20);
    opts.restart = RestartStrategy::None;
    let handle = cluster.submit_with(&job, &opts, None, 0).expect("submit");
    let started = Instant::now();
    while handle.completed_checkpoints().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    cluster.task_executors()[0]
        .network_environment()
        .close_connections("the test pulled the cable");
    let err = handle.wait().expect_err("the job loses its connection");
    let message = err.to_string();
    assert!(matches!(err, JobFailure::Task(_)), "{message}");
    assert!(message.contains(&peer), "{message}");
    assert!(message.contains("lost"), "{message}");
    assert!(message.contains("partition"), "{message}");
    assert_buffers_returned(&cluster);

    // With restarts, the job resumes from its latest checkpoint and ends exactly.
    let out = dir.path().join("b");
    let job = graph(&waiting(&wordcount(&input, &out, 50, None), 3), 2);
    let opts = options(&chk.join("b"), 20);
    let cluster = spread(2, 1);
    let te = cluster.task_executors()[0].clone();
    let job_dir = chk.join("b").join("wc");
    let cutter = std::thread::spawn(move || {
        let started = Instant::now();
        // The source holds back until three checkpoints completed: the first is mid-job.
        while weir_host::checkpoint::storage::checkpoint_dirs(&job_dir)
            .iter()
            .all(|(_, d)| !d.join("_metadata").exists())
        {
            if started.elapsed() > Duration::from_secs(30) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        te.network_environment()
            .close_connections("the test pulled the cable");
        true
    });
    let result = cluster.run_job(&job, &opts).expect("job");
    assert!(cutter.join().expect("cutter"), "no checkpoint completed");
    assert_eq!(result.restarts, 1);
    assert_eq!(committed_lines(&out), expected_lines(&text));
    assert_buffers_returned(&cluster);
}

/// Reads until the peer closes the connection (or 5 s pass): what it sent before.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // Closed with our bytes unread.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
}

/// The first item of `gate`, waiting up to 20 s.
fn first_item(gate: &InputGate) -> ChannelItem {
    let started = Instant::now();
    loop {
        if let Some((_, item)) = gate.poll(Duration::from_millis(50)) {
            return item;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing arrived"
        );
    }
}

/// A remote channel from a TaskExecutor of our own with `secret`, to `peer`.
fn probe(peer: &str, secret: ClusterSecret, partition: PartitionId) -> String {
    let config = NetworkConfig {
        secret,
        partition_request_timeout: Duration::from_millis(300),
        ..NetworkConfig::default()
    };
    let env = NetworkEnvironment::new(config, NetworkBufferPool::new(32 << 10, 16));
    let gate = InputGate::new(1);
    let spec = RemoteChannelSpec {
        peer: peer.to_string(),
        partition,
        subpartition: 0,
        channel: 0,
        task: "probe (1/1)".into(),
    };
    env.open_remote_channel(
        spec,
        partition.job,
        gate.sender(0),
        RemoteGateBuffers::new(1, 2, 0),
        Arc::new(TaskMetrics::default()),
    )
    .expect("network");
    match first_item(&gate) {
        ChannelItem::Failed(reason) => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn the_data_port_refuses_strangers_and_garbage_and_keeps_serving_its_peers() {
    let cluster = spread(2, 1);
    let te = &cluster.task_executors()[1];
    let address = te.network_environment().data_address().expect("data port");

    // Not our protocol: the length it "declares" is refused before anything is read.
    let mut http = TcpStream::connect(&address).expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: weir\r\n\r\n")
        .expect("send");
    assert!(read_until_closed(&mut http).is_empty());
    // An oversized frame.
    let mut huge = TcpStream::connect(&address).expect("connect");
    huge.write_all(&[0xff, 0xff, 0xff, 0x0f, 20]).expect("send");
    assert!(read_until_closed(&mut huge).is_empty());
    // A well-formed hello, then a proof made without the secret.
    let mut forger = TcpStream::connect(&address).expect("connect");
    let mut hello = 43u32.to_le_bytes().to_vec();
    hello.push(1);
    hello.extend_from_slice(b"WEIR");
    hello.extend_from_slice(&3u16.to_le_bytes()); // the protocol version
    hello.extend_from_slice(&(te.config().segment_bytes as u32).to_le_bytes());
    hello.extend_from_slice(&[7u8; 32]);
    forger.write_all(&hello).expect("hello");
    let mut challenge = [0u8; 69];
    forger.read_exact(&mut challenge).expect("challenge");
    assert_eq!(challenge[4], 2, "a challenge comes back");
    let mut proof = 33u32.to_le_bytes().to_vec();
    proof.push(3);
    proof.extend_from_slice(&[9u8; 32]);
    forger.write_all(&proof).expect("proof");
    // A partition request after the refused proof is never answered: the socket closes.
    let _ = forger.write_all(&[13, 0, 0, 0, 10]);
    assert!(read_until_closed(&mut forger).is_empty());

    let partition = PartitionId {
        job: 0xdead,
        edge: 0,
        producer: 0,
    };
    // A TaskExecutor of another cluster cannot connect: it checks the server's proof first.
    let reason = probe(&address, ClusterSecret::random(), partition);
    assert!(reason.contains("cluster secret"), "{reason}");
    assert!(reason.contains(&address), "{reason}");
    // A peer of this cluster asking for a partition nobody produces gives up after its
    // request timeout, naming what it asked for and where.
    let secret = te.config().network.secret.clone();
    let reason = probe(&address, secret, partition);
    assert!(reason.contains("does not have the partition"), "{reason}");
    assert!(reason.contains(&partition.to_string()), "{reason}");
    assert!(reason.contains(&address), "{reason}");

    // The real peers still get served.
    let dir = tempfile::tempdir().expect("tempdir");
    let text: String = (0..5).map(|_| passage()).collect();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let output = dir.path().join("counts.txt");
    let graph = wordcount_graph(dir.path(), &input, &output, 2);
    let result = cluster.run(&graph).expect("job");
    assert!(result.tasks.iter().any(|(_, m)| m.bytes_in > 0));
    assert_eq!(final_counts(&output), independent_word_count(&text));
}

/// Two network environments of one cluster: `producer` with its data port open.
fn pair(exclusive: usize, floating: usize) -> (NetworkEnvironment, NetworkEnvironment, String) {
    let config = NetworkConfig {
        exclusive_buffers_per_channel: exclusive,
        floating_buffers_per_gate: floating,
        ..NetworkConfig::default()
    };
    let producer = NetworkEnvironment::new(config.clone(), NetworkBufferPool::new(1024, 64));
    let consumer = NetworkEnvironment::new(config, NetworkBufferPool::new(1024, 64));
    let address = producer.data_address().expect("data port");
    (producer, consumer, address)
}

#[test]
fn credit_bounds_what_crosses_and_a_backlog_draws_floating_buffers() {
    let (producer, consumer, address) = pair(1, 4);
    let partition = PartitionId {
        job: 1,
        edge: 0,
        producer: 0,
    };
    let producer_metrics = Arc::new(TaskMetrics::default());
    let sender = producer
        .register_partition(partition, &[0], &producer_metrics)
        .remove(0);
    // A backlog of 50 buffers and a barrier between them, queued before anyone asks.
    for i in 0..50u32 {
        if i == 25 {
            sender.send(ChannelItem::Event(ChannelEvent::Barrier {
                id: 7,
                location: Arc::from(std::path::Path::new("/checkpoints/chk-7")),
            }));
        }
        sender.send(ChannelItem::Buffer(Arc::new(Buffer::unpooled(
            i.to_le_bytes().repeat(100),
        ))));
    }
    sender.send(ChannelItem::Event(ChannelEvent::EndOfPartition));

    let gate = InputGate::new(1);
    let metrics = Arc::new(TaskMetrics::default());
    let buffers = RemoteGateBuffers::new(1, 1, 4);
    let spec = RemoteChannelSpec {
        peer: address,
        partition,
        subpartition: 0,
        channel: 0,
        task: "reader (1/1)".into(),
    };
    consumer
        .open_remote_channel(spec, 1, gate.sender(0), buffers.clone(), metrics.clone())
        .expect("network");
    // Nothing is consumed: the one exclusive buffer arrives with the backlog, which draws the
    // four floating ones; then nothing more crosses, however long we wait.
    let started = Instant::now();
    let mut held = Vec::new();
    while held.len() < 5 && started.elapsed() < Duration::from_secs(10) {
        if let Some((_, item)) = gate.poll(Duration::from_millis(10)) {
            held.push(item);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        gate.poll(Duration::ZERO).is_none(),
        "more than the credit crossed"
    );
    assert_eq!(held.len(), 5);
    assert_eq!(buffers.high_water(), 5);
    assert_eq!(buffers.capacity(), 5);

    // Consuming returns credit; everything arrives in order, the barrier in its place.
    let mut seen = Vec::new();
    let mut items = held.into_iter().collect::<std::collections::VecDeque<_>>();
    loop {
        let item = match items.pop_front() {
            Some(item) => item,
            None => first_item(&gate),
        };
        match item {
            ChannelItem::Buffer(b) => {
                let n = u32::from_le_bytes(b.bytes()[..4].try_into().expect("4 bytes"));
                assert_eq!(b.len(), 400);
                seen.push(format!("{n}"));
            }
            ChannelItem::Event(ChannelEvent::Barrier { id, location }) => {
                assert_eq!(location.to_str(), Some("/checkpoints/chk-7"));
                seen.push(format!("barrier {id}"));
            }
            ChannelItem::Event(ChannelEvent::EndOfPartition) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<String> = (0..25)
        .map(|i| i.to_string())
        .chain(["barrier 7".to_string()])
        .chain((25..50).map(|i| i.to_string()))
        .collect();
    assert_eq!(seen, expected);
    assert!(buffers.high_water() <= 5);
    assert_eq!(metrics.snapshot().bytes_in, 50 * 400);
    assert_eq!(producer_metrics.snapshot().bytes_out, 50 * 400);
    // Consumed to its end, the subpartition is gone from the producer's registry.
    let started = Instant::now();
    while producer.registered_subpartitions() > 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "not released");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_peer_that_stops_answering_fails_the_channel_after_the_peer_timeout() {
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = silent.local_addr().expect("address").to_string();
    let config = NetworkConfig {
        peer_timeout: Duration::from_millis(300),
        ..NetworkConfig::default()
    };
    let env = NetworkEnvironment::new(config, NetworkBufferPool::new(1024, 16));
    let gate = InputGate::new(1);
    let partition = PartitionId {
        job: 2,
        edge: 1,
        producer: 0,
    };
    let spec = RemoteChannelSpec {
        peer: address.clone(),
        partition,
        subpartition: 0,
        channel: 0,
        task: "reader (1/1)".into(),
    };
    env.open_remote_channel(
        spec,
        2,
        gate.sender(0),
        RemoteGateBuffers::new(1, 2, 0),
        Arc::new(TaskMetrics::default()),
    )
    .expect("network");
    let started = Instant::now();
    let reason = match first_item(&gate) {
        ChannelItem::Failed(reason) => reason,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(reason.contains(&address), "{reason}");
    assert!(reason.contains("no handshake within"), "{reason}");
    drop(silent);
}
