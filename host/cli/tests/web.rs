//! What can be watched from outside: the metrics for Prometheus (checked by `promtool`), the
//! REST endpoint and web UI of `weir run --web-port`, and the web UI in a real browser
//! (Debian's Chromium, driven over WebDriver by chromedriver), all on loopback, every process
//! stopped by its own pid.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// `GET path` from an HTTP server: status and body as text.
fn get_text(address: &str, path: &str) -> (u16, String) {
    http(address, "GET", path, &[])
}

fn http(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("request");
    stream.write_all(body).expect("body");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    // Read the head, then the body by its length (chromedriver keeps the connection open).
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).expect("response");
        assert!(n > 0, "the connection closed before the head ended");
        response.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &response[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut chunk).expect("response");
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = String::from_utf8_lossy(&response[head_end..]).to_string();
    let body = if chunked { unchunk(&body) } else { body };
    (status, body)
}

/// The body of a chunked HTTP response.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Runs `promtool check metrics` on `text`; its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; `.ci/run` installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_metrics_of_the_jobmanager_and_of_a_taskmanager_pass_promtool_and_name_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 2, "tm-1");
    wait_for_task_managers(&rest, 1);
    let tms = get(&rest, "/taskmanagers");
    let metrics_address = tms["taskmanagers"][0]["metricsAddress"]
        .as_str()
        .expect("the TaskManager's metrics address")
        .to_string();
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(200)).expect("input");
    let id = submit_paused(&rest, &job, 2, dir.path(), &input, "out");
    wait_for_state(&rest, &id, "RUNNING");
    // The sources read their first batch, then wait.
    let started = Instant::now();
    let jm_text = loop {
        let (status, text) = get_text(&rest, "/metrics");
        assert_eq!(status, 200, "{text}");
        if text.lines().any(|l| {
            l.starts_with("weir_task_records_in_total{")
                && l.contains("task_name=\"lines -> tokenize -> key-by-word\"")
                && !l.ends_with(" 0")
        }) {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for expected in [
        "weir_jobmanager_taskmanagers 1".to_string(),
        "weir_jobmanager_task_slots 2".to_string(),
        "weir_jobmanager_jobs{state=\"RUNNING\"} 1".to_string(),
        format!("weir_job_restarts{{job_id=\"{id}\",job_name=\"wordcount\"}} 0"),
        format!(
            "weir_task_records_out_total{{job_id=\"{id}\",job_name=\"wordcount\",\
             subtask_index=\"1\",task_name=\"count\",tm_id=\"tm-1\"}}"
        ),
    ] {
        assert!(
            jm_text.contains(&expected),
            "no `{expected}` in:\n{jm_text}"
        );
    }
    promtool(&jm_text).unwrap_or_else(|e| panic!("{e}\n{jm_text}"));

    let (status, tm_text) = get_text(&metrics_address, "/metrics");
    assert_eq!(status, 200, "{tm_text}");
    for expected in [
        "weir_taskmanager_task_slots{tm_id=\"tm-1\"} 2",
        "weir_taskmanager_task_slots_available{tm_id=\"tm-1\"} 0",
        "weir_network_buffers_in_use{tm_id=\"tm-1\"}",
        "weir_task_guest_memory_bytes{",
    ] {
        assert!(tm_text.contains(expected), "no `{expected}` in:\n{tm_text}");
    }
    // Guests run, so their linear memory is more than nothing.
    assert!(
        tm_text
            .lines()
            .filter(|l| l.starts_with("weir_task_guest_memory_bytes{"))
            .any(|l| !l.ends_with(" 0")),
        "{tm_text}"
    );
    promtool(&tm_text).unwrap_or_else(|e| panic!("{e}\n{tm_text}"));
}

#[test]
fn weir_run_with_a_web_port_serves_the_ui_the_rest_api_and_metrics_of_its_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(200)).expect("input");
    let run = Process::start(&[
        "run",
        "--web-port",
        "0",
        job.to_str().unwrap(),
        "--checkpoint-dir",
        dir.path().join("chk").to_str().unwrap(),
        "--checkpoint-interval",
        "60m",
        "--arg",
        &format!("input={}", input.display()),
        "--arg",
        &format!("output={}", dir.path().join("out").display()),
    ]);
    let line = run.wait_for("Web UI: http://");
    let url = line.trim().strip_prefix("Web UI: http://").expect("url");
    let (address, fragment) = url.split_once('/').expect("address and page");
    let id = fragment.strip_prefix("#/job/").expect("the job's page");
    let (status, page) = get_text(address, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<title>weir</title>"), "{page}");
    let (status, script) = get_text(address, "/web/app.js");
    assert_eq!(status, 200);
    assert!(script.contains("function graphSvg"), "the UI script");
    let (status, missing) = get_text(address, "/web/missing.js");
    assert_eq!(status, 404, "{missing}");
    wait_for_state(address, id, "RUNNING");
    let tms = get(address, "/taskmanagers");
    assert_eq!(tms["taskmanagers"][0]["id"], "embedded-0", "{tms}");
    let (status, metrics) = get_text(address, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("weir_job_restarts{{job_id=\"{id}\"")),
        "{metrics}"
    );
    // The embedded cluster takes no uploads; a malformed request is 400 either way.
    let (status, refused) = http(address, "POST", "/jobs", b"not a job");
    assert_eq!(status, 400, "{refused}");
    let (status, _) = http(address, "PATCH", &format!("/jobs/{id}?mode=cancel"), &[]);
    assert_eq!(status, 202);
    let mut run = run;
    let (status, log) = run.wait_exit();
    assert!(
        !status.success(),
        "a cancelled job is not a success:\n{log}"
    );
    assert!(log.contains("cancelled"), "{log}");
}

/// A chromedriver process, stopped by its pid when dropped.
struct ChromeDriver {
    child: Child,
    address: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session in headless Chromium.
struct Browser {
    driver: ChromeDriver,
    session: String,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's `chromium-driver`; `.ci/run` installs it)");
        let driver = ChromeDriver {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(&driver.address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no chromedriver"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let (status, answer) = webdriver(&driver.address, "POST", "/session", &capabilities);
        assert_eq!(status, 200, "{answer}");
        let session = answer["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Browser { driver, session }
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = webdriver(&self.driver.address, method, &path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", &json!({ "url": url }));
    }

    /// Runs `script` in the page; what it returns.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            &json!({"script": script, "args": []}),
        )
    }

    /// Waits up to 30 s for `script` to return something `ready` accepts.
    fn wait_until(&self, script: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(script);
            if ready(&value) {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the page never showed it: {value}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The WebDriver id of the element `css` selects.
    fn element(&self, css: &str) -> String {
        let element = self.call(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_string()
    }

    /// Clicks the element `css` selects; found again if the page replaced it meanwhile.
    fn click(&self, css: &str) {
        for _ in 0..20 {
            let id = self.element(css);
            let path = format!("/session/{}/element/{id}/click", self.session);
            let (status, answer) = webdriver(&self.driver.address, "POST", &path, &json!({}));
            if status == 200 {
                return;
            }
            assert!(
                answer["value"]["error"] == "stale element reference",
                "click {css}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{css} kept being replaced");
    }

    /// Types `text` into the element `css` selects.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            &json!({ "text": text }),
        );
    }

    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", &Value::Null);
        base64_decode(encoded.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = webdriver(&self.driver.address, "DELETE", &path, &Value::Null);
    }
}

fn webdriver(address: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, text) = http(address, method, path, &body);
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}

fn hostile_component() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    weir_guest_build::compile(&root, &[("hostile", "hostile")])
        .expect("build the hostile guest")
        .remove(0)
}

/// The job page in Chromium: a source feeding a slow operator is drawn back-pressured (high)
/// and the slow one not; the checkpoints tab lists completed checkpoints; the cancel button
/// cancels the job. With `WEIR_SCREENSHOT=FILE` it also saves the job page as a PNG (how
/// `docs/web-ui.png` is made; see the README).
#[test]
fn the_job_page_in_chromium_shows_backpressure_checkpoints_and_cancels_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), Some(SECRET), "");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 2, "tm-1");
    wait_for_task_managers(&rest, 1);
    let component = hostile_component();
    let job = dir.path().join("slow.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"slow-sink\"\n\
             [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = 1000000000\n\
             [[operator]]\nid = \"slow\"\ncomponent = {component:?}\ninput = \"numbers\"\n\
             edge = \"rebalance\"\nconfig = {{ work = 20000 }}\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"slow\"\n"
        ),
    )
    .expect("manifest");
    let (ok, out, err) = weir(&[
        "run",
        "-d",
        "-m",
        &rest,
        job.to_str().unwrap(),
        "--checkpoint-dir",
        dir.path().join("chk").to_str().unwrap(),
        "--checkpoint-interval",
        "200ms",
    ]);
    assert!(ok, "{out}{err}");
    let id = job_id_of(&out);
    wait_for_state(&rest, &id, "RUNNING");

    let browser = Browser::start(&dir.path().join("chromium-profile"));
    browser.open(&format!("http://{rest}/#/job/{id}"));
    let levels = browser.wait_until(
        "return Array.from(document.querySelectorAll('g.vertex'))\
           .map(g => [g.dataset.vertexName, g.dataset.backpressure]);",
        |v| {
            let pairs = v.as_array().map(Vec::as_slice).unwrap_or_default();
            pairs.len() == 2 && pairs[0][1] == "high"
        },
    );
    assert_eq!(
        levels,
        json!([["numbers", "high"], ["slow -> out", "ok"]]),
        "back-pressure as drawn"
    );
    if let Some(file) = std::env::var_os("WEIR_SCREENSHOT") {
        // Once the rates are measured over an interval, not since the start.
        browser.wait_until(
            "return document.querySelector('g.vertex').textContent.includes('Busy 0%');",
            |v| v == false,
        );
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&file, browser.screenshot()).expect("write the screenshot");
    }

    browser.click("#tab-checkpoints");
    let completed = browser.wait_until(
        "return document.querySelectorAll(\
           '#checkpoint-history tr[data-checkpoint-status=COMPLETED]').length;",
        |v| v.as_u64() >= Some(1),
    );
    assert!(completed.as_u64() >= Some(1));

    browser.click("#cancel-job");
    wait_for_state(&rest, &id, "CANCELED");
    let shown = browser.wait_until(
        "return document.getElementById('job-state').textContent;",
        |v| v == "CANCELED",
    );
    assert_eq!(shown, "CANCELED");
    // The slot came back.
    let started = Instant::now();
    while get(&rest, "/overview")["slots-available"] != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slots not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A failed job's page shows its exception, not an empty page.
    let failing = dir.path().join("failing.toml");
    std::fs::write(
        &failing,
        format!(
            "name = \"failing\"\n\
             [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = 100\n\
             [[operator]]\nid = \"fail\"\ncomponent = {component:?}\noperator = \"fail-at\"\n\
             input = \"numbers\"\nconfig = {{ at = 10, how = \"error\" }}\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"fail\"\n"
        ),
    )
    .expect("manifest");
    let (ok, out, err) = weir(&["run", "-d", "-m", &rest, failing.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let failed = job_id_of(&out);
    wait_for_state(&rest, &failed, "FAILED");
    browser.open(&format!("http://{rest}/#/job/{failed}"));
    let shown = browser.wait_until(
        "const f = document.getElementById('job-failure'); return f ? f.textContent : null;",
        |v| v.is_string(),
    );
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.contains("refusing record 10")),
        "{shown}"
    );
    browser.click("#tab-exceptions");
    let history = browser.wait_until(
        "return Array.from(document.querySelectorAll('.exception-entry')).map(e => e.textContent);",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    );
    assert!(
        history[0]
            .as_str()
            .is_some_and(|t| t.contains("task numbers -> fail -> out (1/1) on TaskManager tm-1")),
        "{history}"
    );
}

/// With tenants, the web UI asks for a token and shows the jobs of the tenant it names only.
#[test]
fn the_web_ui_asks_for_a_token_and_shows_that_tenants_jobs_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob) = ("alice-web-0123456789abcdef", "bob-web-0123456789abcdef");
    let hash = weir_host::cluster::standalone::tenants::token_hash;
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"alice\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [[tenant]]\nname = \"bob\"\ntokens = [{:?}]\n",
            hash(alice),
            dir.path().display(),
            hash(bob)
        ),
    )
    .expect("tenants");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n[jobmanager]\njob-store = \"jobs\"\n\
             tenants-file = {:?}\n[jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n\
             [rest]\naddress = \"127.0.0.1\"\nport = 0\n",
            tenants.display()
        ),
    )
    .expect("config");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 2, "tm-1");
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(50)).expect("input");
    let (ok, out, err) = weir_as(
        alice,
        &[
            "run",
            "-d",
            "-m",
            &rest,
            job.to_str().unwrap(),
            "--checkpoint-dir",
            dir.path().join("chk").to_str().unwrap(),
            "--checkpoint-interval",
            "60m",
            "--arg",
            &format!("input={}", input.display()),
            "--arg",
            &format!("output={}", dir.path().join("out").display()),
        ],
    );
    assert!(ok, "{out}{err}");
    let id = job_id_of(&out);

    let browser = Browser::start(&dir.path().join("chromium-profile"));
    let jobs_shown = "const rows = document.querySelectorAll('tr[data-job-id]'); \
                      return document.getElementById('token-form') ? 'asks' : \
                      Array.from(rows).map(r => r.dataset.jobId).join(',');";
    for (token, expected) in [(bob, String::new()), (alice, id.clone())] {
        browser.open(&format!("http://{rest}/#/jobs"));
        browser.eval("sessionStorage.clear(); location.reload(); return null;");
        browser.wait_until(jobs_shown, |v| v == "asks");
        browser.type_into("#token", token);
        browser.click("#token-form button");
        if expected.is_empty() {
            // Bob's list is shown, and it is empty.
            let main = browser
                .wait_until("return document.querySelector('main').textContent;", |v| {
                    v.as_str().is_some_and(|t| t.contains("No jobs yet"))
                });
            assert!(main.as_str().is_some_and(|t| !t.contains(&id)), "{main}");
        } else {
            let shown = browser.wait_until(jobs_shown, |v| v != "asks" && v != "");
            assert_eq!(shown, expected.as_str());
        }
    }
}
