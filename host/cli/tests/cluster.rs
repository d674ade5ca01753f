//! The standalone cluster as real processes: a JobManager and TaskManagers started from the
//! built `weir` binary on loopback, each stopped by its own pid. Tests wait for what they need
//! (a log line, a REST answer), bounded in time, never for a fixed time.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

#[test]
fn taskmanagers_register_with_their_slots_and_data_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    let overview = wait_for_task_managers(&rest, 2);
    assert_eq!(overview["slots-total"], 4);
    assert_eq!(overview["slots-available"], 4);
    let list = get(&rest, "/taskmanagers");
    let tms = list["taskmanagers"].as_array().expect("list");
    let ids: Vec<&str> = tms.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tm-1", "tm-2"]);
    for (tm, process) in tms.iter().zip([&tm1, &tm2]) {
        // The data port each TaskManager logged is the one the JobManager knows.
        let logged = process.wait_for("Data port listening on");
        let port = tm["dataPort"].as_str().unwrap();
        assert!(logged.ends_with(port), "{logged} vs {port}");
        assert_eq!(tm["slotsNumber"], 2);
    }
    // Start-up follows a TaskManager's order of services.
    let log = tm1.log();
    let order = [
        "Starting RPC service",
        "Starting heartbeat services",
        "Starting blob cache",
        "Starting network environment",
        "Starting slot table",
        "Local state directory",
        "Successful registration",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|s| log.find(s).unwrap_or_else(|| panic!("no `{s}` in\n{log}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{log}");
}

#[test]
fn a_wrong_secret_a_taken_resource_id_and_no_secret_are_refused_and_the_cluster_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 2, "tm-1");
    wait_for_task_managers(&rest, 1);

    let stranger = config_with_secret(dir.path(), "fedcba9876543210fedcba9876543210");
    let mut intruder = taskmanager(&stranger, &rpc, 2, "tm-x");
    let (status, log) = intruder.wait_exit();
    assert!(!status.success());
    assert!(log.contains("cluster secret"), "{log}");
    jm.wait_for("refused an RPC connection");

    let mut twin = taskmanager(&config, &rpc, 2, "tm-1");
    let (status, log) = twin.wait_exit();
    assert!(!status.success());
    assert!(log.contains("`tm-1` is already registered"), "{log}");

    let no_secret = self::config(dir.path(), None, "");
    let mut unconfigured = Process::start(&["jobmanager", "--config", no_secret.to_str().unwrap()]);
    let (status, log) = unconfigured.wait_exit();
    assert!(!status.success());
    assert!(log.contains("cluster.secret"), "{log}");

    let overview = wait_for_task_managers(&rest, 1);
    assert_eq!(overview["slots-total"], 2);
}

fn config_with_secret(dir: &Path, secret: &str) -> PathBuf {
    let sub = dir.join("other");
    std::fs::create_dir_all(&sub).expect("dir");
    config(&sub, Some(secret), "")
}

#[test]
fn a_killed_taskmanager_is_lost_at_once_and_a_hung_one_after_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (jm, rpc, rest) = jobmanager(&config);
    let mut killed = taskmanager(&config, &rpc, 2, "tm-killed");
    let hung = taskmanager(&config, &rpc, 2, "tm-hung");
    wait_for_task_managers(&rest, 2);

    // kill -9: its connection closes, and that is loss enough.
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    wait_for_task_managers(&rest, 1);
    // Whichever notices first: the closed connection, or an RPC call on it failing.
    jm.wait_for("`tm-killed` is lost: its");

    // SIGSTOP: the socket stays open; only the missing heartbeats tell.
    hung.signal("STOP");
    let stopped = Instant::now();
    wait_for_task_managers(&rest, 0);
    assert!(stopped.elapsed() >= Duration::from_millis(900));
    jm.wait_for("`tm-hung` is lost: no heartbeat");
    // Continued, it finds its registration gone and registers again.
    hung.signal("CONT");
    wait_for_task_managers(&rest, 1);
    hung.wait_for("registering again");
}

#[test]
fn a_taskmanager_with_no_jobmanager_to_reach_gives_up_after_its_registration_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        Some(SECRET),
        "[taskmanager]\nregistration-timeout = \"1s\"\n",
    );
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut tm = taskmanager(&config, &address, 1, "tm-alone");
    let (status, log) = tm.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains(&format!(
            "could not register at the JobManager at {address} within 1s"
        )),
        "{log}"
    );
    assert!(
        log.contains("Connection refused") || log.contains("cannot connect"),
        "{log}"
    );
}

#[test]
fn a_job_submitted_with_run_m_runs_across_both_taskmanagers_and_counts_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    wait_for_task_managers(&rest, 2);

    let component = wordcount_component();
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wordcount/job.toml"),
    )
    .expect("example manifest")
    .replace(
        "../../target/wasm32-wasip2/release/wordcount.wasm",
        component.to_str().expect("utf-8 path"),
    );
    let job = dir.path().join("job.toml");
    std::fs::write(&job, manifest).expect("manifest");
    let passage = read_passage();
    let text = passage.repeat(30);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let output = dir.path().join("counts.txt");

    let run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            "-m",
            &rest,
            job.to_str().unwrap(),
            "--parallelism",
            "4",
        ])
        .arg("--arg")
        .arg(format!("input={}", input.display()))
        .arg("--arg")
        .arg(format!("output={}", output.display()))
        .output()
        .expect("weir run -m");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let first = stdout.lines().next().unwrap_or_default();
    let id = first
        .strip_prefix("Job has been submitted with JobID ")
        .unwrap_or_else(|| panic!("first line: {first}"));
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(stdout.contains("has finished"), "{stdout}");

    let mut last = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(&output).expect("output").lines() {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        last.insert(word.to_string(), count.parse::<u64>().expect("count"));
    }
    assert_eq!(last, independent_word_count(&text));

    // Both TaskManagers ran tasks (four slots, two each), and gave their slots back.
    for tm in [&tm1, &tm2] {
        tm.wait_for("Received task count (");
    }
    let job = get(&rest, &format!("/jobs/{id}"));
    assert_eq!(job["state"], "FINISHED", "{job}");
    assert_eq!(
        stdout.lines().nth(1),
        Some(format!("Web UI: http://{rest}/#/job/{id}").as_str())
    );
    // The plan and the vertices' counts: every line read, every word counted, on both.
    let plan = get(&rest, &format!("/jobs/{id}/plan"));
    let nodes = plan["plan"]["nodes"].as_array().expect("nodes");
    let shape: Vec<(String, u64, Vec<String>)> = nodes
        .iter()
        .map(|n| {
            let strategies = n["inputs"].as_array().expect("inputs").iter();
            (
                n["description"].as_str().expect("name").to_string(),
                n["parallelism"].as_u64().expect("parallelism"),
                strategies
                    .map(|i| i["ship_strategy"].as_str().expect("strategy").to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("lines -> tokenize -> key-by-word".into(), 4, vec![]),
            ("count".into(), 4, vec!["HASH".to_string()]),
            ("counts".into(), 1, vec!["REBALANCE".to_string()]),
        ]
    );
    let vertices = job["vertices"].as_array().expect("vertices");
    let words: u64 = independent_word_count(&text).values().sum();
    assert_eq!(
        vertices[0]["metrics"]["read-records"],
        text.lines().count() as u64
    );
    assert_eq!(vertices[1]["metrics"]["read-records"], words);
    assert_eq!(vertices[2]["metrics"]["write-records"], words);
    let count = get(
        &rest,
        &format!("/jobs/{id}/vertices/{}", nodes[1]["id"].as_str().unwrap()),
    );
    let mut on: Vec<&str> = count["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "FINISHED", "{s}");
            s["taskmanager-id"].as_str().expect("TaskManager")
        })
        .collect();
    on.sort();
    assert_eq!(on, ["tm-1", "tm-1", "tm-2", "tm-2"]);
    let overview = get(&rest, "/overview");
    assert_eq!(overview["jobs-finished"], 1);
    let started = Instant::now();
    while get(&rest, "/overview")["slots-available"] != 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slots not returned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // An unknown job id is 404, not a crash.
    let mut stream = TcpStream::connect(&rest).expect("connect");
    write!(
        stream,
        "GET /jobs/00000000000000000000000000000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[test]
fn a_component_with_its_plan_submitted_detached_runs_on_the_cluster_and_counts_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 3, "tm-1");
    wait_for_task_managers(&rest, 1);
    // The component alone, under a name of its own: nothing but the file is submitted.
    let job = dir.path().join("my-wordcount.wasm");
    std::fs::copy(wordcount_component(), &job).expect("copy");
    let text = read_passage().repeat(5);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let output = dir.path().join("counts.txt");
    let (ok, out, err) = weir(&[
        "run",
        "-d",
        "-m",
        &rest,
        job.to_str().unwrap(),
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    let id = job_id_of(&out);
    wait_for_state(&rest, &id, "FINISHED");
    assert_eq!(final_counts(&output), independent_word_count(&text));
    let plan = get(&rest, &format!("/jobs/{id}/plan"));
    let names: Vec<&str> = plan["plan"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["description"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["lines -> tokenize -> key-by-word", "count", "counts"]
    );
}

#[test]
fn a_killed_taskmanager_fails_its_tasks_and_the_job_recovers_on_a_spare_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (jm, rpc, rest) = jobmanager(&config);
    // Fill-first placement takes tm-1 and tm-2 (by id); tm-3 is the spare.
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let mut tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    let _tm3 = taskmanager(&config, &rpc, 2, "tm-3");
    wait_for_task_managers(&rest, 3);

    let (run, process, _) = checkpointed_run(dir.path(), &rest, false);
    // tm-2 runs tasks of the job; once a checkpoint completed, it dies.
    tm2.wait_for("Received task");
    run.wait_for_a_checkpoint();
    let tms = get(&rest, "/taskmanagers");
    let tm2_data_port = tms["taskmanagers"]
        .as_array()
        .expect("taskmanagers")
        .iter()
        .find(|t| t["id"] == "tm-2")
        .and_then(|t| t["dataPort"].as_str())
        .expect("tm-2's data port")
        .to_string();
    tm2.child.kill().expect("kill -9");
    let _ = tm2.child.wait();
    // Whichever notices first: the closed connection, or an RPC call on it failing.
    jm.wait_for("`tm-2` is lost: its");
    let (status, log) = process
        .expect("attached run")
        .wait_exit_within(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert!(
        _tm3.log().contains("Received task"),
        "the spare ran nothing; JobManager:\n{}\nrun:\n{log}",
        jm.log()
    );
    run.assert_exactly_once();
    let jobs = get(&rest, "/jobs");
    assert_eq!(jobs["jobs"][0]["status"], "FINISHED", "{jobs}");
    // The exception names the lost TaskManager (whichever heard of it first: the JobManager,
    // whose failure is a task of tm-2's, or a consumer whose channel from tm-2 broke); the
    // checkpoints show the restore.
    let id = jobs["jobs"][0]["id"].as_str().expect("id");
    let exceptions = get(&rest, &format!("/jobs/{id}/exceptions"));
    let root = &exceptions["exceptionHistory"]["entries"][0];
    assert_eq!(root["attempt"], 0, "{exceptions}");
    assert_eq!(exceptions["root-exception"], root["stacktrace"]);
    let text = root["stacktrace"].as_str().unwrap_or_default();
    assert!(
        (root["taskManagerId"] == "tm-2" && text.contains("was lost with TaskManager `tm-2`"))
            || text.contains(&format!("the connection to {tm2_data_port} was lost")),
        "{exceptions}"
    );
    let checkpoints = get(&rest, &format!("/jobs/{id}/checkpoints"));
    assert!(
        checkpoints["counts"]["restored"].as_u64() >= Some(1),
        "{checkpoints}"
    );
    assert!(
        checkpoints["counts"]["completed"].as_u64() >= Some(2),
        "{checkpoints}"
    );
    let latest = &checkpoints["latest"]["completed"];
    assert_eq!(latest["status"], "COMPLETED", "{checkpoints}");
    assert_eq!(latest["num_acknowledged_subtasks"], latest["num_subtasks"]);
    assert!(latest["state_size"].as_u64() > Some(0), "{checkpoints}");
}

#[test]
fn a_hung_taskmanager_is_declared_lost_by_heartbeat_its_job_recovers_and_its_stale_tasks_are_cancelled()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (jm, rpc, rest) = jobmanager(&config);
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    let tm3 = taskmanager(&config, &rpc, 2, "tm-3");
    wait_for_task_managers(&rest, 3);

    let (run, process, _) = checkpointed_run(dir.path(), &rest, false);
    tm2.wait_for("Received task");
    run.wait_for_a_checkpoint();
    // Hung with its sockets open: only the heartbeat timeout tells.
    tm2.signal("STOP");
    jm.wait_for("`tm-2` is lost: no heartbeat");
    let (status, log) = process
        .expect("attached run")
        .wait_exit_within(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert!(tm3.log().contains("Received task"), "the spare ran nothing");
    run.assert_exactly_once();

    // Continued, it learns it was declared lost, cancels what it still ran, registers again;
    // nothing it does after commits anything.
    // (The JobManager's cancel, queued in its socket while it was stopped, may reach it first.)
    tm2.signal("CONT");
    tm2.wait_for("Cancelling job attempt");
    tm2.wait_for("registering again");
    wait_for_task_managers(&rest, 3);
    std::thread::sleep(Duration::from_millis(300));
    run.assert_exactly_once();
}

#[test]
fn list_shows_a_detached_job_running_cancel_stops_it_and_frees_its_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let _tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    wait_for_task_managers(&rest, 2);
    // Its sources wait for a checkpoint an hour away: the job runs until cancelled.
    let job = wordcount_manifest(dir.path(), Some(1));
    let passage = read_passage();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, passage.repeat(200)).expect("input");
    let id = submit_paused(&rest, &job, 4, dir.path(), &input, "out");

    let (ok, out, err) = weir(&["list", "-m", &rest]);
    assert!(ok, "{err}");
    assert!(
        out.contains("------------------ Running/Restarting Jobs -------------------"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.ends_with(&format!(" : {id} : wordcount (RUNNING)")),
        "{line}"
    );
    // Slots as the TaskManagers report them with their next heartbeats.
    let started = Instant::now();
    while get(&rest, "/overview")["slots-available"] != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slots never taken"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (ok, out, err) = weir(&["cancel", "-m", &rest, &id]);
    assert!(ok, "{out}{err}");
    assert_eq!(out, format!("Cancelling job {id}.\nCancelled job {id}.\n"));
    let (ok, out, _) = weir(&["list", "-a", "-m", &rest]);
    assert!(ok);
    assert!(out.contains("No running jobs."), "{out}");
    assert!(
        out.contains(&format!(" : {id} : wordcount (CANCELED)")),
        "{out}"
    );
    let started = Instant::now();
    while get(&rest, "/overview")["slots-available"] != 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slots not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // An unknown id is refused by name.
    let (ok, _, err) = weir(&["cancel", "-m", &rest, "0123456789abcdef0123456789abcdef"]);
    assert!(!ok);
    assert!(
        err.contains("no job with id 0123456789abcdef0123456789abcdef"),
        "{err}"
    );
    // Nothing listens there: the error names the address.
    let (ok, _, err) = weir(&["list", "-m", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the JobManager's REST endpoint at 127.0.0.1:1"),
        "{err}"
    );
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn start_cluster_and_stop_cluster_start_and_stop_the_jobmanager_and_the_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rpc_port, rest_port) = (free_port(), free_port());
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    std::fs::write(
        conf.join("weir.toml"),
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n[jobmanager]\njob-store = \"jobs\"\n[jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = {rpc_port}\n\
             [rest]\naddress = \"127.0.0.1\"\nport = {rest_port}\n[taskmanager]\nslots = 2\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n"
        ),
    )
    .expect("weir.toml");
    std::fs::write(conf.join("workers"), "localhost\n# a comment\nlocalhost\n").expect("workers");
    let pid_dir = dir.path().join("pids");
    let guard = ScriptPids(pid_dir.clone());
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bin");
    let script = |name: &str| {
        let out = Command::new("bash")
            .arg(bin.join(name))
            .env("WEIR_CONF_DIR", &conf)
            .env("WEIR_LOG_DIR", dir.path().join("log"))
            .env("WEIR_PID_DIR", &pid_dir)
            .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir"))
            .output()
            .expect("run script");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name}: {text}");
        text
    };
    let started = script("start-cluster.sh");
    assert_eq!(
        started.matches("Starting taskmanager daemon").count(),
        2,
        "{started}"
    );
    let rest = format!("127.0.0.1:{rest_port}");
    let begun = Instant::now();
    while TcpStream::connect(&rest).is_err() {
        assert!(
            begun.elapsed() < Duration::from_secs(20),
            "no REST endpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let overview = wait_for_task_managers(&rest, 2);
    assert_eq!(overview["slots-total"], 4);
    let pids = guard.pids();
    assert_eq!(pids.len(), 3, "one JobManager and two TaskManagers");
    assert!(pids.iter().all(|&p| alive(p)));

    let stopped = script("stop-cluster.sh");
    assert_eq!(stopped.matches("Stopping").count(), 3, "{stopped}");
    let begun = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            begun.elapsed() < Duration::from_secs(20),
            "processes still alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(guard.pids().is_empty(), "pid files are emptied");
}

#[test]
fn a_savepoint_and_a_stop_of_a_running_job_restore_at_another_parallelism_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let _tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    wait_for_task_managers(&rest, 2);
    let passage = read_passage();
    let text = passage.repeat(200);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    // Its sources pause after their first batch until a checkpoint an hour away.
    let paused = wordcount_manifest(dir.path(), Some(1));
    let id = submit_paused(&rest, &paused, 4, dir.path(), &input, "first");
    wait_for_state(&rest, &id, "RUNNING");

    let savepoints = dir.path().join("savepoints");
    let (ok, out, err) = weir(&["savepoint", "-m", &rest, &id, savepoints.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with(&format!("Triggering savepoint for job {id}.")),
        "{out}"
    );
    let path = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    let savepoint = path(&out);
    assert!(
        Path::new(&savepoint).join("_metadata").exists(),
        "{savepoint}"
    );
    wait_for_state(&rest, &id, "RUNNING");

    let (ok, out, err) = weir(&[
        "stop",
        "-m",
        &rest,
        "--savepoint-path",
        savepoints.to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with(&format!("Suspending job {id}.")), "{out}");
    let stopped_at = path(&out);
    assert_ne!(stopped_at, savepoint);
    wait_for_state(&rest, &id, "FINISHED");

    // Each savepoint restores, at parallelism 2, to the exact final counts.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).expect("dir");
    let job = wordcount_manifest(&plain, None);
    for (n, from) in [savepoint, stopped_at].iter().enumerate() {
        let output = dir.path().join(format!("restored-{n}.txt"));
        let (ok, out, err) = weir(&[
            "run",
            "-m",
            &rest,
            job.to_str().unwrap(),
            "-p",
            "2",
            "-s",
            from,
            "--arg",
            &format!("input={}", input.display()),
            "--arg",
            &format!("output={}", output.display()),
        ]);
        assert!(ok, "{out}{err}");
        let mut last = std::collections::BTreeMap::new();
        for line in std::fs::read_to_string(&output).expect("output").lines() {
            let (word, count) = line.rsplit_once(' ').expect("`word count`");
            let count: u64 = count.parse().expect("count");
            let top = last.entry(word.to_string()).or_insert(0);
            *top = (*top).max(count);
        }
        assert_eq!(last, independent_word_count(&text), "restored from {from}");
    }
}

#[test]
fn a_stop_with_drain_finishes_the_job_on_a_final_savepoint_that_resumes_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (jm, rpc, rest) = jobmanager(&config);
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let _tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    wait_for_task_managers(&rest, 2);
    let text = read_passage().repeat(200);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let paused = wordcount_manifest(dir.path(), Some(1));
    let id = submit_paused(&rest, &paused, 4, dir.path(), &input, "out");
    wait_for_state(&rest, &id, "RUNNING");

    let savepoints = dir.path().join("savepoints");
    let (ok, out, err) = weir(&[
        "stop",
        "--drain",
        "-m",
        &rest,
        "--savepoint-path",
        savepoints.to_str().unwrap(),
        &id,
    ]);
    assert!(ok, "{out}{err}");
    let drained_at = out
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    // It finished on its own (its sources ended), not by a cancel.
    wait_for_state(&rest, &id, "FINISHED");
    assert!(!jm.log().contains("Cancelling"), "{}", jm.log());
    // The final savepoint committed what the job read: some of the text, not all of it.
    let output = dir.path().join("out");
    let first = committed_lines(&output);
    let all: u64 = independent_word_count(&text).values().sum();
    assert!(
        !first.is_empty() && (first.len() as u64) < all,
        "{} of {all} counts committed",
        first.len()
    );

    // Resumed from it at parallelism 2 into the same output, the rest follows exactly once.
    let (ok, out, err) = weir(&[
        "run",
        "-m",
        &rest,
        paused.to_str().unwrap(),
        "-p",
        "2",
        "-s",
        &drained_at,
        "--checkpoint-dir",
        dir.path().join("chk").to_str().unwrap(),
        "--checkpoint-interval",
        "100ms",
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    let run = CheckpointedRun {
        text,
        output,
        checkpoints: dir.path().join("chk"),
    };
    run.assert_exactly_once();
}

#[test]
fn a_killed_jobmanager_restarted_recovers_its_running_job_which_finishes_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rpc_port, rest_port) = (free_port(), free_port());
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n[jobmanager]\njob-store = \"jobs\"\n\
             [jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = {rpc_port}\n\
             [rest]\naddress = \"127.0.0.1\"\nport = {rest_port}\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n"
        ),
    )
    .expect("config");
    let (mut jm, rpc, rest) = jobmanager(&config);
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    let _tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    wait_for_task_managers(&rest, 2);

    let (run, _, out) = checkpointed_run(dir.path(), &rest, true);
    let id = job_id_of(&out);
    // Mid-job: the sources wait for three checkpoints; the first is done.
    run.wait_for_a_checkpoint();
    jm.child.kill().expect("kill -9 the JobManager");
    let _ = jm.child.wait();

    let (jm, _, rest) = jobmanager(&config);
    jm.wait_for(&format!("Recovered JobGraph {id}"));
    wait_for_task_managers(&rest, 2);
    wait_for_state_within(&rest, &id, "FINISHED", Duration::from_secs(60));
    run.assert_exactly_once();
    // The job left the store as it ended.
    let started = Instant::now();
    while dir.path().join("jobs").join(&id).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "job store kept it"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `actual` equals `expected`; else says which lines are missing and which extra.
fn assert_same_lines(actual: &[String], expected: &[String]) {
    if actual == expected {
        return;
    }
    let mut extra = actual.to_vec();
    let mut missing = Vec::new();
    for line in expected {
        match extra.iter().position(|l| l == line) {
            Some(at) => {
                extra.swap_remove(at);
            }
            None => missing.push(line.clone()),
        }
    }
    panic!(
        "{} lines committed, {} expected; {} missing (e.g. {:?}), {} extra (e.g. {:?})",
        actual.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

/// Checks `answer` to `method path` against the description: a documented status, and the
/// required fields of its schema present (with `$ref`s followed).
fn check_answer(spec: &Value, template: &str, method: &str, status: u16, answer: &Value) {
    let operation = &spec["paths"][template][method];
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which the description does not list: {answer}"
    );
    let mut schema = &response["content"]["application/json"]["schema"];
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().expect("ref name");
        schema = &spec["components"]["schemas"][name];
    }
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().expect("field name");
        assert!(
            answer.get(field).is_some(),
            "{method} {template}: no `{field}` in {answer}"
        );
    }
}

#[test]
fn the_openapi_description_lists_every_route_and_matches_the_answers() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rest-api.json"),
        )
        .expect("docs/rest-api.json"),
    )
    .expect("the description is JSON");
    // Every route the server declares is described, with its methods, and nothing else: the
    // job routes, and the JobManager's own, which it answers leading or not.
    let mut served = std::collections::BTreeSet::new();
    for file in ["cluster/rest.rs", "cluster/standalone/jobmanager.rs"] {
        let source = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../host/src")
                .join(file),
        )
        .expect("the routes' source");
        // The routes, up to the fallback that ends them.
        let source: String = source.split_whitespace().collect();
        let source = source.split(".fallback(").next().expect("the router");
        for route in source.split(".route(\"").skip(1) {
            let (path, rest) = route.split_once('"').expect("a route's path");
            let handlers = rest.split(".route(").next().unwrap_or_default();
            for method in ["get", "post", "patch", "put", "delete"] {
                if handlers.contains(&format!("{method}(")) {
                    served.insert((path.to_string(), method.to_string()));
                }
            }
        }
    }
    let described: std::collections::BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    assert_eq!(served, described);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 1, "tm-1");
    wait_for_task_managers(&rest, 1);
    let unknown = "0123456789abcdef0123456789abcdef";
    let target = format!(
        "{{\"target-directory\": {:?}, \"targetDirectory\": {:?}}}",
        dir.path(),
        dir.path()
    );
    let calls: Vec<(&str, &str, String, Vec<u8>)> = vec![
        ("/overview", "get", "/overview".into(), vec![]),
        ("/leadership", "get", "/leadership".into(), vec![]),
        ("/taskmanagers", "get", "/taskmanagers".into(), vec![]),
        ("/config", "get", "/config".into(), vec![]),
        ("/jobs", "get", "/jobs".into(), vec![]),
        ("/jobs", "post", "/jobs".into(), b"not a job".to_vec()),
        ("/jobs/overview", "get", "/jobs/overview".into(), vec![]),
        ("/jobs/{id}", "get", format!("/jobs/{unknown}"), vec![]),
        (
            "/jobs/{id}/plan",
            "get",
            format!("/jobs/{unknown}/plan"),
            vec![],
        ),
        (
            "/jobs/{id}/execution-result",
            "get",
            format!("/jobs/{unknown}/execution-result"),
            vec![],
        ),
        (
            "/jobs/{id}/vertices/{vid}",
            "get",
            format!("/jobs/{unknown}/vertices/{unknown}"),
            vec![],
        ),
        (
            "/jobs/{id}/vertices/{vid}/backpressure",
            "get",
            format!("/jobs/{unknown}/vertices/{unknown}/backpressure"),
            vec![],
        ),
        (
            "/jobs/{id}/vertices/{vid}/watermarks",
            "get",
            format!("/jobs/{unknown}/vertices/{unknown}/watermarks"),
            vec![],
        ),
        (
            "/jobs/{id}/checkpoints",
            "get",
            format!("/jobs/{unknown}/checkpoints"),
            vec![],
        ),
        (
            "/jobs/{id}/exceptions",
            "get",
            format!("/jobs/{unknown}/exceptions"),
            vec![],
        ),
        (
            "/taskmanagers/{id}",
            "get",
            "/taskmanagers/tm-1".into(),
            vec![],
        ),
        (
            "/taskmanagers/{id}",
            "get",
            "/taskmanagers/tm-9".into(),
            vec![],
        ),
        ("/web/{file}", "get", "/web/nothing.js".into(), vec![]),
        (
            "/jobs/{id}",
            "patch",
            format!("/jobs/{unknown}?mode=cancel"),
            vec![],
        ),
        (
            "/jobs/{id}",
            "patch",
            format!("/jobs/{unknown}?mode=stop"),
            vec![],
        ),
        (
            "/jobs/{id}/savepoints",
            "post",
            format!("/jobs/{unknown}/savepoints"),
            target.clone().into_bytes(),
        ),
        (
            "/jobs/{id}/savepoints",
            "post",
            format!("/jobs/{unknown}/savepoints"),
            b"{}".to_vec(),
        ),
        (
            "/jobs/{id}/savepoints/{trigger}",
            "get",
            format!("/jobs/{unknown}/savepoints/abc"),
            vec![],
        ),
        (
            "/jobs/{id}/stop",
            "post",
            format!("/jobs/{unknown}/stop"),
            target.into_bytes(),
        ),
    ];
    for (template, method, path, body) in calls {
        let (status, answer) = call(&rest, &method.to_uppercase(), &path, &body);
        check_answer(&spec, template, method, status, &answer);
    }
    // And a job's own answers: running, then cancelled.
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "a b c\n".repeat(20_000)).expect("input");
    let id = submit_paused(&rest, &job, 1, dir.path(), &input, "out");
    wait_for_state(&rest, &id, "RUNNING");
    let (_, plan) = call(&rest, "GET", &format!("/jobs/{id}/plan"), &[]);
    let vertex = plan["plan"]["nodes"][0]["id"]
        .as_str()
        .expect("a vertex id")
        .to_string();
    for (template, path) in [
        ("/jobs/{id}", format!("/jobs/{id}")),
        ("/jobs/overview", "/jobs/overview".to_string()),
        ("/jobs/{id}/plan", format!("/jobs/{id}/plan")),
        (
            "/jobs/{id}/execution-result",
            format!("/jobs/{id}/execution-result"),
        ),
        (
            "/jobs/{id}/vertices/{vid}",
            format!("/jobs/{id}/vertices/{vertex}"),
        ),
        (
            "/jobs/{id}/vertices/{vid}/backpressure",
            format!("/jobs/{id}/vertices/{vertex}/backpressure"),
        ),
        ("/jobs/{id}/checkpoints", format!("/jobs/{id}/checkpoints")),
        ("/jobs/{id}/exceptions", format!("/jobs/{id}/exceptions")),
    ] {
        let (status, answer) = call(&rest, "GET", &path, &[]);
        assert_eq!(status, 200, "{path}: {answer}");
        check_answer(&spec, template, "get", status, &answer);
    }
    let body = format!("{{\"target-directory\": {:?}}}", dir.path().join("sp"));
    let (status, answer) = call(
        &rest,
        "POST",
        &format!("/jobs/{id}/savepoints"),
        body.as_bytes(),
    );
    check_answer(&spec, "/jobs/{id}/savepoints", "post", status, &answer);
    let trigger = answer["request-id"]
        .as_str()
        .expect("request id")
        .to_string();
    let (status, answer) = call(
        &rest,
        "GET",
        &format!("/jobs/{id}/savepoints/{trigger}"),
        &[],
    );
    check_answer(
        &spec,
        "/jobs/{id}/savepoints/{trigger}",
        "get",
        status,
        &answer,
    );
    let (status, answer) = call(&rest, "PATCH", &format!("/jobs/{id}?mode=cancel"), &[]);
    check_answer(&spec, "/jobs/{id}", "patch", status, &answer);
    assert_eq!(status, 202);
}

/// The word count over 400 copies of the passage (more than one source batch; the sources wait
/// after their first for `waits` checkpoints), submitted with checkpoints every 100 ms and
/// three restarts: the `weir run` process (detached: its output instead), the text, the output
/// and checkpoint directories.
struct CheckpointedRun {
    text: String,
    output: PathBuf,
    checkpoints: PathBuf,
}

impl CheckpointedRun {
    fn args(&self, rest: &str, job: &Path, input: &Path, detached: bool) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        if detached {
            args.push("-d".into());
        }
        for a in [
            "-m",
            rest,
            job.to_str().unwrap(),
            "--parallelism",
            "4",
            "--checkpoint-dir",
            self.checkpoints.to_str().unwrap(),
            "--checkpoint-interval",
            "100ms",
            "--restart-attempts",
            "3",
            "--restart-delay",
            "100ms",
            "--arg",
        ] {
            args.push(a.into());
        }
        args.push(format!("input={}", input.display()));
        args.push("--arg".into());
        args.push(format!("output={}", self.output.display()));
        args
    }

    /// Waits until a checkpoint of the job completed.
    fn wait_for_a_checkpoint(&self) {
        let job_dir = self.checkpoints.join("wordcount");
        let started = Instant::now();
        while !std::fs::read_dir(&job_dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().join("_metadata").exists())
        }) {
            assert!(started.elapsed() < Duration::from_secs(30), "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The committed output is the running counts of the text, each exactly once.
    fn assert_exactly_once(&self) {
        let mut expected: Vec<String> = independent_word_count(&self.text)
            .into_iter()
            .flat_map(|(w, n)| (1..=n).map(move |i| format!("{w} {i}")))
            .collect();
        expected.sort();
        assert_same_lines(&committed_lines(&self.output), &expected);
    }
}

/// Starts the checkpointed word count on the cluster at `rest` (see [`CheckpointedRun`]).
fn checkpointed_run(
    dir: &Path,
    rest: &str,
    detached: bool,
) -> (CheckpointedRun, Option<Process>, String) {
    let job = wordcount_manifest(dir, Some(3));
    let passage = read_passage();
    let text = passage.repeat(400);
    let input = dir.join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let run = CheckpointedRun {
        text,
        output: dir.join("out"),
        checkpoints: dir.join("chk"),
    };
    let args = run.args(rest, &job, &input, detached);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if detached {
        let (ok, out, err) = weir(&args);
        assert!(ok, "{out}{err}");
        (run, None, out)
    } else {
        (run, Some(Process::start(&args)), String::new())
    }
}

#[test]
fn a_job_wider_than_the_free_slots_waits_for_a_taskmanager_and_one_that_never_fits_fails_with_the_numbers()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n[jobmanager]\njob-store = \"jobs\"\n\
             slot-request-timeout = \"3s\"\n[jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n\
             [rest]\naddress = \"127.0.0.1\"\nport = 0\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n"
        ),
    )
    .expect("config");
    let (jm, rpc, rest) = jobmanager(&config);
    let _tm1 = taskmanager(&config, &rpc, 2, "tm-1");
    wait_for_task_managers(&rest, 1);
    let job = wordcount_manifest(dir.path(), None);
    let passage = read_passage();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, passage.repeat(20)).expect("input");
    let submit = |parallelism: &str, output: &str| {
        let args = [
            "run".to_string(),
            "-m".into(),
            rest.clone(),
            job.to_str().unwrap().into(),
            "-p".into(),
            parallelism.into(),
            "--arg".into(),
            format!("input={}", input.display()),
            "--arg".into(),
            format!("output={}", dir.path().join(output).display()),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::start(&args)
    };
    // Four subtasks, two slots: the job waits, and runs once a second TaskManager comes.
    let mut waiting = submit("4", "wide.txt");
    jm.wait_for("Waiting up to 3s for slots");
    let _tm2 = taskmanager(&config, &rpc, 2, "tm-2");
    let (status, log) = waiting.wait_exit();
    assert!(status.success(), "{log}");
    assert!(dir.path().join("wide.txt").exists());

    // Eight subtasks never fit four slots: it fails after the timeout, with the numbers.
    let started = Instant::now();
    let mut never = submit("8", "never.txt");
    let (status, log) = never.wait_exit();
    assert!(!status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "it did not wait"
    );
    assert!(log.contains("the job needs 8 task slots"), "{log}");
}

#[test]
fn a_second_jobmanager_on_a_job_store_in_use_is_refused_and_a_dead_ones_store_is_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (mut first, _, rest) = jobmanager(&config);
    let mut second = Process::start(&["jobmanager", "--config", config.to_str().unwrap()]);
    let (status, log) = second.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains(&format!(
            "is in use by the JobManager with pid {}",
            first.pid()
        )),
        "{log}"
    );
    // The first goes on serving.
    assert_eq!(get(&rest, "/overview")["taskmanagers"], 0);
    // Killed, it leaves its lock behind; the next JobManager takes the store over.
    first.child.kill().expect("kill -9");
    let _ = first.child.wait();
    let (third, _, _) = jobmanager(&config);
    assert!(third.log().contains("REST endpoint listening"));
}
