//! Built-in native operators: the pipelines of `weir-bench pipelines` written in plain Rust, so
//! the benchmark can run the same jobs with and without the wasm boundary. Values are 8-byte
//! little-endian integers, as the sequence source writes them and the SDK's `BincodeFixed`
//! reads them.

use rustc_hash::FxHashMap;
use weir_framing::{BatchWriter, Record};

use weir_host::runtime::NativeOperators;
use weir_host::stream::{Barrier, Output, StreamError};

/// The native operators, by the name a manifest gives in `native = "..."`.
pub const NAMES: &[&str] = &[
    "times-three-plus-one",
    "even",
    "pair",
    "key-mod-10000",
    "running-sum",
];

enum Function {
    /// x -> x * 3 + 1
    TimesThreePlusOne,
    /// keeps even x
    Even,
    /// x -> (x, x)
    Pair,
    /// x -> key x mod 10000, value 1
    KeyMod,
    /// keyed running sum of the values, emitting the sum with its key
    RunningSum(FxHashMap<u64, u64>),
}

/// A native operator in a chain: applies its function and passes results to `next`.
pub struct NativeOperator {
    name: String,
    function: Function,
    next: Box<dyn Output>,
    out: BatchWriter,
}

fn u64_of(bytes: &[u8], what: &str, op: &str) -> Result<u64, StreamError> {
    bytes.try_into().map(u64::from_le_bytes).map_err(|_| {
        StreamError::Output(format!(
            "native operator `{op}` expects 8-byte {what}, got {} bytes",
            bytes.len()
        ))
    })
}

impl NativeOperator {
    pub fn new(name: &str, next: Box<dyn Output>) -> Result<Self, StreamError> {
        let function = match name {
            "times-three-plus-one" => Function::TimesThreePlusOne,
            "even" => Function::Even,
            "pair" => Function::Pair,
            "key-mod-10000" => Function::KeyMod,
            "running-sum" => Function::RunningSum(FxHashMap::default()),
            other => {
                return Err(StreamError::Output(format!(
                    "no native operator `{other}`; there are {}",
                    NAMES.join(", ")
                )));
            }
        };
        Ok(NativeOperator {
            name: name.to_string(),
            function,
            next,
            out: BatchWriter::new(),
        })
    }

    fn apply(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        let x = u64_of(record.value, "values", &self.name)?;
        let out = &mut self.out;
        match &mut self.function {
            Function::TimesThreePlusOne => out.push(Record::value(
                &x.wrapping_mul(3).wrapping_add(1).to_le_bytes(),
            )),
            Function::Even => {
                if x.is_multiple_of(2) {
                    out.push(record)
                }
            }
            Function::Pair => {
                let mut pair = [0u8; 16];
                pair[..8].copy_from_slice(&x.to_le_bytes());
                pair[8..].copy_from_slice(&x.to_le_bytes());
                out.push(Record::value(&pair))
            }
            Function::KeyMod => out.push(Record {
                value: &1u64.to_le_bytes(),
                key: Some(&(x % 10_000).to_le_bytes()),
                timestamp: record.timestamp,
            }),
            Function::RunningSum(sums) => {
                let key_bytes = record.key.ok_or_else(|| {
                    StreamError::Output("native running-sum needs keyed records".into())
                })?;
                let key = u64_of(key_bytes, "keys", "running-sum")?;
                let sum = sums.entry(key).or_insert(0);
                *sum = sum.wrapping_add(x);
                out.push(Record {
                    value: &sum.to_le_bytes(),
                    key: Some(key_bytes),
                    timestamp: record.timestamp,
                })
            }
        }
        Ok(())
    }
}

impl Output for NativeOperator {
    fn collect(&mut self, record: Record<'_>) -> Result<(), StreamError> {
        self.out.clear();
        self.apply(record)?;
        if !self.out.is_empty() {
            self.next.collect_batch(self.out.as_bytes())?;
        }
        Ok(())
    }

    fn collect_batch(&mut self, batch: &[u8]) -> Result<(), StreamError> {
        self.out.clear();
        let mut records = weir_framing::records(batch);
        while let Some((record, _)) = records.next_with_bytes() {
            self.apply(record)?;
        }
        if let Some(e) = records.fault() {
            return Err(StreamError::Output(format!("malformed batch: {e}")));
        }
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let result = self.next.collect_batch(out.as_bytes());
            self.out = out;
            result?;
        }
        Ok(())
    }

    fn emit_watermark(&mut self, watermark: i64) -> Result<(), StreamError> {
        self.next.emit_watermark(watermark)
    }
    fn emit_watermark_status(&mut self, idle: bool) -> Result<(), StreamError> {
        self.next.emit_watermark_status(idle)
    }
    fn advance_processing_time(&mut self, now: i64) -> Result<(), StreamError> {
        self.next.advance_processing_time(now)
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        self.next.flush()
    }
    fn snapshot(
        &mut self,
        barrier: &Barrier,
        into: &mut Vec<weir_host::state::OperatorSnapshot>,
    ) -> Result<(), StreamError> {
        self.next.snapshot(barrier, into)
    }
    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), StreamError> {
        self.next.notify_checkpoint_complete(checkpoint)
    }
    fn end_input(&mut self) -> Result<(), StreamError> {
        self.next.end_input()
    }
    fn finish(&mut self) -> Result<(), StreamError> {
        self.next.finish()
    }
}

/// The native operators, for the mini-cluster of `weir-bench pipelines`.
pub struct BenchNatives;

impl NativeOperators for BenchNatives {
    fn create(&self, name: &str, next: Box<dyn Output>) -> Result<Box<dyn Output>, StreamError> {
        Ok(Box::new(NativeOperator::new(name, next)?))
    }
}
