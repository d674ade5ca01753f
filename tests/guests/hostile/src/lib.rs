//! Operators that misbehave on purpose, one way each, so tests can check that the host contains
//! every kind of failure to the operator that caused it.

use std::hint::black_box;

use weir_sdk::prelude::*;

/// Fails on the record numbered `at` (0-based) in the way `how` names: `panic`, `unreachable`
/// (a raw wasm trap) or `error` (an operator error). With `first-attempt-only = true` it fails
/// only before the job's first restart, to test recovery.
struct FailAt {
    at: u64,
    how: String,
    seen: u64,
    armed: bool,
}

impl ProcessFunction for FailAt {
    type In = Vec<u8>;
    type Out = Vec<u8>;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.at = ctx.parse_config("at")?;
        self.how = ctx.config("how").unwrap_or("panic").to_string();
        let first_only = ctx.config("first-attempt-only") == Some("true");
        self.armed = !first_only || ctx.info().attempt == 0;
        Ok(())
    }

    fn process_element(
        &mut self,
        value: Vec<u8>,
        ctx: &mut ProcessContext<'_, '_, Vec<u8>>,
    ) -> Result<(), OperatorError> {
        let n = self.seen;
        self.seen += 1;
        if self.armed && n == self.at {
            match self.how.as_str() {
                "unreachable" => std::process::abort(),
                "error" => return Err(OperatorError::Failed(format!("refusing record {n}"))),
                _ => panic!("failing on record {n} as asked"),
            }
        }
        ctx.emit(&value)
    }
}

fn spin(_: Vec<u8>) -> Vec<u8> {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn grow(_: Vec<u8>) -> Vec<u8> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        black_box(&hoard);
    }
}

/// Doubly recursive so the compiler cannot turn it into a loop.
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    recurse(black_box(n - 1)).wrapping_add(recurse(black_box(n / 2)))
}

fn flood(_: Vec<u8>) -> Vec<u8> {
    loop {
        println!("{}", "flood ".repeat(100));
    }
}

/// Passes records on after burning `work` loop iterations on each: a slow operator, to make
/// backpressure.
struct Slow {
    work: u64,
}

impl ProcessFunction for Slow {
    type In = Vec<u8>;
    type Out = Vec<u8>;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.work = ctx.parse_config("work")?;
        Ok(())
    }

    fn process_element(
        &mut self,
        value: Vec<u8>,
        ctx: &mut ProcessContext<'_, '_, Vec<u8>>,
    ) -> Result<(), OperatorError> {
        let mut x = 0u64;
        for i in 0..self.work {
            x = black_box(x.wrapping_add(i));
        }
        black_box(x);
        ctx.emit(&value)
    }
}

/// Sets its key's state to as many bytes as the record's value names (decimal text), reads
/// the state back and emits its length (decimal text): state of any size, up to more than the
/// host allows. With `read = false` it only writes, and emits the size it wrote.
#[derive(Default)]
struct Hoard {
    state: Option<ValueState<Vec<u8>, Bytes>>,
    read: bool,
}

impl ProcessFunction for Hoard {
    type In = String;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.state = Some(ctx.value_state("hoard").with_codec(Bytes));
        self.read = ctx.config("read") != Some("false");
        Ok(())
    }

    fn process_element(
        &mut self,
        size: String,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("not open".into()))?;
        let size: usize = size
            .parse()
            .map_err(|e| OperatorError::Decode(format!("`{size}`: {e}")))?;
        state.set(ctx, &vec![b'x'; size])?;
        let stored = if self.read {
            state.get(ctx)?.map_or(0, |v| v.len())
        } else {
            size
        };
        ctx.emit(&stored.to_string())
    }
}

/// Recursion with a 64 KiB frame in linear memory: overflows the guest's shadow stack (1 MiB
/// in wasm32-wasip2 binaries) long before the host's stack limit.
fn deep_frames(n: u64) -> u64 {
    let mut frame = [0u8; 64 << 10];
    frame[(n % 1024) as usize] = n as u8;
    let frame = black_box(frame);
    if n == 0 {
        return frame[0] as u64;
    }
    deep_frames(black_box(n + 1)).wrapping_add(frame[n as usize % 1024] as u64)
}

/// Sleeps `millis` (config) on every record: a guest blocked in a host call.
struct Sleep {
    millis: u64,
}

impl ProcessFunction for Sleep {
    type In = Vec<u8>;
    type Out = Vec<u8>;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.millis = ctx.parse_config("millis")?;
        Ok(())
    }

    fn process_element(
        &mut self,
        value: Vec<u8>,
        ctx: &mut ProcessContext<'_, '_, Vec<u8>>,
    ) -> Result<(), OperatorError> {
        std::thread::sleep(std::time::Duration::from_millis(self.millis));
        ctx.emit(&value)
    }
}

/// Emits `per-input` (config) records of 16 bytes for every input: fan-out far beyond what a
/// guest could hold in memory at once.
struct FanOut {
    per_input: u64,
}

impl ProcessFunction for FanOut {
    type In = Vec<u8>;
    type Out = Vec<u8>;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.per_input = ctx.parse_config("per-input")?;
        Ok(())
    }

    fn process_element(
        &mut self,
        _: Vec<u8>,
        ctx: &mut ProcessContext<'_, '_, Vec<u8>>,
    ) -> Result<(), OperatorError> {
        for i in 0..self.per_input {
            ctx.emit(&[i.to_le_bytes(), i.to_be_bytes()].concat())?;
        }
        Ok(())
    }
}

/// Subtask 0 fails on its first record; every other subtask spins forever: a cancelled job
/// must stop the spinning sibling at once.
#[derive(Default)]
struct FailOrSpin {
    subtask: u32,
}

impl ProcessFunction for FailOrSpin {
    type In = Vec<u8>;
    type Out = Vec<u8>;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.subtask = ctx.info().subtask_index;
        Ok(())
    }

    fn process_element(
        &mut self,
        value: Vec<u8>,
        ctx: &mut ProcessContext<'_, '_, Vec<u8>>,
    ) -> Result<(), OperatorError> {
        if self.subtask == 0 {
            return Err(OperatorError::Failed("subtask 0 fails at once".into()));
        }
        spin(value.clone());
        ctx.emit(&value)
    }
}

weir_sdk::export_operators! {
    "deep-frames" => map(|_: Vec<u8>| deep_frames(1).to_le_bytes().to_vec()).input(Bytes).output(Bytes),
    "sleep" => process(Sleep { millis: 0 }).input(Bytes).output(Bytes),
    "fan-out" => process(FanOut { per_input: 0 }).input(Bytes).output(Bytes),
    "fail-or-spin" => process(FailOrSpin::default()).input(Bytes).output(Bytes),
    "big-record" => map(|_: Vec<u8>| vec![7u8; 20 << 20]).input(Bytes).output(Bytes),
    "slow" => process(Slow { work: 0 }).input(Bytes).output(Bytes),
    "fail-at" => process(FailAt { at: 0, how: String::new(), seen: 0, armed: true }).input(Bytes).output(Bytes),
    "spin" => map(spin).input(Bytes).output(Bytes),
    "grow" => map(grow).input(Bytes).output(Bytes),
    "recurse" => map(|_: Vec<u8>| recurse(u64::MAX).to_le_bytes().to_vec()).input(Bytes).output(Bytes),
    "flood" => map(flood).input(Bytes).output(Bytes),
    "hoard" => keyed_process(Hoard::default()).input(Text).output(Text),
    "random" => map(random_draw).input(Bytes).output(Bytes),
}

/// Eight bytes that depend on the instance's randomness: a hash under the random keys std
/// draws from WASI for every new `RandomState`.
fn random_draw(_: Vec<u8>) -> Vec<u8> {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new()
        .hash_one(42u64)
        .to_le_bytes()
        .to_vec()
}
