//! Process functions: the general operator, with keyed state, timers and state of its own.

use std::ops::{Deref, DerefMut};

use weir_framing::Record;

use crate::codec::{Bincode, Codec};
use crate::host::TimeDomain;
use crate::operator::{Context, OpenContext, Operator, OperatorError};

/// What a [`ProcessFunction`] gets while handling a record or timer. Dereferences to
/// [`Context`], which the state handles take.
pub struct ProcessContext<'a, 'b, O> {
    ctx: &'a mut Context<'b>,
    output: &'a dyn Codec<O>,
}

impl<'b, O> Deref for ProcessContext<'_, 'b, O> {
    type Target = Context<'b>;
    fn deref(&self) -> &Context<'b> {
        self.ctx
    }
}

impl<'b, O> DerefMut for ProcessContext<'_, 'b, O> {
    fn deref_mut(&mut self) -> &mut Context<'b> {
        self.ctx
    }
}

impl<'a, 'b, O> ProcessContext<'a, 'b, O> {
    /// A context over `ctx` whose values are encoded with `output`.
    pub(crate) fn new(ctx: &'a mut Context<'b>, output: &'a dyn Codec<O>) -> Self {
        ProcessContext { ctx, output }
    }
}

impl<O> ProcessContext<'_, '_, O> {
    /// Emits `value` with the timestamp of the record (or timer) being handled, unkeyed.
    pub fn emit(&mut self, value: &O) -> Result<(), OperatorError> {
        let ts = self.ctx.timestamp();
        self.ctx.emit_encoded(self.output, value, None, ts)
    }

    /// Emits `value` under `key` (for a `hash` edge or a keyed operator chained after it), with
    /// `timestamp`.
    pub fn emit_keyed(
        &mut self,
        value: &O,
        key: &[u8],
        timestamp: Option<i64>,
    ) -> Result<(), OperatorError> {
        self.ctx
            .emit_encoded(self.output, value, Some(key), timestamp)
    }

    /// Emits `value` with an explicit timestamp.
    pub fn emit_at(&mut self, value: &O, timestamp: i64) -> Result<(), OperatorError> {
        self.ctx
            .emit_encoded(self.output, value, None, Some(timestamp))
    }

    /// The current key, decoded with `codec`.
    pub fn key_as<K>(&self, codec: &impl Codec<K>) -> Result<K, OperatorError> {
        codec.decode(self.ctx.require_key("read the key")?)
    }

    /// Fires `on_timer` for the current key once the watermark reaches `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: i64) -> Result<(), OperatorError> {
        self.ctx.register_timer(TimeDomain::EventTime, timestamp)
    }

    /// Fires `on_timer` for the current key once processing time reaches `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) -> Result<(), OperatorError> {
        self.ctx
            .register_timer(TimeDomain::ProcessingTime, timestamp)
    }

    /// The current event-time watermark.
    pub fn current_watermark(&mut self) -> i64 {
        self.ctx.host().current_watermark()
    }

    /// The host's processing time in milliseconds.
    pub fn current_processing_time(&mut self) -> i64 {
        self.ctx.host().current_processing_time()
    }
}

/// The general operator: per-record logic with access to keyed state, timers and the operator's
/// own checkpointed state. Wrap it with [`process`], or with [`keyed_process`] when it reads
/// keyed state or timers.
///
/// ```
/// use weir_sdk::prelude::*;
/// use weir_sdk::testing::Harness;
///
/// /// Emits the running total of its input, kept in its own memory and checkpointed.
/// #[derive(Default)]
/// struct Total { sum: i64 }
/// impl ProcessFunction for Total {
///     type In = i64;
///     type Out = i64;
///     fn process_element(&mut self, v: i64, ctx: &mut ProcessContext<'_, '_, i64>) -> Result<(), OperatorError> {
///         self.sum += v;
///         ctx.emit(&self.sum)
///     }
///     fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
///         Ok(self.sum.to_le_bytes().to_vec())
///     }
///     fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
///         let bytes = state.try_into().map_err(|_| OperatorError::State("expected 8 bytes".into()))?;
///         self.sum = i64::from_le_bytes(bytes);
///         Ok(())
///     }
/// }
/// let mut h = Harness::open(process(Total::default()), OperatorInfo::new("total")).unwrap();
/// h.push_value(&Bincode, &5i64).unwrap();
/// let saved = h.snapshot_state().unwrap();
/// let mut h = Harness::open(process(Total::default()), OperatorInfo::new("total")).unwrap();
/// h.restore_state(&saved).unwrap();
/// h.push_value(&Bincode, &1i64).unwrap();
/// assert_eq!(h.take_values::<i64>(&Bincode).unwrap(), vec![6]);
/// ```
pub trait ProcessFunction {
    /// Input value type.
    type In;
    /// Output value type.
    type Out;

    /// Declare state and read configuration.
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one value.
    fn process_element(
        &mut self,
        value: Self::In,
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

    /// The watermark advanced, after due event-time timers fired.
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

    /// Input has ended.
    fn close(&mut self, ctx: &mut ProcessContext<'_, '_, Self::Out>) -> Result<(), OperatorError> {
        let _ = ctx;
        Ok(())
    }
}

/// A [`ProcessFunction`] with its codecs. Built by [`process`] or [`keyed_process`].
pub struct Process<P, CI = Bincode, CO = Bincode> {
    function: P,
    input: CI,
    output: CO,
    keyed: bool,
}

/// Runs `function` on every record, keyed or not.
pub fn process<P: ProcessFunction>(function: P) -> Process<P> {
    Process {
        function,
        input: Bincode,
        output: Bincode,
        keyed: false,
    }
}

/// Runs `function` on keyed records: a record without a key fails the operator with a clear
/// error instead of reaching state without a scope.
pub fn keyed_process<P: ProcessFunction>(function: P) -> Process<P> {
    Process {
        keyed: true,
        ..process(function)
    }
}

impl<P: ProcessFunction, CI, CO> Process<P, CI, CO> {
    /// Decodes input values with `codec`.
    pub fn input<D: Codec<P::In>>(self, codec: D) -> Process<P, D, CO> {
        Process {
            function: self.function,
            input: codec,
            output: self.output,
            keyed: self.keyed,
        }
    }
    /// Encodes output values with `codec`.
    pub fn output<D: Codec<P::Out>>(self, codec: D) -> Process<P, CI, D> {
        Process {
            function: self.function,
            input: self.input,
            output: codec,
            keyed: self.keyed,
        }
    }
}

impl<P, CI, CO> Operator for Process<P, CI, CO>
where
    P: ProcessFunction,
    CI: Codec<P::In>,
    CO: Codec<P::Out>,
{
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.function.open(ctx)
    }

    #[inline(always)]
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        if self.keyed && record.key.is_none() {
            return Err(OperatorError::Failed(
                "keyed_process got a record without a key (add a key_by before it)".into(),
            ));
        }
        let value = self.input.decode(record.value)?;
        let mut pc = ProcessContext {
            ctx,
            output: &self.output,
        };
        self.function.process_element(value, &mut pc)
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let mut pc = ProcessContext {
            ctx,
            output: &self.output,
        };
        self.function.on_watermark(watermark, &mut pc)
    }

    fn on_timer(&mut self, domain: TimeDomain, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let mut pc = ProcessContext {
            ctx,
            output: &self.output,
        };
        self.function.on_timer(domain, &mut pc)
    }

    fn snapshot_state(&mut self) -> Result<Vec<u8>, OperatorError> {
        self.function.snapshot_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        self.function.restore_state(state)
    }

    fn close(&mut self, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let mut pc = ProcessContext {
            ctx,
            output: &self.output,
        };
        self.function.close(&mut pc)
    }
}
