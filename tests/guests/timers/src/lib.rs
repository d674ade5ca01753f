//! A keyed operator driven by timers: every record sets an alarm `delay` ms after its
//! timestamp, in the time domain named by `domain`; when the alarm rings the operator emits
//! `key time last-value`.

use weir_sdk::prelude::*;

#[derive(Default)]
struct Alarm {
    delay: i64,
    processing_time: bool,
    last: Option<ValueState<String>>,
}

impl ProcessFunction for Alarm {
    type In = String;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.delay = ctx.parse_config("delay")?;
        self.processing_time = match ctx.config("domain").unwrap_or("event") {
            "event" => false,
            "processing" => true,
            other => return Err(OperatorError::Config(format!("unknown domain `{other}`"))),
        };
        self.last = Some(ctx.value_state("last"));
        Ok(())
    }

    fn process_element(
        &mut self,
        value: String,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("not open".into()))?;
        last.set(ctx, &value)?;
        let at = ctx.timestamp().unwrap_or(0) + self.delay;
        if self.processing_time {
            ctx.register_processing_time_timer(at)
        } else {
            ctx.register_event_time_timer(at)
        }
    }

    fn on_timer(
        &mut self,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| OperatorError::Failed("not open".into()))?;
        let value = last.get(ctx)?.unwrap_or_default();
        let key = ctx.key_as(&Text)?;
        let at = ctx.timestamp().unwrap_or(0);
        ctx.emit(&format!("{key} {at} {value}"))
    }
}

weir_sdk::export_operators! {
    "alarm" => keyed_process(Alarm::default()).input(Text).output(Text),
}
