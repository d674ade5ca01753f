//! A stateless chain over text numbers: `parse` each line as an integer, `scale` it by the
//! configured `factor`, keep the `even` ones and `format` them back as text. `running-total`
//! shows state an operator keeps in its own memory and checkpoints itself.

use weir_sdk::prelude::*;

/// Multiplies by the `factor` from the operator's configuration (1 if unset).
pub struct Scale {
    factor: i64,
}

impl ProcessFunction for Scale {
    type In = i64;
    type Out = i64;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        if ctx.config("factor").is_some() {
            self.factor = ctx.parse_config("factor")?;
        }
        Ok(())
    }

    fn process_element(
        &mut self,
        value: i64,
        ctx: &mut ProcessContext<'_, '_, i64>,
    ) -> Result<(), OperatorError> {
        let scaled = value
            .checked_mul(self.factor)
            .ok_or_else(|| OperatorError::Failed(format!("{value} * {} overflows", self.factor)))?;
        ctx.emit(&scaled)
    }
}

/// Emits the running total of its input; the total lives in guest memory and is saved through
/// `snapshot-state`.
#[derive(Default)]
pub struct RunningTotal {
    total: i64,
}

impl ProcessFunction for RunningTotal {
    type In = i64;
    type Out = i64;

    fn process_element(
        &mut self,
        value: i64,
        ctx: &mut ProcessContext<'_, '_, i64>,
    ) -> Result<(), OperatorError> {
        self.total = self.total.wrapping_add(value);
        ctx.emit(&self.total)
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        Ok(self.total.to_le_bytes().to_vec())
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let bytes: [u8; 8] = state.try_into().map_err(|_| {
            OperatorError::State(format!("expected 8 bytes of total, got {}", state.len()))
        })?;
        self.total = i64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Parses a line as a decimal integer, surrounding whitespace allowed.
pub fn parse_line(line: String) -> Result<i64, OperatorError> {
    line.trim()
        .parse()
        .map_err(|e| OperatorError::Decode(format!("`{line}` is not an integer: {e}")))
}

weir_sdk::export_operators! {
    "parse" => try_map(parse_line).input(Text),
    "scale" => process(Scale { factor: 1 }),
    "even" => filter(|x: &i64| x % 2 == 0),
    "format" => map(|x: i64| x.to_string()).output(Text),
    "running-total" => process(RunningTotal::default()),
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::Harness;

    #[test]
    fn scale_reads_its_factor_from_config() {
        let info = OperatorInfo::new("scale").with_config("factor", "3");
        let mut h = Harness::open(process(Scale { factor: 1 }), info).unwrap();
        h.push_value(&Bincode, &-4i64).unwrap();
        assert_eq!(h.take_values::<i64>(&Bincode).unwrap(), vec![-12]);
    }

    #[test]
    fn scale_rejects_a_factor_that_is_not_a_number() {
        let info = OperatorInfo::new("scale").with_config("factor", "three");
        let err = Harness::open(process(Scale { factor: 1 }), info)
            .err()
            .unwrap();
        assert!(matches!(err, OperatorError::Config(m) if m.contains("factor")));
    }

    #[test]
    fn parse_failure_is_a_decode_error_quoting_the_line() {
        let err = parse_line("12a".into()).unwrap_err();
        assert!(matches!(err, OperatorError::Decode(m) if m.contains("`12a`")));
    }
}
