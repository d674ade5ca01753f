//! A component whose plan misbehaves as `--arg case=...` asks, for the tests of the errors
//! `weir run` gives before anything is deployed; without a case its plan is a good one.

use std::time::Duration;

use weir_sdk::plan::{Args, Job, PlanError, Sink, Source};
use weir_sdk::prelude::*;

fn plan(args: &Args) -> Result<Job, PlanError> {
    let job = Job::new("plans").parallelism(2);
    let lines = job.source("lines", Source::file(args.get("input")));
    match args.value("case").unwrap_or("good") {
        "good" => {
            lines
                .operator("upper")
                .rebalance()
                .sink("out", Sink::file(args.get("output")))
                .parallelism(1);
        }
        "unknown-operator" => {
            lines
                .operator("uppercase")
                .sink("out", Sink::file(args.get("output")));
        }
        "forward-across-parallelisms" => {
            lines
                .operator("upper")
                .parallelism(1)
                .sink("out", Sink::file(args.get("output")));
        }
        "literal-path" => {
            lines
                .operator("upper")
                .sink("out", Sink::file("/tmp/weir-plan-chose-this"));
        }
        "emit" => {
            weir_sdk::bindings::weir::stream::output::emit(b"sneaked", None, None);
        }
        "cycle" => {
            return Ok(Job::from_manifest(
                "name = \"cycle\"\n\
                 [[source]]\nid = \"lines\"\nkind = \"file\"\npath = \"${input}\"\n\
                 [[operator]]\nid = \"a\"\noperator = \"upper\"\ninput = [\"lines\", \"b\"]\n\
                 [[operator]]\nid = \"b\"\noperator = \"upper\"\ninput = \"a\"\n\
                 [[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${output}\"\ninput = \"b\"\n",
            ));
        }
        "refuse" => return Err(PlanError::new("this plan needs `--arg mode=fast`")),
        "panic" => panic!("the plan fell over"),
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "sleep" => std::thread::sleep(Duration::from_secs(3600)),
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        other => return Err(PlanError::new(format!("no case `{other}`"))),
    }
    Ok(job)
}

weir_sdk::export_operators! {
    plan = plan;
    "upper" => map(|s: String| s.to_uppercase()).input(Text).output(Text),
}
