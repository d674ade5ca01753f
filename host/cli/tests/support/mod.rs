//! What the process tests share: processes of the built `weir` binary, each killed by its own
//! pid when dropped; cluster configurations on loopback with free ports; REST calls; the word
//! count guest and an independent count to check it against. Each test file uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A `weir` process whose stderr is collected as it runs; killed when dropped.
pub struct Process {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    pub fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 20 s for a log line containing `text`; the line.
    pub fn wait_for(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(text)) {
                return line.to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no `{text}` in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to 20 s for the process to exit; its exit status and log.
    pub fn wait_exit(&mut self) -> (std::process::ExitStatus, String) {
        self.wait_exit_within(Duration::from_secs(20))
    }

    /// Waits up to `limit` for the process to exit; its exit status and log.
    pub fn wait_exit_within(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log());
            }
            assert!(
                started.elapsed() < limit,
                "the process did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to this process, by its pid.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster configuration in `dir` with free ports and a fast heartbeat.
pub fn config(dir: &Path, secret: Option<&str>, extra: &str) -> PathBuf {
    let path = dir.join(format!(
        "weir-{}.toml",
        secret.map_or(0, str::len) + extra.len()
    ));
    let secret = secret.map_or(String::new(), |s| format!("[cluster]\nsecret = \"{s}\"\n"));
    std::fs::write(
        &path,
        format!(
            "{secret}[jobmanager]\njob-store = \"jobs\"\n[jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n\
             [rest]\naddress = \"127.0.0.1\"\nport = 0\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n{extra}"
        ),
    )
    .expect("config");
    path
}

/// A started JobManager and its RPC and REST addresses.
pub fn jobmanager(config: &Path) -> (Process, String, String) {
    let jm = Process::start(&["jobmanager", "--config", config.to_str().unwrap()]);
    let rpc = jm.wait_for("RPC endpoint listening on");
    let rest = jm.wait_for("REST endpoint listening on");
    let rpc = rpc.rsplit(' ').next().unwrap().to_string();
    let rest = rest.rsplit("http://").next().unwrap().to_string();
    (jm, rpc, rest)
}

pub fn taskmanager(config: &Path, rpc: &str, slots: u32, id: &str) -> Process {
    Process::start(&[
        "taskmanager",
        "--config",
        config.to_str().unwrap(),
        "--jobmanager",
        rpc,
        "--slots",
        &slots.to_string(),
        "--resource-id",
        id,
    ])
}

/// `GET path` from the REST endpoint at `address`, as JSON.
pub fn get(address: &str, path: &str) -> Value {
    let mut stream = TcpStream::connect(address).expect("connect to REST");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits up to 20 s until `GET /overview` shows `taskmanagers` TaskManagers.
pub fn wait_for_task_managers(rest: &str, taskmanagers: u64) -> Value {
    let started = Instant::now();
    loop {
        let overview = get(rest, "/overview");
        if overview["taskmanagers"] == taskmanagers {
            return overview;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{overview} never showed {taskmanagers} TaskManagers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The word count example's component, built from this repository (a no-op when the
/// end-to-end tests' build built it already).
pub fn wordcount_component() -> PathBuf {
    guest_component("wordcount", "wordcount")
}

/// The component of guest crate `package` (file stem `stem`), built once per test process.
pub fn guest_component(package: &str, stem: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(p, _)| p == package) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = weir_guest_build::compile(&root, &[(package, stem)])
        .unwrap_or_else(|e| panic!("build guest {package}: {e}"))
        .remove(0);
    built.push((package.to_string(), path.clone()));
    path
}

/// Lower-cased alphanumeric runs and how often each occurs: the count the word count must
/// produce, computed here independently.
pub fn independent_word_count(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    let mut word = String::new();
    for c in text.to_lowercase().chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() {
            word.push(c);
        } else if !word.is_empty() {
            *counts.entry(std::mem::take(&mut word)).or_insert(0) += 1;
        }
    }
    counts
}

/// The word count manifest with its component from this repository; its source, after its
/// first batch, waits for `checkpoints` completed checkpoints (so they fall mid-job).
pub fn wordcount_manifest(dir: &Path, checkpoints: Option<u32>) -> PathBuf {
    let component = wordcount_component();
    let mut manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wordcount/job.toml"),
    )
    .expect("example manifest")
    .replace(
        "../../target/wasm32-wasip2/release/wordcount.wasm",
        component.to_str().expect("utf-8 path"),
    );
    if let Some(n) = checkpoints {
        manifest = manifest.replacen(
            "kind = \"file\"\n",
            &format!("kind = \"file\"\nwait_for_checkpoints = {n}\n"),
            1,
        );
    }
    let job = dir.join("job.toml");
    std::fs::write(&job, manifest).expect("manifest");
    job
}

/// Every line of the committed part files of `dir` (hidden pending files excluded), sorted.
pub fn committed_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

/// Runs `weir args...` to its end; its exit status, stdout and stderr.
pub fn weir(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits up to 20 s until `GET /jobs/:id` shows `state`.
pub fn wait_for_state(rest: &str, id: &str, state: &str) {
    wait_for_state_within(rest, id, state, Duration::from_secs(20))
}

pub fn wait_for_state_within(rest: &str, id: &str, state: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let job = get(rest, &format!("/jobs/{id}"));
        if job["state"] == state {
            return;
        }
        assert!(started.elapsed() < limit, "{job} never {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to 20 s until `GET /jobs/:id`, asked with `token`, shows `state`.
pub fn wait_for_state_as(rest: &str, token: &str, id: &str, state: &str) {
    let started = Instant::now();
    loop {
        let (_, _, body) = call_as(rest, Some(token), "GET", &format!("/jobs/{id}"), &[]);
        let job: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if job["state"] == state {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{job} never showed {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `weir args...` with `WEIR_TOKEN=token`: its exit status, stdout and stderr.
pub fn weir_as(token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .env("WEIR_TOKEN", token)
        .args(args)
        .output()
        .expect("run weir");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free port on loopback (bound, then released for the process that takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `method path` with `body` to the REST endpoint: status and JSON.
pub fn call(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, body) = call_as(address, None, method, path, body);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// `method path` with `body`, presenting `token` if any: status, head and body.
pub fn call_as(
    address: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to REST");
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("request");
    stream.write_all(body).expect("body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

pub fn job_id_of(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// The text of the repository's test passage.
pub fn read_passage() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/passage.txt"),
    )
    .expect("passage")
}

/// Submits `job` detached at `parallelism`, with a checkpoint every hour under `dir/chk` (its
/// sources, waiting for one, pause after their first batch), writing `dir/output`: its id.
pub fn submit_paused(
    rest: &str,
    job: &Path,
    parallelism: u32,
    dir: &Path,
    input: &Path,
    output: &str,
) -> String {
    let parallelism = parallelism.to_string();
    let (ok, out, err) = weir(&[
        "run",
        "-d",
        "-m",
        rest,
        job.to_str().unwrap(),
        "-p",
        &parallelism,
        "--checkpoint-dir",
        dir.join("chk").to_str().unwrap(),
        "--checkpoint-interval",
        "60m",
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", dir.join(output).display()),
    ]);
    assert!(ok, "{out}{err}");
    job_id_of(&out)
}

/// The highest count of each word in `weir run`'s output: its final count.
pub fn final_counts(output: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let mut last = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(output).expect("output").lines() {
        let (word, count) = line.rsplit_once(' ').expect("`word count`");
        let count: u64 = count.parse().expect("count");
        let top = last.entry(word.to_string()).or_insert(0);
        *top = (*top).max(count);
    }
    last
}

/// `weir run job` of the word count on `copies` of the passage, written in `dir`: it must
/// succeed, and its final counts equal an independent count. Its stderr.
pub fn runs_word_count_exactly(job: &Path, dir: &Path, copies: usize) -> String {
    let text = read_passage().repeat(copies);
    let input = dir.join("input.txt");
    std::fs::write(&input, &text).expect("input");
    let output = dir.join(format!(
        "counts-{}.txt",
        job.file_stem()
            .map_or("job".into(), |s| s.to_string_lossy())
    ));
    let (ok, out, err) = weir(&[
        "run",
        job.to_str().unwrap(),
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(final_counts(&output), independent_word_count(&text));
    err
}

/// Kills the processes the start scripts recorded in `pid_dir`, whatever the test did.
pub struct ScriptPids(pub PathBuf);

impl ScriptPids {
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for ScriptPids {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
