//! Two-input operators (Flink's `connect` and `CoProcessFunction`): one function sees the
//! records of both inputs, each decoded with its own codec, and shares keyed state, timers and
//! the watermark between them. The host delivers the second input's records through the
//! `two-input` export, so the function always knows where a record came from.

use crate::codec::{Bincode, Codec};
use crate::host::TimeDomain;
use crate::operator::{Context, OpenContext, Operator, OperatorError};
use crate::process::ProcessContext;
use weir_framing::Record;

/// A function of two inputs. On keyed streams (both inputs keyed the same way, by a `hash`
/// edge each) its keyed state and timers are scoped to the record's key whichever input it
/// came from.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
///
/// /// Emits each order with the customer's latest name, once both are known.
/// struct Enrich { name: Option<ValueState<String>>, orders: Option<MapState<u64, u64>> }
/// impl CoProcessFunction for Enrich {
///     type In1 = u64; // order amounts
///     type In2 = String; // customer names
///     type Out = String;
///     fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
///         self.name = Some(ctx.value_state("name"));
///         self.orders = Some(ctx.map_state("orders"));
///         Ok(())
///     }
///     fn process_element1(&mut self, amount: u64, ctx: &mut ProcessContext<'_, '_, String>) -> Result<(), OperatorError> {
///         match self.name.as_ref().unwrap().get(ctx)? {
///             Some(name) => ctx.emit(&format!("{name} {amount}")),
///             None => self.orders.as_ref().unwrap().put(ctx, &amount, &amount),
///         }
///     }
///     fn process_element2(&mut self, name: String, ctx: &mut ProcessContext<'_, '_, String>) -> Result<(), OperatorError> {
///         self.name.as_ref().unwrap().set(ctx, &name)?;
///         for (amount, _) in self.orders.as_ref().unwrap().entries(ctx)? {
///             ctx.emit(&format!("{name} {amount}"))?;
///         }
///         self.orders.as_ref().unwrap().clear(ctx)
///     }
/// }
/// let op = keyed_co_process(Enrich { name: None, orders: None })
///     .input1(Fixed)
///     .input2(Text)
///     .output(Text);
/// let mut h = Harness::open(op, OperatorInfo::new("enrich")).unwrap();
/// h.push_keyed(b"c1", &5u64.to_le_bytes()).unwrap();
/// h.push_keyed_second(b"c1", b"ada").unwrap();
/// h.push_keyed(b"c1", &7u64.to_le_bytes()).unwrap();
/// assert_eq!(h.take_values(&Text).unwrap(), vec!["ada 5", "ada 7"]);
/// ```
pub trait CoProcessFunction {
    /// The first input's values.
    type In1;
    /// The second input's values.
    type In2;
    type Out;

    /// Declare state and read configuration.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles a value of the first input.
    fn process_element1(
        &mut self,
        value: Self::In1,
        ctx: &mut ProcessContext<'_, '_, Self::Out>,
    ) -> Result<(), OperatorError>;

    /// Handles a value of the second input.
    fn process_element2(
        &mut self,
        value: Self::In2,
        ctx: &mut ProcessContext<'_, '_, Self::Out>,
    ) -> Result<(), OperatorError>;

    /// A timer of the current key is due; `ctx.timestamp()` is its time.
    fn on_timer(
        &mut self,
        domain: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, Self::Out>,
    ) -> Result<(), OperatorError> {
        let _ = (domain, ctx);
        Ok(())
    }

    /// The watermark (the least of both inputs') advanced, after due timers fired.
    fn on_watermark(
        &mut self,
        watermark: i64,
        ctx: &mut ProcessContext<'_, '_, Self::Out>,
    ) -> Result<(), OperatorError> {
        let _ = (watermark, ctx);
        Ok(())
    }

    /// State kept in the function's own memory, for a checkpoint.
    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        Ok(Vec::new())
    }

    /// Restores what `snapshot_state` returned.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let _ = state;
        Ok(())
    }

    /// Both inputs have ended.
    fn close(&mut self, ctx: &mut ProcessContext<'_, '_, Self::Out>) -> Result<(), OperatorError> {
        let _ = ctx;
        Ok(())
    }
}

/// A [`CoProcessFunction`] with its codecs. Built by [`co_process`] or [`keyed_co_process`].
pub struct CoProcess<P, C1 = Bincode, C2 = Bincode, CO = Bincode> {
    function: P,
    input1: C1,
    input2: C2,
    output: CO,
    keyed: bool,
}

/// Runs `function` on two inputs, keyed or not.
pub fn co_process<P: CoProcessFunction>(function: P) -> CoProcess<P> {
    CoProcess {
        function,
        input1: Bincode,
        input2: Bincode,
        output: Bincode,
        keyed: false,
    }
}

/// Runs `function` on two keyed inputs: a record without a key fails the operator.
pub fn keyed_co_process<P: CoProcessFunction>(function: P) -> CoProcess<P> {
    CoProcess {
        keyed: true,
        ..co_process(function)
    }
}

impl<P: CoProcessFunction, C1, C2, CO> CoProcess<P, C1, C2, CO> {
    /// Decodes the first input's values with `codec`.
    pub fn input1<D: Codec<P::In1>>(self, codec: D) -> CoProcess<P, D, C2, CO> {
        CoProcess {
            function: self.function,
            input1: codec,
            input2: self.input2,
            output: self.output,
            keyed: self.keyed,
        }
    }
    /// Decodes the second input's values with `codec`.
    pub fn input2<D: Codec<P::In2>>(self, codec: D) -> CoProcess<P, C1, D, CO> {
        CoProcess {
            function: self.function,
            input1: self.input1,
            input2: codec,
            output: self.output,
            keyed: self.keyed,
        }
    }
    /// Encodes output values with `codec`.
    pub fn output<D: Codec<P::Out>>(self, codec: D) -> CoProcess<P, C1, C2, D> {
        CoProcess {
            function: self.function,
            input1: self.input1,
            input2: self.input2,
            output: codec,
            keyed: self.keyed,
        }
    }

    fn check_key(&self, record: &Record<'_>, input: &str) -> Result<(), OperatorError> {
        if self.keyed && record.key.is_none() {
            return Err(OperatorError::Failed(format!(
                "keyed_co_process got a record without a key on its {input} input (key both \
                 inputs before it)"
            )));
        }
        Ok(())
    }
}

impl<P, C1, C2, CO> Operator for CoProcess<P, C1, C2, CO>
where
    P: CoProcessFunction,
    C1: Codec<P::In1>,
    C2: Codec<P::In2>,
    CO: Codec<P::Out>,
{
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.function.open(ctx)
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        self.check_key(&record, "first")?;
        let value = self.input1.decode(record.value)?;
        let mut pc = ProcessContext::new(ctx, &self.output);
        self.function.process_element1(value, &mut pc)
    }

    fn process_second(
        &mut self,
        record: Record<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), OperatorError> {
        self.check_key(&record, "second")?;
        let value = self.input2.decode(record.value)?;
        let mut pc = ProcessContext::new(ctx, &self.output);
        self.function.process_element2(value, &mut pc)
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let mut pc = ProcessContext::new(ctx, &self.output);
        self.function.on_watermark(watermark, &mut pc)
    }

    fn on_timer(&mut self, domain: TimeDomain, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let mut pc = ProcessContext::new(ctx, &self.output);
        self.function.on_timer(domain, &mut pc)
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        self.function.snapshot_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        self.function.restore_state(state)
    }

    fn close(&mut self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let mut pc = ProcessContext::new(ctx, &self.output);
        self.function.close(&mut pc)
    }
}
