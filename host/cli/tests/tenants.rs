//! Tenants on a standalone cluster: every REST call names its tenant by token, a tenant sees
//! and touches only its own jobs (another's is 404, as if it did not exist), submissions stay
//! within the tenant's quota, and a rewritten tenants file rotates tokens without a restart.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

const ALICE: &str = "alice-token-0123456789abcdef0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef0123456789abcdef";

/// The SHA-256 of `token` as the tenants file holds it (what `weir token` prints).
fn hash(token: &str) -> String {
    weir_host::cluster::standalone::tenants::token_hash(token)
}

/// Alice (with quotas) may reach `alices`, Bob `bobs`; ops is the admin.
fn tenants_file(path: &Path, alice_token: &str, alices: &Path, bobs: &Path) {
    std::fs::write(
        path,
        format!(
            "[[tenant]]\nname = \"alice\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [tenant.quota]\nslots = 2\nparallelism = 2\nrunning-jobs = 1\n\
             call-deadline = \"10s\"\n\
             [[tenant]]\nname = \"bob\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [[tenant]]\nname = \"ops\"\nadmin = true\ntokens = [{:?}]\n",
            hash(alice_token),
            alices.display(),
            hash(BOB),
            bobs.display(),
            hash(OPS)
        ),
    )
    .expect("tenants file");
}

/// A cluster configuration whose JobManager serves the tenants of `tenants`.
fn tenant_config(dir: &Path, tenants: &Path) -> PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n[jobmanager]\njob-store = \"jobs\"\n\
             tenants-file = {:?}\n[jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = 0\n\
             [rest]\naddress = \"127.0.0.1\"\nport = 0\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n",
            tenants.display()
        ),
    )
    .expect("config");
    path
}

/// `method path` with `token` (if any): status and JSON answer; a 401 says how to answer it.
fn call_as(
    address: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let (status, head, body) = support::call_as(address, token, method, path, body.as_bytes());
    if status == 401 {
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
    }
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_tenant_sees_and_touches_only_its_own_jobs_and_stays_within_its_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    tenants_file(&tenants, ALICE, dir.path(), dir.path());
    let config = tenant_config(dir.path(), &tenants);
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 4, "tm-1");

    // No token, or a wrong one: 401 on every call but the web UI's files.
    for token in [None, Some("not-a-token")] {
        for path in ["/overview", "/jobs", "/taskmanagers", "/metrics", "/config"] {
            let (status, answer) = call_as(&rest, token, "GET", path, "");
            assert_eq!(status, 401, "{path} with {token:?}: {answer}");
        }
    }
    let (status, _) = call_as(&rest, None, "GET", "/", "");
    assert_eq!(status, 200, "the UI's page asks for a token itself");
    let started = std::time::Instant::now();
    while call_as(&rest, Some(OPS), "GET", "/overview", "").1["taskmanagers"] != 1 {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Alice's job.
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(50)).expect("input");
    let run = |token: &str, parallelism: &str, extra: &[&str]| {
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "-m".into(),
            rest.clone(),
            job.to_str().unwrap().into(),
            "-p".into(),
            parallelism.into(),
            "--checkpoint-dir".into(),
            dir.path().join("chk").to_str().unwrap().into(),
            "--checkpoint-interval".into(),
            "60m".into(),
            "--arg".into(),
            format!("input={}", input.display()),
            "--arg".into(),
            format!(
                "output={}",
                dir.path().join(format!("out-{parallelism}")).display()
            ),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        weir_as(token, &args)
    };
    let (ok, out, err) = run(ALICE, "2", &[]);
    assert!(ok, "{out}{err}");
    let id = job_id_of(&out);
    let (_, plan) = call_as(&rest, Some(ALICE), "GET", &format!("/jobs/{id}/plan"), "");
    let vertex = plan["plan"]["nodes"][0]["id"]
        .as_str()
        .expect("vertex")
        .to_string();

    // Bob: every endpoint of Alice's job is 404, one by one, and his lists leave it out.
    let target = format!("{{\"target-directory\": {:?}}}", dir.path().join("sp"));
    for (method, path, body) in [
        ("GET", format!("/jobs/{id}"), String::new()),
        ("GET", format!("/jobs/{id}/execution-result"), String::new()),
        ("GET", format!("/jobs/{id}/plan"), String::new()),
        (
            "GET",
            format!("/jobs/{id}/vertices/{vertex}"),
            String::new(),
        ),
        (
            "GET",
            format!("/jobs/{id}/vertices/{vertex}/backpressure"),
            String::new(),
        ),
        ("GET", format!("/jobs/{id}/checkpoints"), String::new()),
        ("GET", format!("/jobs/{id}/exceptions"), String::new()),
        ("POST", format!("/jobs/{id}/savepoints"), target.clone()),
        ("GET", format!("/jobs/{id}/savepoints/0123"), String::new()),
        ("POST", format!("/jobs/{id}/stop"), target.clone()),
        ("PATCH", format!("/jobs/{id}?mode=cancel"), String::new()),
    ] {
        let (status, answer) = call_as(&rest, Some(BOB), method, &path, &body);
        assert_eq!(status, 404, "bob: {method} {path}: {answer}");
        assert_eq!(
            answer["errors"][0],
            format!("no job with id {id}"),
            "{path}"
        );
    }
    for path in ["/jobs", "/jobs/overview"] {
        let (_, answer) = call_as(&rest, Some(BOB), "GET", path, "");
        assert!(!answer.to_string().contains(&id), "bob's {path}: {answer}");
    }
    assert_eq!(
        call_as(&rest, Some(BOB), "GET", "/overview", "").1["jobs-running"],
        0
    );
    let (ok, _, err) = weir_as(BOB, &["cancel", "-m", &rest, &id]);
    assert!(
        !ok && err.contains(&format!("no job with id {id}")),
        "{err}"
    );
    // Alice and the operator see it.
    for token in [ALICE, OPS] {
        let (status, answer) = call_as(&rest, Some(token), "GET", &format!("/jobs/{id}"), "");
        assert_eq!(
            (status, answer["state"].as_str()),
            (200, Some("RUNNING")),
            "{answer}"
        );
    }
    let (ok, out, err) = weir_as(ALICE, &["list", "-m", &rest, "-r"]);
    assert!(ok && out.contains(&id), "{out}{err}");
    // The cluster's metrics are the operator's.
    assert_eq!(call_as(&rest, Some(ALICE), "GET", "/metrics", "").0, 403);
    let (ok, out, _) = weir_as(OPS, &["list", "-m", &rest, "-r"]);
    assert!(ok && out.contains(&id), "{out}");

    // Alice's quota, with the numbers: parallelism, running jobs, the call deadline.
    let (ok, _, err) = run(ALICE, "3", &[]);
    assert!(!ok);
    assert!(
        err.contains("tenant `alice` is over its `parallelism` quota: the job asks for parallelism 3, the quota is 2"),
        "{err}"
    );
    let (ok, _, err) = run(ALICE, "1", &[]);
    assert!(!ok);
    assert!(
        err.contains("over its `running-jobs` quota: the job asks for 1, its running jobs hold 1, the quota is 1"),
        "{err}"
    );
    // Bob has no quota; his job runs beside Alice's.
    let (ok, out, err) = run(BOB, "2", &[]);
    assert!(ok, "{out}{err}");
    let bobs = job_id_of(&out);
    assert!(
        !call_as(&rest, Some(ALICE), "GET", "/jobs", "")
            .1
            .to_string()
            .contains(&bobs)
    );

    // Alice cancels her own job; then a job asking for more call time than her quota is refused.
    let (ok, out, err) = weir_as(ALICE, &["cancel", "-m", &rest, &id]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(ALICE, "1", &["--call-deadline", "60s"]);
    assert!(!ok);
    assert!(
        err.contains("over its `call-deadline` quota: the job asks for 60s, the quota is 10s"),
        "{err}"
    );
    let (ok, out, err) = weir_as(BOB, &["cancel", "-m", &rest, &bobs]);
    assert!(ok, "{out}{err}");
    // Without a token the CLI says what is missing.
    let (ok, _, err) = weir(&["list", "-m", &rest]);
    assert!(
        !ok && err.contains("give a token with --token or WEIR_TOKEN"),
        "{err}"
    );
}

#[test]
fn a_rewritten_tenants_file_rotates_a_token_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    tenants_file(&tenants, ALICE, dir.path(), dir.path());
    let config = tenant_config(dir.path(), &tenants);
    let (jm, _, rest) = jobmanager(&config);
    assert_eq!(call_as(&rest, Some(ALICE), "GET", "/jobs", "").0, 200);
    let rotated = "alice-rotated-0123456789abcdef0123456789abcdef";
    tenants_file(&tenants, rotated, dir.path(), dir.path());
    assert_eq!(call_as(&rest, Some(ALICE), "GET", "/jobs", "").0, 401);
    assert_eq!(call_as(&rest, Some(rotated), "GET", "/jobs", "").0, 200);
    // A broken file keeps the tenants it had, and the JobManager says why.
    std::fs::write(&tenants, "[[tenant]]\nname = ").expect("broken");
    assert_eq!(call_as(&rest, Some(rotated), "GET", "/jobs", "").0, 200);
    jm.wait_for("keeping the tenants read before");
    assert!(jm.log().contains("Read the tenants file"), "{}", jm.log());
}

#[test]
fn a_tenant_reaches_only_its_granted_directories_whatever_the_path_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alices, bobs) = (dir.path().join("alice"), dir.path().join("bob"));
    std::fs::create_dir_all(&alices).expect("alice's");
    std::fs::create_dir_all(&bobs).expect("bob's");
    let tenants = dir.path().join("tenants.toml");
    tenants_file(&tenants, ALICE, &alices, &bobs);
    let config = tenant_config(dir.path(), &tenants);
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 4, "tm-1");
    let job = wordcount_manifest(dir.path(), Some(1));
    let text = read_passage().repeat(50);
    for home in [&alices, &bobs] {
        std::fs::write(home.join("input.txt"), &text).expect("input");
    }
    let run =
        |token: &str, input: &Path, output: &Path, checkpoints: &Path, restore: Option<&Path>| {
            let mut args = vec![
                "run".to_string(),
                "-d".into(),
                "-m".into(),
                rest.clone(),
                job.to_str().unwrap().into(),
                "-p".into(),
                "1".into(),
                "--checkpoint-dir".into(),
                checkpoints.to_str().unwrap().into(),
                "--checkpoint-interval".into(),
                "60m".into(),
                "--arg".into(),
                format!("input={}", input.display()),
                "--arg".into(),
                format!("output={}", output.display()),
            ];
            if let Some(path) = restore {
                args.push("-s".into());
                args.push(path.to_str().unwrap().into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            weir_as(token, &args)
        };
    // Bob's job, and a savepoint of it in his directory.
    let (ok, out, err) = run(
        BOB,
        &bobs.join("input.txt"),
        &bobs.join("out"),
        &bobs.join("chk"),
        None,
    );
    assert!(ok, "{out}{err}");
    let bobs_job = job_id_of(&out);
    wait_for_state_as(&rest, BOB, &bobs_job, "RUNNING");
    let (ok, out, err) = weir_as(
        BOB,
        &[
            "savepoint",
            "-m",
            &rest,
            &bobs_job,
            bobs.join("sp").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let savepoint = PathBuf::from(
        out.lines()
            .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
            .expect("savepoint path"),
    );
    let relative = savepoint.strip_prefix(&bobs).expect("under bob's");

    // Alice, by every path that leads to Bob's savepoint: absolute, `..`, a symlink.
    std::os::unix::fs::symlink(&bobs, alices.join("link")).expect("symlink");
    let mine = (
        alices.join("input.txt"),
        alices.join("out"),
        alices.join("chk"),
    );
    for crafted in [
        savepoint.clone(),
        alices.join("..").join("bob").join(relative),
        alices.join("link").join(relative),
    ] {
        let (ok, _, err) = run(ALICE, &mine.0, &mine.1, &mine.2, Some(&crafted));
        assert!(!ok, "{}", crafted.display());
        assert!(
            err.contains("tenant `alice` may not reach")
                && err.contains(
                    "(the savepoint to start from): it is outside the directories granted to it"
                ),
            "{}: {err}",
            crafted.display()
        );
    }
    // Nor by a job name that climbs out of the checkpoint directory, in an upload crafted
    // past the CLI's checks.
    let args = std::collections::BTreeMap::from([
        ("input".to_string(), mine.0.display().to_string()),
        ("output".to_string(), mine.1.display().to_string()),
    ]);
    let mut graph = weir_host::job::load_manifest(&job, &args)
        .expect("manifest")
        .job_graph(Some(1))
        .expect("graph");
    graph.name = "../bob/chk".into();
    let mut crafted = weir_host::cluster::standalone::JobSubmission::new(graph).expect("upload");
    crafted.checkpoints = Some((mine.2.clone(), 100));
    let body = crafted.encode().expect("encode");
    let (status, _, answer) = support::call_as(&rest, Some(ALICE), "POST", "/jobs", &body);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("job name `../bob/chk`"), "{answer}");
    // Nor read Bob's input, nor write into his checkpoints.
    let (ok, _, err) = run(ALICE, &bobs.join("input.txt"), &mine.1, &mine.2, None);
    assert!(!ok && err.contains("(a file source)"), "{err}");
    let (ok, _, err) = run(ALICE, &mine.0, &mine.1, &alices.join("link/chk"), None);
    assert!(!ok && err.contains("(the checkpoint directory)"), "{err}");
    // Within her own directory she runs, and may not put a savepoint in Bob's.
    let (ok, out, err) = run(ALICE, &mine.0, &mine.1, &mine.2, None);
    assert!(ok, "{out}{err}");
    let alices_job = job_id_of(&out);
    wait_for_state_as(&rest, ALICE, &alices_job, "RUNNING");
    let body = format!("{{\"target-directory\": {:?}}}", alices.join("link/sp"));
    let (status, answer) = call_as(
        &rest,
        Some(ALICE),
        "POST",
        &format!("/jobs/{alices_job}/savepoints"),
        &body,
    );
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.to_string().contains("(the savepoint directory)"),
        "{answer}"
    );
    for (token, id) in [(ALICE, &alices_job), (BOB, &bobs_job)] {
        let (ok, out, err) = weir_as(token, &["cancel", "-m", &rest, id]);
        assert!(ok, "{out}{err}");
    }
}

fn hostile_component() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    weir_guest_build::compile(&root, &[("hostile", "hostile")])
        .expect("build the hostile guest")
        .remove(0)
}

#[test]
fn a_tenants_guests_get_the_capabilities_granted_to_it_and_its_failing_jobs_back_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"alice\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             capabilities = [\"clocks\"]\n\
             [[tenant]]\nname = \"bob\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [tenant.quota]\nlog-per-operator = \"64KiB\"\n",
            hash(ALICE),
            dir.path().display(),
            hash(BOB),
            dir.path().display()
        ),
    )
    .expect("tenants");
    let config = tenant_config(dir.path(), &tenants);
    let (jm, rpc, rest) = jobmanager(&config);
    let guest_logs = dir.path().join("guest-logs");
    let tm = Process::start(&[
        "taskmanager",
        "--config",
        config.to_str().unwrap(),
        "--jobmanager",
        &rpc,
        "--slots",
        "2",
        "--resource-id",
        "tm-1",
        "--log-dir",
        guest_logs.to_str().unwrap(),
    ]);
    // A guest that sleeps a millisecond per record: it needs a clock.
    let job = dir.path().join("sleepy.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"sleepy\"\n\
             [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = 5\n\
             [[operator]]\nid = \"sleep\"\ncomponent = {:?}\ninput = \"numbers\"\n\
             config = {{ millis = 1 }}\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"sleep\"\n",
            hostile_component()
        ),
    )
    .expect("manifest");
    let submit = |token: &str, extra: &[&str]| {
        let mut args = vec!["run", "-d", "-m", &rest, job.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (ok, out, err) = weir_as(token, &args);
        assert!(ok, "{out}{err}");
        job_id_of(&out)
    };
    let alices = submit(ALICE, &[]);
    wait_for_state_as(&rest, ALICE, &alices, "FINISHED");
    let bobs = submit(BOB, &[]);
    wait_for_state_as(&rest, BOB, &bobs, "FAILED");
    let (_, failed) = call_as(&rest, Some(BOB), "GET", &format!("/jobs/{bobs}"), "");
    assert!(
        failed["failure"]
            .as_str()
            .is_some_and(|f| f.contains("grants no clock")),
        "{failed}"
    );

    // Bob's guest printing without end: its lines go to a file of the job's own under Bob's
    // name, never to the TaskManager's log, and the job fails at Bob's log quota.
    let flood = dir.path().join("flood.toml");
    std::fs::write(
        &flood,
        format!(
            "name = \"flood\"\n\
             [[source]]\nid = \"numbers\"\nkind = \"sequence\"\ncount = 1\n\
             [[operator]]\nid = \"flood\"\ncomponent = {:?}\ninput = \"numbers\"\n\
             [[sink]]\nid = \"out\"\nkind = \"discard\"\ninput = \"flood\"\n",
            hostile_component()
        ),
    )
    .expect("manifest");
    let (ok, out, err) = weir_as(BOB, &["run", "-d", "-m", &rest, flood.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let flooding = job_id_of(&out);
    wait_for_state_as(&rest, BOB, &flooding, "FAILED");
    let (_, failed) = call_as(&rest, Some(BOB), "GET", &format!("/jobs/{flooding}"), "");
    assert!(
        failed["failure"]
            .as_str()
            .is_some_and(|f| f.contains("65536 bytes")),
        "{failed}"
    );
    let log = std::fs::read_to_string(
        guest_logs
            .join("tenants/bob")
            .join(&flooding)
            .join("guest.log"),
    )
    .expect("Bob's job's guest log");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].starts_with("[flood#0 stdout] flood flood"),
        "{}",
        lines[0]
    );
    // Capped: 64 KiB of 601-byte lines.
    assert_eq!(lines.len(), 65536 / 601, "{log}");
    assert!(!tm.log().contains("flood flood"));
    assert!(!guest_logs.join("tenants/alice").join(&flooding).exists());

    // Bob's job failing over and over restarts after 1 s, then 2 s, whatever delay it asks for.
    let chk = dir.path().join("chk");
    let again = submit(
        BOB,
        &[
            "--checkpoint-dir",
            chk.to_str().unwrap(),
            "--checkpoint-interval",
            "100ms",
            "--restart-attempts",
            "2",
            "--restart-delay",
            "10ms",
        ],
    );
    let started = std::time::Instant::now();
    jm.wait_for("restarting in 1s");
    jm.wait_for("restarting in 2s");
    wait_for_state_as(&rest, BOB, &again, "FAILED");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "it did not back off"
    );
}

/// The CPUs each thread of process `pid` may run on, from `/proc`.
fn cpus_of_threads(pid: u32) -> Vec<String> {
    let mut lists = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("threads") {
        let status = std::fs::read_to_string(task.expect("thread").path().join("status"))
            .unwrap_or_default();
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            lists.push(list.trim().to_string());
        }
    }
    lists
}

#[test]
fn a_taskmanager_reserved_for_a_tenant_runs_its_jobs_only_on_its_own_cpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    tenants_file(&tenants, ALICE, dir.path(), dir.path());
    let config = tenant_config(dir.path(), &tenants);
    // A short slot request timeout, for the job that never fits.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "[jobmanager]\n",
            "[jobmanager]\nslot-request-timeout = \"2s\"\n",
        ),
    )
    .expect("config");
    let (_jm, rpc, rest) = jobmanager(&config);
    let config_arg = config.to_str().unwrap();
    let reserved = Process::start(&[
        "taskmanager",
        "--config",
        config_arg,
        "--jobmanager",
        &rpc,
        "--slots",
        "2",
        "--resource-id",
        "tm-alice",
        "--tenant",
        "alice",
        "--cpus",
        "0",
    ]);
    let shared = taskmanager(&config, &rpc, 2, "tm-shared");
    let started = std::time::Instant::now();
    while call_as(&rest, Some(OPS), "GET", "/overview", "").1["taskmanagers"] != 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (_, tms) = call_as(&rest, Some(OPS), "GET", "/taskmanagers", "");
    let reserved_for: Vec<(String, Value)> = tms["taskmanagers"]
        .as_array()
        .expect("taskmanagers")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["tenant"].clone(),
            )
        })
        .collect();
    assert!(
        reserved_for.contains(&("tm-alice".into(), Value::from("alice"))),
        "{tms}"
    );
    assert!(
        reserved_for.contains(&("tm-shared".into(), Value::Null)),
        "{tms}"
    );
    // Every thread of the reserved TaskManager, those its tasks run on included, is on CPU 0.
    assert!(cpus_of_threads(reserved.pid()).iter().all(|c| c == "0"));

    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(50)).expect("input");
    let run = |token: &str, parallelism: &str, out: &str| {
        let (ok, stdout, err) = weir_as(
            token,
            &[
                "run",
                "-d",
                "-m",
                &rest,
                job.to_str().unwrap(),
                "-p",
                parallelism,
                "--checkpoint-dir",
                dir.path().join("chk").to_str().unwrap(),
                "--checkpoint-interval",
                "60m",
                "--restart-attempts",
                "0",
                "--arg",
                &format!("input={}", input.display()),
                "--arg",
                &format!("output={}", dir.path().join(out).display()),
            ],
        );
        (ok, stdout, err)
    };
    // Where the job's subtasks run, once they are deployed.
    let where_ran = |token: &str, id: &str| -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let (_, job) = call_as(&rest, Some(token), "GET", &format!("/jobs/{id}"), "");
            let on: Vec<String> = job["vertices"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|v| v["subtasks"].as_array().cloned().unwrap_or_default())
                .map(|s| s["taskmanager-id"].as_str().unwrap_or_default().to_string())
                .collect();
            if !on.is_empty() {
                return on;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{job}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let (ok, out, err) = run(ALICE, "2", "alice-out");
    assert!(ok, "{out}{err}");
    let alices = job_id_of(&out);
    wait_for_state_as(&rest, ALICE, &alices, "RUNNING");
    let ran = where_ran(ALICE, &alices);
    assert!(ran.iter().all(|tm| tm == "tm-alice"), "{ran:?}");
    let (ok, out, err) = run(BOB, "2", "bob-out");
    assert!(ok, "{out}{err}");
    let bobs = job_id_of(&out);
    wait_for_state_as(&rest, BOB, &bobs, "RUNNING");
    let ran = where_ran(BOB, &bobs);
    assert!(
        !ran.is_empty() && ran.iter().all(|tm| tm == "tm-shared"),
        "{ran:?}"
    );
    // Bob never gets the reserved slots: a job wider than the shared ones never runs.
    let (ok, out, err) = run(BOB, "3", "bob-wide");
    assert!(ok, "{out}{err}");
    let wide = job_id_of(&out);
    wait_for_state_as(&rest, BOB, &wide, "FAILED");
    let (_, failed) = call_as(&rest, Some(BOB), "GET", &format!("/jobs/{wide}"), "");
    assert!(
        failed["failure"]
            .as_str()
            .is_some_and(|f| f.contains("the job needs 3 task slots")),
        "{failed}"
    );
    for (token, id) in [(ALICE, &alices), (BOB, &bobs)] {
        let (ok, out, err) = weir_as(token, &["cancel", "-m", &rest, id]);
        assert!(ok, "{out}{err}");
    }
    drop(shared);
    // A CPU list that runs backwards is refused at start, naming the flag.
    let mut bad = Process::start(&[
        "taskmanager",
        "--config",
        config_arg,
        "--jobmanager",
        &rpc,
        "--cpus",
        "3-1",
    ]);
    let (status, log) = bad.wait_exit();
    assert!(!status.success());
    assert!(log.contains("--cpus: `3-1` runs backwards"), "{log}");
}

#[test]
fn checkpoints_over_the_tenants_storage_quota_fail_its_job_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(
        &tenants,
        format!(
            "[[tenant]]\nname = \"alice\"\ntokens = [{:?}]\ndirs = [{:?}]\n\
             [tenant.quota]\ncheckpoint-storage = \"1KiB\"\n",
            hash(ALICE),
            dir.path().display()
        ),
    )
    .expect("tenants");
    let config = tenant_config(dir.path(), &tenants);
    let (jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 2, "tm-1");
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(50)).expect("input");
    let (ok, out, err) = weir_as(
        ALICE,
        &[
            "run",
            "-d",
            "-m",
            &rest,
            job.to_str().unwrap(),
            "--checkpoint-dir",
            dir.path().join("chk").to_str().unwrap(),
            "--checkpoint-interval",
            "100ms",
            "--arg",
            &format!("input={}", input.display()),
            "--arg",
            &format!("output={}", dir.path().join("out").display()),
        ],
    );
    assert!(ok, "{out}{err}");
    let id = job_id_of(&out);
    wait_for_state_as(&rest, ALICE, &id, "FAILED");
    let (_, failed) = call_as(&rest, Some(ALICE), "GET", &format!("/jobs/{id}"), "");
    let reason = failed["failure"].as_str().unwrap_or_default();
    assert!(
        reason.contains("over its checkpoint storage quota of 1024 bytes"),
        "{failed}"
    );
    assert!(!jm.log().contains("restarting in"), "{}", jm.log());
}

#[test]
fn a_tenants_job_is_kept_under_its_name_and_recovered_as_its_own_by_a_restarted_jobmanager() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    tenants_file(&tenants, ALICE, dir.path(), dir.path());
    let (rpc_port, rest_port) = (free_port(), free_port());
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\n[jobmanager]\njob-store = \"jobs\"\n\
             tenants-file = {:?}\n[jobmanager.rpc]\naddress = \"127.0.0.1\"\nport = {rpc_port}\n\
             [rest]\naddress = \"127.0.0.1\"\nport = {rest_port}\n\
             [heartbeat]\ninterval = \"100ms\"\ntimeout = \"1s\"\n",
            tenants.display()
        ),
    )
    .expect("config");
    let (mut jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 2, "tm-1");
    let job = wordcount_manifest(dir.path(), Some(1));
    let input = dir.path().join("input.txt");
    std::fs::write(&input, read_passage().repeat(50)).expect("input");
    let (ok, out, err) = weir_as(
        ALICE,
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
    let kept = dir
        .path()
        .join("jobs")
        .join("tenants")
        .join("alice")
        .join(&id);
    assert!(kept.join("submission.bin").exists(), "{}", kept.display());
    assert!(!dir.path().join("jobs").join(&id).exists());

    jm.child.kill().expect("kill -9 the JobManager");
    let _ = jm.child.wait();
    let (jm, _, rest) = jobmanager(&config);
    jm.wait_for(&format!("Recovered JobGraph {id}"));
    // Still Alice's, and not Bob's to see.
    wait_for_state_as(&rest, ALICE, &id, "RUNNING");
    let (status, _) = call_as(&rest, Some(BOB), "GET", &format!("/jobs/{id}"), "");
    assert_eq!(status, 404);
    let (ok, out, err) = weir_as(ALICE, &["cancel", "-m", &rest, &id]);
    assert!(ok, "{out}{err}");
}

#[test]
fn the_scrapers_token_reads_every_metrics_endpoint_and_nothing_else() {
    const SCRAPER: &str = "scraper-token-0123456789abcdef0123456789abcdef";
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.toml");
    tenants_file(&tenants, ALICE, dir.path(), dir.path());
    let config = tenant_config(dir.path(), &tenants);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("[metrics]\ntoken = {:?}\n", hash(SCRAPER)));
    std::fs::write(&config, text).expect("config");
    let (_jm, rpc, rest) = jobmanager(&config);
    let _tm = taskmanager(&config, &rpc, 1, "tm-1");
    let started = std::time::Instant::now();
    let tms = loop {
        let (_, tms) = call_as(&rest, Some(OPS), "GET", "/taskmanagers", "");
        if tms["taskmanagers"].as_array().is_some_and(|t| t.len() == 1) {
            break tms;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{tms}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let tm_metrics = tms["taskmanagers"][0]["metricsAddress"]
        .as_str()
        .expect("the operator sees where metrics are")
        .to_string();

    // A TaskManager's metrics: the scraper's token only.
    for token in [None, Some(ALICE), Some(OPS), Some("scraper-token")] {
        let (status, head, _) = support::call_as(&tm_metrics, token, "GET", "/metrics", b"");
        assert_eq!(status, 401, "{token:?}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer")
        );
    }
    let (status, _, body) = support::call_as(&tm_metrics, Some(SCRAPER), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(body.contains("taskmanager_task_slots"), "{body}");

    // The JobManager's: the scraper's token or an admin's; the scraper's opens nothing else.
    let (status, _, body) = support::call_as(&rest, Some(SCRAPER), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(body.contains("jobmanager_taskmanagers 1"), "{body}");
    assert_eq!(call_as(&rest, Some(OPS), "GET", "/metrics", "").0, 200);
    assert_eq!(call_as(&rest, Some(ALICE), "GET", "/metrics", "").0, 403);
    for (method, path) in [
        ("GET", "/jobs"),
        ("GET", "/overview"),
        ("GET", "/taskmanagers"),
        ("POST", "/jobs"),
        ("GET", "/metrics/"),
    ] {
        let (status, _) = call_as(&rest, Some(SCRAPER), method, path, "");
        assert_eq!(status, 401, "{method} {path}");
    }
}
