//! High availability on etcd (seed 004), with a real etcd and real processes: Flink's HA
//! end-to-end test in weir (the leading JobManager killed three times while TaskManagers die
//! under the job, which finishes exactly once), and a leader cut off from etcd, which stops
//! committing before another is elected.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;
use weir_test_servers::Etcd;

/// A cluster configuration with high availability on `etcd`, free ports, a 2 s lease and a
/// fast heartbeat.
fn ha_config(dir: &Path, etcd: &Etcd) -> PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n\
             [jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n\
             [rest]\naddress = \"127.0.0.1\"\nport = 0\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n\
             [high-availability]\ntype = \"etcd\"\netcd-endpoints = [\"{}\"]\n\
             cluster-id = \"ha-test\"\nstorage-dir = \"ha\"\nlease-ttl = \"2s\"\n",
            etcd.endpoint()
        ),
    )
    .expect("config");
    path
}

/// A JobManager on `config` and its REST address.
fn start_jobmanager(config: &Path) -> (Process, String) {
    let (jm, _, rest) = jobmanager(config);
    jm.wait_for("Standing by for the leadership");
    (jm, rest)
}

/// A TaskManager that finds the leader through etcd.
fn start_taskmanager(config: &Path, id: &str) -> Process {
    Process::start(&[
        "taskmanager",
        "--config",
        config.to_str().unwrap(),
        "--slots",
        "2",
        "--resource-id",
        id,
    ])
}

/// What `GET /leadership` says of the JobManager at `rest`.
fn role(rest: &str) -> String {
    let (status, answer) = call(rest, "GET", "/leadership", &[]);
    assert_eq!(status, 200, "{answer}");
    answer["role"].as_str().unwrap_or_default().to_string()
}

/// Waits up to `limit` until one of `jobmanagers` leads; its index.
fn wait_for_leader(jobmanagers: &[(Process, String)], limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        if let Some(i) = jobmanagers
            .iter()
            .position(|(_, rest)| role(rest) == "leader")
        {
            return i;
        }
        assert!(started.elapsed() < limit, "no JobManager leads");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Completed checkpoints of job `id` as the JobManager at `rest` counts them (0 while it does
/// not know the job yet).
fn completed_checkpoints(rest: &str, id: &str) -> u64 {
    let (status, answer) = call(rest, "GET", &format!("/jobs/{id}/checkpoints"), &[]);
    if status != 200 {
        return 0;
    }
    answer["counts"]["completed"].as_u64().unwrap_or(0)
}

/// The word count on `copies` of the passage, checkpointed every 100 ms; each attempt's source
/// waits for `checkpoints` completed checkpoints after its first batch. Submitted detached to
/// the leader at `rest`; the job's id, the text and the output directory.
fn submit_word_count(
    dir: &Path,
    rest: &str,
    copies: usize,
    checkpoints: u32,
) -> (String, String, PathBuf) {
    let job = wordcount_manifest(dir, Some(checkpoints));
    let text = read_passage().repeat(copies);
    let input = dir.join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let output = dir.join("out");
    let (ok, out, err) = weir(&[
        "run",
        "-d",
        "-m",
        rest,
        job.to_str().unwrap(),
        "--parallelism",
        "2",
        "--checkpoint-dir",
        dir.join("chk").to_str().unwrap(),
        "--checkpoint-interval",
        "100ms",
        "--restart-attempts",
        "1000",
        "--restart-delay",
        "100ms",
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    (job_id_of(&out), text, output)
}

/// The committed output is the running counts of `text`, each exactly once.
fn assert_exactly_once(output: &Path, text: &str) {
    let mut expected: Vec<String> = independent_word_count(text)
        .into_iter()
        .flat_map(|(w, n)| (1..=n).map(move |i| format!("{w} {i}")))
        .collect();
    expected.sort();
    let actual = committed_lines(output);
    let mut seen = std::collections::BTreeSet::new();
    let duplicates: Vec<&String> = actual.iter().filter(|l| !seen.insert(*l)).collect();
    assert!(duplicates.is_empty(), "duplicated output: {duplicates:?}");
    assert_eq!(actual.len(), expected.len(), "output lines");
    assert!(
        actual == expected,
        "output differs from the independent count"
    );
}

#[test]
fn the_leader_killed_three_times_while_taskmanagers_die_recovers_the_job_which_finishes_exactly_once()
 {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ha_config(dir.path(), &etcd);
    let mut jobmanagers = vec![start_jobmanager(&config)];
    let first = wait_for_leader(&jobmanagers, Duration::from_secs(20));
    jobmanagers.push(start_jobmanager(&config));
    assert_eq!(role(&jobmanagers[1].1), "standby");
    let mut taskmanagers = vec![
        start_taskmanager(&config, "tm-1"),
        start_taskmanager(&config, "tm-2"),
    ];
    wait_for_task_managers(&jobmanagers[first].1, 2);
    // A standby refuses jobs and names the leader.
    let (status, answer) = call(&jobmanagers[1].1, "GET", "/jobs", &[]);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_string().contains(&jobmanagers[first].1),
        "{answer}"
    );

    // Each attempt reads a batch (32 KiB of a split) and then waits for more checkpoints than it
    // lives through until the kills end: the input outlasts the attempts.
    let (id, text, output) = submit_word_count(dir.path(), &jobmanagers[first].1, 2000, 40);
    let mut leader = first;
    let mut spare = 3;
    for kill in 0..3 {
        // Two completed checkpoints on this leader; a TaskManager dies at every one.
        let started = Instant::now();
        let mut seen = 0;
        while seen < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "kill {kill}: the job completed {seen} checkpoints on its leader: {}\n{}",
                call(&jobmanagers[leader].1, "GET", &format!("/jobs/{id}"), &[]).1,
                jobmanagers[leader].0.log()
            );
            let now = completed_checkpoints(&jobmanagers[leader].1, &id);
            if now > seen {
                seen = now;
                let victim = taskmanagers.remove(0);
                drop(victim);
                taskmanagers.push(start_taskmanager(&config, &format!("tm-{spare}")));
                spare += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (mut old, _) = jobmanagers.remove(leader);
        old.child.kill().expect("kill -9 the leader");
        let _ = old.child.wait();
        jobmanagers.push(start_jobmanager(&config));
        leader = wait_for_leader(&jobmanagers, Duration::from_secs(30));
        jobmanagers[leader]
            .0
            .wait_for(&format!("Recovered JobGraph {id}"));
    }
    wait_for_state_within(
        &jobmanagers[leader].1,
        &id,
        "FINISHED",
        Duration::from_secs(120),
    );
    assert_exactly_once(&output, &text);
}

#[test]
fn a_leader_cut_off_from_etcd_stops_committing_before_another_is_elected_and_the_job_finishes_exactly_once()
 {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ha_config(dir.path(), &etcd);
    let mut jobmanagers = vec![start_jobmanager(&config)];
    let first = wait_for_leader(&jobmanagers, Duration::from_secs(20));
    jobmanagers.push(start_jobmanager(&config));
    let _taskmanagers = [
        start_taskmanager(&config, "tm-1"),
        start_taskmanager(&config, "tm-2"),
    ];
    wait_for_task_managers(&jobmanagers[first].1, 2);
    let (id, text, output) = submit_word_count(dir.path(), &jobmanagers[first].1, 200, 30);
    let started = Instant::now();
    while completed_checkpoints(&jobmanagers[first].1, &id) < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }

    etcd.pause();
    let revoked = jobmanagers[first].0.wait_for("Revoked leadership");
    assert!(revoked.contains("could not be renewed"), "{revoked}");
    let committed = committed_lines(&output);
    // No leader while etcd is away: nobody commits, and the old leader refuses jobs.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            committed_lines(&output),
            committed,
            "committed without a leader"
        );
        for (_, rest) in &jobmanagers {
            assert_ne!(role(rest), "leader");
        }
    }
    let (status, answer) = call(&jobmanagers[first].1, "GET", "/jobs", &[]);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_string().contains("no JobManager leads"),
        "{answer}"
    );
    let grants_before: usize = jobmanagers
        .iter()
        .map(|(jm, _)| jm.log().matches("Granted leadership").count())
        .sum();
    etcd.resume();
    let leader = wait_for_leader(&jobmanagers, Duration::from_secs(30));
    let grants_after: usize = jobmanagers
        .iter()
        .map(|(jm, _)| jm.log().matches("Granted leadership").count())
        .sum();
    assert!(grants_after > grants_before);
    jobmanagers[leader]
        .0
        .wait_for(&format!("Recovered JobGraph {id}"));
    wait_for_state_within(
        &jobmanagers[leader].1,
        &id,
        "FINISHED",
        Duration::from_secs(120),
    );
    assert_exactly_once(&output, &text);
}

#[test]
fn a_leader_paused_past_its_lease_is_replaced_and_when_it_wakes_it_steps_down_without_touching_the_job()
 {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ha_config(dir.path(), &etcd);
    let mut jobmanagers = vec![start_jobmanager(&config)];
    let first = wait_for_leader(&jobmanagers, Duration::from_secs(20));
    jobmanagers.push(start_jobmanager(&config));
    let _taskmanagers = [
        start_taskmanager(&config, "tm-1"),
        start_taskmanager(&config, "tm-2"),
    ];
    wait_for_task_managers(&jobmanagers[first].1, 2);
    let (id, text, output) = submit_word_count(dir.path(), &jobmanagers[first].1, 2000, 30);
    let started = Instant::now();
    while completed_checkpoints(&jobmanagers[first].1, &id) < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Hung, not dead: its connections stay open, and it would go on where it stopped.
    jobmanagers[first].0.signal("STOP");
    let standby = 1 - first;
    jobmanagers[standby]
        .0
        .wait_for(&format!("Recovered JobGraph {id}"));
    // The TaskManagers left the hung leader for the new one, and its slots with it: the job
    // runs on the new leader.
    let begun = Instant::now();
    while completed_checkpoints(&jobmanagers[standby].1, &id) < 2 {
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "the job did not run on the new leader\n{}",
            jobmanagers[standby].0.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    jobmanagers[first].0.signal("CONT");
    jobmanagers[first].0.wait_for("Revoked leadership");
    assert_eq!(role(&jobmanagers[standby].1), "leader");
    wait_for_state_within(
        &jobmanagers[standby].1,
        &id,
        "FINISHED",
        Duration::from_secs(120),
    );
    assert_exactly_once(&output, &text);
}

#[test]
fn with_etcd_authentication_the_cluster_leads_and_registers_with_its_user_and_a_wrong_password_waits()
 {
    let etcd = Etcd::start();
    etcd.enable_auth("etcd-root-password");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ha_config(dir.path(), &etcd);
    let with_user = |name: &str, password: &str| {
        std::fs::write(
            dir.path().join(format!("{name}.pw")),
            format!("{password}\n"),
        )
        .expect("password file");
        let path = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&config).expect("config")
            + &format!("etcd-username = \"root\"\netcd-password-file = \"{name}.pw\"\n");
        std::fs::write(&path, text).expect("config");
        path
    };
    let good = with_user("good", "etcd-root-password");
    let bad = with_user("bad", "not-the-password");

    // Without the user, nothing can be read or written.
    let (anonymous, anonymous_rest) = start_jobmanager_waiting(&config);
    let leaders = vec![start_jobmanager(&good)];
    wait_for_leader(&leaders, Duration::from_secs(20));
    let rest = leaders[0].1.clone();
    let _tm = start_taskmanager(&good, "tm-1");
    wait_for_task_managers(&rest, 1);
    let (wrong, wrong_rest) = start_jobmanager_waiting(&bad);
    for (jm, rest) in [(&anonymous, &anonymous_rest), (&wrong, &wrong_rest)] {
        let line = jm.wait_for("Waiting for etcd");
        assert_ne!(role(rest), "leader", "{line}");
    }
    assert!(
        wrong.log().contains("authentication failed"),
        "{}",
        wrong.log()
    );
}

/// A JobManager on `config` that may not get as far as standing by; its REST address.
fn start_jobmanager_waiting(config: &Path) -> (Process, String) {
    let (jm, _, rest) = jobmanager(config);
    (jm, rest)
}

#[test]
fn start_cluster_starts_the_jobmanagers_of_conf_masters_one_leads_and_the_cli_finds_it_through_etcd()
 {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    let config = ha_config(&conf, &etcd);
    let (first, second) = (free_port(), free_port());
    std::fs::write(
        conf.join("masters"),
        format!("localhost:{first}\n# a comment\nlocalhost:{second}\n"),
    )
    .expect("masters");
    std::fs::write(conf.join("workers"), "localhost\nlocalhost\n").expect("workers");
    let pid_dir = dir.path().join("pids");
    let guard = ScriptPids(pid_dir.clone());
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bin");
    let run = |program: &Path, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .env("WEIR_CONF_DIR", &conf)
            .env("WEIR_LOG_DIR", dir.path().join("log"))
            .env("WEIR_PID_DIR", &pid_dir)
            .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir"))
            .output()
            .expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}: {text}", program.display());
        text
    };
    let started = run(&bin.join("start-cluster.sh"), &[]);
    assert_eq!(started.matches("Starting jobmanager daemon").count(), 2);
    assert_eq!(started.matches("Starting taskmanager daemon").count(), 2);
    let rests = [format!("127.0.0.1:{first}"), format!("127.0.0.1:{second}")];
    let begun = Instant::now();
    let leader = loop {
        let roles: Vec<String> = rests
            .iter()
            .map(|r| {
                if std::net::TcpStream::connect(r).is_ok() {
                    role(r)
                } else {
                    String::new()
                }
            })
            .collect();
        if let Some(i) = roles.iter().position(|r| r == "leader")
            && roles.iter().filter(|r| *r == "standby").count() == 1
        {
            break i;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "no leader and standby: {roles:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_for_task_managers(&rests[leader], 2);
    assert_eq!(config, conf.join("weir.toml"));
    // The CLI asks etcd, not a fixed address, where the leader's REST endpoint is.
    let listed = run(Path::new(env!("CARGO_BIN_EXE_weir")), &["list"]);
    assert!(listed.contains("No running jobs."), "{listed}");

    let pids = guard.pids();
    assert_eq!(pids.len(), 4, "two JobManagers and two TaskManagers");
    let stopped = run(&bin.join("stop-cluster.sh"), &[]);
    assert_eq!(stopped.matches("Stopping").count(), 4, "{stopped}");
    let begun = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new("/proc").join(p.to_string()).exists())
    {
        assert!(
            begun.elapsed() < Duration::from_secs(20),
            "processes still alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
