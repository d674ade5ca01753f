//! The queries as plans in code: `weir run nexmark_queries.wasm --arg query=q5 --arg
//! input=EVENTS.json --arg output=PATH` runs the same job as `examples/nexmark/q5.toml`.

use std::time::Duration;

use weir_sdk::plan::{Args, Job, PlanError, Sink, Source, Stream, Watermarks};

/// The queries this component plans, in order.
pub const QUERIES: &[&str] = &["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"];

/// The job of `--arg query=...`.
pub fn plan(args: &Args) -> Result<Job, PlanError> {
    let query = args.value("query").ok_or_else(|| {
        PlanError::new(format!(
            "which query? pass `--arg query=NAME`, one of {}",
            QUERIES.join(", ")
        ))
    })?;
    let job = Job::new(&format!("nexmark-{query}"));
    let lines = job.source("lines", Source::file(args.get("input")));
    // Events of one kind, keyed by one of their fields, stamped with their `date_time`.
    let events = |id: &str, kind: &str, key: &str| -> Stream {
        lines
            .operator("events")
            .id(id)
            .config("kind", kind)
            .config("key", key)
            .watermarks(Watermarks::bounded_out_of_orderness(Duration::from_secs(4)))
    };
    let result = match query {
        "q0" | "q1" | "q2" => lines.operator(query),
        "q3" => events("auctions", "auction", "seller")
            .hash()
            .connect(events("persons", "person", "id").hash())
            .operator("q3"),
        "q4" => events("auctions", "auction", "id")
            .hash()
            .connect(events("bids", "bid", "auction").hash())
            .operator("q4-max")
            .hash()
            .operator("q4-average"),
        "q5" => lines
            .operator("bid-auctions")
            .id("bids")
            .watermarks(Watermarks::bounded_out_of_orderness(Duration::from_secs(4)))
            .hash()
            .operator("q5-counts")
            .operator("q5-by-window")
            .hash()
            .operator("q5-hottest"),
        "q7" => events("bids", "bid", "constant").hash().operator("q7"),
        "q8" => events("persons", "person", "id")
            .hash()
            .connect(events("auctions", "auction", "seller").hash())
            .operator("q8"),
        other => {
            return Err(PlanError::new(format!(
                "there is no query `{other}`; the queries are {}",
                QUERIES.join(", ")
            )));
        }
    };
    result
        .rebalance()
        .sink("out", Sink::file(args.get("output")))
        .parallelism(1);
    Ok(job)
}
