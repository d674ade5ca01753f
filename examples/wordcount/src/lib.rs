//! Word count: the classic streaming job, as three weir operators.
//!
//! `tokenize` splits lines into words, `key-by-word` keys each word by itself, and `count` keeps
//! a running count per word in keyed state and emits the UTF-8 line `word count` on every update.
//! The component carries its plan too (`plan`), so it runs as a job by itself; `job.toml` is the
//! same job as a manifest.

use weir_sdk::plan::{Args, Job, PlanError, Sink, Source};
use weir_sdk::prelude::*;

/// The words of `line`: the line lowercased, then split on every character that is not
/// alphanumeric, without empty words. (Lowercasing first matters: some capitals lowercase to a
/// letter plus a combining mark, which is not alphanumeric and so splits the word.)
pub fn words(line: &str) -> Vec<String> {
    line.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Counts records per key; the key is the word.
#[derive(Default)]
pub struct Count {
    count: Option<ValueState<u64>>,
}

impl ProcessFunction for Count {
    type In = String;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.count = Some(ctx.value_state("count"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _word: String,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let state = self
            .count
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("count used before open".into()))?;
        let count = state.get(ctx)?.unwrap_or(0) + 1;
        state.set(ctx, &count)?;
        let word = ctx.key_as(&Text)?;
        ctx.emit(&format!("{word} {count}"))
    }
}

/// The job in code, the same graph as `job.toml`: `weir run wordcount.wasm --arg input=TEXT
/// --arg output=COUNTS` runs the component alone. Lines are split into words where they are
/// read; words are keyed and sent by key to the counting subtasks; one subtask writes the
/// counts to one file.
pub fn plan(args: &Args) -> Result<Job, PlanError> {
    let job = Job::new("wordcount").parallelism(2);
    job.source("lines", Source::file(args.get("input")))
        .operator("tokenize")
        .operator("key-by-word")
        .hash()
        .operator("count")
        .rebalance()
        .sink("counts", Sink::file(args.get("output")))
        .parallelism(1);
    Ok(job)
}

weir_sdk::export_operators! {
    plan = plan;
    "tokenize" => flat_map(|line: String, out: &mut Emitter<String>| {
        for word in words(&line) {
            out.emit(&word);
        }
    })
    .input(Text)
    .output(Text),
    "key-by-word" => key_by(|word: &String| word.clone()).input(Text).key(Text),
    "count" => keyed_process(Count::default()).input(Text).output(Text),
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::Harness;

    #[test]
    fn words_are_lowercase_alphanumeric_runs() {
        let w = words("Hello, World! it's 2x--fast  ");
        assert_eq!(w, ["hello", "world", "it", "s", "2x", "fast"]);
    }

    #[test]
    fn count_emits_running_count_per_word() {
        let op = keyed_process(Count::default()).input(Text).output(Text);
        let mut h = Harness::open(op, OperatorInfo::new("count")).unwrap();
        for w in ["owl", "cat", "owl"] {
            h.push_keyed(w.as_bytes(), w.as_bytes()).unwrap();
        }
        assert_eq!(h.take_values(&Text).unwrap(), ["owl 1", "cat 1", "owl 2"]);
    }

    #[test]
    fn count_rejects_unkeyed_records() {
        let op = keyed_process(Count::default()).input(Text).output(Text);
        let mut h = Harness::open(op, OperatorInfo::new("count")).unwrap();
        let err = h.push(b"owl").unwrap_err();
        assert!(err.to_string().contains("without a key"), "{err}");
    }
}
