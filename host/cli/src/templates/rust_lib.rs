//! The operators of {name}: `upper` upper-cases each line. The component also carries the job
//! (`plan`), so `weir run` takes it alone; `job.toml` is the same job as a manifest.

use weir_sdk::plan::{Args, Job, PlanError, Sink, Source};
use weir_sdk::prelude::*;

/// Lines from `--arg input=...`, upper-cased, to `--arg output=...`.
pub fn plan(args: &Args) -> Result<Job, PlanError> {
    let job = Job::new("{name}");
    job.source("lines", Source::file(args.get("input")))
        .operator("upper")
        .sink("out", Sink::file(args.get("output")));
    Ok(job)
}

weir_sdk::export_operators! {
    plan = plan;
    "upper" => map(|line: String| line.to_uppercase()).input(Text).output(Text),
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;
    use weir_sdk::testing::Harness;

    #[test]
    fn upper_upper_cases_each_line() {
        let op = map(|line: String| line.to_uppercase()).input(Text).output(Text);
        let mut h = Harness::open(op, OperatorInfo::new("upper")).unwrap();
        h.push(b"owl").unwrap();
        assert_eq!(h.take_values(&Text).unwrap(), ["OWL"]);
    }
}
