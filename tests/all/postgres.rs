//! The PostgreSQL sink against a real server: exactly-once rows through failures, the
//! transactions a crash leaves prepared, and the errors a user meets.

use std::path::Path;
use std::sync::Arc;

use weir_framing::Record;
use weir_host::cluster::{JobFailure, JobOptions};
use weir_host::connectors::postgres::{self, PostgresSink, PostgresSinkSpec, RowFormat};
use weir_host::job::{Secret, parse_manifest};
use weir_host::metrics::TaskMetrics;
use weir_host::stream::{Barrier, Output};

use crate::checkpoint::{cluster, expected_lines, failure_of, graph, input, options, wordcount};
use crate::servers::Postgres;

/// The checkpoint tests' word count, its sink replaced by `sink` (a `[[sink]]` table).
fn wordcount_into(input: &Path, work: u64, fail_at: Option<u64>, sink: &str) -> String {
    let text = wordcount(input, Path::new("unused"), work, fail_at);
    let (head, _) = text.split_once("[[sink]]").expect("a sink");
    format!("{head}\n{sink}")
}

pub(crate) fn postgres_sink(pg: &Postgres, table: &str, input: &str, parallelism: u32) -> String {
    format!(
        r#"
        [[sink]]
        id = "counts"
        kind = "postgres"
        url = "{url}"
        password_file = {pw:?}
        table = "{table}"
        columns = ["word", "n"]
        format = "csv"
        delimiter = " "
        connect_timeout = "10s"
        input = "{input}"
        edge = "rebalance"
        parallelism = {parallelism}
        "#,
        url = pg.url(),
        pw = pg.password_file,
    )
}

/// `word n` rows of `table`, sorted as [`expected_lines`] sorts.
pub(crate) fn table_lines(pg: &Postgres, table: &str) -> Vec<String> {
    pg.rows(&format!("SELECT word, n FROM {table}"))
}

fn prepared(pg: &Postgres) -> Vec<String> {
    pg.rows("SELECT gid FROM pg_prepared_xacts")
}

#[test]
fn word_counts_reach_a_table_exactly_once_through_a_failure() {
    let pg = Postgres::start();
    pg.execute("CREATE TABLE counts (word text NOT NULL, n bigint NOT NULL)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (input_path, text) = input(dir.path(), 100);
    let words: u64 = crate::support::independent_word_count(&text).values().sum();
    let manifest = wordcount_into(
        &input_path,
        200,
        Some(words / 3),
        &postgres_sink(&pg, "counts", "fail", 2),
    );
    let result = cluster()
        .run_job(&graph(&manifest, 2), &options(&dir.path().join("chk"), 20))
        .expect("job");
    assert_eq!(result.restarts, 1, "the guest failed once");
    assert!(
        !result.checkpoints.is_empty(),
        "the restarted attempt completed checkpoints"
    );
    assert_eq!(table_lines(&pg, "counts"), expected_lines(&text));
    assert_eq!(prepared(&pg), Vec::<String>::new());
}

#[test]
fn without_checkpoints_every_row_arrives_once() {
    let pg = Postgres::start();
    pg.execute("CREATE TABLE counts (word text, n bigint)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (input_path, text) = input(dir.path(), 20);
    let manifest = wordcount_into(
        &input_path,
        0,
        None,
        &postgres_sink(&pg, "counts", "count", 1),
    );
    cluster()
        .run_job(&graph(&manifest, 2), &JobOptions::default())
        .expect("job");
    assert_eq!(table_lines(&pg, "counts"), expected_lines(&text));
}

fn spec(pg: &Postgres, table: &str) -> PostgresSinkSpec {
    PostgresSinkSpec {
        url: pg.url(),
        password: Some(Secret::File(pg.password_file.clone())),
        table: table.into(),
        columns: Vec::new(),
        format: RowFormat::Delimited { delimiter: b',' },
        connect_timeout_ms: 10_000,
    }
}

/// The window Flink's two-phase commit sinks close on recovery: checkpoint 1 completed, its
/// transaction was prepared but the process died before committing it; checkpoint 2's
/// transaction was prepared and never completed. Recovery from checkpoint 1 commits the first
/// and rolls back the second, and a second recovery finds nothing left to do.
#[test]
fn recovery_commits_a_completed_checkpoints_transaction_and_rolls_back_later_ones() {
    let pg = Postgres::start();
    pg.execute("CREATE TABLE t (k text, v int)");
    let spec = spec(&pg, "t");
    let metrics = Arc::new(TaskMetrics::default());
    let mut sinks: Vec<PostgresSink> = (0..2)
        .map(|subtask| {
            PostgresSink::open(&spec, "job", "t-sink", subtask, Some(1), metrics.clone())
                .expect("open")
        })
        .collect();
    for (subtask, sink) in sinks.iter_mut().enumerate() {
        sink.collect(Record::value(format!("a{subtask},1").as_bytes()))
            .expect("row");
        sink.snapshot(&Barrier::in_memory(1), &mut Vec::new())
            .expect("prepare 1");
        sink.collect(Record::value(format!("b{subtask},2").as_bytes()))
            .expect("row");
        sink.snapshot(&Barrier::in_memory(2), &mut Vec::new())
            .expect("prepare 2");
        sink.collect(Record::value(b"never,3")).expect("row");
    }
    // Subtask 0 heard that checkpoint 1 completed; subtask 1 died before it did.
    sinks[0].notify_checkpoint_complete(1).expect("commit");
    drop(sinks);
    assert_eq!(pg.rows("SELECT k, v FROM t"), ["a0 1"]);
    assert_eq!(
        prepared(&pg),
        [
            "weir/job/t-sink/0/2",
            "weir/job/t-sink/1/1",
            "weir/job/t-sink/1/2"
        ]
    );
    let recovered = postgres::recover(&spec, "job", "t-sink", Some(1)).expect("recover");
    assert_eq!((recovered.committed, recovered.rolled_back), (1, 2));
    assert_eq!(pg.rows("SELECT k, v FROM t"), ["a0 1", "a1 1"]);
    assert_eq!(prepared(&pg), Vec::<String>::new());
    let again = postgres::recover(&spec, "job", "t-sink", Some(2)).expect("recover");
    assert_eq!((again.committed, again.rolled_back), (0, 0));
}

#[test]
fn a_fresh_start_rolls_back_what_an_earlier_run_left_prepared_and_spares_other_sinks() {
    let pg = Postgres::start();
    pg.execute("CREATE TABLE t (k text, v int)");
    let spec = spec(&pg, "t");
    let metrics = Arc::new(TaskMetrics::default());
    for sink_id in ["mine", "other"] {
        let mut sink =
            PostgresSink::open(&spec, "job", sink_id, 0, Some(4), metrics.clone()).expect("open");
        sink.collect(Record::value(b"x,1")).expect("row");
        sink.snapshot(&Barrier::in_memory(4), &mut Vec::new())
            .expect("prepare");
    }
    let recovered = postgres::recover(&spec, "job", "mine", None).expect("recover");
    assert_eq!((recovered.committed, recovered.rolled_back), (0, 1));
    assert_eq!(prepared(&pg), ["weir/job/other/0/4"]);
    postgres::recover(&spec, "job", "other", None).expect("recover");
}

fn one_line_job(dir: &Path, line: &str, sink: &str) -> String {
    let input = dir.join("in.txt");
    std::fs::write(&input, format!("{line}\n")).expect("input");
    format!("name = \"pg\"\n[[source]]\nid = \"lines\"\nkind = \"file\"\npath = {input:?}\n{sink}")
}

fn sink_of(pg_url: &str, password_file: &Path, table: &str, extra: &str) -> String {
    format!(
        "[[sink]]\nid = \"rows\"\nkind = \"postgres\"\nurl = \"{pg_url}\"\n\
         password_file = {password_file:?}\ntable = \"{table}\"\ninput = \"lines\"\n{extra}"
    )
}

#[test]
fn records_that_do_not_fit_and_tables_that_do_not_exist_are_named() {
    let pg = Postgres::start();
    pg.execute("CREATE TABLE typed (word text, n bigint)");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = pg.url();
    let pw = &pg.password_file;

    let cases = [
        (
            "fox,seven",
            "typed",
            "",
            "table `typed` refused a row (record `fox,seven`): invalid input syntax for type \
             bigint: \"seven\"",
        ),
        (
            "fox,7,extra",
            "typed",
            "",
            "record `fox,7,extra` does not fit table `typed` (word, n): it has 3 fields and the \
             sink writes 2 columns",
        ),
        (
            "fox,7",
            "nope",
            "",
            "table `nope` does not exist in database `postgres`",
        ),
        (
            "fox,7",
            "typed",
            "columns = [\"word\", \"count\"]",
            "table `typed` has no column `count`; its columns are word, n",
        ),
    ];
    for (line, table, extra, expected) in cases {
        let err = failure_of(&one_line_job(
            dir.path(),
            line,
            &sink_of(&url, pw, table, extra),
        ));
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn an_unreachable_server_and_a_wrong_password_are_named() {
    let pg = Postgres::start();
    pg.execute("CREATE TABLE typed (word text, n bigint)");
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = crate::servers::free_port();
    let started = std::time::Instant::now();
    let err = failure_of(&one_line_job(
        dir.path(),
        "fox,7",
        &sink_of(
            &format!("postgresql://weir@127.0.0.1:{closed}/postgres"),
            &pg.password_file,
            "typed",
            "connect_timeout = \"1s\"",
        ),
    ));
    assert!(
        err.contains(&format!(
            "sink `rows`: cannot connect to PostgreSQL at 127.0.0.1:{closed}"
        )) && err.contains("gave up after"),
        "{err}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));

    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-it").expect("password");
    let started = std::time::Instant::now();
    let err = failure_of(&one_line_job(
        dir.path(),
        "fox,7",
        &sink_of(&pg.url(), &wrong, "typed", "connect_timeout = \"20s\""),
    ));
    assert!(
        err.contains("password authentication failed for user \"weir\""),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a wrong password is not retried"
    );

    // With checkpoints, the JobMaster's recovery meets the unreachable server first.
    let manifest = one_line_job(
        dir.path(),
        "fox,7",
        &sink_of(
            &format!("postgresql://weir@127.0.0.1:{closed}/postgres"),
            &pg.password_file,
            "typed",
            "connect_timeout = \"1s\"",
        ),
    );
    let Err(failure) =
        cluster().run_job(&graph(&manifest, 1), &options(&dir.path().join("chk"), 50))
    else {
        panic!("the job succeeded")
    };
    assert!(
        matches!(&failure, JobFailure::SinkRecovery { sink, .. } if sink == "rows"),
        "{failure:?}"
    );
}

#[test]
fn manifests_keep_passwords_out_and_refuse_options_of_other_kinds() {
    let base = "name = \"pg\"\n[[source]]\nid = \"lines\"\nkind = \"sequence\"\ncount = 1\n";
    let check = |sink: &str| -> String {
        match parse_manifest(&format!("{base}{sink}"), &Default::default())
            .expect("manifest")
            .job_graph(None)
        {
            Ok(_) => panic!("accepted: {sink}"),
            Err(e) => e.to_string(),
        }
    };
    let err = check(
        "[[sink]]\nid = \"rows\"\nkind = \"postgres\"\nurl = \"postgresql://weir:hunter2@h/db\"\n\
         table = \"t\"\ninput = \"lines\"\n",
    );
    assert!(err.contains("the `url` holds a password"), "{err}");
    let err = check(
        "[[sink]]\nid = \"rows\"\nkind = \"file\"\npath = \"x\"\ntable = \"t\"\ninput = \"lines\"\n",
    );
    assert!(
        err.contains("sink `rows` of kind file does not take `table`"),
        "{err}"
    );
    let err = check(
        "[[sink]]\nid = \"rows\"\nkind = \"postgres\"\nurl = \"postgresql://h/db\"\ninput = \"lines\"\n",
    );
    assert!(
        err.contains("sink `rows` of kind postgres needs a `table`"),
        "{err}"
    );
    let unnamed = "[[source]]\nid = \"lines\"\nkind = \"sequence\"\ncount = 1\n\
                   [[sink]]\nid = \"rows\"\nkind = \"postgres\"\nurl = \"postgresql://h/db\"\n\
                   table = \"t\"\ninput = \"lines\"\n";
    let err = parse_manifest(unnamed, &Default::default())
        .expect("manifest")
        .job_graph(None)
        .map(|_| ())
        .expect_err("an unnamed job with a postgres sink");
    assert!(
        err.to_string()
            .contains("the job needs a `name`: its postgres sink `rows`"),
        "{err}"
    );
}
