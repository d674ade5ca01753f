//! The operators of `weir bench chain` and `weir bench pipelines`, over 8-byte little-endian
//! integers (the sequence source's format; the SDK's `Fixed` codec). The native operators
//! of the same names in `weir_host::native` compute the same (`running-sum`: the running sum of
//! each key, with its key).

use weir_sdk::prelude::*;

/// x -> (key x mod 10000, value 1). Byte-level, to set the key and value in one step.
struct KeyMod;

impl Operator for KeyMod {
    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let x: u64 = Fixed.decode(record.value)?;
        ctx.emit_record(Record {
            value: &1u64.to_le_bytes(),
            key: Some(&(x % 10_000).to_le_bytes()),
            timestamp: record.timestamp,
        });
        Ok(())
    }
}

/// Keyed running sum of the values through a `ValueState` read and written per record; emits
/// (key, sum). `running-sum` computes the same with the SDK's `reduce`.
#[derive(Default)]
struct RunningSum {
    sum: Option<ValueState<u64, Fixed>>,
}

impl ProcessFunction for RunningSum {
    type In = u64;
    type Out = (u64, u64);

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.sum = Some(ctx.value_state("sum").with_codec(Fixed));
        Ok(())
    }

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut ProcessContext<'_, '_, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        let state = self
            .sum
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("not open".into()))?;
        let sum = state.get(ctx)?.unwrap_or(0).wrapping_add(value);
        state.set(ctx, &sum)?;
        let key: u64 = ctx.key_as(&Fixed)?;
        ctx.emit(&(key, sum))
    }
}

weir_sdk::export_operators! {
    "times-three-plus-one" => map(|x: u64| x.wrapping_mul(3).wrapping_add(1)).input(Fixed).output(Fixed),
    "even" => filter(|x: &u64| x.is_multiple_of(2)).input(Fixed),
    "half" => map(|x: u64| x / 2).input(Fixed).output(Fixed),
    "pair" => map(|x: u64| (x, x)).input(Fixed).output(Fixed),
    "key-mod-10000" => KeyMod,
    // P2 as a Flink job writes it: map to the pair (x mod 10000, 1), key by its first field,
    // reduce pairs of one key to (key, sum).
    "pair-mod-10000" => map(|x: u64| (x % 10_000, 1u64)).input(Fixed).output(Fixed),
    "key-by-first" => key_by(|&(key, _): &(u64, u64)| key).input(Fixed).key(Fixed),
    // The two above in one operator: Flink's map and keyBy's key selector in one pass.
    "keyed-pair-mod-10000" => map(|x: u64| (x % 10_000, 1u64))
        .input(Fixed)
        .output(Fixed)
        .key_by(|&(key, _): &(u64, u64)| key, Fixed),
    "sum-pairs" => reduce(|(key, sum): (u64, u64), (_, x): (u64, u64)| (key, sum.wrapping_add(x))).codec(Fixed),
    "running-sum" => reduce(|sum: u64, x: u64| sum.wrapping_add(x)).codec(Fixed),
    "running-sum-value-state" => keyed_process(RunningSum::default()).input(Fixed).output(Fixed),
}
