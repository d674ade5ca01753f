//! The Nexmark queries of `examples/nexmark`, each checked against an independent computation
//! in plain code over the same events: the generator's first 100,000, at parallelism 1 and 2,
//! and for the windowed queries across a checkpoint taken mid-window and a restore at another
//! parallelism.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nexmark::event::{Auction, Bid, Event, Person};

use crate::checkpoint::{checkpoint_id, committed_lines, options, run_then_cancel, sink_as_of};
use crate::guests;
use crate::support::*;
use weir_host::cluster::{MiniCluster, MiniClusterConfig};
use weir_host::connectors::nexmark::{DEFAULT_BASE_TIME, write_events};
use weir_host::job::{JobGraph, parse_manifest};
use weir_host::runtime::task_executor::TaskExecutorConfig;

const EVENTS: u64 = 100_000;

/// The events file, written once per test run, and its events parsed with the `nexmark`
/// crate's own types.
fn events() -> &'static (PathBuf, Vec<Event>) {
    static EVENTS_FILE: OnceLock<(tempfile::TempDir, PathBuf, Vec<Event>)> = OnceLock::new();
    let (_, path, events) = EVENTS_FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        write_events(&path, EVENTS, DEFAULT_BASE_TIME).expect("events");
        let events = std::fs::read_to_string(&path)
            .expect("events")
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event"))
            .collect();
        (dir, path, events)
    });
    // The tuple's first member only keeps the directory alive.
    static VIEW: OnceLock<(PathBuf, Vec<Event>)> = OnceLock::new();
    VIEW.get_or_init(|| (path.clone(), events.clone()))
}

fn bids() -> impl Iterator<Item = &'static Bid> {
    events().1.iter().filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

fn auctions() -> impl Iterator<Item = &'static Auction> {
    events().1.iter().filter_map(|e| match e {
        Event::Auction(a) => Some(a),
        _ => None,
    })
}

fn persons() -> impl Iterator<Item = &'static Person> {
    events().1.iter().filter_map(|e| match e {
        Event::Person(p) => Some(p),
        _ => None,
    })
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC, computed from the day count by another route than the
/// queries take (a year at a time).
fn utc(millis: u64) -> String {
    let mut days = millis / 86_400_000;
    let of_day = millis % 86_400_000;
    let mut year = 1970;
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let months = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= months[month] {
        days -= months[month];
        month += 1;
    }
    format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        month + 1,
        days + 1,
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

fn expected(query: &str) -> Vec<String> {
    sorted(match query {
        "q0" => bids()
            .map(|b| {
                let t = utc(b.date_time);
                format!("{},{},{},{t},{}", b.auction, b.bidder, b.price, b.extra)
            })
            .collect(),
        "q1" => bids()
            .map(|b| {
                let euros = b.price as u128 * 908;
                format!(
                    "{},{},{}.{:03},{},{}",
                    b.auction,
                    b.bidder,
                    euros / 1000,
                    euros % 1000,
                    utc(b.date_time),
                    b.extra
                )
            })
            .collect(),
        "q2" => bids()
            .filter(|b| b.auction % 123 == 0)
            .map(|b| format!("{},{}", b.auction, b.price))
            .collect(),
        "q3" => {
            let sellers: HashMap<usize, &Person> = persons()
                .filter(|p| ["or", "id", "ca"].contains(&p.state.as_str()))
                .map(|p| (p.id, p))
                .collect();
            auctions()
                .filter(|a| a.category == 10)
                .filter_map(|a| {
                    let p = sellers.get(&a.seller)?;
                    Some(format!("{},{},{},{}", p.name, p.city, p.state, a.id))
                })
                .collect()
        }
        "q4" => q4_table()
            .into_iter()
            .map(|(category, avg)| format!("{category},{avg}"))
            .collect(),
        "q5" => {
            let mut counts: BTreeMap<(u64, usize), u64> = BTreeMap::new();
            for b in bids() {
                // Every 10 s window starting at a multiple of 2 s that holds the bid.
                let t = b.date_time;
                let last = t - t % 2_000;
                for start in (0..5).map(|k| last - k * 2_000) {
                    *counts.entry((start, b.auction)).or_default() += 1;
                }
            }
            let mut most: BTreeMap<u64, u64> = BTreeMap::new();
            for (&(start, _), &n) in &counts {
                let m = most.entry(start).or_default();
                *m = (*m).max(n);
            }
            counts
                .iter()
                .filter(|((start, _), n)| most[start] == **n)
                .map(|((_, auction), n)| format!("{auction},{n}"))
                .collect()
        }
        "q7" => {
            let mut max: BTreeMap<u64, usize> = BTreeMap::new();
            for b in bids() {
                let start = b.date_time - b.date_time % 10_000;
                let m = max.entry(start).or_default();
                *m = (*m).max(b.price);
            }
            bids()
                .filter(|b| {
                    let start = b.date_time - b.date_time % 10_000;
                    max.get(&start) == Some(&b.price)
                        || (b.date_time == start
                            && start >= 10_000
                            && max.get(&(start - 10_000)) == Some(&b.price))
                })
                .map(|b| {
                    let t = utc(b.date_time);
                    format!("{},{},{},{t},{}", b.auction, b.price, b.bidder, b.extra)
                })
                .collect()
        }
        "q8" => {
            let window = |t: u64| t - t % 10_000;
            let sellers: BTreeSet<(u64, usize)> = auctions()
                .map(|a| (window(a.date_time), a.seller))
                .collect();
            let people: BTreeSet<(usize, &str, u64)> = persons()
                .map(|p| (p.id, p.name.as_str(), window(p.date_time)))
                .collect();
            people
                .into_iter()
                .filter(|(id, _, start)| sellers.contains(&(*start, *id)))
                .map(|(id, name, start)| format!("{id},{name},{}", utc(start)))
                .collect()
        }
        other => panic!("no query {other}"),
    })
}

/// q4's final table: per category, the average of its auctions' highest bid within their
/// bidding periods, truncated.
fn q4_table() -> BTreeMap<usize, u128> {
    let periods: HashMap<usize, (usize, u64, u64)> = auctions()
        .map(|a| (a.id, (a.category, a.date_time, a.expires)))
        .collect();
    let mut finals: HashMap<usize, usize> = HashMap::new();
    for b in bids() {
        if let Some(&(_, opens, expires)) = periods.get(&b.auction)
            && (opens..=expires).contains(&b.date_time)
        {
            let f = finals.entry(b.auction).or_default();
            *f = (*f).max(b.price);
        }
    }
    let mut sums: BTreeMap<usize, (u128, u128)> = BTreeMap::new();
    for (auction, price) in finals {
        let s = sums.entry(periods[&auction].0).or_default();
        s.0 += price as u128;
        s.1 += 1;
    }
    sums.into_iter().map(|(c, (sum, n))| (c, sum / n)).collect()
}

/// What a changelog of `+I`/`-U`/`+U`/`-D` lines leaves, as `category,average` lines.
fn materialize(changes: &[String]) -> Vec<String> {
    let mut table: BTreeMap<String, String> = BTreeMap::new();
    for line in changes {
        let (kind, row) = line.split_once(',').expect("a change");
        let (key, value) = row.split_once(',').expect("category,average");
        match kind {
            "+I" | "+U" => {
                table.insert(key.to_string(), value.to_string());
            }
            "-U" | "-D" => {
                assert_eq!(table.remove(key).as_deref(), Some(value), "{line}");
            }
            other => panic!("unknown change kind {other}"),
        }
    }
    sorted(table.into_iter().map(|(k, v)| format!("{k},{v}")).collect())
}

/// Query `q`'s shipped manifest, pointing at the component this build made.
fn manifest(q: &str, waits: Option<u64>) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nexmark");
    let text = std::fs::read_to_string(root.join(format!("{q}.toml"))).expect("manifest");
    let text = text.replace(
        "\"../../target/wasm32-wasip2/release/nexmark_queries.wasm\"",
        &format!("{:?}", guests::NEXMARK),
    );
    match waits {
        Some(n) => text.replacen(
            "kind = \"file\"\n",
            &format!("kind = \"file\"\nwait_for_checkpoints = {n}\n"),
            1,
        ),
        None => text,
    }
}

fn graph(q: &str, output: &Path, parallelism: u32, waits: Option<u64>) -> JobGraph {
    graph_on(q, &events().0, output, parallelism, waits)
}

fn graph_on(
    q: &str,
    input: &Path,
    output: &Path,
    parallelism: u32,
    waits: Option<u64>,
) -> JobGraph {
    let args = [
        ("input".to_string(), input.display().to_string()),
        ("output".to_string(), output.display().to_string()),
    ]
    .into_iter()
    .collect();
    parse_manifest(&manifest(q, waits), &args)
        .expect("manifest")
        .job_graph(Some(parallelism))
        .expect("graph")
}

fn cluster() -> MiniCluster {
    MiniCluster::new(
        MiniClusterConfig {
            task_executor: TaskExecutorConfig {
                slots: 8,
                ..TaskExecutorConfig::default()
            },
            ..MiniClusterConfig::default()
        },
        runtime().clone(),
    )
}

/// The final result a run of `q` left in `lines` (q4's changelog materialized).
fn result(q: &str, lines: Vec<String>) -> Vec<String> {
    if q == "q4" {
        materialize(&lines)
    } else {
        sorted(lines)
    }
}

fn check_query(q: &str) {
    let expected = expected(q);
    assert!(!expected.is_empty(), "{q} has rows to find");
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.csv");
        cluster()
            .run_job(&graph(q, &out, parallelism, None), &Default::default())
            .unwrap_or_else(|e| panic!("{q} at {parallelism}: {e}"));
        let lines: Vec<String> = std::fs::read_to_string(&out)
            .expect("output")
            .lines()
            .map(str::to_string)
            .collect();
        let got = result(q, lines);
        assert_eq!(
            got.len(),
            expected.len(),
            "{q} at parallelism {parallelism}"
        );
        assert_eq!(got, expected, "{q} at parallelism {parallelism}");
    }
}

/// Killed after a checkpoint in the middle of the events (and of windows), restored at
/// parallelism 1 from parallelism 2: every row once.
fn check_restored(q: &str) {
    let expected = expected(q);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let opts = options(&dir.path().join("chk"), 20);
    let checkpoints = run_then_cancel(&graph(q, &out, 2, Some(2)), &opts, 2);
    let last = checkpoints.last().expect("a checkpoint").clone();
    let target = dir.path().join("restored");
    sink_as_of(&out, checkpoint_id(&last), &target);
    let mut restore = opts.clone();
    restore.restore = Some(last);
    cluster()
        .run_job(&graph(q, &target, 1, None), &restore)
        .unwrap_or_else(|e| panic!("{q} restored: {e}"));
    let got = result(q, committed_lines(&target));
    assert_eq!(got.len(), expected.len(), "{q} restored");
    assert_eq!(got, expected, "{q} restored");
}

#[test]
fn nexmark_q0_passes_bids_through() {
    check_query("q0");
}

#[test]
fn nexmark_q1_converts_prices_exactly() {
    check_query("q1");
}

#[test]
fn nexmark_q2_selects_every_123rd_auction() {
    check_query("q2");
}

#[test]
fn nexmark_q3_joins_auctions_with_their_sellers() {
    check_query("q3");
}

#[test]
fn nexmark_q4_averages_final_prices_per_category_as_a_changelog() {
    check_query("q4");
}

#[test]
fn nexmark_q5_finds_the_hottest_auctions_per_hop_window() {
    check_query("q5");
    check_restored("q5");
}

#[test]
fn nexmark_q7_finds_the_highest_bids_per_window() {
    check_query("q7");
    check_restored("q7");
}

#[test]
fn nexmark_q8_finds_new_users_with_auctions() {
    check_query("q8");
    check_restored("q8");
}

/// The bid reader steps over strings sixteen bytes at a time: quotes and backslashes (escaped
/// by serde_json as the generator's lines are) at every offset of strings around that width,
/// and other fields' strings before and after, must come out as the strings they were.
#[test]
fn nexmark_q0_reads_strings_with_escapes_at_every_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bids = Vec::new();
    for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 47] {
        for at in 0..len.max(1) {
            for special in ['"', '\\', 'é'] {
                let mut extra: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
                if len > 0 {
                    extra.replace_range(at..=at, &special.to_string());
                }
                let n = bids.len();
                bids.push(Bid {
                    auction: 1000 + n,
                    bidder: 2000 + n,
                    price: 100 + n,
                    channel: format!("ch\"{n}"),
                    url: format!("https://x/{}?q={n}\\", "u".repeat(n % 40)),
                    date_time: DEFAULT_BASE_TIME + n as u64,
                    extra,
                });
            }
        }
    }
    let input = dir.path().join("bids.json");
    let lines: Vec<String> = bids
        .iter()
        .map(|b| serde_json::to_string(&Event::Bid(b.clone())).expect("json"))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    let out = dir.path().join("out.csv");
    cluster()
        .run_job(&graph_on("q0", &input, &out, 1, None), &Default::default())
        .expect("q0");
    let got = sorted(
        std::fs::read_to_string(&out)
            .expect("output")
            .lines()
            .map(str::to_string)
            .collect(),
    );
    let want = sorted(
        bids.iter()
            .map(|b| {
                let t = utc(b.date_time);
                format!("{},{},{},{t},{}", b.auction, b.bidder, b.price, b.extra)
            })
            .collect(),
    );
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[test]
fn utc_formats_agree_with_known_dates() {
    assert_eq!(utc(DEFAULT_BASE_TIME), "2015-07-15 00:00:00.000");
    assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123");
}
